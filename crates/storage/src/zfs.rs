//! The zpool and zfs commands, by absolute path, and pure parsers of their script output (`-H -p`).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

pub const ZPOOL: &str = "/sbin/zpool";
pub const ZFS: &str = "/sbin/zfs";

#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error("`{argv}` failed ({status}): {stderr}")]
    Failed {
        argv: String,
        status: String,
        stderr: String,
    },
    #[error("`{argv}` could not be started")]
    Spawn {
        argv: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{argv}`: unexpected output: {msg}")]
    Output { argv: String, msg: String },
    #[error("`{argv}` did not finish within {secs} s (killed)")]
    Timeout { argv: String, secs: u64 },
}

/// What a tool printed and how it ended, whatever the status (for tools such as smartctl,
/// whose exit bits report findings).
#[derive(Debug, Clone)]
pub struct Finished {
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a tool that may hang on a failing device: killed after `timeout`. Only a tool that
/// cannot start or does not finish is an error; the caller judges the exit status.
pub fn run_timed(
    prog: &str,
    args: &[&str],
    timeout: std::time::Duration,
) -> Result<Finished, CmdError> {
    let argv = format!("{prog} {}", args.join(" "));
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| CmdError::Spawn {
            argv: argv.clone(),
            source,
        })?;
    // The pipes are drained beside the wait, so a chatty tool cannot block on a full pipe.
    let drain = |p: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut b = Vec::new();
            if let Some(mut p) = p {
                let _ = p.read_to_end(&mut b);
            }
            String::from_utf8_lossy(&b).into_owned()
        })
    };
    use std::io::Read;
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => {
                return Ok(Finished {
                    code: st.code(),
                    stdout: out.join().unwrap_or_default(),
                    stderr: err.join().unwrap_or_default(),
                })
            }
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Ok(None) => {
                let _ = child.kill();
                // A process stuck in the kernel may never be reaped; the readers are left to end
                // with it.
                return Err(CmdError::Timeout {
                    argv,
                    secs: timeout.as_secs(),
                });
            }
            Err(source) => return Err(CmdError::Spawn { argv, source }),
        }
    }
}

/// Runs a tool, optionally feeding `stdin` (key material goes this way, never through argv).
pub fn run(prog: &str, args: &[String], stdin: Option<&[u8]>) -> Result<String, CmdError> {
    let mut c = Command::new(prog);
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    // Key material goes this way: the copy handed to the writer is wiped after use.
    let out = spawn_wait(
        prog,
        args,
        c,
        stdin.map(|d| zeroize::Zeroizing::new(d.to_vec())),
        None,
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a long tool whose progress (its stdout) goes to our stderr, reading `stdin` from a file;
/// its stderr is kept for the error.
pub fn run_progress(
    prog: &str,
    args: &[String],
    stdin: Option<std::fs::File>,
) -> Result<(), CmdError> {
    use std::os::fd::AsFd;
    let progress = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null());
    let mut c = Command::new(prog);
    c.args(args).stdout(progress).stderr(Stdio::piped());
    spawn_wait(prog, args, c, None, stdin).map(|_| ())
}

fn spawn_wait(
    prog: &str,
    args: &[String],
    mut c: Command,
    data: Option<zeroize::Zeroizing<Vec<u8>>>,
    file: Option<std::fs::File>,
) -> Result<std::process::Output, CmdError> {
    let argv = format!("{prog} {}", args.join(" "));
    c.stdin(match (&data, file) {
        (Some(_), _) => Stdio::piped(),
        (None, Some(f)) => Stdio::from(f),
        (None, None) => Stdio::null(),
    });
    let mut child = c.spawn().map_err(|source| CmdError::Spawn {
        argv: argv.clone(),
        source,
    })?;
    if let (Some(data), Some(mut w)) = (data, child.stdin.take()) {
        let _ = w.write_all(&data);
    }
    let out = child.wait_with_output().map_err(|source| CmdError::Spawn {
        argv: argv.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(CmdError::Failed {
            argv,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PoolInfo {
    pub name: String,
    pub guid: u64,
    pub health: String,
    pub size: u64,
    pub allocated: u64,
    pub free: u64,
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
    let out = run(ZPOOL, &args, None)?;
    parse_pool_list(&out).map_err(|msg| CmdError::Output {
        argv: format!("{ZPOOL} {}", args.join(" ")),
        msg,
    })
}

/// `props` of `root` and every filesystem and volume below it.
pub fn get_recursive(root: &str, props: &str) -> Result<Props, CmdError> {
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
    let out = run(ZFS, &args, None)?;
    parse_get(&out).map_err(|msg| CmdError::Output {
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
mod timed_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_timed_tool_gives_its_output_and_status_or_is_killed() {
        let f = run_timed(
            "/bin/sh",
            &["-c", "echo out; echo err >&2; exit 4"],
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(
            (f.code, f.stdout.as_str(), f.stderr.as_str()),
            (Some(4), "out\n", "err\n")
        );
        let t0 = std::time::Instant::now();
        let e = run_timed("/bin/sleep", &["30"], Duration::from_millis(300)).unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert!(
            e.to_string().contains("/bin/sleep 30") && e.to_string().contains("killed"),
            "{e}"
        );
        assert!(matches!(
            run_timed("/nonexistent/tool", &[], Duration::from_secs(1)),
            Err(CmdError::Spawn { .. })
        ));
    }
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

    #[test]
    fn command_errors_carry_argv_status_and_stderr() {
        let e = run(
            "/bin/sh",
            &["-c".into(), "echo boom >&2; exit 3".into()],
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("/bin/sh -c") && e.contains("exit status: 3") && e.contains("boom"),
            "{e}"
        );
        assert_eq!(run("/bin/cat", &[], Some(b"key")).unwrap(), "key");
        assert!(matches!(
            run("/nonexistent/zpool", &[], None),
            Err(CmdError::Spawn { .. })
        ));
    }
}
