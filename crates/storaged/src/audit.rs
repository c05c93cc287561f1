//! The audit journal: one JSON line per change asked of the management API (who, what, when, the result),
//! appended and flushed to the pool before the answer goes out, so a change that happened is on
//! record. It lives beside storaged's health journal, on the pool's clear root, so it can be
//! read while the vault is locked; it is rotated by size, keeping one older file. mgmtd writes
//! it; `storagectl audit` and `GET /v1/audit` read it.

use platform::io;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

/// Rotated past this size: `audit.jsonl` becomes `audit.jsonl.1`, `.1` becomes `.2`, and so on.
pub const MAX_BYTES: u64 = 4 << 20;
/// Older files kept.
pub const KEEP: usize = 8;

/// `<root>/<pool>/.storage/audit.jsonl`.
pub fn path(root: &Path, pool: &str) -> PathBuf {
    root.join(pool).join(".storage").join("audit.jsonl")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Entry {
    /// Pairs a change's `started` line with its outcome: a `started` line with no later line of
    /// the same id is a change whose outcome is unknown (the power was cut, say).
    #[serde(default)]
    pub id: u64,
    /// Seconds since the epoch.
    pub time: u64,
    /// `2026-12-07T01:02:03Z`.
    pub when: String,
    pub subject: String,
    pub fingerprint: String,
    pub role: String,
    pub method: String,
    pub path: String,
    /// The HTTP status answered; 0 on the line written before the change runs.
    pub status: u16,
    /// The error code, when it failed or was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What was asked: the query and the decoded body (never a secret: a recovery key is left
    /// out), shortened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

pub use platform::units::rfc3339;

#[derive(Debug, Clone)]
pub struct Journal {
    pub path: PathBuf,
    /// Rotated past this size ([`MAX_BYTES`] on the box).
    pub max_bytes: u64,
}

impl Journal {
    pub fn at(path: PathBuf) -> Journal {
        Journal {
            path,
            max_bytes: MAX_BYTES,
        }
    }

    /// Whether an entry can be written now (the pool's root is there): a change is refused when
    /// it could not be put on record.
    pub fn ready(&self) -> crate::error::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("/"));
        if dir.is_dir() {
            Ok(())
        } else {
            Err(io("open", dir)(std::io::Error::from(std::io::ErrorKind::NotFound)).into())
        }
    }

    /// Appends one line and flushes it to disk.
    pub fn append(&self, e: &Entry) -> crate::error::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        if std::fs::metadata(&self.path).is_ok_and(|m| m.len() > self.max_bytes) {
            for n in (1..KEEP).rev() {
                let from = self.generation(n);
                if from.exists() {
                    let to = self.generation(n + 1);
                    std::fs::rename(&from, &to).map_err(io("rename", &from))?;
                }
            }
            let old = self.generation(1);
            std::fs::rename(&self.path, &old).map_err(io("rename", &self.path))?;
        }
        let mut line = serde_json::to_vec(e).unwrap_or_default();
        line.push(b'\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(io("open", &self.path))?;
        f.write_all(&line).map_err(io("write", &self.path))?;
        f.sync_data().map_err(io("fsync", &self.path))?;
        Ok(())
    }

    /// `audit.jsonl.<n>`: the n-th older file.
    fn generation(&self, n: usize) -> PathBuf {
        self.path.with_extension(format!("jsonl.{n}"))
    }

    /// The last `n` entries, oldest first (from the rotated files too). A line that does not
    /// parse (a torn write at a power cut) is skipped.
    pub fn tail(&self, n: usize) -> crate::error::Result<Vec<Entry>> {
        let mut all = Vec::new();
        let files = (1..=KEEP)
            .rev()
            .map(|g| self.generation(g))
            .chain([self.path.clone()]);
        for p in files {
            let f = match std::fs::File::open(&p) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("open", &p)(e).into()),
            };
            for line in std::io::BufReader::new(f).lines() {
                let line = line.map_err(io("read", &p))?;
                if let Ok(e) = serde_json::from_str::<Entry>(&line) {
                    all.push(e);
                }
            }
        }
        let skip = all.len().saturating_sub(n);
        Ok(all.split_off(skip))
    }
}

/// The lines `storagectl audit` prints, oldest first.
pub fn render(entries: &[Entry]) -> String {
    entries
        .iter()
        .map(|e| {
            format!(
                "{}  {} ({})  {} {}  {}{}\n",
                e.when,
                e.subject,
                e.role,
                e.method,
                e.path,
                e.status,
                e.code
                    .as_deref()
                    .map(|c| format!(" {c}"))
                    .unwrap_or_default()
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64) -> Entry {
        Entry {
            id: i,
            time: i,
            when: rfc3339(i),
            subject: "CN=ops".into(),
            fingerprint: "AB".into(),
            role: "admin".into(),
            method: "POST".into(),
            path: "/v1/volumes".into(),
            status: 200,
            code: None,
            message: None,
            detail: None,
        }
    }

    #[test]
    fn appends_reads_back_and_skips_a_torn_line() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::at(d.path().join("audit.jsonl"));
        j.ready().unwrap();
        for i in 0..5 {
            j.append(&entry(i)).unwrap();
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(&j.path)
            .unwrap()
            .write_all(b"{\"time\":9")
            .unwrap();
        let t = j.tail(3).unwrap();
        assert_eq!(t.iter().map(|e| e.time).collect::<Vec<_>>(), vec![2, 3, 4]);
        assert_eq!(rfc3339(1_796_601_723), "2026-12-07T00:02:03Z");
    }

    #[test]
    fn rotation_keeps_a_bounded_number_of_files_and_reads_across_them() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal {
            path: d.path().join("audit.jsonl"),
            max_bytes: 300,
        };
        for i in 0..200 {
            j.append(&entry(i)).unwrap();
        }
        let files = std::fs::read_dir(d.path()).unwrap().count();
        assert_eq!(files, KEEP + 1);
        let t = j.tail(10_000).unwrap();
        // Oldest first, in order, and only the newest survive.
        assert!(
            t.windows(2).all(|w| w[0].time + 1 == w[1].time),
            "{:?}",
            t.iter().map(|e| e.time).collect::<Vec<_>>()
        );
        assert_eq!(t.last().unwrap().time, 199);
        assert!(t.first().unwrap().time > 0);
    }

    #[test]
    fn not_ready_without_the_pool() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::at(d.path().join("gone/.storage/audit.jsonl"));
        assert!(j.ready().is_err());
    }
}
