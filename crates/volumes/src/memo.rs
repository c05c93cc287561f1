//! Parsed files kept by path while the file is the same one (its inode, size, mtime and ctime):
//! what lets a pass re-read only the spec and identity files that changed.

use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Identifies one version of a file: a rename into place changes the inode, an in-place write
/// the ctime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileKey {
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileKey {
    pub fn of(m: &std::fs::Metadata) -> FileKey {
        FileKey {
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// Parsed files by path, each valid while its [`FileKey`] holds.
#[derive(Debug)]
pub struct Memo<T> {
    m: Mutex<HashMap<PathBuf, (FileKey, T)>>,
}

impl<T> Default for Memo<T> {
    fn default() -> Self {
        Memo {
            m: Mutex::new(HashMap::new()),
        }
    }
}

/// How [`Memo::get`] found a file.
#[derive(Debug, PartialEq, Eq)]
pub enum Found<T> {
    Missing,
    Cached(T),
    /// Changed or new: the caller parses it and may [`Memo::put`] the result under the key.
    Changed(FileKey),
}

impl<T: Clone> Memo<T> {
    pub fn get(&self, path: &Path) -> std::io::Result<Found<T>> {
        let mut m = self.m.lock().unwrap_or_else(|e| e.into_inner());
        match std::fs::metadata(path) {
            Ok(md) => {
                let k = FileKey::of(&md);
                match m.get(path) {
                    Some((had, v)) if *had == k => Ok(Found::Cached(v.clone())),
                    _ => Ok(Found::Changed(k)),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                m.remove(path);
                Ok(Found::Missing)
            }
            Err(e) => Err(e),
        }
    }
    pub fn put(&self, path: &Path, key: FileKey, v: T) {
        let mut m = self.m.lock().unwrap_or_else(|e| e.into_inner());
        m.insert(path.to_path_buf(), (key, v));
    }
    /// Forgets files not in `keep` (removed specs), so the memo stays the size of what exists.
    pub fn retain(&self, keep: &BTreeSet<PathBuf>) {
        let mut m = self.m.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|p, _| keep.contains(p));
    }
    pub fn len(&self) -> usize {
        self.m.lock().map(|m| m.len()).unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_file_is_parsed_again_only_when_it_changed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.toml");
        let m: Memo<u32> = Memo::default();
        assert_eq!(m.get(&p).unwrap(), Found::Missing);
        std::fs::write(&p, "1").unwrap();
        let Found::Changed(k) = m.get(&p).unwrap() else {
            panic!("a new file is read")
        };
        m.put(&p, k, 1);
        assert_eq!(m.get(&p).unwrap(), Found::Cached(1));
        // Same size, rewritten in place: the ctime moves.
        std::thread::sleep(Duration::from_millis(10));
        std::fs::write(&p, "2").unwrap();
        assert!(matches!(m.get(&p).unwrap(), Found::Changed(_)));
        // Replaced by rename: a new inode.
        let q = d.path().join("a.tmp");
        std::fs::write(&q, "3").unwrap();
        let Found::Changed(k) = m.get(&p).unwrap() else {
            panic!()
        };
        m.put(&p, k, 2);
        std::fs::rename(&q, &p).unwrap();
        assert!(matches!(m.get(&p).unwrap(), Found::Changed(_)));
        std::fs::remove_file(&p).unwrap();
        assert_eq!(m.get(&p).unwrap(), Found::Missing);
        assert!(m.is_empty(), "a removed file is forgotten");
    }
}
