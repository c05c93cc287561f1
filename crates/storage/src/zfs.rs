//! The zpool and zfs commands, by absolute path, and pure parsers of their script output (`-H -p`).

use std::collections::BTreeMap;

use crate::cmd::{run, CmdError};
pub use platform::zfs::{list_pools, parse_pool_list, PoolInfo, ZFS, ZPOOL};

/// `props` of `root` and every filesystem and volume below it.
pub fn get_recursive(root: &str, props: &str) -> Result<Props, CmdError> {
    let args = get_recursive_args(root, props);
    parse_get_output(&args, &run(ZFS, &args, None)?)
}

/// The zfs arguments that read `props` of `root` and everything below it.
pub fn get_recursive_args(root: &str, props: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "get",
        "-H",
        "-p",
        "-r",
        "-t",
        "filesystem,volume",
        "-o",
        "name,property,value,source",
    ]
    .map(String::from)
    .to_vec();
    args.extend([props.to_string(), root.to_string()]);
    args
}

/// Pure: [`parse_get`] of what `zfs <args>` printed, a parse failure naming the command.
pub fn parse_get_output(args: &[String], out: &str) -> Result<Props, CmdError> {
    parse_get(out).map_err(|msg| CmdError::Output {
        argv: format!("{ZFS} {}", args.join(" ")),
        msg,
    })
}

/// Dataset -> property -> (value, source), from `zfs get -H -p -o name,property,value,source ...`.
pub type Props = BTreeMap<String, BTreeMap<String, (String, String)>>;

pub fn parse_get(out: &str) -> Result<Props, String> {
    let mut m: Props = BTreeMap::new();
    for l in out.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = l.split('\t').collect();
        if f.len() != 4 {
            return Err(format!("expected 4 fields, got {}: `{l}`", f.len()));
        }
        m.entry(f[0].into())
            .or_default()
            .insert(f[1].into(), (f[2].into(), f[3].into()));
    }
    Ok(m)
}

/// Pool names and GUIDs `zpool import` (no arguments) offers, from its human output.
pub fn parse_importable(out: &str) -> Vec<(String, u64)> {
    let mut v = Vec::new();
    let mut name: Option<String> = None;
    for l in out.lines().map(str::trim) {
        if let Some(n) = l.strip_prefix("pool: ") {
            name = Some(n.trim().to_string());
        } else if let Some(id) = l.strip_prefix("id: ") {
            if let (Some(n), Ok(g)) = (name.take(), id.trim().parse()) {
                v.push((n, g));
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_output() {
        let out = "persist\tquota\t0\tdefault\npersist/newlog\tquota\t1073741824\tlocal\npersist/newlog\tmountpoint\t/persist/newlog\tlocal\n";
        let m = parse_get(out).unwrap();
        assert_eq!(
            m["persist/newlog"]["quota"],
            ("1073741824".into(), "local".into())
        );
        assert_eq!(m["persist"]["quota"].1, "default");
        assert!(parse_get("a\tb\n").is_err());
    }

    #[test]
    fn importable_pools() {
        let out = "   pool: persist\n     id: 16080224468442356185\n  state: ONLINE\n action: ...\n\n   pool: tank\n     id: 42\n  state: DEGRADED\n";
        assert_eq!(
            parse_importable(out),
            [
                ("persist".to_string(), 16080224468442356185),
                ("tank".to_string(), 42)
            ]
        );
    }
}
