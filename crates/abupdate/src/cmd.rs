//! The tools the boot health check reads, by absolute path, through the platform runner.

pub use platform::cmd::run;
pub use platform::zfs::{ZFS, ZPOOL};
