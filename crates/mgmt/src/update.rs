//! The update endpoints on the box: the slots and the health verdict (`GET /v1/update`), an
//! update streamed in (`POST /v1/update`) and the reboot into it. The upload's header is checked
//! by abupdate's own rules before a byte is kept; the payload is kept on the pool's spool
//! dataset until its checksum is known, so a forged or broken upload never touches the inactive
//! slot (which holds the version a rollback returns to), and then installed by the same code as
//! `abupdate install FILE`.

use crate::api::{failed, shape, value, ApiError};
use crate::stream::StreamBody;
use abupdate::artifact::{ArtifactError, PAYLOAD_OFFSET};
use abupdate::health::Verdict;
use abupdate::install::{read_full, Observer, Source};
use abupdate::system::System;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// What the upload is called in messages and the log.
const NAME: &str = "the uploaded update";
pub const SPOOL_FILE: &str = "upload.partial";

fn system() -> Result<System, ApiError> {
    System::open(platform::Roots::host()).map_err(ApiError::from)
}

/// The last install's progress, shared by the install running and `GET /v1/update`.
pub type Progress = std::sync::Arc<std::sync::Mutex<Value>>;

/// `GET /v1/update`.
pub fn status(progress: &Progress) -> Result<Value, ApiError> {
    let sys = system()?;
    let slots = sys.read().map_err(ApiError::from)?;
    let health = match sys.health_now() {
        Verdict::Healthy => json!({"verdict": "healthy"}),
        Verdict::Waiting(w) => json!({"verdict": "waiting", "for": w}),
        Verdict::Failed(w) => json!({"verdict": "failed", "why": w}),
    };
    let install = progress.lock().map(|p| p.clone()).unwrap_or(Value::Null);
    Ok(json!({"status": value(sys.report(&slots))?, "health": health, "install": install}))
}

/// `POST /v1/reboot`: answered first, then init is asked to reboot. Refused while an install
/// runs (its slot would be left half-written and marked failed).
pub fn reboot() -> Result<Value, ApiError> {
    let sys = system()?;
    // Held until the process ends: no install can start between this answer and the reboot.
    let held = sys.install_lock().map_err(ApiError::from)?;
    platform::log("reboot asked through the API: asking init to reboot in 1 s");
    std::thread::spawn(move || {
        let _held = held;
        std::thread::sleep(std::time::Duration::from_secs(1));
        if let Err(e) = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(1),
            nix::sys::signal::Signal::SIGTERM,
        ) {
            platform::log(format!("reboot: signalling init: {e}"));
        }
    });
    Ok(json!({"rebooting": true}))
}

fn set(p: &std::sync::Mutex<Value>, v: Value) {
    if let Ok(mut g) = p.lock() {
        *g = v;
    }
}

fn refused(source: ArtifactError) -> ApiError {
    ApiError::from(abupdate::error::Error::Artifact {
        path: NAME.into(),
        source,
    })
}

/// A read of the upload that failed: the client stopped sending (408) or the connection broke.
pub(crate) fn broken(e: std::io::Error) -> ApiError {
    if e.kind() == std::io::ErrorKind::TimedOut {
        ApiError::new(
            408,
            "request_timeout",
            format!("{NAME}: {e}; nothing was installed"),
        )
    } else {
        ApiError::bad("bad_body", format!("{NAME}: {e}; nothing was installed"))
    }
}

/// `POST /v1/update`: the upload kept on `spool` (a dataset of the pool) until its checksum is
/// known, then installed; `progress` follows it.
pub fn install(
    spool_at: &Path,
    progress: &Progress,
    body: &StreamBody,
    allow_downgrade: bool,
    direct: bool,
) -> Result<Value, ApiError> {
    let spool = spool_dir(spool_at);
    if spool.is_none() && !direct {
        return Err(ApiError::new(
            503,
            "update_spool_unavailable",
            format!(
                "{} is not a mounted dataset of the pool (is the pool imported, and does the storage policy have [datasets.update]?); nothing was installed. `?direct=true` writes the upload straight into the inactive slot instead, as `abupdate install -` does: a broken upload then leaves that slot failed and the version a rollback returns to is lost",
                spool_at.display()
            ),
        ));
    }
    let mut upload = body.take().ok_or_else(shape)?;
    let mut sys = system()?;
    let p = progress.clone();
    let started = storaged::now();
    sys.set_observer(Observer(std::sync::Arc::new(move |phase, done, total| {
        set(
            &p,
            json!({"phase": phase, "done": done, "total": total, "started": started}),
        );
    })));
    let held = sys.install_lock().map_err(ApiError::from)?;
    let mut head = vec![0u8; PAYLOAD_OFFSET as usize];
    let n = read_full(&mut upload, &mut head).map_err(broken)?;
    if n < head.len() {
        return Err(refused(ArtifactError::Truncated(format!(
            "it ended after {n} bytes, inside its {PAYLOAD_OFFSET}-byte header"
        ))));
    }
    let m = sys
        .precheck(&head, NAME, allow_downgrade)
        .map_err(ApiError::from)?;
    // The size is signed, but no larger than the slot: nothing bigger is ever kept.
    let part = sys.disk.slot(sys.running().other());
    if m.payload.size > part.bytes {
        return Err(refused(ArtifactError::TooBig {
            size: m.payload.size,
            capacity: part.bytes,
            dev: part.dev.display().to_string(),
        }));
    }
    platform::log(format!(
        "update {} ({} MiB) arriving; header and signature accepted",
        m.version,
        m.payload.size >> 20
    ));
    let result = match &spool {
        Some(dir) => {
            let path = dir.join(SPOOL_FILE);
            let zfs = Some(volumes::import::ZFS_SUPER_MAGIC);
            let r = receive(&path, zfs, &head, &mut upload, &m, progress, started).and_then(|f| {
                sys.install_from(
                    &held,
                    Source::File(f, NAME.into()),
                    abupdate::state::DEFAULT_TRIES,
                    allow_downgrade,
                )
                .map_err(ApiError::from)
            });
            // The spool holds nothing worth keeping either way.
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    platform::log(format!("{}: remove: {e}", path.display()));
                }
            }
            r
        }
        None => {
            platform::log(format!(
                "{} is not a dataset of the pool and direct=true was asked: the update streams into the inactive slot, which is marked failed if its checksum is wrong",
                spool_at.display()
            ));
            let src = Source::Stream(
                Box::new(std::io::Cursor::new(head).chain(upload)),
                NAME.into(),
            );
            sys.install_from(&held, src, abupdate::state::DEFAULT_TRIES, allow_downgrade)
                .map_err(ApiError::from)
        }
    };
    // The slots' gauges follow what the install did to them, whatever it was.
    if let Err(e) = abupdate::metrics::publish(&sys) {
        platform::log(format!("the update gauges: {}", platform::chain(&e)));
    }
    match result {
        Ok(v) => {
            let slot = sys.running().other();
            set(
                progress,
                json!({"phase": "installed", "version": v, "slot": slot, "started": started, "finished": storaged::now()}),
            );
            Ok(json!({"installed": v, "slot": slot,
                "next": "tried on the next boot: POST /v1/reboot, then GET /v1/update shows its health check's verdict"}))
        }
        Err(e) => {
            set(
                progress,
                json!({"phase": "failed", "version": m.version, "error": e.message, "started": started, "finished": storaged::now()}),
            );
            Err(e)
        }
    }
}

/// The spool directory when it is a mounted ZFS dataset (never the root file system under an
/// unmounted mountpoint, which is RAM).
fn spool_dir(dir: &Path) -> Option<PathBuf> {
    let st = nix::sys::statfs::statfs(dir).ok()?;
    (st.filesystem_type().0 == volumes::import::ZFS_SUPER_MAGIC).then(|| dir.to_path_buf())
}

/// Keeps the upload in `path` (the header already read; on a file system of type `fs_type`,
/// `None` in unit tests), checking its payload's length and checksum against the signed manifest;
/// returns the file, positioned at its start.
fn receive(
    path: &Path,
    fs_type: Option<i64>,
    head: &[u8],
    upload: &mut dyn Read,
    m: &abupdate::artifact::Manifest,
    progress: &std::sync::Mutex<Value>,
    started: u64,
) -> Result<std::fs::File, ApiError> {
    use std::os::unix::fs::OpenOptionsExt;
    // A new file, never one found in the spool's place (a link planted there is not followed).
    match std::fs::remove_file(path) {
        Ok(()) => platform::log(format!(
            "{}: left by an earlier upload; removed",
            path.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(failed(&platform::io("remove", path)(e))),
    }
    let io = |op: &'static str| move |source| failed(&platform::io(op, path)(source));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io("create"))?;
    // On the pool, checked on the file itself.
    let fs = nix::sys::statfs::fstatfs(&f)
        .map(|s| s.filesystem_type().0)
        .map_err(|e| io("statfs")(std::io::Error::from(e)))?;
    if fs_type.is_some_and(|want| fs != want) {
        let _ = std::fs::remove_file(path);
        let e = std::io::Error::other("not on the pool");
        return Err(failed(&platform::io("check", path)(e)));
    }
    f.write_all(head).map_err(io("write"))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    let size = m.payload.size;
    let mut last = 0u64;
    while done < size {
        let want = (size - done).min(buf.len() as u64) as usize;
        let k = read_full(upload, &mut buf[..want]).map_err(broken)?;
        if k < want {
            return Err(refused(ArtifactError::Truncated(format!(
                "it ended after {} of {size} payload bytes",
                done + k as u64
            ))));
        }
        h.update(&buf[..k]);
        f.write_all(&buf[..k]).map_err(io("write"))?;
        done += k as u64;
        if done - last >= 8 << 20 || done == size {
            last = done;
            set(
                progress,
                json!({"phase": "receiving", "done": done, "total": size, "started": started}),
            );
        }
    }
    let mut extra = [0u8; 1];
    if read_full(upload, &mut extra).map_err(broken)? != 0 {
        return Err(refused(ArtifactError::Corrupt(
            "bytes after the payload".into(),
        )));
    }
    let actual = hex::encode(h.finalize());
    if actual != m.payload.sha256 {
        return Err(refused(ArtifactError::Checksum {
            expected: m.payload.sha256.clone(),
            actual,
        }));
    }
    f.sync_all().map_err(io("fsync"))?;
    std::io::Seek::rewind(&mut f).map_err(io("seek"))?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(payload: &[u8]) -> abupdate::artifact::Manifest {
        abupdate::artifact::manifest_for("v2", "x86_64", payload, Default::default()).unwrap()
    }

    #[test]
    fn the_spool_keeps_exactly_the_signed_payload_or_refuses_it() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join(SPOOL_FILE);
        let mut payload = abupdate::artifact::SQUASHFS_MAGIC.to_vec();
        payload.extend((0..2_500_000u32).map(|i| (i % 249) as u8));
        let m = manifest(&payload);
        let head = vec![b'H'; PAYLOAD_OFFSET as usize];
        let progress = std::sync::Mutex::new(Value::Null);
        let run = |body: &[u8]| receive(&path, None, &head, &mut &body[..], &m, &progress, 1);

        let mut f = run(&payload).unwrap();
        let mut kept = Vec::new();
        f.read_to_end(&mut kept).unwrap();
        assert_eq!(&kept[..head.len()], &head[..]);
        assert_eq!(&kept[head.len()..], &payload[..]);
        assert_eq!(progress.lock().unwrap()["done"], payload.len());

        let e = run(&payload[..1000]).unwrap_err();
        assert_eq!((e.status, e.code), (400, "update_refused"));
        assert!(e.message.contains("ended after 1000 of"), "{}", e.message);
        let mut more = payload.clone();
        more.push(0);
        assert!(run(&more)
            .unwrap_err()
            .message
            .contains("bytes after the payload"));
        let mut bad = payload.clone();
        bad[77] ^= 1;
        let e = run(&bad).unwrap_err();
        assert!(e.message.contains("the update is corrupt"), "{}", e.message);
        assert!(e.message.contains(NAME), "{}", e.message);
    }

    /// Without its spool on the pool an upload is refused before a byte is read, unless the
    /// caller asks to stream into the slot.
    #[test]
    fn no_spool_no_install_unless_asked() {
        let t = tempfile::tempdir().unwrap();
        let progress = Progress::default();
        let body = StreamBody::new(Box::new(std::io::empty()));
        let e = install(t.path(), &progress, &body, false, false).unwrap_err();
        assert_eq!((e.status, e.code), (503, "update_spool_unavailable"));
        assert!(e.message.contains("nothing was installed") && e.message.contains("direct=true"));
        assert!(body.take().is_some(), "the stream was read");
    }

    #[test]
    fn a_stalled_upload_is_408_and_a_broken_one_400() {
        let e = broken(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "nothing arrived for 30 s",
        ));
        assert_eq!((e.status, e.code), (408, "request_timeout"));
        assert!(e.message.contains("nothing was installed"));
        assert_eq!(broken(std::io::Error::other("reset")).status, 400);
    }
}
