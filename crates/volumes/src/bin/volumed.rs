//! volumed: keeps every guest volume exported as its spec says. Reconciles at start (restoring
//! exports after a reboot or its own restart), whenever the spool directory changes, on SIGUSR1,
//! and every `--interval` seconds to repair drift. Between passes it keeps what it read
//! (`volumes::cache`), so an idle pass re-reads only what changed, with a full re-read every
//! `--full-every` seconds. Each pass is recorded in `/run/volumed.json`. After each pass it takes
//! and prunes the volumes' scheduled snapshots, waking early when one falls due. Stopping it
//! leaves the exports in place.

use clap::Parser;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use platform::log;
use platform::Roots;
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use volumes::cache::Cache;
use volumes::cli::Cli;
use volumes::config::Config;
use volumes::env::Env;
use volumes::reconcile;
use volumes::snap::Scheduler;
use volumes::zvol;

/// What the last pass did, for `storagectl` and the benchmark: `seq` counts passes.
#[derive(serde::Serialize)]
struct PassRecord<'a> {
    seq: u64,
    ok: bool,
    ms: u128,
    steps: usize,
    changed: usize,
    breakdown: &'a str,
}

fn record(roots: &Roots, r: &PassRecord) {
    let path = roots.run.join("volumed.json");
    let body = serde_json::to_vec(r).unwrap_or_default();
    if let Err(e) = platform::fsx::write_atomic(&path, &body, None) {
        log(format!("pass record not kept: {}", platform::chain(&e)));
    }
}

/// Scheduled snapshots after a pass, under its lock: only volumes whose zvol exists (its device
/// link is there) and whose spec has schedules. Returns when the next one falls due.
fn snapshots(env: &Env, sched: &mut Scheduler) -> Result<Option<u64>, volumes::Error> {
    let spool =
        volumes::spool::read_spool_with(&env.cfg.spool, env.cache.as_deref().map(|c| &c.specs))?;
    let vols: Vec<(String, Vec<volumes::snap::Schedule>)> = spool
        .volumes
        .values()
        .filter(|v| !v.snapshots.is_empty())
        .map(|v| (zvol::dataset(&env.cfg.pool, v), v.snapshots.clone()))
        .filter(|(ds, _)| zvol::dev_path(&env.roots, ds).exists())
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let d = sched.tick(env.tools, &vols, now)?;
    if !d.taken.is_empty() {
        log(format!("snapshots taken: {}", d.taken.join(", ")));
    }
    if !d.destroyed.is_empty() {
        log(format!(
            "snapshots pruned (beyond their schedule's keep): {}",
            d.destroyed.join(", ")
        ));
    }
    for (s, clones) in &d.held {
        log(format!(
            "snapshot {s} is beyond its schedule's keep but kept: {} cloned from it",
            clones.join(", ")
        ));
    }
    Ok(d.next)
}

fn one(
    cli: &Cli,
    dry_run: bool,
    cache: Option<Arc<Cache>>,
    seq: u64,
    sched: Option<&mut Scheduler>,
) -> Result<Option<u64>, volumes::Error> {
    let env = &Env {
        roots: Roots::host(),
        cfg: Config::load_layered(cli.config.as_deref())?,
        fs: &ktarget::HostFs,
        tools: &volumes::cmd::SYSTEM,
        cache,
    };
    env.check_vault()?;
    let _lock = reconcile::lock(&env.roots)?;
    let t0 = Instant::now();
    let r = reconcile::pass(env, dry_run);
    if !dry_run {
        let (steps, changed, breakdown) = match &r {
            Ok((p, rep)) => (p.steps(), rep.changed(), rep.breakdown.as_str()),
            Err(_) => (0, 0, ""),
        };
        record(
            &env.roots,
            &PassRecord {
                seq,
                ok: r.is_ok(),
                ms: t0.elapsed().as_millis(),
                steps,
                changed,
                breakdown,
            },
        );
    }
    // Snapshots are taken even when an export step failed: one unreachable port must not stop
    // every volume's schedule.
    let next = match sched {
        Some(s) if !dry_run => snapshots(env, s).unwrap_or_else(|e| {
            log(format!("scheduled snapshots: {}", platform::chain(&e)));
            None
        }),
        _ => None,
    };
    let (plan, report) = r?;
    if dry_run {
        print!("{}", plan.render());
    } else if plan.steps() > 0 {
        log(format!(
            "pass: {} steps, {} changed, {} ms",
            report.steps.len(),
            report.changed(),
            t0.elapsed().as_millis()
        ));
        // Thin volumes may promise more than the pool has; say so whenever the set changes.
        if let Ok(l) = volumes::ops::list(env) {
            if l.commit_ratio > 1.0 {
                log(format!(
                    "volumes over-commit the pool: {:.0}% of {} bytes promised, {} free",
                    l.commit_ratio * 100.0,
                    l.pool_size,
                    l.pool_free
                ));
            }
        }
    }
    Ok(next)
}

fn main() -> ExitCode {
    platform::log::set_name("volumed");
    let cli = Cli::parse();
    if cli.once || cli.dry_run {
        return match one(&cli, cli.dry_run, None, 0, None) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("volumed: {}", platform::chain(&e));
                ExitCode::FAILURE
            }
        };
    }
    let cfg = match Config::load_layered(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("volumed: {}", platform::chain(&e));
            return ExitCode::FAILURE;
        }
    };
    let roots = Roots::host();
    // SIGUSR1 asks for a pass now; taken through a signalfd so it only ever wakes the poll. Blocked
    // before anything else, so one sent while the vault is still locked does not end the daemon.
    let mut usr1 = SigSet::empty();
    usr1.add(Signal::SIGUSR1);
    let sigfd = usr1.thread_block().ok().and_then(|_| {
        SignalFd::with_flags(&usr1, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).ok()
    });
    // The spool and the state live on the vault. Until it is unlocked and mounted there is
    // nothing to read: a pass is skipped (and said) every interval, never run on what happens to
    // be at those paths.
    let mut skipped = 0u64;
    loop {
        let env = Env {
            roots: roots.clone(),
            cfg: cfg.clone(),
            fs: &ktarget::HostFs,
            tools: &volumes::cmd::SYSTEM,
            cache: None,
        };
        match env.check_vault().and_then(|_| env.ensure_spool()) {
            Ok(()) => break,
            Err(e) => {
                skipped += 1;
                platform::log::warn(format!(
                    "pass skipped ({skipped}): {}; every volume is kept as it is. Unlock the vault (boot with this box's TPM, or see `storagectl status`)",
                    platform::chain(&e)
                ));
                std::thread::sleep(Duration::from_secs(cli.interval));
            }
        }
    }
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).ok();
    if let Some(i) = &inotify {
        let _ = i.add_watch(
            &cfg.spool,
            AddWatchFlags::IN_CLOSE_WRITE
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_MOVED_FROM
                | AddWatchFlags::IN_DELETE,
        );
    }
    let cache = Arc::new(Cache::new(Duration::from_secs(cli.full_every)));
    log(format!(
        "watching {} (pool {}, NVMe/TCP on {}:{})",
        cfg.spool.display(),
        cfg.pool,
        cfg.nvme_tcp.address,
        cfg.nvme_tcp.port
    ));
    let mut sched = Scheduler::new(Duration::from_secs(cli.full_every));
    for seq in 1.. {
        let next = match one(&cli, false, Some(cache.clone()), seq, Some(&mut sched)) {
            Ok(n) => n,
            Err(e) => {
                platform::log::error(format!("pass failed: {}", platform::chain(&e)));
                None
            }
        };
        // Woken for the next scheduled snapshot when it falls due before the next pass.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let timeout = Duration::from_secs(next.map_or(cli.interval, |n| {
            n.saturating_sub(now).clamp(1, cli.interval)
        }));
        let mut fds = Vec::new();
        if let Some(i) = &inotify {
            fds.push(nix::poll::PollFd::new(
                i.as_fd(),
                nix::poll::PollFlags::POLLIN,
            ));
        }
        if let Some(s) = &sigfd {
            fds.push(nix::poll::PollFd::new(
                s.as_fd(),
                nix::poll::PollFlags::POLLIN,
            ));
        }
        if fds.is_empty() {
            std::thread::sleep(timeout);
            continue;
        }
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let _ = nix::poll::poll(&mut fds, ms);
        let asked = sigfd
            .as_ref()
            .is_some_and(|s| matches!(s.read_signal(), Ok(Some(_))));
        if !asked {
            // Let a burst of spool changes settle into one pass.
            std::thread::sleep(Duration::from_millis(200));
        }
        if let Some(i) = &inotify {
            while i.read_events().is_ok_and(|e| !e.is_empty()) {}
        }
    }
    ExitCode::SUCCESS
}
