//! Every external tool the builder runs, by absolute path. Errors carry argv, status and stderr.

use crate::error::Result;
use platform::Cmd;
use std::ffi::OsStr;
use std::path::Path;

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
/// efitools: signs a signature list for an authenticated variable write (`dbx` appends).
pub const SIGN_EFI_SIG_LIST: &str = "/usr/bin/sign-efi-sig-list";
pub const DPKG_QUERY: &str = "/usr/bin/dpkg-query";

/// Runs `prog args...` in `cwd` and returns stdout; a non-zero exit is an error with its argv,
/// status and stderr's tail.
pub fn run<S: AsRef<OsStr>>(prog: &str, args: &[S], cwd: Option<&Path>) -> Result<Vec<u8>> {
    let c = Cmd::new(prog).args(args);
    Ok(match cwd {
        Some(d) => c.cwd(d),
        None => c,
    }
    .output_bytes()?)
}

/// `run` with extra environment variables (SOURCE_DATE_EPOCH for reproducible output).
pub fn run_env<S: AsRef<OsStr>>(prog: &str, args: &[S], env: &[(&str, String)]) -> Result<Vec<u8>> {
    Ok(Cmd::new(prog).args(args).env(env).output_bytes()?)
}

/// Like `run` but sends the tool's output to `log` (for long builds whose output is only useful
/// on failure); an error quotes the log's tail and names the file.
pub fn run_logged<S: AsRef<OsStr>>(prog: &str, args: &[S], cwd: &Path, log: &Path) -> Result<()> {
    Cmd::new(prog).args(args).cwd(cwd).log(log).output_bytes()?;
    Ok(())
}
