//! The zpool and zfs commands by absolute path, and the one read of them every crate needs: the
//! pool list. Parsers are pure and take script output (`-H -p`).

use crate::cmd::{run, CmdError};

pub const ZPOOL: &str = "/sbin/zpool";
pub const ZFS: &str = "/sbin/zfs";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct PoolInfo {
    pub name: String,
    pub guid: u64,
    pub health: String,
    pub size: u64,
    pub allocated: u64,
    pub free: u64,
}

/// Whether `pool` is imported, from the kernel's own record (`/proc/spl/kstat/zfs/<pool>/state`,
/// kept for every imported pool): no `zpool` process, and no guessing from a command's failure.
pub fn imported(roots: &crate::Roots, pool: &str) -> bool {
    !matches!(pool, "" | "." | "..")
        && !pool.contains('/')
        && roots
            .proc
            .join("spl/kstat/zfs")
            .join(pool)
            .join("state")
            .exists()
}

/// `zpool list -H -p -o name,guid,health,size,allocated,free`
pub fn parse_pool_list(out: &str) -> Result<Vec<PoolInfo>, String> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            if f.len() != 6 {
                return Err(format!("expected 6 fields, got {}: `{l}`", f.len()));
            }
            let n = |i: usize| {
                f[i].parse::<u64>()
                    .map_err(|_| format!("field {} `{}` is not a number", i + 1, f[i]))
            };
            Ok(PoolInfo {
                name: f[0].into(),
                guid: n(1)?,
                health: f[2].into(),
                size: n(3)?,
                allocated: n(4)?,
                free: n(5)?,
            })
        })
        .collect()
}

/// `zpool list` of all pools, or of `name` only.
pub fn list_pools(name: Option<&str>) -> Result<Vec<PoolInfo>, CmdError> {
    list_pools_with(name, |args| run(ZPOOL, args))
}

/// [`list_pools`] through `run`, which runs zpool with the arguments it is given (a crate's own
/// tool seam).
pub fn list_pools_with(
    name: Option<&str>,
    run: impl FnOnce(&[String]) -> Result<String, CmdError>,
) -> Result<Vec<PoolInfo>, CmdError> {
    let mut args: Vec<String> = [
        "list",
        "-H",
        "-p",
        "-o",
        "name,guid,health,size,allocated,free",
    ]
    .map(String::from)
    .to_vec();
    args.extend(name.map(String::from));
    let out = run(&args)?;
    parse_pool_list(&out).map_err(|msg| CmdError::Output {
        argv: format!("{ZPOOL} {}", args.join(" ")),
        msg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_list() {
        let p =
            parse_pool_list("persist\t1234567890123\tONLINE\t10200547328\t1024000\t10199523328\n")
                .unwrap();
        assert_eq!(
            p[0],
            PoolInfo {
                name: "persist".into(),
                guid: 1234567890123,
                health: "ONLINE".into(),
                size: 10200547328,
                allocated: 1024000,
                free: 10199523328
            }
        );
        assert!(parse_pool_list("persist\tx\tONLINE\t1\t2\t3\n")
            .unwrap_err()
            .contains("`x`"));
        assert!(parse_pool_list("short\tline\n").is_err());
        assert!(parse_pool_list("").unwrap().is_empty());
    }
}
