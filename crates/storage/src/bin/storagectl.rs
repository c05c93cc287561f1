//! storagectl: the operator's view of the appliance's storage.

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use storage::roots::Roots;
use storage::status::{self, Member, Status};
use storage::{discover, zfs};

#[derive(Parser)]
#[command(version, about = "Inspect the appliance's storage")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Pool health, members, capacity, datasets against their quotas, encryption and keys.
    Status {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "persist")]
        pool: String,
    },
}

/// /dev/disk/by-partuuid/<x> -> (whole disk, its stable id).
fn disk_of(path: &str, devs: &[discover::BlockDev]) -> (Option<String>, Option<String>) {
    let Ok(real) = std::fs::canonicalize(path) else {
        return (None, None);
    };
    let part = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let disk = devs
        .iter()
        .find(|d| d.partitions.contains(&part) || d.name == part);
    (
        disk.map(|d| d.name.clone()),
        disk.map(|d| discover::stable_id(d).0),
    )
}

fn gather(pool: &str) -> Result<Status, zfs::CmdError> {
    // No such pool is a status ("none imported"), not an error.
    let Ok(pools) = zfs::list_pools(Some(pool)) else {
        return Ok(Status {
            pool: None,
            members: vec![],
            datasets: vec![],
        });
    };
    let info = pools.into_iter().next();
    let devs = discover::enumerate(&Roots::host());
    let st = zfs::run(
        zfs::ZPOOL,
        &["status".into(), "-P".into(), pool.into()],
        None,
    )?;
    let members = status::parse_status_members(&st)
        .into_iter()
        .map(|(path, state)| {
            let (disk, stable_id) = disk_of(&path, &devs);
            Member {
                path,
                disk,
                stable_id,
                state,
            }
        })
        .collect();
    let props = zfs::get_recursive(pool, status::DATASET_PROPS)?;
    Ok(Status {
        pool: info,
        members,
        datasets: status::datasets(&props),
    })
}

fn main() -> ExitCode {
    let Cmd::Status { json, pool } = Cli::parse().cmd;
    match gather(&pool) {
        Ok(s) if json => {
            println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(s) => {
            print!("{}", status::render(&s));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("storagectl: {}", storage::bringup::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
