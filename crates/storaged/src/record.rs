//! The maintenance history kept on the pool (`<pool>/.storage/maintenance.json`): what was started,
//! when it ended and how. The pool's own scan record is overwritten by the next resilver, so the
//! last scrub is kept here too. Written whole (temporary file, fsync, rename): a power cut leaves
//! the old history or the new one.

use crate::error::{Error, Result};
use crate::pool::PoolState;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const MAX_HISTORY: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Scrub,
    Trim,
    /// The drives' own self-tests: recorded when started (the drives keep the results).
    Selftest,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Scrub => "scrub",
            Op::Trim => "trim",
            Op::Selftest => "selftest",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub op: Op,
    pub started: u64,
    #[serde(default)]
    pub ended: Option<u64>,
    /// `ok`, `N errors`, `canceled`, `interrupted by a resilver`.
    #[serde(default)]
    pub result: Option<String>,
    /// `storaged` when the schedule started it, `zpool` when it was found done by hand.
    pub by: String,
}

impl Entry {
    /// Finished with the whole pool read (or trimmed), errors or not.
    pub fn completed(&self) -> bool {
        self.ended.is_some()
            && self
                .result
                .as_deref()
                .is_some_and(|r| r == "ok" || r.ends_with(" errors"))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub history: Vec<Entry>,
}

/// Writes `body` to `path` whole or not at all (a power cut leaves the old file or the new one).
pub fn write_atomic(path: &Path, body: &[u8]) -> Result<()> {
    Ok(platform::fsx::write_atomic(path, body, None)?)
}

pub fn path(root: &Path, pool: &str) -> PathBuf {
    root.join(pool).join(".storage").join("maintenance.json")
}

impl Record {
    /// A missing history is an empty one; an unreadable one is an error naming the file.
    pub fn load(path: &Path) -> Result<Record> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| Error::State {
                path: path.into(),
                msg: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Record::default()),
            Err(source) => Err(Error::Io(platform::io("read", path)(source))),
        }
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, &serde_json::to_vec_pretty(self).unwrap_or_default())
    }

    pub fn open(&self, op: Op) -> Option<&Entry> {
        self.history
            .iter()
            .rev()
            .find(|e| e.op == op && e.ended.is_none())
    }

    pub fn start(&mut self, op: Op, now: u64) {
        self.push(Entry {
            op,
            started: now,
            ended: None,
            result: None,
            by: "storaged".into(),
        });
    }

    /// Records `op` as started and done at once, with what came of starting it (self-tests run
    /// in the drives, which keep their own results).
    pub fn started_and_done(&mut self, op: Op, now: u64, result: String) {
        self.push(Entry {
            op,
            started: now,
            ended: Some(now),
            result: Some(result),
            by: "storaged".into(),
        });
    }

    /// The newest entry of `op`, done or not.
    pub fn last_started(&self, op: Op) -> Option<&Entry> {
        self.history
            .iter()
            .filter(|e| e.op == op)
            .max_by_key(|e| e.started)
    }

    fn push(&mut self, e: Entry) {
        self.history.push(e);
        let over = self.history.len().saturating_sub(MAX_HISTORY);
        self.history.drain(..over);
    }

    /// When `op` last completed, by the schedule or by hand.
    pub fn last_done(&self, op: Op) -> Option<&Entry> {
        self.history
            .iter()
            .filter(|e| e.op == op && e.completed())
            .max_by_key(|e| e.ended)
    }

    /// Brings the history up to date with the pool: closes what has ended, and adds a scrub that
    /// finished without the schedule (so a scrub by hand counts). Returns the entries that ended
    /// (or were found ended) in this look.
    pub fn observe(&mut self, pool: &PoolState, now: u64) -> Vec<Entry> {
        let before = self.clone();
        let scan = pool.scan.as_ref();
        if let Some(i) = self
            .history
            .iter()
            .rposition(|e| e.op == Op::Scrub && e.ended.is_none())
        {
            let e = &mut self.history[i];
            // A scan that began before this entry is an older one (the clock has seconds only).
            if let Some(s) = scan.filter(|s| !s.running() && s.start + 1 >= e.started) {
                e.ended = Some(if s.end > 0 { s.end } else { now });
                e.result = Some(if !s.is_scrub() {
                    "interrupted by a resilver".into()
                } else if s.state == "FINISHED" {
                    scan_result(s.errors)
                } else {
                    s.state.to_lowercase()
                });
            }
        }
        if let Some(s) = scan.filter(|s| s.is_scrub() && s.state == "FINISHED" && s.end > 0) {
            if !self
                .history
                .iter()
                .any(|e| e.op == Op::Scrub && e.ended == Some(s.end))
            {
                self.push(Entry {
                    op: Op::Scrub,
                    started: s.start,
                    ended: Some(s.end),
                    result: Some(scan_result(s.errors)),
                    by: "zpool".into(),
                });
            }
        }
        if let Some(i) = self
            .history
            .iter()
            .rposition(|e| e.op == Op::Trim && e.ended.is_none())
        {
            let e = &mut self.history[i];
            let trims: Vec<_> = pool.leaves.iter().filter(|l| !l.trim_notsup).collect();
            if !trims.iter().any(|l| l.trimming()) {
                let done = trims
                    .iter()
                    .all(|l| l.trim_state == "COMPLETE" && l.trim_time + 1 >= e.started);
                let errors: u64 = trims.iter().map(|l| l.trim_errors).sum();
                e.ended = Some(
                    trims
                        .iter()
                        .map(|l| l.trim_time)
                        .max()
                        .filter(|t| done && *t > 0)
                        .unwrap_or(now),
                );
                e.result = Some(if done {
                    scan_result(errors)
                } else {
                    trims
                        .iter()
                        .find(|l| l.trim_state != "COMPLETE")
                        .map(|l| l.trim_state.to_lowercase())
                        .unwrap_or_else(|| "not started".into())
                });
            }
        }
        self.history
            .iter()
            .filter(|e| e.ended.is_some() && !before.history.contains(e))
            .cloned()
            .collect()
    }
}

fn scan_result(errors: u64) -> String {
    if errors == 0 {
        "ok".into()
    } else {
        format!("{errors} errors")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::pool::{Leaf, Scan};

    pub(crate) fn pool(scan: Option<Scan>, trim: &[(&str, u64)]) -> PoolState {
        PoolState {
            name: "p".into(),
            state: "ONLINE".into(),
            scan,
            leaves: trim
                .iter()
                .enumerate()
                .map(|(i, (st, t))| Leaf {
                    name: format!("d{i}"),
                    guid: i as u64 + 1,
                    group: None,
                    group_state: "ONLINE".into(),
                    size: 1 << 30,
                    path: None,
                    state: "ONLINE".into(),
                    read_errors: 0,
                    write_errors: 0,
                    checksum_errors: 0,
                    trim_state: st.to_string(),
                    trim_time: *t,
                    trimmed: 0,
                    to_trim: 0,
                    trim_notsup: *st == "NOTSUP",
                    trim_errors: 0,
                })
                .collect(),
            error_count: 0,
        }
    }

    pub(crate) fn scan(f: &str, st: &str, start: u64, end: u64, errors: u64) -> Scan {
        Scan {
            function: f.into(),
            state: st.into(),
            start,
            end,
            examined: 50,
            to_examine: 100,
            errors,
            paused: false,
        }
    }

    #[test]
    fn a_started_scrub_closes_when_the_pool_says_it_finished_not_before() {
        let mut r = Record::default();
        r.start(Op::Scrub, 100);
        assert!(r
            .observe(&pool(Some(scan("SCRUB", "SCANNING", 100, 0, 0)), &[]), 150)
            .is_empty());
        assert!(r.open(Op::Scrub).is_some());
        // An older finished scan is not this one.
        let mut r2 = r.clone();
        r2.observe(&pool(Some(scan("SCRUB", "FINISHED", 10, 20, 0)), &[]), 150);
        assert!(r2.open(Op::Scrub).is_some());
        let ended = r.observe(
            &pool(Some(scan("SCRUB", "FINISHED", 100, 200, 3)), &[]),
            250,
        );
        assert_eq!(ended.len(), 1);
        assert!(r.open(Op::Scrub).is_none());
        let last = r.last_done(Op::Scrub).unwrap();
        assert_eq!(
            (last.ended, last.result.as_deref()),
            (Some(200), Some("3 errors"))
        );
        assert_eq!(r.history.len(), 1, "not counted twice");
        let again = r.observe(
            &pool(Some(scan("SCRUB", "FINISHED", 100, 200, 3)), &[]),
            300,
        );
        assert!(again.is_empty(), "an ended scrub is said once");
    }

    #[test]
    fn a_scrub_by_hand_counts_and_a_resilver_or_cancel_is_not_a_scrub() {
        let mut r = Record::default();
        assert_eq!(
            r.observe(&pool(Some(scan("SCRUB", "FINISHED", 5, 9, 0)), &[]), 10)
                .len(),
            1
        );
        assert_eq!(r.last_done(Op::Scrub).unwrap().by, "zpool");
        r.start(Op::Scrub, 20);
        r.observe(
            &pool(Some(scan("RESILVER", "FINISHED", 21, 30, 0)), &[]),
            31,
        );
        assert_eq!(
            r.history[1].result.as_deref(),
            Some("interrupted by a resilver")
        );
        r.start(Op::Scrub, 40);
        r.observe(&pool(Some(scan("SCRUB", "CANCELED", 40, 45, 0)), &[]), 46);
        assert_eq!(r.history[2].result.as_deref(), Some("canceled"));
        assert_eq!(r.last_done(Op::Scrub).unwrap().ended, Some(9));
    }

    #[test]
    fn a_trim_closes_once_every_device_that_can_trim_has_and_says_when_one_stopped() {
        let mut r = Record::default();
        r.start(Op::Trim, 100);
        assert!(r
            .observe(&pool(None, &[("ACTIVE", 0), ("NOTSUP", 0)]), 110)
            .is_empty());
        assert_eq!(
            r.observe(&pool(None, &[("COMPLETE", 120), ("NOTSUP", 0)]), 130)
                .len(),
            1
        );
        let e = r.last_done(Op::Trim).unwrap();
        assert_eq!((e.ended, e.result.as_deref()), (Some(120), Some("ok")));
        r.start(Op::Trim, 200);
        r.observe(&pool(None, &[("CANCELED", 120)]), 210);
        assert_eq!(r.history[1].result.as_deref(), Some("canceled"));
    }

    #[test]
    fn history_round_trips_stays_bounded_and_a_damaged_file_is_an_error_naming_it() {
        let d = tempfile::tempdir().unwrap();
        let p = path(d.path(), "persist");
        assert_eq!(Record::load(&p).unwrap(), Record::default());
        let mut r = Record::default();
        for i in 0..40 {
            r.start(Op::Trim, i);
        }
        assert_eq!(r.history.len(), MAX_HISTORY);
        assert_eq!(r.history[0].started, 8);
        r.save(&p).unwrap();
        assert_eq!(Record::load(&p).unwrap(), r);
        std::fs::write(&p, "{\"history\": 3}").unwrap();
        let e = Record::load(&p).unwrap_err().to_string();
        assert!(e.contains("maintenance.json"), "{e}");
    }
}
