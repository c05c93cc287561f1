//! Every tool volumes runs, by absolute path, through one seam: [`Tools`]. On the box it is
//! [`SYSTEM`], the platform runner; the unit tests hand a fake that models zfs, so a whole pass
//! (observe, plan, apply, and the pass after it) runs without a pool.

pub use platform::cmd::CmdError;
pub use platform::zfs::{PoolInfo, ZFS, ZPOOL};

pub const QEMU_IMG: &str = "/usr/bin/qemu-img";
/// udev's tool, to have it process the zvols' block devices again.
pub const UDEVADM: &str = "/bin/udevadm";
pub const BLOCKDEV: &str = "/sbin/blockdev";

pub trait Tools: Sync + std::fmt::Debug {
    /// Runs `prog` with `args`; stdin carries key material, never argv. Its stdout.
    fn run(&self, prog: &str, args: &[String], stdin: Option<&[u8]>) -> Result<String, CmdError>;
    /// Runs a long copy (`zfs receive`, `qemu-img convert`) showing its progress, `stdin` a file.
    fn run_progress(
        &self,
        prog: &str,
        args: &[String],
        stdin: Option<std::fs::File>,
    ) -> Result<(), CmdError>;
}

/// The box's own tools.
#[derive(Debug)]
pub struct System;

pub static SYSTEM: System = System;

impl Tools for System {
    fn run(&self, prog: &str, args: &[String], stdin: Option<&[u8]>) -> Result<String, CmdError> {
        platform::cmd::run_stdin(prog, args, stdin)
    }

    fn run_progress(
        &self,
        prog: &str,
        args: &[String],
        stdin: Option<std::fs::File>,
    ) -> Result<(), CmdError> {
        platform::cmd::run_progress(prog, args, stdin)
    }
}

/// The imported pools (only `name`, when given).
pub fn list_pools(t: &dyn Tools, name: Option<&str>) -> Result<Vec<PoolInfo>, CmdError> {
    platform::zfs::list_pools_with(name, |args| t.run(ZPOOL, args, None))
}

/// A stand-in for zfs, zpool and udevadm that keeps its datasets in memory: enough of each
/// command volumes runs (list, create, get, set, rename, destroy) to run whole passes, with a
/// zvol's device link made under the dev root as udev would. Every call is recorded; the first
/// one starting with a `fail` prefix fails.
#[cfg(test)]
pub mod fake {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::sync::Mutex;

    #[derive(Debug, Clone, Default)]
    pub struct Ds {
        pub volume: bool,
        pub props: BTreeMap<String, String>,
    }

    #[derive(Debug, Default)]
    pub struct State {
        pub datasets: BTreeMap<String, Ds>,
        pub calls: Vec<String>,
        pub fail: Vec<String>,
        pub clock: u64,
    }

    #[derive(Debug)]
    pub struct FakeZfs {
        /// `/dev` of the test's tree: zvol links are made under `zvol/`.
        pub dev: PathBuf,
        pub pool_size: u64,
        pub state: Mutex<State>,
    }

    impl FakeZfs {
        /// A pool with these filesystems (the pool's root included).
        pub fn new(dev: &std::path::Path, filesystems: &[&str]) -> FakeZfs {
            let datasets = filesystems
                .iter()
                .map(|n| (n.to_string(), Ds::default()))
                .collect();
            FakeZfs {
                dev: dev.into(),
                pool_size: 100 << 30,
                state: Mutex::new(State {
                    datasets,
                    ..State::default()
                }),
            }
        }

        pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
            self.state.lock().unwrap_or_else(|p| p.into_inner())
        }

        /// Makes the next call starting with `prefix` (`zfs create`, `zfs destroy`, ...) fail.
        pub fn fail(&self, prefix: &str) {
            self.lock().fail.push(prefix.into());
        }

        /// The calls so far that start with `prefix`, and forgets every call.
        pub fn take_calls(&self, prefix: &str) -> Vec<String> {
            std::mem::take(&mut self.lock().calls)
                .into_iter()
                .filter(|c| c.starts_with(prefix))
                .collect()
        }

        pub fn volumes(&self) -> Vec<String> {
            let s = self.lock();
            s.datasets
                .iter()
                .filter(|(_, d)| d.volume)
                .map(|(n, _)| n.clone())
                .collect()
        }

        fn link(&self, ds: &str) -> PathBuf {
            self.dev.join("zvol").join(ds)
        }

        fn zfs(&self, s: &mut State, a: &[String]) -> Result<String, String> {
            let missing = |ds: &str| format!("cannot open '{ds}': dataset does not exist");
            let arg = |i: usize| a.get(i).map(String::as_str).unwrap_or("");
            let last = a.last().cloned().unwrap_or_default();
            match arg(0) {
                "list" if a.iter().any(|x| x == "snapshot") => Ok(String::new()),
                "list" if a.iter().any(|x| x == "volume") => {
                    let fields: Vec<&str> = a[a.iter().position(|x| x == "-o").unwrap_or(0) + 1]
                        .split(',')
                        .collect();
                    let mut out = String::new();
                    for (n, d) in &s.datasets {
                        if d.volume && n.starts_with(&format!("{last}/")) {
                            let row: Vec<String> = fields
                                .iter()
                                .map(|f| match *f {
                                    "name" => n.clone(),
                                    "used" | "refreservation" | "usedbysnapshots" => {
                                        d.props.get(*f).cloned().unwrap_or("0".into())
                                    }
                                    f => d.props.get(f).cloned().unwrap_or("-".into()),
                                })
                                .collect();
                            out.push_str(&row.join("\t"));
                            out.push('\n');
                        }
                    }
                    Ok(out)
                }
                "list" => s
                    .datasets
                    .contains_key(&last)
                    .then(|| format!("{last}\n"))
                    .ok_or_else(|| missing(&last)),
                "create" => {
                    if s.datasets.contains_key(&last) {
                        return Err(format!("cannot create '{last}': dataset already exists"));
                    }
                    let parent = last.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
                    if !s.datasets.contains_key(parent) {
                        return Err(format!("cannot create '{last}': parent does not exist"));
                    }
                    s.clock += 1;
                    let mut d = Ds::default();
                    d.props.insert("creation".into(), s.clock.to_string());
                    let mut i = 1;
                    while i + 1 < a.len() {
                        match arg(i) {
                            "-V" => {
                                d.volume = true;
                                d.props.insert("volsize".into(), arg(i + 1).into());
                            }
                            "-o" => {
                                if let Some((k, v)) = arg(i + 1).split_once('=') {
                                    d.props.insert(k.into(), v.into());
                                }
                            }
                            _ => {
                                i += 1;
                                continue;
                            }
                        }
                        i += 2;
                    }
                    if d.volume {
                        let vbs = d.props.get("volblocksize").map(|v| match v.as_str() {
                            "16k" => "16384".to_string(),
                            v => v.to_string(),
                        });
                        d.props
                            .insert("volblocksize".into(), vbs.unwrap_or("16384".into()));
                        touch(&self.link(&last));
                    }
                    s.datasets.insert(last, d);
                    Ok(String::new())
                }
                "get" => {
                    let d = s.datasets.get(&last).ok_or_else(|| missing(&last))?;
                    let prop = &a[a.len() - 2];
                    let value = match prop.as_str() {
                        "type" if d.volume => "volume".to_string(),
                        "type" => "filesystem".into(),
                        "keystatus" => "available".into(),
                        p => d.props.get(p).cloned().unwrap_or("-".into()),
                    };
                    let set = d.props.contains_key(prop.as_str());
                    let source = if set { "local" } else { "-" };
                    Ok(
                        match a[a.iter().position(|x| x == "-o").unwrap_or(0) + 1].as_str() {
                            "value,source" => format!("{value}\t{source}\n"),
                            "source" => format!("{source}\n"),
                            _ => format!("{value}\n"),
                        },
                    )
                }
                "set" => {
                    let d = s.datasets.get_mut(&last).ok_or_else(|| missing(&last))?;
                    let (k, v) = arg(1).split_once('=').ok_or("bad set")?;
                    d.props.insert(k.into(), v.into());
                    Ok(String::new())
                }
                "rename" => {
                    let (from, to) = (arg(1).to_string(), arg(2).to_string());
                    let d = s.datasets.remove(&from).ok_or_else(|| missing(&from))?;
                    if d.volume {
                        let _ = std::fs::remove_file(self.link(&from));
                        touch(&self.link(&to));
                    }
                    s.datasets.insert(to, d);
                    Ok(String::new())
                }
                "destroy" => {
                    if !s.datasets.contains_key(&last) {
                        return Err(missing(&last));
                    }
                    let gone: Vec<String> = s
                        .datasets
                        .keys()
                        .filter(|n| **n == last || n.starts_with(&format!("{last}/")))
                        .cloned()
                        .collect();
                    for n in gone {
                        s.datasets.remove(&n);
                        let _ = std::fs::remove_file(self.link(&n));
                    }
                    Ok(String::new())
                }
                c => Err(format!("fake zfs: `{c}` is not modelled")),
            }
        }
    }

    fn touch(p: &std::path::Path) {
        if let Some(d) = p.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        let _ = std::fs::write(p, "");
    }

    impl Tools for FakeZfs {
        fn run(
            &self,
            prog: &str,
            args: &[String],
            _stdin: Option<&[u8]>,
        ) -> Result<String, CmdError> {
            let tool = prog.rsplit('/').next().unwrap_or(prog);
            let line = format!("{tool} {}", args.join(" "));
            let mut s = self.lock();
            s.calls.push(line.clone());
            let failed = |stderr: String| CmdError::Failed {
                argv: line.clone(),
                status: "exit status: 1".into(),
                stderr,
            };
            if let Some(i) = s.fail.iter().position(|f| line.starts_with(f.as_str())) {
                s.fail.remove(i);
                return Err(failed("injected failure".into()));
            }
            match tool {
                "zfs" => self.zfs(&mut s, args).map_err(failed),
                "zpool" => {
                    let used: u64 = s
                        .datasets
                        .values()
                        .filter_map(|d| d.props.get("volsize")?.parse::<u64>().ok())
                        .sum();
                    let pool = s.datasets.keys().next().cloned().unwrap_or_default();
                    Ok(format!(
                        "{pool}\t1\tONLINE\t{}\t{used}\t{}\n",
                        self.pool_size,
                        self.pool_size.saturating_sub(used)
                    ))
                }
                "udevadm" => Ok(String::new()),
                t => Err(failed(format!("fake: `{t}` is not modelled"))),
            }
        }

        fn run_progress(
            &self,
            prog: &str,
            args: &[String],
            _stdin: Option<std::fs::File>,
        ) -> Result<(), CmdError> {
            self.run(prog, args, None).map(|_| ())
        }
    }
}
