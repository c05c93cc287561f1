//! Volume snapshots: names, schedules and retention as pure functions over `zfs list -t snapshot`,
//! and the few zfs calls that take, list and destroy them. Scheduled snapshots are named
//! `auto-<every>-<UTC time>` and only those are ever pruned; a snapshot with a clone is never
//! destroyed. Order is ZFS's `createtxg`, not the clock: a box without a battery-backed clock may
//! boot in the past, and retention must still drop the oldest.

use crate::cmd::{CmdError, Tools, ZFS};
use crate::error::{Error, Result};
use crate::name::check_name;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Scheduled snapshots' prefix; a name given by hand may not use it.
pub const AUTO: &str = "auto-";
/// The shortest interval a schedule may ask for (each is a `zfs snapshot` and a list).
pub const MIN_EVERY: u64 = 10;
pub const MAX_KEEP: u32 = 1000;

/// One schedule of a volume's spec: a snapshot every `every` seconds, the newest `keep` kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Schedule {
    pub every: u64,
    pub keep: u32,
}

impl Schedule {
    /// The name prefix of this schedule's snapshots: `auto-1h-`.
    pub fn prefix(&self) -> String {
        format!("{AUTO}{}-", every_label(self.every))
    }
}

/// A schedule's interval: `30s`, `15m`, `1h`, `1d`, `1w`, at least [`MIN_EVERY`].
pub fn parse_every(s: &str) -> Result<u64, String> {
    platform::units::parse_interval(s, MIN_EVERY)
}

/// The largest unit that divides the interval: 3600 -> `1h`, 5400 -> `90m`.
pub fn every_label(secs: u64) -> String {
    platform::units::interval_label(secs)
}

/// Seconds since the epoch as `20261204T010203Z` (see [`platform::units::utc_stamp`]).
pub fn stamp(epoch: u64) -> String {
    platform::units::utc_stamp(epoch)
}

/// A snapshot name given by hand: a volume-name-like word that is not a scheduled one's.
pub fn check_snap_name(s: &str) -> Result<(), String> {
    check_name(s)?;
    if s.starts_with(AUTO) {
        return Err(format!(
            "`{s}` starts with `{AUTO}`, which is kept for scheduled snapshots"
        ));
    }
    Ok(())
}

/// `VOLUME@SNAP`, both parts checked as names.
pub fn parse_ref(s: &str) -> Result<(String, String), String> {
    let (v, snap) = s
        .split_once('@')
        .ok_or_else(|| format!("`{s}` is not VOLUME@SNAPSHOT"))?;
    check_name(v)?;
    check_name(snap)?;
    Ok((v.into(), snap.into()))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Snapshot {
    pub dataset: String,
    pub name: String,
    /// Seconds since the epoch (ZFS's `creation`).
    pub creation: u64,
    pub createtxg: u64,
    /// Bytes only this snapshot holds (freed by destroying it).
    pub used: u64,
    /// Bytes of the volume it refers to.
    pub referenced: u64,
    /// Datasets cloned from it; while there are any it is not destroyed.
    pub clones: Vec<String>,
}

pub const LIST_PROPS: &str = "name,creation,createtxg,used,referenced,clones";

/// `zfs list -H -p -t snapshot -o LIST_PROPS`, oldest first within each dataset.
pub fn parse_list(out: &str) -> Result<Vec<Snapshot>, String> {
    let mut v = Vec::new();
    for l in out.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = l.split('\t').collect();
        if f.len() != 6 {
            return Err(format!("expected 6 fields, got {}: `{l}`", f.len()));
        }
        let (ds, name) = f[0]
            .split_once('@')
            .ok_or_else(|| format!("`{}` is not a snapshot: `{l}`", f[0]))?;
        let n = |i: usize| {
            f[i].parse::<u64>()
                .map_err(|_| format!("field {} is not a number: `{l}`", i + 1))
        };
        v.push(Snapshot {
            dataset: ds.into(),
            name: name.into(),
            creation: n(1)?,
            createtxg: n(2)?,
            used: n(3)?,
            referenced: n(4)?,
            clones: f[5]
                .split(',')
                .filter(|c| !c.is_empty() && *c != "-")
                .map(String::from)
                .collect(),
        });
    }
    v.sort_by(|a, b| (&a.dataset, a.createtxg).cmp(&(&b.dataset, b.createtxg)));
    Ok(v)
}

/// Whether `sched` wants a new snapshot of a volume whose snapshots are `snaps` (its own, oldest
/// first) at `now`. A newest one dated more than an interval ahead means the clock went back:
/// waiting for it would stop the schedule, so that counts as due.
pub fn due(sched: &Schedule, snaps: &[Snapshot], now: u64) -> bool {
    let prefix = sched.prefix();
    match snaps.iter().rev().find(|s| s.name.starts_with(&prefix)) {
        None => true,
        Some(s) => now >= s.creation + sched.every || s.creation > now + sched.every,
    }
}

/// When `sched`'s next snapshot is due (seconds since the epoch), for the daemon's sleep.
pub fn next_due(sched: &Schedule, snaps: &[Snapshot], now: u64) -> u64 {
    let prefix = sched.prefix();
    match snaps.iter().rev().find(|s| s.name.starts_with(&prefix)) {
        Some(s) if s.creation <= now + sched.every => s.creation + sched.every,
        _ => now,
    }
}

/// What retention removes: this schedule's snapshots beyond the newest `keep`, oldest first,
/// except those with clones (returned apart, with their clones, to be said).
pub fn prune<'a>(
    sched: &Schedule,
    snaps: &'a [Snapshot],
) -> (Vec<&'a Snapshot>, Vec<&'a Snapshot>) {
    let prefix = sched.prefix();
    let mine: Vec<&Snapshot> = snaps
        .iter()
        .filter(|s| s.name.starts_with(&prefix))
        .collect();
    let over = mine.len().saturating_sub(sched.keep as usize);
    mine[..over].iter().partition(|s| s.clones.is_empty())
}

fn run(t: &dyn Tools, args: &[&str]) -> Result<String> {
    let a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    Ok(t.run(ZFS, &a, None)?)
}

/// The snapshots of `datasets` (none listed when it is empty), oldest first per dataset.
pub fn list(t: &dyn Tools, datasets: &[String]) -> Result<Vec<Snapshot>> {
    if datasets.is_empty() {
        return Ok(Vec::new());
    }
    let mut a: Vec<String> = [
        "list", "-H", "-p", "-t", "snapshot", "-d", "1", "-o", LIST_PROPS,
    ]
    .map(String::from)
    .into();
    a.extend(datasets.iter().cloned());
    let out = t.run(ZFS, &a, None)?;
    parse_list(&out).map_err(|msg| {
        Error::Cmd(CmdError::Output {
            argv: format!("{ZFS} {}", a.join(" ")),
            msg,
        })
    })
}

/// Takes every `ds@name` at once: one transaction group, so snapshots due together are
/// consistent with each other.
pub fn take(t: &dyn Tools, full_names: &[String]) -> Result<()> {
    if full_names.is_empty() {
        return Ok(());
    }
    let mut a = vec!["snapshot"];
    a.extend(full_names.iter().map(String::as_str));
    run(t, &a).map(|_| ())
}

/// Destroys snapshots `names` of `ds` in one call (`ds@a,b,c`); never a dataset, never a clone.
pub fn destroy(t: &dyn Tools, ds: &str, names: &[&str]) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let spec = format!("{ds}@{}", names.join(","));
    run(t, &["destroy", &spec]).map(|_| ())
}

/// Rolls `ds` back to `snap`; `-r` (destroying newer snapshots) only when the caller has checked
/// that none of them has a clone and the operator asked for it.
pub fn rollback(t: &dyn Tools, ds: &str, snap: &str, destroy_newer: bool) -> Result<()> {
    let full = format!("{ds}@{snap}");
    if destroy_newer {
        run(t, &["rollback", "-r", &full])
    } else {
        run(t, &["rollback", &full])
    }
    .map(|_| ())
}

/// What one scheduler tick decided: snapshots to take, and per dataset the ones to destroy.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tick {
    pub take: Vec<String>,
    pub destroy: BTreeMap<String, Vec<String>>,
    /// `ds@snap` kept beyond its schedule's limit because it has clones.
    pub held: Vec<(String, Vec<String>)>,
    /// When the next snapshot falls due (seconds since the epoch), if any schedule exists.
    pub next: Option<u64>,
}

/// The pure decision for one tick: `vols` is each scheduled volume's dataset and schedules,
/// `snaps` every snapshot of those datasets. What is taken now is counted before pruning, so the
/// volume ends the tick with `keep` snapshots of each schedule.
pub fn decide(vols: &[(String, Vec<Schedule>)], snaps: &[Snapshot], now: u64) -> Tick {
    let mut t = Tick::default();
    for (ds, scheds) in vols {
        let mut own: Vec<Snapshot> = snaps.iter().filter(|s| &s.dataset == ds).cloned().collect();
        let top = own.iter().map(|s| s.createtxg).max().unwrap_or(0);
        for (i, sc) in scheds.iter().enumerate() {
            if due(sc, &own, now) {
                let name = format!("{}{}", sc.prefix(), stamp(now));
                if !own.iter().any(|s| s.name == name) {
                    t.take.push(format!("{ds}@{name}"));
                    own.push(Snapshot {
                        dataset: ds.clone(),
                        name,
                        creation: now,
                        createtxg: top + 1 + i as u64,
                        used: 0,
                        referenced: 0,
                        clones: Vec::new(),
                    });
                }
            }
            let (gone, held) = prune(sc, &own);
            for s in gone {
                t.destroy
                    .entry(ds.clone())
                    .or_default()
                    .push(s.name.clone());
            }
            for s in held {
                t.held.push((format!("{ds}@{}", s.name), s.clones.clone()));
            }
            let n = next_due(sc, &own, now);
            t.next = Some(t.next.map_or(n, |x| x.min(n)));
        }
    }
    t
}

/// The daemon's scheduler: what it knows of each scheduled volume's snapshots between passes,
/// so a tick with nothing due runs no command. A volume is listed when it is first scheduled,
/// when something of it falls due (read again first: a snapshot destroyed by hand counts), and
/// all again every `refresh` for changes made by hand.
#[derive(Debug)]
pub struct Scheduler {
    known: BTreeMap<String, Vec<Snapshot>>,
    refresh: std::time::Duration,
    listed: Option<std::time::Instant>,
}

/// What a tick did, for the log and the pass record.
#[derive(Debug, Default)]
pub struct Done {
    pub taken: Vec<String>,
    pub destroyed: Vec<String>,
    pub held: Vec<(String, Vec<String>)>,
    pub next: Option<u64>,
}

impl Scheduler {
    pub fn new(refresh: std::time::Duration) -> Scheduler {
        Scheduler {
            known: BTreeMap::new(),
            refresh,
            listed: None,
        }
    }

    fn relist(&mut self, tools: &dyn Tools, dss: &[String]) -> Result<()> {
        for d in dss {
            self.known.insert(d.clone(), Vec::new());
        }
        for sn in list(tools, dss)? {
            self.known.entry(sn.dataset.clone()).or_default().push(sn);
        }
        Ok(())
    }

    /// One tick over `vols` (each scheduled volume's zvol dataset, which exists, and its
    /// schedules) at `now`. On an error nothing is kept, so the next tick reads afresh.
    pub fn tick(
        &mut self,
        tools: &dyn Tools,
        vols: &[(String, Vec<Schedule>)],
        now: u64,
    ) -> Result<Done> {
        let r = self.tick_inner(tools, vols, now);
        if r.is_err() {
            self.known.clear();
            self.listed = None;
        }
        r
    }

    fn tick_inner(
        &mut self,
        tools: &dyn Tools,
        vols: &[(String, Vec<Schedule>)],
        now: u64,
    ) -> Result<Done> {
        if self.listed.is_none_or(|t| t.elapsed() >= self.refresh) {
            self.known.clear();
            self.listed = Some(std::time::Instant::now());
        }
        self.known.retain(|d, _| vols.iter().any(|(v, _)| v == d));
        let unknown: Vec<String> = vols
            .iter()
            .filter(|(d, _)| !self.known.contains_key(d))
            .map(|(d, _)| d.clone())
            .collect();
        if !unknown.is_empty() {
            self.relist(tools, &unknown)?;
        }
        let all: Vec<Snapshot> = self.known.values().flatten().cloned().collect();
        let planned = decide(vols, &all, now);
        let mut touched: Vec<String> = planned
            .take
            .iter()
            .filter_map(|t| t.split_once('@').map(|(d, _)| d.to_string()))
            .chain(planned.destroy.keys().cloned())
            .collect();
        touched.sort();
        touched.dedup();
        let mut done = Done {
            next: planned.next,
            held: planned.held,
            ..Done::default()
        };
        if touched.is_empty() {
            return Ok(done);
        }
        // Decided again on a fresh read of just those volumes.
        self.relist(tools, &touched)?;
        let fresh: Vec<Snapshot> = touched
            .iter()
            .flat_map(|d| self.known[d].iter().cloned())
            .collect();
        let due: Vec<(String, Vec<Schedule>)> = vols
            .iter()
            .filter(|(d, _)| touched.contains(d))
            .cloned()
            .collect();
        let plan = decide(&due, &fresh, now);
        take(tools, &plan.take)?;
        done.taken = plan.take;
        for (ds, names) in &plan.destroy {
            let n: Vec<&str> = names.iter().map(String::as_str).collect();
            destroy(tools, ds, &n)?;
            done.destroyed
                .extend(names.iter().map(|x| format!("{ds}@{x}")));
        }
        self.relist(tools, &touched)?;
        let all: Vec<Snapshot> = self.known.values().flatten().cloned().collect();
        done.next = decide(vols, &all, now).next;
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(ds: &str, name: &str, creation: u64, txg: u64) -> Snapshot {
        Snapshot {
            dataset: ds.into(),
            name: name.into(),
            creation,
            createtxg: txg,
            used: 0,
            referenced: 0,
            clones: Vec::new(),
        }
    }

    #[test]
    fn intervals_parse_in_units_and_name_themselves_in_the_largest_that_divides() {
        assert_eq!(parse_every("30s"), Ok(30));
        assert_eq!(parse_every("15m"), Ok(900));
        assert_eq!(parse_every("1h"), Ok(3600));
        assert_eq!(parse_every("7d"), Ok(604_800));
        assert_eq!(parse_every("2w"), Ok(1_209_600));
        assert_eq!(parse_every("120"), Ok(120));
        for bad in [
            "",
            "h",
            "5s",
            "1y",
            "-1h",
            "1.5h",
            "400d",
            "99999999999999999999w",
        ] {
            assert!(parse_every(bad).is_err(), "{bad}");
        }
        assert_eq!(every_label(3600), "1h");
        assert_eq!(every_label(5400), "90m");
        assert_eq!(every_label(604_800), "1w");
        assert_eq!(every_label(45), "45s");
        assert_eq!(
            Schedule {
                every: 86_400,
                keep: 7
            }
            .prefix(),
            "auto-1d-"
        );
    }

    #[test]
    fn stamps_are_utc_civil_times() {
        assert_eq!(stamp(0), "19700101T000000Z");
        assert_eq!(stamp(951_782_400), "20000229T000000Z");
        assert_eq!(stamp(1_796_346_123), "20261204T010203Z");
        assert_eq!(stamp(4_107_542_399), "21000228T235959Z");
    }

    #[test]
    fn names_by_hand_may_not_pose_as_scheduled_ones_or_escape_the_dataset() {
        assert!(check_snap_name("before-upgrade").is_ok());
        for bad in ["auto-1h-x", "a@b", "a/b", "", "-x", "a b"] {
            assert!(check_snap_name(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_ref("web@s1"), Ok(("web".into(), "s1".into())));
        for bad in ["web", "web@", "@s", "we/b@s", "web@s@t"] {
            assert!(parse_ref(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_list_parser_orders_by_txg_and_reads_clones() {
        let out = "p/v/a@auto-1h-2\t200\t20\t4096\t8192\t-\n\
                   p/v/a@auto-1h-1\t300\t10\t0\t8192\tp/v/c,p/v/d\n\
                   p/v/b@x\t100\t5\t0\t0\t\n";
        let v = parse_list(out).unwrap();
        let names: Vec<&str> = v.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["auto-1h-1", "auto-1h-2", "x"]);
        assert_eq!(v[0].clones, ["p/v/c", "p/v/d"]);
        assert!(v[1].clones.is_empty() && v[2].clones.is_empty());
        assert!(parse_list("p/v/a\t1\t1\t1\t1\t-\n").is_err());
        assert!(parse_list("p/v/a@s\tx\t1\t1\t1\t-\n").is_err());
    }

    #[test]
    fn a_schedule_takes_when_due_and_prunes_to_keep_oldest_first_by_txg() {
        let sc = Schedule { every: 60, keep: 2 };
        let ds = "p/v/a";
        let snaps = vec![
            s(ds, "auto-1m-1", 1000, 1),
            s(ds, "mine", 1010, 2),
            s(ds, "auto-1m-2", 1060, 3),
        ];
        let vols = vec![(ds.to_string(), vec![sc])];
        let t = decide(&vols, &snaps, 1100);
        assert!(t.take.is_empty(), "not due until 1120");
        assert!(t.destroy.is_empty());
        assert_eq!(t.next, Some(1120));
        let t = decide(&vols, &snaps, 1120);
        assert_eq!(t.take, [format!("{ds}@auto-1m-{}", stamp(1120))]);
        assert_eq!(
            t.destroy[ds],
            ["auto-1m-1"],
            "the new one counts: two kept, the hand-made one untouched"
        );
        assert_eq!(t.next, Some(1180));
    }

    #[test]
    fn a_clock_that_went_back_neither_stops_the_schedule_nor_prunes_the_newest() {
        let sc = Schedule { every: 60, keep: 2 };
        let ds = "p/v/a";
        // Taken at "5000" and "5060", then the box booted believing it is 100.
        let snaps = vec![s(ds, "auto-1m-a", 5000, 1), s(ds, "auto-1m-b", 5060, 2)];
        let t = decide(&[(ds.to_string(), vec![sc])], &snaps, 100);
        assert_eq!(t.take.len(), 1, "due, not waiting for 5120");
        assert_eq!(
            t.destroy[ds],
            ["auto-1m-a"],
            "by txg the oldest goes, not the one the clock calls oldest"
        );
    }

    #[test]
    fn a_snapshot_with_a_clone_is_held_not_destroyed_and_lowering_keep_prunes_at_once() {
        let ds = "p/v/a";
        let mut snaps: Vec<Snapshot> = (1..=5)
            .map(|i| s(ds, &format!("auto-1h-{i}"), 3600 * i, i))
            .collect();
        snaps[0].clones = vec!["p/v/c".into()];
        let sc = Schedule {
            every: 3600,
            keep: 2,
        };
        let t = decide(&[(ds.to_string(), vec![sc])], &snaps, 3600 * 5 + 10);
        assert!(t.take.is_empty());
        assert_eq!(t.destroy[ds], ["auto-1h-2", "auto-1h-3"]);
        assert_eq!(
            t.held,
            [(format!("{ds}@auto-1h-1"), vec!["p/v/c".to_string()])]
        );
    }

    #[test]
    fn schedules_of_one_volume_keep_their_own_counts() {
        let ds = "p/v/a";
        let h = Schedule {
            every: 3600,
            keep: 1,
        };
        let d = Schedule {
            every: 86_400,
            keep: 1,
        };
        let snaps = vec![s(ds, "auto-1d-x", 0, 1), s(ds, "auto-1h-y", 0, 2)];
        let t = decide(&[(ds.to_string(), vec![h, d])], &snaps, 7200);
        assert_eq!(t.take, [format!("{ds}@auto-1h-{}", stamp(7200))]);
        assert_eq!(
            t.destroy[ds],
            ["auto-1h-y"],
            "the daily one is its schedule's only"
        );
        assert_eq!(t.next, Some(7200 + 3600));
    }
}
