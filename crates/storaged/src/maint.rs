//! The pure maintenance decision: from the pool's state, the history and the schedule, what is
//! running, when each operation last completed and is next due, and what to start now (at most
//! one thing, and nothing while a scrub, resilver or trim runs).

use crate::pool::PoolState;
use crate::record::{Op, Record};
use serde::Serialize;
use storage::policy::interval_label;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Schedule {
    /// Seconds between scrubs; `None`: off.
    pub scrub_every: Option<u64>,
    pub trim_every: Option<u64>,
    pub selftest_every: Option<u64>,
    pub selftest: crate::selftest::Kind,
}

impl Schedule {
    pub fn from_policy(m: &storage::policy::Maintenance) -> Schedule {
        Schedule {
            scrub_every: m.scrub_secs(),
            trim_every: m.trim_secs(),
            selftest_every: m.selftest_secs(),
            selftest: if m.selftest_long() {
                crate::selftest::Kind::Long
            } else {
                crate::selftest::Kind::Short
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct OpView {
    pub every: Option<u64>,
    /// When it last completed (seconds since the epoch).
    pub last: Option<u64>,
    pub last_result: Option<String>,
    pub next: Option<u64>,
    /// Why it is not scheduled, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct View {
    pub pool: String,
    /// What runs now: `scrub 45%`, `resilver 10%`, `trim 80%`, `scrub paused`.
    pub running: Option<String>,
    pub scrub: OpView,
    pub trim: OpView,
    /// The drives' self-tests: `last` is when storaged last started them (results: `disk list`).
    pub selftest: OpView,
    /// What to start now.
    pub start: Option<Op>,
    /// Why nothing may start (the pool is not healthy enough).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    /// When this view was taken (for "3 h ago" in the text).
    pub at: u64,
}

impl View {
    /// The earliest time something falls due, for the daemon's sleep.
    pub fn next_due(&self) -> Option<u64> {
        [self.scrub.next, self.trim.next, self.selftest.next]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn render(&self) -> String {
        let when =
            |t: Option<u64>| t.map_or("never".to_string(), |t| platform::units::when(t, self.at));
        let line = |name: &str, o: &OpView| match o.every {
            None => format!("  {name}: off\n"),
            Some(e) => format!(
                "  {name} every {}: last {}{}, next {}\n",
                interval_label(e),
                when(o.last),
                o.last_result
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default(),
                o.note.clone().unwrap_or_else(|| when(o.next))
            ),
        };
        let mut s = format!("maintenance ({}):\n", self.pool);
        s.push_str(&line("scrub", &self.scrub));
        s.push_str(&line("trim", &self.trim));
        s.push_str(&line("selftest", &self.selftest));
        if let Some(r) = &self.running {
            s.push_str(&format!("  running: {r}\n"));
        }
        if let Some(h) = &self.held {
            s.push_str(&format!("  held: {h}\n"));
        }
        s
    }
}

/// Maintenance an operator asks for now (`storagectl scrub now|stop`, `trim now`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ask {
    ScrubNow,
    ScrubStop,
    TrimNow,
}

impl Ask {
    pub fn as_str(self) -> &'static str {
        match self {
            Ask::ScrubNow => "scrub now",
            Ask::ScrubStop => "scrub stop",
            Ask::TrimNow => "trim now",
        }
    }
}

/// Pure: whether `ask` may run on the pool as it is at `now`; the refusal says why. A paused
/// scrub resumes with `scrub now`; a resilver is never stopped or joined.
pub fn allow(pool: &PoolState, ask: Ask, now: u64) -> Result<(), String> {
    let scan = pool.scan.as_ref().filter(|s| s.running());
    let running = |s: &crate::pool::Scan| {
        format!(
            "a {} is running ({})",
            s.function.to_lowercase(),
            s.progress(now)
        )
    };
    let trimming = pool.leaves.iter().any(|l| l.trimming());
    match ask {
        Ask::ScrubNow => match scan {
            Some(s) if !(s.function == "SCRUB" && s.paused) => {
                Err(format!("{}: a scrub waits until it ends", running(s)))
            }
            _ => Ok(()),
        },
        Ask::ScrubStop => match scan {
            Some(s) if s.function == "SCRUB" => Ok(()),
            Some(s) => Err(format!("{}, which is not stopped by hand", running(s))),
            None => Err("no scrub is running".into()),
        },
        Ask::TrimNow => {
            if !pool.leaves.is_empty() && pool.leaves.iter().all(|l| l.trim_notsup) {
                Err("no member of the pool supports TRIM".into())
            } else if trimming {
                Err("a trim is running already".into())
            } else {
                Ok(())
            }
        }
    }
}

/// `created` is the pool's creation time: a never-scrubbed pool is first due an interval after it.
pub fn decide(pool: &PoolState, rec: &Record, created: u64, sched: &Schedule, now: u64) -> View {
    let scan = pool.scan.as_ref();
    let mut running = None;
    if let Some(s) = scan.filter(|s| s.running()) {
        let what = s.function.to_lowercase();
        running = Some(if s.paused {
            format!("{what} paused")
        } else {
            format!("{what} {}", s.progress(now))
        });
    }
    let trims: Vec<_> = pool.leaves.iter().filter(|l| !l.trim_notsup).collect();
    if running.is_none() && trims.iter().any(|l| l.trimming()) {
        let (done, all) = trims
            .iter()
            .fold((0u64, 0u64), |(d, a), l| (d + l.trimmed, a + l.to_trim));
        running = Some(format!(
            "trim {:.0}%",
            if all == 0 {
                0.0
            } else {
                done as f64 * 100.0 / all as f64
            }
        ));
    }

    // The last scrub: the history's, or the pool's own record when that is newer.
    let hist = rec.last_done(Op::Scrub);
    let pool_scrub = scan.filter(|s| s.is_scrub() && s.state == "FINISHED" && s.end > 0);
    let (last_scrub, scrub_result) = match (hist, pool_scrub) {
        (Some(h), Some(p)) if p.end > h.ended.unwrap_or(0) => (Some(p.end), None),
        (Some(h), _) => (h.ended, h.result.clone()),
        (None, Some(p)) => (Some(p.end), None),
        (None, None) => (None, None),
    };
    let scrub_result = scrub_result.or_else(|| {
        pool_scrub.map(|p| {
            if p.errors == 0 {
                "ok".into()
            } else {
                format!("{} errors", p.errors)
            }
        })
    });
    let scrub = OpView {
        every: sched.scrub_every,
        last: last_scrub,
        last_result: scrub_result,
        next: sched
            .scrub_every
            .map(|e| last_scrub.unwrap_or(created).saturating_add(e)),
        note: None,
    };

    // A trim is due an interval after the device trimmed longest ago (a new disk: never).
    let last_trim = if trims.is_empty() || trims.iter().any(|l| l.trim_time == 0) {
        None
    } else {
        trims.iter().map(|l| l.trim_time).min()
    };
    let trim_note = trims
        .is_empty()
        .then(|| "not supported by the pool's devices".to_string());
    let trim = OpView {
        every: sched.trim_every,
        last: last_trim,
        last_result: rec.last_done(Op::Trim).and_then(|e| e.result.clone()),
        next: sched
            .trim_every
            .filter(|_| trim_note.is_none())
            .map(|e| last_trim.unwrap_or(created).saturating_add(e)),
        note: trim_note,
    };

    // Self-tests: an interval after storaged last started them (a new pool: after creation).
    let last_selftest = rec.last_started(Op::Selftest);
    let selftest = OpView {
        every: sched.selftest_every,
        last: last_selftest.map(|e| e.started),
        last_result: last_selftest.and_then(|e| e.result.clone()),
        next: sched.selftest_every.map(|e| {
            last_selftest
                .map_or(created, |l| l.started)
                .saturating_add(e)
        }),
        note: None,
    };

    let held = match pool.state.as_str() {
        "ONLINE" | "DEGRADED" => None,
        s => Some(format!("pool {} is {s}", pool.name)),
    };
    let due = |o: &OpView| o.next.is_some_and(|n| now >= n);
    let start = if running.is_some() || held.is_some() {
        None
    } else if due(&scrub) {
        Some(Op::Scrub)
    } else if due(&trim) {
        Some(Op::Trim)
    } else if due(&selftest) {
        Some(Op::Selftest)
    } else {
        None
    };
    View {
        pool: pool.name.clone(),
        running,
        scrub,
        trim,
        selftest,
        start,
        held,
        at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::{pool, scan};

    const DAY: u64 = 86_400;
    fn sched() -> Schedule {
        Schedule {
            scrub_every: Some(35 * DAY),
            trim_every: Some(7 * DAY),
            ..Schedule::default()
        }
    }

    #[test]
    fn self_tests_fall_due_an_interval_after_the_last_start_and_wait_for_scans() {
        let weekly = Schedule {
            selftest_every: Some(7 * DAY),
            ..Schedule::default()
        };
        let p = pool(None, &[("NOTSUP", 0)]);
        let mut r = Record::default();
        let v = decide(&p, &r, 0, &weekly, 6 * DAY);
        assert_eq!((v.start, v.selftest.next), (None, Some(7 * DAY)));
        assert_eq!(
            decide(&p, &r, 0, &weekly, 7 * DAY).start,
            Some(Op::Selftest)
        );
        r.started_and_done(Op::Selftest, 7 * DAY, "started on sda".into());
        let v = decide(&p, &r, 0, &weekly, 8 * DAY);
        assert_eq!(v.start, None);
        assert_eq!(v.selftest.next, Some(14 * DAY));
        assert!(
            v.render().contains("selftest every 1w: last")
                && v.render().contains("(started on sda)"),
            "{}",
            v.render()
        );
        let busy = pool(
            Some(scan("RESILVER", "SCANNING", 0, 0, 0)),
            &[("NOTSUP", 0)],
        );
        assert_eq!(decide(&busy, &r, 0, &weekly, 30 * DAY).start, None);
        assert!(decide(&p, &r, 0, &Schedule::default(), 30 * DAY)
            .render()
            .contains("selftest: off"));
    }

    #[test]
    fn maintenance_by_hand_is_refused_when_the_pool_is_busy_and_says_why() {
        let idle = pool(None, &[("UNTRIMMED", 0)]);
        assert_eq!(allow(&idle, Ask::ScrubNow, 10), Ok(()));
        assert_eq!(allow(&idle, Ask::TrimNow, 10), Ok(()));
        assert_eq!(
            allow(&idle, Ask::ScrubStop, 10).unwrap_err(),
            "no scrub is running"
        );
        // A resilver half done after 50 s: 1 byte/s, 50 s left; neither joined nor stopped.
        let resilver = pool(
            Some(scan("RESILVER", "SCANNING", 0, 0, 0)),
            &[("UNTRIMMED", 0)],
        );
        let e = allow(&resilver, Ask::ScrubNow, 50).unwrap_err();
        assert!(
            e.starts_with("a resilver is running (50% at 1B/s, 50 s left)"),
            "{e}"
        );
        assert!(allow(&resilver, Ask::ScrubStop, 50)
            .unwrap_err()
            .contains("not stopped by hand"));
        let scrub = pool(Some(scan("SCRUB", "SCANNING", 0, 0, 0)), &[("ACTIVE", 0)]);
        assert_eq!(allow(&scrub, Ask::ScrubStop, 50), Ok(()));
        assert!(allow(&scrub, Ask::ScrubNow, 50).is_err());
        assert_eq!(
            allow(&scrub, Ask::TrimNow, 50).unwrap_err(),
            "a trim is running already"
        );
        let mut paused = scan("SCRUB", "SCANNING", 0, 0, 0);
        paused.paused = true;
        assert_eq!(
            allow(&pool(Some(paused), &[]), Ask::ScrubNow, 50),
            Ok(()),
            "a paused scrub resumes"
        );
        let mut nosup = pool(None, &[("UNTRIMMED", 0)]);
        nosup.leaves[0].trim_notsup = true;
        assert!(allow(&nosup, Ask::TrimNow, 0)
            .unwrap_err()
            .contains("supports TRIM"));
    }

    #[test]
    fn a_new_pool_is_first_trimmed_a_week_and_scrubbed_35_days_after_creation() {
        let p = pool(None, &[("UNTRIMMED", 0), ("UNTRIMMED", 0)]);
        let r = Record::default();
        let v = decide(&p, &r, 1000, &sched(), 1000 + DAY);
        assert_eq!(v.start, None);
        assert_eq!(v.scrub.next, Some(1000 + 35 * DAY));
        assert_eq!(v.trim.next, Some(1000 + 7 * DAY));
        assert_eq!(v.next_due(), Some(1000 + 7 * DAY));
        let v = decide(&p, &r, 1000, &sched(), 1000 + 8 * DAY);
        assert_eq!(v.start, Some(Op::Trim));
        let v = decide(&p, &r, 1000, &sched(), 1000 + 36 * DAY);
        assert_eq!(
            v.start,
            Some(Op::Scrub),
            "the scrub first when both are due"
        );
    }

    #[test]
    fn nothing_starts_while_a_scan_or_a_trim_runs_or_the_pool_is_faulted() {
        let r = Record::default();
        let late = 100 * DAY;
        let mut p = pool(
            Some(scan("RESILVER", "SCANNING", 1, 0, 0)),
            &[("UNTRIMMED", 0)],
        );
        let v = decide(&p, &r, 0, &sched(), late);
        assert_eq!(
            (v.start, v.running.as_deref()),
            (None, Some("resilver 50%"))
        );
        p.scan = None;
        p.leaves[0].trim_state = "ACTIVE".into();
        (p.leaves[0].trimmed, p.leaves[0].to_trim) = (1, 4);
        let v = decide(&p, &r, 0, &sched(), late);
        assert_eq!((v.start, v.running.as_deref()), (None, Some("trim 25%")));
        p.leaves[0].trim_state = "COMPLETE".into();
        p.state = "SUSPENDED".into();
        let v = decide(&p, &r, 0, &sched(), late);
        assert!(v.start.is_none() && v.held.as_deref() == Some("pool p is SUSPENDED"));
        let mut s = scan("SCRUB", "SCANNING", 1, 0, 0);
        s.paused = true;
        p.state = "ONLINE".into();
        p.scan = Some(s);
        let v = decide(&p, &r, 0, &sched(), late);
        assert_eq!(
            (v.start, v.running.as_deref()),
            (None, Some("scrub paused"))
        );
    }

    #[test]
    fn the_last_scrub_survives_a_resilver_through_the_history() {
        let mut r = Record::default();
        r.observe(
            &pool(
                Some(scan("SCRUB", "FINISHED", 10 * DAY, 10 * DAY + 5, 0)),
                &[],
            ),
            11 * DAY,
        );
        let p = pool(
            Some(scan("RESILVER", "FINISHED", 20 * DAY, 20 * DAY + 9, 0)),
            &[],
        );
        let v = decide(&p, &r, 0, &sched(), 30 * DAY);
        assert_eq!(v.scrub.last, Some(10 * DAY + 5));
        assert_eq!(
            v.scrub.next,
            Some(45 * DAY + 5),
            "not due just because a resilver ran"
        );
        assert_eq!(v.start, None);
        assert_eq!(v.scrub.last_result.as_deref(), Some("ok"));
    }

    #[test]
    fn trim_follows_the_device_trimmed_longest_ago_and_is_off_without_support() {
        let r = Record::default();
        let p = pool(
            None,
            &[
                ("COMPLETE", 10 * DAY),
                ("COMPLETE", 12 * DAY),
                ("NOTSUP", 0),
            ],
        );
        let v = decide(&p, &r, 0, &sched(), 16 * DAY);
        assert_eq!(v.trim.last, Some(10 * DAY));
        assert_eq!(v.start, None);
        assert_eq!(decide(&p, &r, 0, &sched(), 17 * DAY).start, Some(Op::Trim));
        // A new disk joins: never trimmed, so due now.
        let p2 = pool(None, &[("COMPLETE", 10 * DAY), ("UNTRIMMED", 0)]);
        assert_eq!(decide(&p2, &r, 0, &sched(), 11 * DAY).start, Some(Op::Trim));
        let p3 = pool(None, &[("NOTSUP", 0)]);
        let trim_only = Schedule {
            scrub_every: None,
            ..sched()
        };
        let v = decide(&p3, &r, 0, &trim_only, 100 * DAY);
        assert!(v.trim.next.is_none() && v.start.is_none());
        assert!(v.render().contains("not supported"), "{}", v.render());
    }

    #[test]
    fn off_means_never_and_reads_as_off() {
        let r = Record::default();
        let p = pool(None, &[("UNTRIMMED", 0)]);
        let off = Schedule::default();
        let v = decide(&p, &r, 0, &off, 1000 * DAY);
        assert_eq!((v.start, v.next_due()), (None, None));
        assert!(v.render().contains("scrub: off"), "{}", v.render());
    }
}
