//! `abupdate`: A/B OS update CLI and the end-of-boot health check. With `--remote` (or
//! `EVE_REMOTE`), `status` and `install` run against a box's management API instead.
//!
//! Exit codes: 0 done; 1 failed or refused (the message says why); 2 usage.

use abupdate::cli::{Cli, Cmd};
use abupdate::health::{Rules, Verdict};
use abupdate::state::{self, Slot, State};
use abupdate::system::System;
use clap::Parser;
use platform::IoContext;
use platform::Roots;
use std::process::ExitCode;
use std::time::Duration;

fn remote(r: &mgmt_client::Remote, cmd: Cmd) -> Result<(), mgmt_client::Error> {
    let usage = |what: &str| {
        mgmt_client::Error::Config(format!(
            "{what} is not available with --remote: status and install are"
        ))
    };
    let c = mgmt_client::Client::new(r)?;
    match cmd {
        Cmd::Status { json } => {
            let v = c.get("/v1/update")?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&v["status"]).unwrap_or_default()
                );
            } else {
                let rep: abupdate::system::Report = serde_json::from_value(v["status"].clone())
                    .map_err(|e| {
                        mgmt_client::Error::Config(format!("{}: GET /v1/update: {e}", r.url))
                    })?;
                print!("{}", rep.text());
            }
        }
        Cmd::Install {
            image,
            tries,
            allow_downgrade,
        } => {
            if tries != state::DEFAULT_TRIES {
                return Err(usage("--tries"));
            }
            if image == "-" {
                return Err(usage("installing from stdin"));
            }
            let p = std::path::Path::new(&image);
            let f = std::fs::File::open(p).at("open", p)?;
            let len = f.metadata().at("stat", p)?.len();
            let bar = indicatif::ProgressBar::new(len);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "sending {bytes}/{total_bytes} [{bar:30}] {bytes_per_sec}, {eta} left {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let b = bar.clone();
            let mut decile = 0;
            let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let progress = Box::new(move |sent: u64| {
                b.set_position(sent);
                // Without a terminal the bar is hidden: a line per 10 % for logs instead.
                let d = sent * 10 / len.max(1);
                if !tty && d > decile {
                    decile = d;
                    eprintln!(
                        "abupdate: sent {}% ({} / {} MiB)",
                        d * 10,
                        sent >> 20,
                        len >> 20
                    );
                }
                if sent == len {
                    b.set_message("sent");
                }
            });
            let q = if allow_downgrade {
                "?allow_downgrade=true"
            } else {
                ""
            };
            // Once everything is sent the box checks, writes and reads the slot back: its
            // progress, read from GET /v1/update on a connection of its own, is shown meanwhile.
            let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let watcher = {
                let (r, done, bar) = (r.clone(), done.clone(), bar.clone());
                std::thread::spawn(move || watch_install(&r, &done, &bar, tty))
            };
            let reply = c.upload(&format!("/v1/update{q}"), f, len, progress);
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = watcher.join();
            bar.finish_and_clear();
            let v = reply?.json()?;
            println!(
                "installed {} into slot {}; reboot to try it",
                v["installed"].as_str().unwrap_or("?"),
                v["slot"].as_str().unwrap_or("?")
            );
        }
        Cmd::Verify { .. } => return Err(usage("verify (run it here, on the file)")),
        Cmd::MarkGood | Cmd::MarkBad { .. } | Cmd::Rollback | Cmd::Cancel => {
            return Err(usage("changing the slot state"))
        }
        Cmd::Bootloader { .. } | Cmd::Health { .. } => return Err(usage("this command")),
    }
    Ok(())
}

/// Shows the box's own install progress (`GET /v1/update`) once the upload is sent, until
/// `done`: in the bar's message on a terminal, a line per phase otherwise.
fn watch_install(
    r: &mgmt_client::Remote,
    done: &std::sync::atomic::AtomicBool,
    bar: &indicatif::ProgressBar,
    tty: bool,
) {
    use std::sync::atomic::Ordering;
    let Ok(c) = mgmt_client::Client::new(r) else {
        return;
    };
    let mut last_phase = String::new();
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_secs(2));
        if done.load(Ordering::Relaxed) || bar.position() < bar.length().unwrap_or(0) {
            continue;
        }
        let Ok(v) = c.get("/v1/update") else { continue };
        let i = &v["install"];
        let (Some(phase), Some(d), Some(t)) =
            (i["phase"].as_str(), i["done"].as_u64(), i["total"].as_u64())
        else {
            continue;
        };
        let line = format!("the box is {phase}: {}%", d * 100 / t.max(1));
        if tty {
            bar.set_message(line);
        } else if phase != last_phase {
            eprintln!("abupdate: {line}");
        }
        last_phase = phase.to_string();
    }
}

fn run(cli: Cli) -> abupdate::error::Result<()> {
    if let Some(r) = cli
        .remote
        .remote()
        .map_err(abupdate::error::Error::Remote)?
    {
        return remote(&r, cli.cmd).map_err(abupdate::error::Error::Remote);
    }
    let sys = System::open(Roots::host())?;
    // What reads or changes the slots refreshes their gauges, whatever came of it.
    let publish = !matches!(cli.cmd, Cmd::Verify { .. } | Cmd::Bootloader { .. });
    let r = local(&sys, cli.cmd);
    if publish {
        if let Err(e) = abupdate::metrics::publish(&sys) {
            eprintln!(
                "abupdate: the update gauges (/run/{}) were not written: {}",
                abupdate::metrics::TEXTFILE,
                platform::chain(&e)
            );
        }
    }
    r
}

/// The commands that run on this box.
fn local(sys: &System, cmd: Cmd) -> abupdate::error::Result<()> {
    let running = sys.running();
    match cmd {
        Cmd::Status { json } => {
            let r = sys.report(&sys.read()?);
            if json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                print!("{}", r.text());
            }
        }
        Cmd::Verify {
            image,
            allow_downgrade,
        } => {
            let c = sys.verify(&image, allow_downgrade)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&c.manifest).unwrap_or_default()
            );
        }
        Cmd::Install {
            image,
            tries,
            allow_downgrade,
        } => {
            let v = sys.install(&image, tries, allow_downgrade)?;
            println!(
                "installed {v} into slot {}; reboot to try it",
                running.other()
            );
        }
        Cmd::MarkGood => {
            let (_, changed) = sys.change(|s| Ok(s.mark_good(running)))?;
            println!(
                "slot {running} is good{}",
                if changed { "" } else { " (unchanged)" }
            );
        }
        Cmd::MarkBad { slot, reason } => {
            let slot = match slot.as_deref() {
                None => running,
                Some(s) => Slot::parse(s).ok_or_else(|| {
                    abupdate::error::Error::Device(format!("--slot {s}: expected A or B"))
                })?,
            };
            sys.change(|s| s.mark_bad(slot, &reason))?;
            println!("slot {slot} is bad: {reason}");
        }
        Cmd::Rollback => {
            sys.check_rollback()?;
            let (s, changed) = sys.change(|s| s.rollback(running))?;
            let o = running.other();
            println!(
                "next boot: slot {o} (version {}){}",
                s.get(o).version,
                if changed { "" } else { " (unchanged)" }
            );
        }
        Cmd::Bootloader { dry_run, json } => {
            let (a, changed) = sys.install_loader(dry_run)?;
            if json {
                let mut v = serde_json::to_value(&a).unwrap_or_default();
                v["changed"] = changed.into();
                println!("{v}");
            } else {
                println!("{}", a.text(changed));
            }
        }
        Cmd::Cancel => {
            sys.change(|s| s.cancel(running))?;
            println!("slot {} withdrawn", running.other());
        }
        Cmd::Health {
            timeout_secs,
            settle_secs,
            no_reboot,
        } => health(sys, timeout_secs, settle_secs, no_reboot)?,
    }
    Ok(())
}

fn health(sys: &System, timeout: u64, settle: u64, no_reboot: bool) -> abupdate::error::Result<()> {
    let running = sys.running();
    let refused = sys.refused();
    let (s, changed) = sys.change(|s| {
        let mut c = s.boot_observed(running);
        if let Some(r) = refused {
            c |= s.image_refused(
                r,
                "boot: GRUB refused its kernel, initrd or config (not signed by the project's key)",
            );
        }
        Ok(c)
    })?;
    let other = s.get(running.other());
    if changed {
        eprintln!(
            "abupdate: slot {} (version {}) recorded as {:?}: {}",
            running.other(),
            other.version,
            other.state,
            other.failure
        );
    }
    let me = s.get(running).clone();
    let outcome = sys.storage_outcome();
    let rules = Rules {
        settle: Duration::from_secs(settle),
        ..Rules::default()
    }
    .for_storage(outcome.as_ref());
    eprintln!(
        "abupdate: slot {running} (version {}) is {:?}; checking health",
        me.version, me.state
    );
    let verdict = sys.check_health(&rules, Duration::from_secs(timeout));
    let on_trial = me.state == State::Trial;
    match verdict {
        Verdict::Healthy => {
            if on_trial || me.state != State::Good {
                sys.change(|s| Ok(s.mark_good(running)))?;
                println!(
                    "slot {running} (version {}) passed its health check: marked good",
                    me.version
                );
            } else {
                println!("slot {running} (version {}) is healthy", me.version);
            }
        }
        Verdict::Failed(why) | Verdict::Waiting(why) => {
            if !on_trial {
                println!(
                    "slot {running} health check failed: {why} (the slot is {:?}; nothing rolled back)",
                    me.state
                );
                return Err(abupdate::error::Error::Unhealthy(format!(
                    "slot {running}: {why}"
                )));
            }
            sys.change(|s| s.mark_bad(running, &format!("health: {why}")))?;
            println!(
                "slot {running} (version {}) failed its health check: {why}; marked bad",
                me.version
            );
            if !no_reboot {
                eprintln!("abupdate: rebooting into slot {}", running.other());
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(1),
                    nix::sys::signal::Signal::SIGTERM,
                )
                .map_err(|e| abupdate::error::Error::Device(format!("ask init to reboot: {e}")))?;
            }
            return Err(abupdate::error::Error::Device(format!(
                "slot {running} failed its health check and was marked bad: {why}"
            )));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    platform::log::set_name("abupdate");
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ abupdate::error::Error::Unhealthy(_)) => {
            eprintln!("abupdate: unhealthy: {}", platform::chain(&e));
            ExitCode::from(platform::exit::DEGRADED)
        }
        Err(e) => {
            eprintln!("abupdate: error: {}", platform::chain(&e));
            ExitCode::FAILURE
        }
    }
}
