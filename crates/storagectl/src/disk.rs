//! `storagectl disk`: list drives, replace, add, offline and online pool members.

use crate::cli::DiskCmd;
use crate::{emit, fail};
use std::process::ExitCode;

/// Waits for a resilver of `pool` to finish, its progress on stderr.
fn wait_resilver(pool: &str) -> Result<(), storaged::Error> {
    let mut last = String::new();
    loop {
        let st = storaged::cmd::status(pool)?;
        match st.scan.as_ref().filter(|s| s.running()) {
            Some(s) => {
                let line = format!("{} {:.0}%", s.function.to_lowercase(), s.percent());
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
            let r = disks::replace(pool, &old, &new).and_then(|part| {
                println!("{old} is being replaced by {new} ({part})");
                if no_wait {
                    Ok(())
                } else {
                    wait_resilver(pool)
                }
            });
            match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
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
