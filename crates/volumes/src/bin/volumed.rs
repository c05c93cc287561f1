//! volumed: keeps every guest volume exported as its spec says. Reconciles at start (restoring
//! exports after a reboot or its own restart), whenever the spool directory changes, and every
//! `--interval` seconds to repair drift. Stopping it leaves the exports in place.

use clap::Parser;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use volumes::config::Config;
use volumes::reconcile::{self, log, Env};
use volumes::roots::Roots;

#[derive(Parser)]
#[command(
    version,
    about = "Reconcile guest volumes and their nvmet/vhost exports"
)]
struct Cli {
    /// Settings file [default: /persist/config/volumes.toml if present, else /etc/volumes.toml].
    /// Re-read before every pass.
    #[arg(long)]
    config: Option<PathBuf>,
    /// One pass, then exit.
    #[arg(long)]
    once: bool,
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Seconds between passes when nothing changes.
    #[arg(long, default_value_t = 30)]
    interval: u64,
}

fn one(cli: &Cli, dry_run: bool) -> Result<(), volumes::Error> {
    let env = &Env {
        roots: Roots::host(),
        cfg: Config::load_layered(cli.config.as_deref())?,
        fs: &ktarget::HostFs,
    };
    env.check_vault()?;
    let _lock = reconcile::lock(&env.roots)?;
    let t0 = Instant::now();
    let (plan, report) = reconcile::pass(env, dry_run)?;
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
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.once || cli.dry_run {
        return match one(&cli, cli.dry_run) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("volumed: {}", storage::bringup::error_chain(&e));
                ExitCode::FAILURE
            }
        };
    }
    let cfg = match Config::load_layered(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("volumed: {}", storage::bringup::error_chain(&e));
            return ExitCode::FAILURE;
        }
    };
    // The spool and the state live on the vault. Until it is unlocked and mounted there is
    // nothing to read: a pass is skipped (and said) every interval, never run on what happens to
    // be at those paths.
    let roots = Roots::host();
    let mut skipped = 0u64;
    loop {
        let env = Env {
            roots: roots.clone(),
            cfg: cfg.clone(),
            fs: &ktarget::HostFs,
        };
        match env.check_vault().and_then(|_| env.ensure_spool()) {
            Ok(()) => break,
            Err(e) => {
                skipped += 1;
                log(format!(
                    "pass skipped ({skipped}): {}; every volume is kept as it is. Unlock the vault (boot with this box's TPM, or see `storagectl status`)",
                    storage::bringup::error_chain(&e)
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
    log(format!(
        "watching {} (pool {}, NVMe/TCP on {}:{})",
        cfg.spool.display(),
        cfg.pool,
        cfg.nvme_tcp.address,
        cfg.nvme_tcp.port
    ));
    loop {
        if let Err(e) = one(&cli, false) {
            log(format!(
                "pass failed: {}",
                storage::bringup::error_chain(&e)
            ));
        }
        let timeout = Duration::from_secs(cli.interval);
        match &inotify {
            Some(i) => {
                let mut fds = [nix::poll::PollFd::new(
                    i.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
                let _ = nix::poll::poll(&mut fds, ms);
                // Let a burst of changes settle into one pass.
                std::thread::sleep(Duration::from_millis(200));
                while i.read_events().is_ok_and(|e| !e.is_empty()) {}
            }
            None => std::thread::sleep(timeout),
        }
    }
}
