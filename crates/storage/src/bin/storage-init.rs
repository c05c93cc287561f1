//! storage-init: the onboot step that turns the box's drives into /persist.

use clap::Parser;
use platform::log;
use platform::Roots;
use std::process::ExitCode;
use storage::cli::{Cli, Cmd};
use storage::realhost::RealHost;
use storage::{apply, config, init, observe};

fn dbx_update(dry_run: bool) -> ExitCode {
    let roots = Roots::host();
    let outcome = roots.storage_outcome();
    let pool = std::fs::read(&outcome)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["pool"].as_str().map(String::from));
    let Some(pool) = pool else {
        eprintln!(
            "storage-init: error: {}: no pool recorded this boot; the firmware's dbx is not changed",
            outcome.display()
        );
        return ExitCode::FAILURE;
    };
    let _vault = match storage::vault::lock(&roots) {
        Ok(l) => l,
        Err(e) => return report(&e),
    };
    let mut host = RealHost::new(roots);
    let sb = storage::vault::secure_boot(&host.roots.sys);
    let enc = config::image_encryption();
    match storage::dbx::update(&mut host, &pool, &enc, sb, dry_run) {
        Ok(o) => {
            println!("storage-init: {}", o.text());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("storage-init: error: firmware dbx update: {e}");
            ExitCode::FAILURE
        }
    }
}

fn raise_floor() -> ExitCode {
    use storage::floor::{raise_after_good_boot, AfterBoot};
    match raise_after_good_boot(&Roots::host()) {
        Ok(AfterBoot::NoTpm) => println!("storage-init: no TPM: no rollback floor to keep"),
        Ok(AfterBoot::NotGood(why)) => println!("storage-init: {why}"),
        Ok(AfterBoot::Raised(r)) => {
            match r.changed() {
                true => println!("storage-init: rollback floor raised: {}", r.text()),
                false => println!("storage-init: rollback floor: {}", r.text()),
            }
            // A vault unlocked this boot by a seal from before the floor (or its origins) gets a
            // seal bound to it, under the floor lock (the key-list counter moves). The vault's
            // lock comes first, as everywhere (recovery and the dbx update take the floor's
            // inside it): the other order deadlocks against a recovery running meanwhile.
            let _vault = match storage::vault::lock(&Roots::host()) {
                Ok(l) => l,
                Err(e) => return report(&e),
            };
            let lock = abupdate::system::System::open(Roots::host()).and_then(|s| s.floor_lock());
            let _lock = match lock {
                Ok(l) => l,
                Err(e) => {
                    eprintln!(
                        "storage-init: error: the rollback floor's lock: {}",
                        platform::chain(&e)
                    );
                    return ExitCode::FAILURE;
                }
            };
            let mut host = RealHost::new(Roots::host());
            host.builtin_floor = Some(r.target.2);
            let sb = storage::vault::secure_boot(&host.roots.sys);
            let enc = config::image_encryption();
            match storage::vault::finish_floor_migration(&mut host, &enc, sb) {
                None => {}
                Some(Ok(what)) => println!("storage-init: {what}"),
                Some(Err(e)) => {
                    eprintln!(
                        "storage-init: error: replacing the seal from before the rollback floor: {}",
                        platform::chain(&e)
                    );
                    return ExitCode::FAILURE;
                }
            }
        }
        Err(e) => {
            eprintln!("storage-init: error: raising the rollback floor: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn report(e: &dyn std::error::Error) -> ExitCode {
    eprintln!("storage-init: error: {}", platform::chain(e));
    ExitCode::FAILURE
}

/// The commands that observe storage first.
enum Action {
    Plan { json: bool },
    Run { dry_run: bool },
}

/// `plan` and `run --dry-run` change nothing, yet read the CONFIG partition's policy: they mount
/// it in a mount namespace of their own, which ends with the process, so the box's mounts are as
/// they were.
fn private_mounts() -> std::io::Result<()> {
    // SAFETY: unshare(2) takes no pointers; mount(2) is given a static C string and nulls, which
    // it accepts for a propagation change.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let root = c"/";
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    platform::log::set_name("storage-init");
    let action = match Cli::parse().cmd {
        Cmd::Plan { json } => Action::Plan { json },
        Cmd::Run { dry_run } => Action::Run { dry_run },
        Cmd::RaiseFloor => return raise_floor(),
        Cmd::DbxUpdate { dry_run } => return dbx_update(dry_run),
    };
    let boot_run = matches!(action, Action::Run { dry_run: false });
    if !boot_run {
        if let Err(e) = private_mounts() {
            eprintln!("storage-init: error: a mount namespace of its own (so that reading the CONFIG partition changes nothing): {e}");
            return ExitCode::FAILURE;
        }
    }
    let roots = Roots::host();
    let mountinfo = std::fs::read_to_string(roots.mountinfo()).unwrap_or_default();
    let config_error =
        config::mount_config(&roots, observe::boot_disk(&roots, &mountinfo).as_deref()).err();
    let candidates = config::candidates(config_error);
    let image = config::image_encryption();
    let mut host = RealHost::new(roots);
    let (policy, obs) = match init::observe(&mut host, &candidates, &image, &mountinfo) {
        Ok(o) => o,
        Err(e) => {
            if boot_run {
                apply::end_unlock_phase(&mut host);
            }
            return report(&e);
        }
    };
    if !boot_run {
        let whole = init::whole_plan(&mut host, &candidates, &image, &obs, &policy);
        print_plan(&obs, &whole, matches!(action, Action::Plan { json: true }));
        return ExitCode::SUCCESS;
    }
    for d in &obs.report {
        log(format!(
            "{} ({}, {} MiB, id {}): {:?}",
            d.name,
            format!("{:?}", d.transport).to_lowercase(),
            d.size_bytes >> 20,
            d.stable_id,
            d.verdict
        ));
    }
    let plan = storage::plan::decide(&obs.observed, &policy);
    log(format!("plan: {plan:?}"));
    match init::bring_up(&mut host, &candidates, &image, &plan, &obs, &policy) {
        Ok(o) => {
            println!(
                "storage-init: pool {} guid {} ready at /{} ({} MiB usable); vault {:?}",
                o.pool,
                o.guid,
                o.pool,
                o.size >> 20,
                o.vault
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            // Bring-up stopped, perhaps before the vault: the unlock phase ends all the same
            // (a second extension after the vault's is harmless).
            apply::end_unlock_phase(&mut host);
            report(&e)
        }
    }
}

fn print_plan(obs: &observe::Observation, whole: &storage::plan::BootPlan, json: bool) {
    if json {
        let mut v = whole.json();
        v["devices"] = serde_json::json!(obs.report);
        v["observed"] = serde_json::json!(obs.observed);
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return;
    }
    for d in &obs.report {
        println!(
            "{:<10} {:<9} {:>8} MiB  {:<40} {:?}",
            d.name,
            format!("{:?}", d.transport).to_lowercase(),
            d.size_bytes >> 20,
            d.stable_id,
            d.verdict
        );
    }
    print!("{}", whole.text());
}
