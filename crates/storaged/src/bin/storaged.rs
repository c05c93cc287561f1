//! storaged: runs the pool's scheduled maintenance. Every `--interval` seconds (sooner when
//! something falls due) it reads the pool, brings the history on the pool up to date, and starts
//! at most one due scrub or trim. The schedule is the policy storage-init last applied.

use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use storaged::maint::{self, Schedule};
use storaged::record::{self, Op, Record};
use storaged::{cmd, now, Result};

#[derive(Parser)]
#[command(
    version,
    about = "Scrub and trim the pool on schedule, one operation at a time"
)]
struct Cli {
    #[arg(long, default_value = "persist")]
    pool: String,
    /// Seconds between looks at the pool when nothing falls due sooner.
    #[arg(long, default_value_t = 300)]
    interval: u64,
    /// One look (and at most one start), then exit.
    #[arg(long)]
    once: bool,
    /// Print what would start, start nothing.
    #[arg(long)]
    dry_run: bool,
    /// Where the pool's datasets are mounted (the pool's root is `<root>/<pool>`).
    #[arg(long, default_value = "/")]
    root: PathBuf,
}

fn log(m: impl std::fmt::Display) {
    eprintln!("storaged: {m}");
}

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
                storage::bringup::error_chain(&e),
                aside.display()
            ));
            Record::default()
        }
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
            Err(e) => log(format!(
                "autoreplace: {}",
                storage::bringup::error_chain(&e)
            )),
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
            }
            rec.start(op, t);
            changed = true;
            log(format!(
                "{} of {} started (due since {})",
                op.as_str(),
                cli.pool,
                storage::policy::utc_stamp(
                    match op {
                        Op::Scrub => view.scrub.next,
                        Op::Trim => view.trim.next,
                    }
                    .unwrap_or(t)
                )
            ));
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
    let cli = Cli::parse();
    if cli.once || cli.dry_run {
        return match look(&cli) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("storaged: {}", storage::bringup::error_chain(&e));
                ExitCode::FAILURE
            }
        };
    }
    let mut waiting = false;
    loop {
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
                        storage::bringup::error_chain(&e),
                        cli.interval
                    ));
                }
                waiting = true;
                None
            }
        };
        let secs = next.map_or(cli.interval, |n| {
            n.saturating_sub(now()).clamp(1, cli.interval)
        });
        std::thread::sleep(Duration::from_secs(secs));
    }
}
