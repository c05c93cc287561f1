//! `storagectl disk`: list drives, replace, add, offline and online pool members.

use crate::cli::DiskCmd;
use crate::output::{emit, fail};
use std::process::ExitCode;

/// Where a replacement stands once no scan runs, from the pool's state alone (no clocks: the
/// box's and this host's may differ).
#[derive(Debug, PartialEq, Eq)]
pub enum Settled {
    /// No resilver seen yet and the pool not whole: it may not have started; look again.
    NotYet,
    Done(Result<(), String>),
}

/// Pure: a resilver that was cancelled or found errors, or a pool still not ONLINE after it,
/// is a failed replacement; a pool ONLINE is a done one. ZFS detaches the replaced device just
/// after the resilver finishes (an asynchronous step), so a pool not yet ONLINE right after a
/// clean resilver is looked at again while `patience_left`.
pub fn settled(st: &storaged::pool::PoolState, seen_running: bool, patience_left: bool) -> Settled {
    let last = st.scan.as_ref().filter(|s| s.function == "RESILVER");
    if let Some(s) = last {
        if s.state == "CANCELED" {
            return Settled::Done(Err(format!("{}: the resilver was cancelled", st.name)));
        }
        if s.state == "FINISHED" && s.errors > 0 {
            return Settled::Done(Err(format!(
                "{}: the resilver finished with {} errors; `storagectl status -x` says what is wrong",
                st.name, s.errors
            )));
        }
    }
    if st.state == "ONLINE" {
        return Settled::Done(Ok(()));
    }
    let clean = last.is_some_and(|s| s.state == "FINISHED" && s.errors == 0);
    if patience_left && (!seen_running || clean) {
        return Settled::NotYet;
    }
    Settled::Done(Err(format!(
        "{}: {} after the {}; `storagectl status -x` says what is wrong",
        st.name,
        st.state,
        if seen_running {
            "resilver"
        } else {
            "replacement (no resilver was seen)"
        }
    )))
}

/// Waits for a resilver of `pool` to finish, its progress on stderr; `observe` reads the pool's
/// state (here, or through the API). Fails when the resilver was cancelled or found errors,
/// when the pool is not whole after it, or when the pool's state cannot be read.
pub fn wait_resilver<E: std::fmt::Display>(
    pool: &str,
    observe: impl Fn() -> Result<storaged::pool::PoolState, E>,
) -> Result<(), String> {
    let mut last = String::new();
    let mut seen_running = false;
    // Monotonic: the box's clock may jump while a resilver runs.
    let mut quiet_since = std::time::Instant::now();
    loop {
        let st = observe().map_err(|e| e.to_string())?;
        match st.scan.as_ref().filter(|s| s.running()) {
            Some(s) => {
                seen_running = true;
                quiet_since = std::time::Instant::now();
                let line = format!(
                    "{} {}",
                    s.function.to_lowercase(),
                    s.progress(storaged::now())
                );
                if line != last {
                    eprintln!("storagectl: {pool}: {line}");
                    last = line;
                }
            }
            None => {
                let patience = quiet_since.elapsed() < std::time::Duration::from_secs(30);
                if let Settled::Done(r) = settled(&st, seen_running, patience) {
                    let scan = st.scan.map(|s| {
                        format!("{} {}", s.function.to_lowercase(), s.state.to_lowercase())
                    });
                    eprintln!(
                        "storagectl: {pool}: {} ({})",
                        st.state,
                        scan.unwrap_or_else(|| "no scan".into())
                    );
                    return r;
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}

/// After `zpool replace` (here or on a box): the line it prints, the resilver waited for unless
/// `no_wait`, and with `json` one object at the end saying how it went.
pub fn replaced<E: std::fmt::Display>(
    pool: &str,
    old: &str,
    new: &str,
    part: &str,
    no_wait: bool,
    json: bool,
    observe: impl Fn() -> Result<storaged::pool::PoolState, E>,
) -> ExitCode {
    if !json {
        println!("{old} is being replaced by {new} ({part})");
    }
    let r = if no_wait {
        None
    } else {
        Some(wait_resilver(pool, observe))
    };
    if json {
        let resilver = match &r {
            None => serde_json::json!("not waited for"),
            Some(Ok(())) => serde_json::json!("done"),
            Some(Err(e)) => serde_json::json!({"failed": e}),
        };
        println!(
            "{}",
            serde_json::json!({"pool": pool, "old": old, "new": new, "partition": part, "resilver": resilver})
        );
    }
    match r {
        Some(Err(e)) => {
            eprintln!("storagectl: {e}");
            ExitCode::FAILURE
        }
        _ => ExitCode::SUCCESS,
    }
}

/// Pure: how `disk selftest` went, as an exit kind and the line saying so: failed when a start
/// failed, refused when nothing started, `None` (success) otherwise.
pub fn selftest_verdict(
    rows: &[storaged::disks::SelftestRow],
) -> Option<(platform::exit::Kind, String)> {
    let started = rows.iter().filter(|r| r.outcome == "started").count();
    if let Some(r) = rows.iter().find(|r| r.outcome == "failed") {
        return Some((
            platform::exit::Kind::Failed,
            format!(
                "{}: the self-test could not be started: {}",
                r.device,
                r.reason.as_deref().unwrap_or("-")
            ),
        ));
    }
    (started == 0).then(|| {
        (
            platform::exit::Kind::Refused,
            "no drive could start a self-test (each says why above)".to_string(),
        )
    })
}

/// Prints what `disk selftest` did (a line per drive, or JSON) and exits by [`selftest_verdict`].
pub fn selftested(
    kind: storaged::selftest::Kind,
    rows: &[storaged::disks::SelftestRow],
    json: bool,
) -> ExitCode {
    if json {
        println!(
            "{}",
            crate::output::json_text(&serde_json::json!({"kind": kind, "drives": rows}))
        );
    } else {
        for r in rows {
            match &r.reason {
                None => println!("{}: {} self-test started", r.device, kind.as_str()),
                Some(why) => println!("{}: {}: {why}", r.device, r.outcome),
            }
        }
    }
    match selftest_verdict(rows) {
        None => ExitCode::SUCCESS,
        Some((k, line)) => {
            eprintln!("storagectl: {line}");
            ExitCode::from(k.exit_code())
        }
    }
}

pub fn disk(pool: &str, cmd: DiskCmd) -> ExitCode {
    use storaged::disks;
    match cmd {
        DiskCmd::List { json, bytes } => emit(disks::list(pool), json, |l| l.render(bytes)),
        DiskCmd::Replace {
            old,
            new,
            no_wait,
            json,
        } => {
            let part = match disks::replace(pool, &old, &new) {
                Ok(part) => part,
                Err(e) => return fail(&e),
            };
            replaced(pool, &old, &new, &part, no_wait, json, || {
                storaged::cmd::status(pool).map_err(|e| platform::chain(&e))
            })
        }
        DiskCmd::Add { drives, json } => match disks::add(pool, &drives) {
            Ok(parts) => crate::output::changed(
                json,
                serde_json::json!({"pool": pool, "added": drives, "partitions": parts}),
                format!(
                    "pool {pool} grew by {} ({})",
                    drives.join(", "),
                    parts.join(", ")
                ),
            ),
            Err(e) => fail(&e),
        },
        DiskCmd::Offline { member, json } => match disks::set_online(pool, &member, false) {
            Ok(n) => crate::output::changed(
                json,
                serde_json::json!({"member": n, "online": false}),
                format!("{n} is offline"),
            ),
            Err(e) => fail(&e),
        },
        DiskCmd::Selftest { drives, long, json } => {
            let kind = if long {
                storaged::selftest::Kind::Long
            } else {
                storaged::selftest::Kind::Short
            };
            match disks::selftest(pool, &drives, kind) {
                Ok(rows) => selftested(kind, &rows, json),
                Err(e) => fail(&e),
            }
        }
        DiskCmd::Online { member, json } => match disks::set_online(pool, &member, true) {
            Ok(n) => crate::output::changed(
                json,
                serde_json::json!({"member": n, "online": true}),
                format!("{n} is online"),
            ),
            Err(e) => fail(&e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use storaged::pool::{PoolState, Scan};

    fn pool(state: &str, scan: Option<(&str, &str, u64)>) -> PoolState {
        PoolState {
            name: "persist".into(),
            state: state.into(),
            scan: scan.map(|(f, st, errors)| Scan {
                function: f.into(),
                state: st.into(),
                start: 1,
                end: 2,
                examined: 1,
                to_examine: 1,
                errors,
                paused: false,
            }),
            leaves: vec![],
            error_count: 0,
        }
    }

    fn row(dev: &str, outcome: &str) -> storaged::disks::SelftestRow {
        storaged::disks::SelftestRow {
            device: dev.into(),
            stable_id: format!("id-{dev}"),
            outcome: outcome.into(),
            reason: (outcome != "started").then(|| format!("{dev} cannot")),
        }
    }

    #[test]
    fn a_selftest_succeeds_when_a_drive_started_is_refused_when_none_could_and_fails_on_errors() {
        use platform::exit::Kind;
        assert_eq!(
            selftest_verdict(&[row("sda", "started"), row("nvme0n1", "skipped")]),
            None
        );
        let (k, line) = selftest_verdict(&[row("nvme0n1", "skipped")]).unwrap();
        assert_eq!(k, Kind::Refused);
        assert!(line.contains("no drive could start"), "{line}");
        let (k, line) = selftest_verdict(&[row("sda", "started"), row("sdb", "failed")]).unwrap();
        assert_eq!(k, Kind::Failed);
        assert!(
            line.contains("sdb") && line.contains("sdb cannot"),
            "{line}"
        );
        assert_eq!(Kind::Refused.exit_code(), 4, "as the help says");
    }

    #[test]
    fn a_replacement_fails_when_its_resilver_does_or_the_pool_is_not_whole_after_it() {
        let ok = pool("ONLINE", Some(("RESILVER", "FINISHED", 0)));
        assert_eq!(settled(&ok, true, true), Settled::Done(Ok(())));
        let cancelled = pool("DEGRADED", Some(("RESILVER", "CANCELED", 0)));
        assert!(
            matches!(settled(&cancelled, true, true), Settled::Done(Err(e)) if e.contains("cancelled"))
        );
        let errors = pool("ONLINE", Some(("RESILVER", "FINISHED", 3)));
        assert!(
            matches!(settled(&errors, true, true), Settled::Done(Err(e)) if e.contains("3 errors"))
        );
        // Right after a clean resilver the replaced device may not be detached yet: look again,
        // and only once patience is out is the pool's state the verdict.
        let degraded = pool("DEGRADED", Some(("RESILVER", "FINISHED", 0)));
        assert_eq!(settled(&degraded, true, true), Settled::NotYet);
        assert!(
            matches!(settled(&degraded, true, false), Settled::Done(Err(e)) if e.contains("DEGRADED after the resilver"))
        );
        // A resilver that failed is not waited for.
        let failed = pool("DEGRADED", Some(("RESILVER", "FINISHED", 2)));
        assert!(matches!(
            settled(&failed, true, true),
            Settled::Done(Err(_))
        ));
        // The old scrub's record right after `zpool replace`: the resilver may not show yet.
        let before = pool("DEGRADED", Some(("SCRUB", "FINISHED", 0)));
        assert_eq!(settled(&before, false, true), Settled::NotYet);
        assert!(
            matches!(settled(&before, false, false), Settled::Done(Err(e)) if e.contains("no resilver was seen"))
        );
    }
}
