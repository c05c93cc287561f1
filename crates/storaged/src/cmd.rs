//! The zpool and zfs calls maintenance makes, by absolute path through the platform runner
//! (errors carry argv, exit status and stderr).

use crate::error::{Error, Result};
use crate::pool::{self, PoolState};
use platform::zfs::{ZFS, ZPOOL};
use platform::CmdError;

fn run(prog: &str, args: &[&str]) -> Result<String> {
    Ok(platform::cmd::run(prog, args)?)
}

pub fn status(name: &str) -> Result<PoolState> {
    let args = ["status", "-j", "--json-int", "-p", "-t", name];
    let out = run(ZPOOL, &args)?;
    pool::parse_status(&out, name).map_err(|msg| {
        Error::Cmd(CmdError::Output {
            argv: format!("{ZPOOL} {}", args.join(" ")),
            msg,
        })
    })
}

/// `pool` as `zpool import` lists it when it is not imported (where storage-init looks), or
/// `None` when it is not there either.
pub fn importable(name: &str) -> Option<PoolState> {
    // It exits 1 with "no pools available" when there are none.
    run(ZPOOL, &["import", "-d", "/dev/disk/by-partuuid"])
        .ok()
        .and_then(|o| pool::parse_import(&o, name))
        .map(|mut p| {
            // Members are named by their partition's uuid (a missing one by its guid).
            for l in &mut p.leaves {
                if l.guid == 0 {
                    l.path = Some(format!("/dev/disk/by-partuuid/{}", l.name));
                }
            }
            p
        })
}

/// The pool's creation time: its root dataset's.
pub fn created(name: &str) -> Result<u64> {
    let args = ["get", "-H", "-p", "-o", "value", "creation", name];
    let out = run(ZFS, &args)?;
    out.trim().parse().map_err(|_| {
        Error::Cmd(CmdError::Output {
            argv: format!("{ZFS} {}", args.join(" ")),
            msg: format!("creation `{}` is not a number", out.trim()),
        })
    })
}

pub fn scrub(name: &str) -> Result<()> {
    run(ZPOOL, &["scrub", name]).map(|_| ())
}

/// `zpool scrub -s`: stops the running scrub.
pub fn scrub_stop(name: &str) -> Result<()> {
    run(ZPOOL, &["scrub", "-s", name]).map(|_| ())
}

pub fn trim(name: &str) -> Result<()> {
    run(ZPOOL, &["trim", name]).map(|_| ())
}

/// `zpool replace -f POOL OLD NEW`: `-f` because NEW's fresh partition has no label to protect.
pub fn replace(name: &str, old: &str, new: &str) -> Result<()> {
    run(ZPOOL, &["replace", "-f", name, old, new]).map(|_| ())
}

pub fn online(name: &str, member: &str, online: bool) -> Result<()> {
    run(
        ZPOOL,
        &[if online { "online" } else { "offline" }, name, member],
    )
    .map(|_| ())
}

/// `zpool add -f POOL VDEVS...`: `-f` because the fresh partitions have no label to protect, and
/// the layout was matched before (`disks::plan_add`).
pub fn add(name: &str, vdevs: &[String]) -> Result<()> {
    let mut a = vec!["add", "-f", name];
    a.extend(vdevs.iter().map(String::as_str));
    run(ZPOOL, &a).map(|_| ())
}
