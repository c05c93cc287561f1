//! `storagectl disk`: list drives, replace, add, offline and online pool members.

use crate::cli::DiskCmd;
use crate::{emit, fail};
use std::process::ExitCode;

/// Waits for a resilver of `pool` to finish, its progress on stderr; `observe` reads the pool's
/// state (here, or through the API). Fails when the resilver was cancelled or the pool's state
/// cannot be read.
pub fn wait_resilver<E: std::fmt::Display>(
    pool: &str,
    observe: impl Fn() -> Result<storaged::pool::PoolState, E>,
) -> Result<(), String> {
    let mut last = String::new();
    loop {
        let st = observe().map_err(|e| e.to_string())?;
        match st.scan.as_ref().filter(|s| s.running()) {
            Some(s) => {
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
                let r = st
                    .scan
                    .map(|s| format!("{} {}", s.function.to_lowercase(), s.state.to_lowercase()));
                eprintln!(
                    "storagectl: {pool}: {} ({})",
                    st.state,
                    r.unwrap_or_else(|| "no scan".into())
                );
                return Ok(());
            }
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}

pub fn disk(pool: &str, cmd: DiskCmd) -> ExitCode {
    use storaged::disks;
    match cmd {
        DiskCmd::List { json, bytes } => emit(disks::list(pool), json, |l| l.render(bytes)),
        DiskCmd::Replace { old, new, no_wait } => {
            match disks::replace(pool, &old, &new) {
                Ok(part) => println!("{old} is being replaced by {new} ({part})"),
                Err(e) => return fail(&e),
            }
            if no_wait {
                return ExitCode::SUCCESS;
            }
            match wait_resilver(pool, || {
                storaged::cmd::status(pool).map_err(|e| platform::chain(&e))
            }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("storagectl: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        DiskCmd::Add { drives } => match disks::add(pool, &drives) {
            Ok(parts) => {
                println!(
                    "pool {pool} grew by {} ({})",
                    drives.join(", "),
                    parts.join(", ")
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        DiskCmd::Offline { member } => match disks::set_online(pool, &member, false) {
            Ok(n) => {
                println!("{n} is offline");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        DiskCmd::Online { member } => match disks::set_online(pool, &member, true) {
            Ok(n) => {
                println!("{n} is online");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
    }
}
