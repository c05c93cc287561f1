//! Every tool bring-up runs, by absolute path, through the platform runner (argv, status and
//! stderr in each error; key material on stdin, never argv).

pub use platform::cmd::{run_progress, run_timed, CmdError, Finished};
pub use platform::zfs::{ZFS, ZPOOL};

pub const PARTX: &str = "/usr/bin/partx";
pub const BLOCKDEV: &str = "/sbin/blockdev";
pub const UDEVADM: &str = "/bin/udevadm";
pub const MOUNT: &str = "/bin/mount";

/// Runs a tool; argv as owned strings, as bring-up builds them.
pub fn run(prog: &str, args: &[String], stdin: Option<&[u8]>) -> Result<String, CmdError> {
    platform::cmd::run_stdin(prog, args, stdin)
}
