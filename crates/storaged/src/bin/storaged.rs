//! storaged: runs the pool's scheduled maintenance and watches health. Every `--interval`
//! seconds (sooner when something falls due) it reads the pool, brings the history on the pool
//! up to date, and starts at most one due scrub or trim. Every `health.every` it reads the
//! drives' reports and the pool, keeps the alert journal on the pool, logs each alert raised or
//! cleared, and rewrites the Prometheus textfile. The policy is the one storage-init last applied.

use clap::Parser;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;
use storaged::journal::{self, Journal};
use storaged::maint::{self, Schedule};
use storaged::record::{self, Op, Record};
use storaged::{cmd, gather, health, metrics, now, Result};

/// The alert journal between looks: the one on the pool once it could be read, else one in
/// memory (alerts are still logged and exported).
#[derive(Default)]
struct HealthState {
    journal: Journal,
    on_pool: bool,
}

/// One health look: returns when the next is due.
fn health_look(cli: &Cli, st: &mut HealthState) -> u64 {
    let policy = storaged::policy(&cli.pool);
    let t = now();
    let obs = gather::observe(&platform::Roots::host(), &cli.pool, t);
    let alerts = health::assess(&obs, policy.health.tiers());
    let path = journal::path(&cli.root, &cli.pool);
    if !st.on_pool && obs.imported {
        st.journal = match Journal::load(&path) {
            Ok(j) => j,
            Err(e) => {
                let aside = path.with_extension("json.damaged");
                let _ = std::fs::rename(&path, &aside);
                log(format!(
                    "{}; kept as {} and starting a new alert journal",
                    platform::chain(&e),
                    aside.display()
                ));
                Journal::default()
            }
        };
        st.on_pool = true;
    }
    if cli.dry_run {
        for a in &alerts {
            println!("alert [{}] {}", a.severity.as_str(), a.message);
        }
        return t + policy.health.every_secs();
    }
    let events = st.journal.update(&alerts, &obs.unknown(), t);
    for e in &events {
        log(format!(
            "alert {} [{}] {}",
            e.change.as_str(),
            e.alert.severity.as_str(),
            e.alert.message
        ));
    }
    if !events.is_empty() && st.on_pool && obs.imported {
        if let Err(e) = st.journal.save(&path) {
            platform::log::warn(format!("alert journal: {}", platform::chain(&e)));
        }
    }
    let view = obs
        .imported
        .then(|| storaged::view(&cli.pool, &cli.root).ok())
        .flatten();
    let text = metrics::render(&obs, &st.journal, view.as_ref());
    if let Err(e) = storaged::record::write_atomic(&cli.textfile, text.as_bytes()) {
        platform::log::warn(format!("textfile: {}", platform::chain(&e)));
    }
    t + policy.health.every_secs()
}

use platform::log;
use storaged::cli::Cli;

/// The history, or a fresh one when the file is damaged: it is a log of what was done, not an
/// authority, and the pool's own records still say when it last scrubbed and trimmed. The damaged
/// file is kept beside it for a look.
fn load_record(path: &Path) -> Record {
    match Record::load(path) {
        Ok(r) => r,
        Err(e) => {
            let aside = path.with_extension("json.damaged");
            let _ = std::fs::rename(path, &aside);
            log(format!(
                "{}; kept as {} and starting a new history from the pool's own records",
                platform::chain(&e),
                aside.display()
            ));
            Record::default()
        }
    }
}

/// The history's line for a scheduled self-test: `started on sda, sdb; skipped nvme0n1 (...)`.
fn selftest_summary(rows: &[storaged::disks::SelftestRow]) -> String {
    let mut parts = Vec::new();
    for outcome in ["started", "skipped", "failed"] {
        let these: Vec<String> = rows
            .iter()
            .filter(|r| r.outcome == outcome)
            .map(|r| match (&r.reason, outcome) {
                (Some(why), "failed") => format!("{} ({why})", r.device),
                _ => r.device.clone(),
            })
            .collect();
        if !these.is_empty() {
            parts.push(format!("{outcome} on {}", these.join(", ")));
        }
    }
    if parts.is_empty() {
        "no drive".into()
    } else {
        parts.join("; ")
    }
}

/// One look: returns when to look again at the latest.
fn look(cli: &Cli) -> Result<Option<u64>> {
    let policy = storaged::policy(&cli.pool);
    let sched = Schedule::from_policy(&policy.maintenance);
    let pool = cmd::status(&cli.pool)?;
    let created = cmd::created(&cli.pool)?;
    let path = record::path(&cli.root, &cli.pool);
    let mut rec = load_record(&path);
    let t = now();
    let ended = rec.observe(&pool, t);
    let mut changed = !ended.is_empty();
    for e in &ended {
        log(format!(
            "{} {} ended: {}",
            e.op.as_str(),
            if e.by == "storaged" {
                "(scheduled)"
            } else {
                "(by hand)"
            },
            e.result.as_deref().unwrap_or("-")
        ));
    }
    if !cli.dry_run && policy.pool.autoreplace {
        match storaged::disks::autoreplace(&cli.pool, &policy, &pool) {
            Ok(Some((old, new))) => {
                log(format!(
                    "autoreplace: {old} (not online) is being replaced by the blank drive {new}; resilvering"
                ));
                // The resilver now runs; nothing else starts beside it.
                if changed {
                    rec.save(&path)?;
                }
                return Ok(Some(t + 30));
            }
            Ok(None) => {}
            Err(e) => log(format!("autoreplace: {}", platform::chain(&e))),
        }
    }
    let view = maint::decide(&pool, &rec, created, &sched, t);
    if let Some(op) = view.start {
        if cli.dry_run {
            println!("would start: {} on {}", op.as_str(), cli.pool);
        } else {
            match op {
                Op::Scrub => cmd::scrub(&cli.pool)?,
                Op::Trim => cmd::trim(&cli.pool)?,
                Op::Selftest => {
                    let what = match storaged::disks::selftest(&cli.pool, &[], sched.selftest) {
                        Ok(rows) => selftest_summary(&rows),
                        Err(e) => format!("not started: {}", platform::chain(&e)),
                    };
                    // Tried once per interval, started or not: a drive that cannot test
                    // today is not asked again every look.
                    log(format!(
                        "scheduled {} self-test of {}'s drives: {what}",
                        sched.selftest.as_str(),
                        cli.pool
                    ));
                    rec.started_and_done(op, t, what);
                }
            }
            changed = true;
            if op != Op::Selftest {
                rec.start(op, t);
                log(format!(
                    "{} of {} started (due since {})",
                    op.as_str(),
                    cli.pool,
                    storage::policy::utc_stamp(
                        match op {
                            Op::Scrub => view.scrub.next,
                            _ => view.trim.next,
                        }
                        .unwrap_or(t)
                    )
                ));
            }
        }
    } else if cli.dry_run {
        print!("{}", view.render());
    }
    if changed && !cli.dry_run {
        rec.save(&path)?;
    }
    // While something runs, look again soon to record its end.
    Ok(if view.running.is_some() || view.start.is_some() {
        Some(t + 30)
    } else {
        view.next_due()
    })
}

fn main() -> ExitCode {
    platform::log::set_name("storaged");
    let cli = Cli::parse();
    let mut hs = HealthState::default();
    if cli.once || cli.dry_run {
        health_look(&cli, &mut hs);
        return match look(&cli) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("storaged: {}", platform::chain(&e));
                ExitCode::FAILURE
            }
        };
    }
    let mut waiting = false;
    let mut health_due = 0;
    loop {
        if now() >= health_due {
            health_due = health_look(&cli, &mut hs);
        }
        let next = match look(&cli) {
            Ok(n) => {
                waiting = false;
                n
            }
            Err(e) => {
                // An absent or locked pool: wait for it, and say so once.
                if !waiting {
                    log(format!(
                        "{}; looking again every {} s",
                        platform::chain(&e),
                        cli.interval
                    ));
                }
                waiting = true;
                None
            }
        };
        let next = next.map_or(health_due, |n| n.min(health_due));
        let secs = next.saturating_sub(now()).clamp(1, cli.interval);
        std::thread::sleep(Duration::from_secs(secs));
    }
}
