//! Writing an update into the inactive slot: check the header, check the whole payload (for a
//! file), write with progress, read back and compare. The slot state is changed by the caller
//! around this, so a failure at any point leaves the slot marked unbootable.

use crate::artifact::{self, ArtifactError, Checked, Expect, Manifest, PAYLOAD_OFFSET};
use crate::error::{Error, IoContext, Result};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::Instant;

const CHUNK: usize = 1 << 20;

/// Where the update comes from: a file (checked completely before anything is written), or
/// stdin or another stream (checked while it streams, since it can be read only once).
pub enum Source {
    File(File, String),
    Stdin,
    /// A stream read once, named for messages (the management API's upload when it has no
    /// spool).
    Stream(Box<dyn Read + Send>, String),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Source({})", self.name())
    }
}

/// Told of an install's progress: (phase, bytes done, bytes in all). The management API shows
/// it to callers; the CLI prints [`Progress`] lines only.
#[derive(Clone)]
pub struct Observer(pub std::sync::Arc<dyn Fn(&'static str, u64, u64) + Send + Sync>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

impl Source {
    pub fn open(arg: &str) -> Result<Source> {
        if arg == "-" {
            return Ok(Source::Stdin);
        }
        let p = Path::new(arg);
        Ok(Source::File(File::open(p).at("open", p)?, arg.into()))
    }
    pub fn name(&self) -> &str {
        match self {
            Source::File(_, n) => n,
            Source::Stdin => "<stdin>",
            Source::Stream(_, n) => n,
        }
    }
    fn reader(&mut self) -> Box<dyn Read + '_> {
        match self {
            Source::File(f, _) => Box::new(f),
            Source::Stdin => Box::new(std::io::stdin().lock()),
            Source::Stream(r, _) => Box::new(r),
        }
    }
    fn artifact_err(&self, source: ArtifactError) -> Error {
        Error::Artifact {
            path: self.name().into(),
            source,
        }
    }
}

/// Reads exactly `buf.len()` bytes unless the input ends first; returns how many were read.
pub fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Progress on stderr: a live line on a terminal, a line per 10 % in logs; and to the observer,
/// when there is one.
#[derive(Debug)]
pub struct Progress {
    what: &'static str,
    total: u64,
    last_decile: u64,
    tty: bool,
    start: Instant,
    observer: Option<Observer>,
}

impl Progress {
    pub fn new(what: &'static str, total: u64, observer: Option<&Observer>) -> Progress {
        Progress {
            what,
            total: total.max(1),
            last_decile: 0,
            tty: std::io::stderr().is_terminal(),
            start: Instant::now(),
            observer: observer.cloned(),
        }
    }
    pub fn update(&mut self, done: u64) {
        if let Some(o) = &self.observer {
            (o.0)(self.what, done, self.total);
        }
        let pct = done * 100 / self.total;
        if self.tty {
            eprint!(
                "\r{} {:>3}% ({} / {} MiB)",
                self.what,
                pct,
                done >> 20,
                self.total >> 20
            );
            if done >= self.total {
                eprintln!();
            }
        } else if pct / 10 > self.last_decile || done >= self.total {
            self.last_decile = pct / 10;
            eprintln!(
                "abupdate: {} {pct}% ({} / {} MiB, {:.1} s)",
                self.what,
                done >> 20,
                self.total >> 20,
                self.start.elapsed().as_secs_f32()
            );
        }
    }
}

/// Reads and checks the header (signature first). For a file, also hashes the whole payload, so a
/// corrupt or truncated file is refused before the caller touches the slot.
pub fn check(src: &mut Source, want: &Expect, observer: Option<&Observer>) -> Result<Checked> {
    let len = match src {
        Source::File(f, n) => Some(f.metadata().at("stat", Path::new(n))?.len()),
        Source::Stdin | Source::Stream(..) => None,
    };
    let mut head = vec![0u8; PAYLOAD_OFFSET as usize];
    let name = src.name().to_string();
    let got = read_full(&mut *src.reader(), &mut head).at("read", Path::new(&name))?;
    head.truncate(got);
    let checked = artifact::parse_header(&head, want, len).map_err(|e| src.artifact_err(e))?;
    let m = &checked.manifest;
    if let Source::File(f, n) = src {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut p = Progress::new("verifying", m.payload.size, observer);
        let mut done = 0u64;
        loop {
            let k = read_full(f, &mut buf).at("read", Path::new(n))?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            done += k as u64;
            p.update(done);
        }
        let actual = hex::encode(h.finalize());
        if actual != m.payload.sha256 {
            return Err(src.artifact_err(ArtifactError::Checksum {
                expected: m.payload.sha256.clone(),
                actual,
            }));
        }
        let pos = std::io::Seek::seek(f, std::io::SeekFrom::Start(PAYLOAD_OFFSET))
            .at("seek", Path::new(n))?;
        debug_assert_eq!(pos, PAYLOAD_OFFSET);
    }
    Ok(checked)
}

/// Drops cached pages of `f` so the read-back comes from the device.
fn drop_cache(f: &File) {
    // BLKFLSBUF: flush and invalidate the block device's buffer cache.
    const BLKFLSBUF: libc::c_ulong = 0x1261;
    // SAFETY: BLKFLSBUF takes no argument; a non-block fd just gets ENOTTY.
    let _ = unsafe { libc::ioctl(f.as_raw_fd(), BLKFLSBUF as _, 0) };
    let _ = nix::fcntl::posix_fadvise(f, 0, 0, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED);
}

/// Streams the payload (positioned just after the header) onto `dev`, then reads it back.
pub fn write(
    src: &mut Source,
    m: &Manifest,
    dev: &Path,
    capacity: u64,
    observer: Option<&Observer>,
) -> Result<()> {
    if m.payload.size > capacity {
        return Err(src.artifact_err(ArtifactError::TooBig {
            size: m.payload.size,
            capacity,
            dev: dev.display().to_string(),
        }));
    }
    // O_EXCL on a block device fails while anything has it mounted or open exclusively.
    let mut out = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_EXCL)
        .open(dev)
        .at("open (exclusive)", dev)?;
    let name = src.name().to_string();
    let mut r = src.reader();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    let mut p = Progress::new("writing", m.payload.size, observer);
    while done < m.payload.size {
        let want = (m.payload.size - done).min(CHUNK as u64) as usize;
        let k = read_full(&mut *r, &mut buf[..want]).at("read", Path::new(&name))?;
        if k < want {
            return Err(Error::Artifact {
                path: name,
                source: ArtifactError::Truncated(format!(
                    "input ended after {} of {} payload bytes",
                    done + k as u64,
                    m.payload.size
                )),
            });
        }
        h.update(&buf[..k]);
        out.write_all(&buf[..k]).at("write", dev)?;
        done += k as u64;
        p.update(done);
    }
    let mut extra = [0u8; 1];
    if read_full(&mut *r, &mut extra).at("read", Path::new(&name))? != 0 {
        return Err(Error::Artifact {
            path: name,
            source: ArtifactError::Corrupt("bytes after the payload".into()),
        });
    }
    let streamed = hex::encode(h.finalize());
    if streamed != m.payload.sha256 {
        return Err(Error::Artifact {
            path: name,
            source: ArtifactError::Checksum {
                expected: m.payload.sha256.clone(),
                actual: streamed,
            },
        });
    }
    out.sync_all().at("fsync", dev)?;
    drop(out);
    let mut back = File::open(dev).at("open", dev)?;
    drop_cache(&back);
    let mut h = Sha256::new();
    let mut left = m.payload.size;
    let mut p = Progress::new("reading back", m.payload.size, observer);
    while left > 0 {
        let want = left.min(CHUNK as u64) as usize;
        let k = read_full(&mut back, &mut buf[..want]).at("read", dev)?;
        if k < want {
            return Err(Error::Device(format!(
                "{} ended after {} bytes",
                dev.display(),
                m.payload.size - left + k as u64
            )));
        }
        h.update(&buf[..k]);
        left -= k as u64;
        p.update(m.payload.size - left);
    }
    let actual = hex::encode(h.finalize());
    if actual != m.payload.sha256 {
        return Err(Error::Readback {
            dev: dev.display().to_string(),
            expected: m.payload.sha256.clone(),
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::artifact::Running;
    use crate::trust::{KeyList, Signer25519, Trust};

    fn key() -> Signer25519 {
        Signer25519::from_seed(&[5; 32])
    }

    fn verified(src: &mut Source) -> Result<Manifest> {
        let trust = Trust::from_list(&KeyList::new(1, &[key().public()])).unwrap();
        let running = Running {
            version: "v1".into(),
            security_epoch: 0,
            profile: "dev".into(),
        };
        let want = Expect {
            arch: "x86_64",
            trust: &trust,
            key_floor: crate::artifact::KeyFloor::none(),
            running: &running,
            allow_downgrade: false,
        };
        check(src, &want, None).map(|c| c.manifest)
    }

    fn artifact(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
        let mut payload = artifact::SQUASHFS_MAGIC.to_vec();
        payload.extend((0..3_000_000u32).map(|i| (i % 251) as u8));
        let m = artifact::manifest_for("v2", "x86_64", &payload, Default::default()).unwrap();
        let mut a = artifact::header(&m, &key()).unwrap();
        a.extend_from_slice(&payload);
        let p = dir.join("u.update");
        std::fs::write(&p, &a).unwrap();
        (p, payload)
    }

    #[test]
    fn a_good_file_is_written_and_read_back() {
        let t = tempfile::tempdir().unwrap();
        let (p, payload) = artifact(t.path());
        let slot = t.path().join("slot");
        std::fs::write(&slot, vec![0xAAu8; 4 << 20]).unwrap();
        let mut src = Source::open(p.to_str().unwrap()).unwrap();
        let m = verified(&mut src).unwrap();
        write(&mut src, &m, &slot, 4 << 20, None).unwrap();
        let got = std::fs::read(&slot).unwrap();
        assert_eq!(&got[..payload.len()], &payload[..]);
    }

    #[test]
    fn corrupt_truncated_or_oversized_files_are_refused_before_writing() {
        let t = tempfile::tempdir().unwrap();
        let (p, _) = artifact(t.path());
        let good = std::fs::read(&p).unwrap();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("truncated", good[..good.len() - 1000].to_vec()),
            ("checksum", {
                let mut c = good.clone();
                c[5000] ^= 1;
                c
            }),
        ];
        for (what, bytes) in cases {
            let f = t.path().join(what);
            std::fs::write(&f, &bytes).unwrap();
            let mut src = Source::open(f.to_str().unwrap()).unwrap();
            let e = platform::chain(&verified(&mut src).unwrap_err());
            assert!(e.contains(what) && e.contains(f.to_str().unwrap()), "{e}");
        }
        let mut src = Source::open(p.to_str().unwrap()).unwrap();
        let m = verified(&mut src).unwrap();
        let slot = t.path().join("small");
        std::fs::write(&slot, b"x").unwrap();
        let e = platform::chain(&write(&mut src, &m, &slot, 1 << 20, None).unwrap_err());
        assert!(e.contains("does not fit"), "{e}");
        assert_eq!(std::fs::read(&slot).unwrap(), b"x");
    }
}
