//! Advisory locks (flock) on files under the run directory, which the box's programs share to
//! keep one operation at a time on what they change together: the volume pass, one volume, a
//! pool's disks, the vault's key.

use crate::error::{io, IoError};
use std::path::Path;

/// A held lock; released when dropped (or when the process ends, whatever ended it).
pub type Held = nix::fcntl::Flock<std::fs::File>;

/// Opens `path` (making its directory) and locks it exclusively. With `wait`, blocks until the
/// holder lets go; without, `None` when another holds it.
pub fn exclusive(path: &Path, wait: bool) -> Result<Option<Held>, IoError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io("open", path))?;
    let arg = if wait {
        nix::fcntl::FlockArg::LockExclusive
    } else {
        nix::fcntl::FlockArg::LockExclusiveNonblock
    };
    match nix::fcntl::Flock::lock(f, arg) {
        Ok(l) => Ok(Some(l)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) if !wait => Ok(None),
        Err((_, e)) => Err(io("lock", path)(e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_released_on_drop() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("run/eve/x.lock");
        let held = exclusive(&p, false).unwrap().expect("free");
        assert!(exclusive(&p, false).unwrap().is_none());
        drop(held);
        assert!(exclusive(&p, true).unwrap().is_some());
    }
}
