//! Files replaced whole: the one atomic writer for state that must survive a power cut as the
//! old content or the new, never a mix, and never be read half-written by another program.

use crate::error::{IoContext, IoError};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Temporaries made by this process so far: with the pid, each write's own name.
static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Replaces `path` with `data`, so that a power cut leaves the old file or the new one, and a
/// reader never sees half of it.
///
/// A hidden sibling `.<name>.<pid>-<n>.tmp` is made (never a file of the caller's, and never one
/// another writer of the same path is using; something planted at that name is removed, never
/// written through), given exactly `mode` (or the umask's default), written, fsynced and renamed
/// over `path` (a symlink at `path` is replaced, not followed). The directory is then fsynced so
/// the rename itself survives. A failure before the rename removes the temporary and leaves
/// `path` as it was. Once the rename is done the write has happened: a directory that cannot be
/// fsynced (some filesystems refuse) is only logged. Directories it makes get `mode` plus search
/// where it is readable (0600 makes 0700), else the default.
pub fn write_atomic(path: &Path, data: &[u8], mode: Option<u32>) -> Result<(), IoError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    if let Some(m) = mode {
        b.mode(m | ((m & 0o444) >> 2));
    }
    b.create(dir).at("create", dir)?;
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".{}-{n}.tmp", std::process::id()));
    let tmp = dir.join(name);
    match std::fs::symlink_metadata(&tmp) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(&tmp).at("remove", &tmp)?,
        Ok(_) => std::fs::remove_file(&tmp).at("remove", &tmp)?,
        Err(_) => {}
    }
    let mut o = std::fs::OpenOptions::new();
    // O_CREAT|O_EXCL: a symlink appearing at the temporary's name is refused, not followed.
    o.write(true).create_new(true);
    if let Some(m) = mode {
        o.mode(m);
    }
    let mut f = o.open(&tmp).at("create", &tmp)?;
    // The mode exactly (the umask narrowed the one it was made with), on the file itself: no
    // path is followed, and `path` never shows another mode.
    let exact = match mode {
        Some(m) => f
            .set_permissions(std::fs::Permissions::from_mode(m))
            .at("chmod", &tmp),
        None => Ok(()),
    };
    let written = exact
        .and_then(|()| f.write_all(data).at("write", &tmp))
        .and_then(|()| f.sync_all().at("fsync", &tmp))
        .and_then(|()| std::fs::rename(&tmp, path).at("rename", path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        crate::log(format!(
            "{}: written, but its directory could not be synced ({e}): a power cut now may undo it",
            path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_whole_with_its_mode_and_leaves_no_temporary() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("sub/state.json");
        write_atomic(&p, b"old", None).unwrap();
        write_atomic(&p, b"new", Some(0o600)).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let left: Vec<_> = std::fs::read_dir(t.path().join("sub"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, ["state.json"], "no temporary is left");
        // The directory it made is private like the file.
        let q = t.path().join("private/dir/key");
        write_atomic(&q, b"k", Some(0o600)).unwrap();
        let dmode = std::fs::metadata(q.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
    }

    #[test]
    fn a_leftover_temporary_is_no_obstacle_and_a_symlink_there_is_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("state");
        // A caller's own `state.tmp` is not the writer's to touch.
        std::fs::write(t.path().join("state.tmp"), b"mine").unwrap();
        write_atomic(&p, b"1", None).unwrap();
        let target = t.path().join("elsewhere");
        std::fs::write(&target, b"keep").unwrap();
        // Something planted at every name the next writes may use: a symlink, a directory.
        let next = NEXT.load(std::sync::atomic::Ordering::Relaxed);
        let planted = |n: u64| {
            t.path()
                .join(format!(".state.{}-{n}.tmp", std::process::id()))
        };
        for n in next..next + 64 {
            if n % 2 == 0 {
                std::os::unix::fs::symlink(&target, planted(n)).unwrap();
            } else {
                std::fs::create_dir_all(planted(n).join("x")).unwrap();
            }
        }
        write_atomic(&p, b"2", None).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"2");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert_eq!(std::fs::read(t.path().join("state.tmp")).unwrap(), b"mine");
    }

    #[test]
    fn the_mode_is_exactly_the_one_asked_and_writers_of_one_path_never_mix() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("open");
        write_atomic(&p, b"x", Some(0o666)).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666, "the umask does not narrow it");
        let q = t.path().join("shared");
        std::thread::scope(|s| {
            for i in 0..8u8 {
                let q = &q;
                s.spawn(move || {
                    for _ in 0..50 {
                        write_atomic(q, &vec![i; 64 << 10], None).unwrap();
                        let b = std::fs::read(q).unwrap();
                        assert!(b.len() == 64 << 10 && b.iter().all(|&c| c == b[0]));
                    }
                });
            }
        });
    }

    #[test]
    fn a_failure_names_its_path() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("file"), b"").unwrap();
        let e = write_atomic(&t.path().join("file/below"), b"x", None).unwrap_err();
        assert!(e.to_string().contains("file"), "{e}");
    }
}
