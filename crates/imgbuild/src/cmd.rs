//! Every external tool the builder runs, by absolute path. Errors carry argv, status and stderr.

use crate::error::{Error, Result};
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};

pub const APT_GET: &str = "/usr/bin/apt-get";
pub const APT_HELPER: &str = "/usr/lib/apt/apt-helper";
pub const DPKG_DEB: &str = "/usr/bin/dpkg-deb";
pub const DEPMOD: &str = "/usr/sbin/depmod";
pub const LDCONFIG: &str = "/usr/sbin/ldconfig";
pub const MKSQUASHFS: &str = "/usr/bin/mksquashfs";
pub const MKFS_VFAT: &str = "/usr/sbin/mkfs.vfat";
pub const MCOPY: &str = "/usr/bin/mcopy";
pub const MMD: &str = "/usr/bin/mmd";
pub const MLABEL: &str = "/usr/bin/mlabel";
pub const GRUB_MKIMAGE: &str = "/usr/bin/grub-mkimage";
pub const ZSTD: &str = "/usr/bin/zstd";
pub const MAKE: &str = "/usr/bin/make";
pub const SH: &str = "/bin/sh";
pub const GIT: &str = "/usr/bin/git";
pub const STRIP: &str = "/usr/bin/strip";
pub const OBJCOPY: &str = "/usr/bin/objcopy";
pub const OPENSSL: &str = "/usr/bin/openssl";
pub const GPG: &str = "/usr/bin/gpg";
pub const GPGCONF: &str = "/usr/bin/gpgconf";
pub const OSSLSIGNCODE: &str = "/usr/bin/osslsigncode";
pub const VERITYSETUP: &str = "/usr/sbin/veritysetup";
pub const VIRT_FW_VARS: &str = "/usr/bin/virt-fw-vars";
pub const DPKG_QUERY: &str = "/usr/bin/dpkg-query";

fn render(prog: &str, args: &[&OsStr]) -> String {
    let mut s = prog.to_string();
    for a in args {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `prog args...` in `cwd` and returns stdout; a non-zero exit becomes `Error::Command`.
pub fn run<S: AsRef<OsStr>>(prog: &str, args: &[S], cwd: Option<&Path>) -> Result<Vec<u8>> {
    run_in(prog, args, cwd, &[])
}

/// `run` with extra environment variables (SOURCE_DATE_EPOCH for reproducible output).
pub fn run_env<S: AsRef<OsStr>>(prog: &str, args: &[S], env: &[(&str, String)]) -> Result<Vec<u8>> {
    run_in(prog, args, None, env)
}

fn run_in<S: AsRef<OsStr>>(
    prog: &str,
    args: &[S],
    cwd: Option<&Path>,
    env: &[(&str, String)],
) -> Result<Vec<u8>> {
    let args: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
    let mut c = Command::new(prog);
    c.envs(env.iter().map(|(k, v)| (k, v)));
    c.args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(d) = cwd {
        c.current_dir(d);
    }
    let out = c.output().map_err(|source| Error::Spawn {
        argv: render(prog, &args),
        source,
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        // The tail is where tools say what went wrong; keep errors readable.
        let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
        return Err(Error::Command {
            argv: render(prog, &args),
            status: out.status.to_string(),
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    Ok(out.stdout)
}

/// Like `run` but sends the tool's output to `log` (for long builds whose output is only useful on failure).
pub fn run_logged<S: AsRef<OsStr>>(prog: &str, args: &[S], cwd: &Path, log: &Path) -> Result<()> {
    let args: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
    let logf = std::fs::File::create(log).map_err(|source| Error::Io {
        op: "create",
        path: log.into(),
        source,
    })?;
    let logf2 = logf.try_clone().map_err(|source| Error::Io {
        op: "dup",
        path: log.into(),
        source,
    })?;
    let status = Command::new(prog)
        .args(&args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(logf)
        .stderr(logf2)
        .status()
        .map_err(|source| Error::Spawn {
            argv: render(prog, &args),
            source,
        })?;
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        return Err(Error::Command {
            argv: render(prog, &args),
            status: format!("{status}; full log in {}", log.display()),
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    Ok(())
}
