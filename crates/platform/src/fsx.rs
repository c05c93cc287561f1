//! Files replaced whole: the shared atomic writer for state that must survive a power cut as
//! the old content or the new, never a mix (storage-init and storaged use it; the writers left
//! in abupdate, mgmt, volumes and eve-agent are to move onto it, issue 30).

use crate::error::{IoContext, IoError};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Replaces `path` with `data`: `<name>.tmp` beside it (a leftover file or directory of that
/// name removed first), written with `mode` (or the umask's default), fsynced, renamed over
/// `path`, and the directory fsynced so the rename itself survives a power cut. Makes the
/// directory when it is missing.
pub fn write_atomic(path: &Path, data: &[u8], mode: Option<u32>) -> Result<(), IoError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).at("create", dir)?;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = dir.join(name);
    match std::fs::symlink_metadata(&tmp) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(&tmp).at("remove", &tmp)?,
        Ok(_) => std::fs::remove_file(&tmp).at("remove", &tmp)?,
        Err(_) => {}
    }
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    if let Some(m) = mode {
        o.mode(m);
    }
    let mut f = o.open(&tmp).at("create", &tmp)?;
    f.write_all(data).at("write", &tmp)?;
    f.sync_all().at("fsync", &tmp)?;
    drop(f);
    std::fs::rename(&tmp, path).at("rename", path)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .at("fsync", dir)
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
        assert!(!t.path().join("sub/state.json.tmp").exists());
    }

    #[test]
    fn a_leftover_temporary_is_no_obstacle_and_a_symlink_there_is_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("state");
        std::fs::create_dir_all(t.path().join("state.tmp/x")).unwrap();
        write_atomic(&p, b"1", None).unwrap();
        let target = t.path().join("elsewhere");
        std::fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, t.path().join("state.tmp")).unwrap();
        write_atomic(&p, b"2", None).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"2");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    }

    #[test]
    fn a_failure_names_its_path() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("file"), b"").unwrap();
        let e = write_atomic(&t.path().join("file/below"), b"x", None).unwrap_err();
        assert!(e.to_string().contains("file"), "{e}");
    }
}
