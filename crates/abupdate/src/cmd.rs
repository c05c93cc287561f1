//! External tools, by absolute path; failures carry argv, exit status and stderr.

use crate::error::{Error, Result};
use std::process::Command;

pub const ZPOOL: &str = "/sbin/zpool";
pub const ZFS: &str = "/sbin/zfs";

pub fn run(prog: &str, args: &[&str]) -> Result<String> {
    let argv = std::iter::once(prog)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new(prog)
        .args(args)
        .output()
        .map_err(|e| Error::Command {
            argv: argv.clone(),
            status: "not started".into(),
            stderr: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            argv,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
