//! The alert journal on the pool (`<pool root>/.storage/health.json`): the alerts active now,
//! each with when it began, and the last events (raised, escalated, eased, cleared). It changes,
//! and is written, only when an alert does; a subject that could not be read keeps its alerts.

use crate::alert::{Alert, Severity};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Events kept; older ones are dropped first.
pub const MAX_EVENTS: usize = 200;

pub fn path(root: &Path, pool: &str) -> PathBuf {
    root.join(pool).join(".storage").join("health.json")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Active {
    #[serde(flatten)]
    pub alert: Alert,
    /// When it was first raised (seconds since the epoch).
    pub since: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Raised,
    Escalated,
    Eased,
    Cleared,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Raised => "raised",
            Change::Escalated => "escalated",
            Change::Eased => "eased",
            Change::Cleared => "cleared",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Event {
    pub at: u64,
    pub change: Change,
    #[serde(flatten)]
    pub alert: Alert,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journal {
    #[serde(default)]
    pub active: Vec<Active>,
    #[serde(default)]
    pub events: Vec<Event>,
}

impl Journal {
    /// A missing journal is an empty one; a damaged one is an error naming the file.
    pub fn load(path: &Path) -> Result<Journal> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| Error::State {
                path: path.into(),
                msg: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Journal::default()),
            Err(source) => Err(Error::Io(platform::io("read", path)(source))),
        }
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        crate::record::write_atomic(path, &serde_json::to_vec_pretty(self).unwrap_or_default())
    }

    /// Brings the journal to `now_alerts` (all that hold now). Alerts under an `unknown` key
    /// prefix (subjects that could not be read) stand as they were. Returns what changed.
    pub fn update(&mut self, now_alerts: &[Alert], unknown: &[String], at: u64) -> Vec<Event> {
        let mut events = Vec::new();
        let mut next: Vec<Active> = Vec::new();
        for a in now_alerts {
            match self.active.iter().find(|x| x.alert.key == a.key) {
                Some(old) => {
                    if a.severity != old.alert.severity {
                        events.push(Event {
                            at,
                            change: if a.severity > old.alert.severity {
                                Change::Escalated
                            } else {
                                Change::Eased
                            },
                            alert: a.clone(),
                        });
                    }
                    next.push(Active {
                        alert: a.clone(),
                        since: old.since,
                    });
                }
                None => {
                    events.push(Event {
                        at,
                        change: Change::Raised,
                        alert: a.clone(),
                    });
                    next.push(Active {
                        alert: a.clone(),
                        since: at,
                    });
                }
            }
        }
        for old in &self.active {
            if now_alerts.iter().any(|a| a.key == old.alert.key) {
                continue;
            }
            if unknown
                .iter()
                .any(|p| old.alert.key.starts_with(p.as_str()))
            {
                next.push(old.clone());
            } else {
                events.push(Event {
                    at,
                    change: Change::Cleared,
                    alert: old.alert.clone(),
                });
            }
        }
        next.sort_by(|a, b| {
            b.alert
                .severity
                .cmp(&a.alert.severity)
                .then(a.alert.key.cmp(&b.alert.key))
        });
        self.active = next;
        self.events.extend(events.iter().cloned());
        if self.events.len() > MAX_EVENTS {
            let drop = self.events.len() - MAX_EVENTS;
            self.events.drain(..drop);
        }
        events
    }

    /// How many active alerts of each severity (notice, warning, critical).
    pub fn counts(&self) -> [usize; 3] {
        let mut c = [0; 3];
        for a in &self.active {
            c[a.alert.severity as usize] += 1;
        }
        c
    }

    pub fn worst(&self) -> Option<Severity> {
        self.active.iter().map(|a| a.alert.severity).max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(key: &str, severity: Severity) -> Alert {
        Alert {
            key: key.into(),
            severity,
            message: format!("{key} is {}", severity.as_str()),
        }
    }

    #[test]
    fn alerts_are_raised_escalated_eased_and_cleared_once_each() {
        use Severity::*;
        let mut j = Journal::default();
        let e = j.update(&[alert("pool:p:capacity", Notice)], &[], 100);
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].change, j.active[0].since), (Change::Raised, 100));
        // The same condition again changes nothing, so nothing is written.
        assert!(j
            .update(&[alert("pool:p:capacity", Notice)], &[], 200)
            .is_empty());
        let e = j.update(&[alert("pool:p:capacity", Critical)], &[], 300);
        assert_eq!(e[0].change, Change::Escalated);
        assert_eq!(j.active[0].since, 100, "an escalation is the same alert");
        let e = j.update(&[alert("pool:p:capacity", Warning)], &[], 400);
        assert_eq!(e[0].change, Change::Eased);
        let e = j.update(&[], &[], 500);
        assert_eq!(
            (e[0].change, e[0].alert.severity),
            (Change::Cleared, Warning)
        );
        assert!(j.active.is_empty());
        assert_eq!(j.events.len(), 4);
        assert_eq!(j.counts(), [0, 0, 0]);
    }

    #[test]
    fn a_subject_that_could_not_be_read_keeps_its_alerts() {
        use Severity::*;
        let mut j = Journal::default();
        j.update(
            &[
                alert("disk:A:critical-warning", Critical),
                alert("disk:B:temperature", Warning),
            ],
            &[],
            1,
        );
        // A's report could not be read this time: unknown is not healthy.
        let e = j.update(
            &[alert("disk:A:unreadable", Warning)],
            &["disk:A:".into()],
            2,
        );
        let changes: Vec<(&str, Change)> =
            e.iter().map(|x| (x.alert.key.as_str(), x.change)).collect();
        assert_eq!(
            changes,
            [
                ("disk:A:unreadable", Change::Raised),
                ("disk:B:temperature", Change::Cleared)
            ]
        );
        assert_eq!(j.active[0].alert.key, "disk:A:critical-warning");
        assert_eq!(j.worst(), Some(Critical));
        assert_eq!(j.counts(), [0, 1, 1]);
    }

    #[test]
    fn the_event_list_is_bounded_and_the_file_round_trips_or_is_refused() {
        let mut j = Journal::default();
        for i in 0..(MAX_EVENTS as u64 + 50) {
            j.update(&[alert(&format!("k{}", i % 2), Severity::Notice)], &[], i);
        }
        assert_eq!(j.events.len(), MAX_EVENTS);
        assert_eq!(j.events.last().unwrap().at, MAX_EVENTS as u64 + 49);
        let t = tempfile::tempdir().unwrap();
        let p = path(t.path(), "persist");
        assert_eq!(Journal::load(&p).unwrap(), Journal::default());
        j.save(&p).unwrap();
        assert_eq!(Journal::load(&p).unwrap(), j);
        std::fs::write(&p, b"{\"active\": 3}").unwrap();
        let e = Journal::load(&p).unwrap_err().to_string();
        assert!(e.contains("health.json"), "{e}");
    }
}
