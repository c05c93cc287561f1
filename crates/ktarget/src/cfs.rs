//! configfs operations behind a trait, so the reconcilers run against a temporary tree with
//! injected kernel errors in tests and against `/sys/kernel/config` on the box.

use std::io;
use std::path::{Path, PathBuf};

/// One failed configfs operation: what was done, where, and the kernel's errno.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}{}", hint(.source))]
pub struct CfsError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// The usual meaning of an errno in configfs, for operators reading a log.
fn hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EBUSY) => " (in use: linked or enabled)",
        Some(libc::ENOTEMPTY) => " (still has children or links)",
        Some(libc::EACCES) => " (not writable in this state, e.g. an enabled port)",
        Some(libc::EINVAL) => " (value rejected by the kernel)",
        _ => "",
    }
}

pub type Result<T> = std::result::Result<T, CfsError>;

/// The operations a configfs reconciler needs. Paths are absolute (under the caller's root).
pub trait Cfs: std::fmt::Debug {
    fn mkdir(&self, p: &Path) -> io::Result<()>;
    fn rmdir(&self, p: &Path) -> io::Result<()>;
    fn write(&self, p: &Path, value: &str) -> io::Result<()>;
    fn read(&self, p: &Path) -> io::Result<String>;
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()>;
    fn unlink(&self, p: &Path) -> io::Result<()>;
    fn read_link(&self, p: &Path) -> io::Result<PathBuf>;
    /// Entry names of a directory; a missing directory has none.
    fn list(&self, p: &Path) -> io::Result<Vec<String>>;
}

/// The real filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostFs;

impl Cfs for HostFs {
    fn mkdir(&self, p: &Path) -> io::Result<()> {
        std::fs::create_dir(p)
    }
    fn rmdir(&self, p: &Path) -> io::Result<()> {
        std::fs::remove_dir(p)
    }
    fn write(&self, p: &Path, value: &str) -> io::Result<()> {
        use std::io::Write;
        // One write(2): configfs parses each write as a whole value.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(p)?;
        f.write_all(value.as_bytes())
    }
    fn read(&self, p: &Path) -> io::Result<String> {
        std::fs::read_to_string(p)
    }
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }
    fn unlink(&self, p: &Path) -> io::Result<()> {
        std::fs::remove_file(p)
    }
    fn read_link(&self, p: &Path) -> io::Result<PathBuf> {
        std::fs::read_link(p)
    }
    fn list(&self, p: &Path) -> io::Result<Vec<String>> {
        match std::fs::read_dir(p) {
            Ok(rd) => {
                let mut v = rd
                    .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect::<io::Result<Vec<_>>>()?;
                v.sort();
                Ok(v)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(vec![]),
            Err(e) => Err(e),
        }
    }
}

/// A plan step that failed, after the steps before it were done.
#[derive(Debug, thiserror::Error)]
#[error("{target}: step {step} of {total} ({op})")]
pub struct PlanError {
    /// `nvmet` or `LIO`.
    pub target: &'static str,
    pub step: usize,
    pub total: usize,
    pub op: String,
    /// Steps done before this one.
    pub done: usize,
    #[source]
    pub source: CfsError,
}

/// Runs `ops` in order with `one`, stopping at the first failure: the next observe/diff picks up
/// from wherever that left the kernel. Returns each step with whether it changed anything.
pub fn run_plan<O: std::fmt::Display>(
    target: &'static str,
    ops: &[O],
    mut one: impl FnMut(&O) -> Result<bool>,
) -> std::result::Result<Vec<(String, bool)>, PlanError> {
    let mut done: Vec<(String, bool)> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        match one(op) {
            Ok(c) => done.push((op.to_string(), c)),
            Err(source) => {
                return Err(PlanError {
                    target,
                    step: i + 1,
                    total: ops.len(),
                    op: op.to_string(),
                    done: done.len(),
                    source,
                })
            }
        }
    }
    Ok(done)
}

/// Wraps a [`Cfs`] with error context and the idempotence rules every apply step shares: making
/// what exists or removing what is gone is not an error, it just changes nothing.
#[derive(Debug)]
pub struct Ops<'a, F: Cfs + ?Sized> {
    pub fs: &'a F,
}

fn ctx<'a>(op: &'static str, p: &'a Path) -> impl FnOnce(io::Error) -> CfsError + 'a {
    move |source| CfsError {
        op,
        path: p.to_path_buf(),
        source,
    }
}

impl<F: Cfs + ?Sized> Ops<'_, F> {
    pub fn mkdir(&self, p: &Path) -> Result<bool> {
        match self.fs.mkdir(p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(ctx("mkdir", p)(e)),
        }
    }
    pub fn rmdir(&self, p: &Path) -> Result<bool> {
        match self.fs.rmdir(p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(ctx("rmdir", p)(e)),
        }
    }
    pub fn unlink(&self, p: &Path) -> Result<bool> {
        match self.fs.unlink(p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(ctx("unlink", p)(e)),
        }
    }
    pub fn symlink(&self, target: &Path, link: &Path) -> Result<bool> {
        match self.fs.symlink(target, link) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(ctx("symlink", link)(e)),
        }
    }
    /// Writes `value` unless the attribute already reads back as it (after trimming).
    pub fn set(&self, p: &Path, value: &str) -> Result<bool> {
        if self.get(p).ok().as_deref() == Some(value) {
            return Ok(false);
        }
        self.fs.write(p, value).map_err(ctx("write", p))?;
        Ok(true)
    }
    pub fn get(&self, p: &Path) -> Result<String> {
        self.fs
            .read(p)
            .map(|s| s.trim_end_matches(['\n', '\0']).trim().to_string())
            .map_err(ctx("read", p))
    }
    pub fn list(&self, p: &Path) -> Result<Vec<String>> {
        self.fs.list(p).map_err(ctx("list", p))
    }
    pub fn link_name(&self, p: &Path) -> Result<String> {
        let t = self.fs.read_link(p).map_err(ctx("readlink", p))?;
        Ok(t.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default())
    }
}

/// A test double: the real filesystem on a temporary tree that behaves like configfs where the
/// reconcilers care (default groups appear on mkdir and go with rmdir; rmdir of a directory with
/// children or links is ENOTEMPTY), with chosen operations failing with a chosen errno.
#[cfg(any(test, feature = "testing"))]
pub mod fake {
    use super::*;
    use std::cell::RefCell;

    #[derive(Debug, Default)]
    pub struct FaultyFs {
        /// (operation, path suffix, errno): matching operations fail until `clear`.
        faults: RefCell<Vec<(&'static str, String, i32)>>,
        /// (parent directory name or `prefix*`, default groups a mkdir there creates).
        pub groups: Vec<(&'static str, Vec<&'static str>)>,
        pub log: RefCell<Vec<String>>,
    }

    impl FaultyFs {
        pub fn with_groups(groups: Vec<(&'static str, Vec<&'static str>)>) -> FaultyFs {
            FaultyFs {
                groups,
                ..FaultyFs::default()
            }
        }
        pub fn fail(&self, op: &'static str, path_suffix: &str, errno: i32) {
            self.faults
                .borrow_mut()
                .push((op, path_suffix.to_string(), errno));
        }
        pub fn clear(&self) {
            self.faults.borrow_mut().clear();
            self.log.borrow_mut().clear();
        }
        fn check(&self, op: &'static str, p: &Path) -> io::Result<()> {
            let s = p.to_string_lossy();
            if let Some(f) = self
                .faults
                .borrow()
                .iter()
                .find(|f| f.0 == op && s.ends_with(&f.1))
            {
                return Err(io::Error::from_raw_os_error(f.2));
            }
            self.log.borrow_mut().push(format!("{op} {}", p.display()));
            Ok(())
        }
        fn groups_for(&self, p: &Path) -> Vec<&'static str> {
            let parent = p
                .parent()
                .and_then(|d| d.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            self.groups
                .iter()
                .filter(|(k, _)| match k.strip_suffix('*') {
                    Some(pre) => parent.starts_with(pre),
                    None => parent == *k,
                })
                .flat_map(|(_, g)| g.iter().copied())
                .collect()
        }
    }

    impl Cfs for FaultyFs {
        fn mkdir(&self, p: &Path) -> io::Result<()> {
            self.check("mkdir", p)?;
            HostFs.mkdir(p)?;
            for g in self.groups_for(p) {
                std::fs::create_dir(p.join(g))?;
            }
            Ok(())
        }
        fn rmdir(&self, p: &Path) -> io::Result<()> {
            self.check("rmdir", p)?;
            let groups = self.groups_for(p);
            for e in std::fs::read_dir(p)?.flatten() {
                let t = e.file_type()?;
                let name = e.file_name().to_string_lossy().into_owned();
                // Files are attributes; a default group is busy only with items or links in it.
                let busy = t.is_symlink()
                    || (t.is_dir()
                        && (!groups.contains(&name.as_str())
                            || std::fs::read_dir(e.path())?
                                .flatten()
                                .any(|x| x.file_type().is_ok_and(|t| !t.is_file()))));
                if busy {
                    return Err(io::Error::from_raw_os_error(libc::ENOTEMPTY));
                }
            }
            for e in std::fs::read_dir(p)?.flatten() {
                if e.file_type()?.is_dir() {
                    std::fs::remove_dir_all(e.path())?;
                } else {
                    std::fs::remove_file(e.path())?;
                }
            }
            HostFs.rmdir(p)
        }
        fn write(&self, p: &Path, value: &str) -> io::Result<()> {
            self.check("write", p)?;
            HostFs.write(p, value)
        }
        fn read(&self, p: &Path) -> io::Result<String> {
            HostFs.read(p)
        }
        fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
            self.check("symlink", link)?;
            HostFs.symlink(target, link)
        }
        fn unlink(&self, p: &Path) -> io::Result<()> {
            self.check("unlink", p)?;
            // Attributes cannot be removed; only links can.
            if std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file()) {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            HostFs.unlink(p)
        }
        fn read_link(&self, p: &Path) -> io::Result<PathBuf> {
            HostFs.read_link(p)
        }
        fn list(&self, p: &Path) -> io::Result<Vec<String>> {
            HostFs.list(p)
        }
    }
}
