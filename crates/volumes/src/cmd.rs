//! Every tool volumes runs, by absolute path, through the platform runner.

/// `run(prog, args, stdin)`: stdin carries key material, never argv.
pub use platform::cmd::{run_progress, run_stdin as run, CmdError};
pub use platform::zfs::{list_pools, ZFS};

pub const QEMU_IMG: &str = "/usr/bin/qemu-img";
/// udev's tool, to have it process the zvols' block devices again.
pub const UDEVADM: &str = "/bin/udevadm";
pub const BLOCKDEV: &str = "/sbin/blockdev";
