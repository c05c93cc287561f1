//! Every tool volumes runs, by absolute path, through the platform runner.

pub use platform::cmd::{run_progress, CmdError};
pub use platform::zfs::{list_pools, ZFS};

pub const QEMU_IMG: &str = "/usr/bin/qemu-img";
/// udev's tool, to have it process the zvols' block devices again.
pub const UDEVADM: &str = "/bin/udevadm";
pub const BLOCKDEV: &str = "/sbin/blockdev";

/// Runs a tool; argv as owned strings, as volumes builds them; `stdin` for key material.
pub fn run(prog: &str, args: &[String], stdin: Option<&[u8]>) -> Result<String, CmdError> {
    platform::cmd::run_stdin(prog, args, stdin)
}
