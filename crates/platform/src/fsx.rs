//! Files replaced whole: the one atomic writer for state that must survive a power cut as the
//! old content or the new, never a mix, and never be read half-written by another program.

use crate::error::{IoContext, IoError};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Replaces `path` with `data`, so that a power cut leaves the old file or the new one: a hidden
/// sibling `.<name>.tmp` (never a file of the caller's; a leftover of that name, or a symlink
/// planted there, is removed, never written through) is written with `mode` (or the umask's
/// default), fsynced, renamed over `path` (a symlink at `path` is replaced, not followed), and the
/// directory fsynced so the rename itself survives. A failure removes the temporary. Directories
/// it makes get `mode` plus search where it is readable (0600 makes 0700), else the default.
///
/// Writers of one path take turns (the callers hold their state's lock): two at once would
/// share the temporary.
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
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(".tmp");
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
    let written = f
        .write_all(data)
        .at("write", &tmp)
        .and_then(|()| f.sync_all().at("fsync", &tmp))
        .and_then(|()| std::fs::rename(&tmp, path).at("rename", path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
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
        assert!(!t.path().join("sub/.state.json.tmp").exists());
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
        std::fs::create_dir_all(t.path().join(".state.tmp/x")).unwrap();
        // A caller's own `state.tmp` is not the writer's to touch.
        std::fs::write(t.path().join("state.tmp"), b"mine").unwrap();
        write_atomic(&p, b"1", None).unwrap();
        let target = t.path().join("elsewhere");
        std::fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, t.path().join(".state.tmp")).unwrap();
        write_atomic(&p, b"2", None).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"2");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert_eq!(std::fs::read(t.path().join("state.tmp")).unwrap(), b"mine");
    }

    #[test]
    fn a_failure_names_its_path() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("file"), b"").unwrap();
        let e = write_atomic(&t.path().join("file/below"), b"x", None).unwrap_err();
        assert!(e.to_string().contains("file"), "{e}");
    }
}
