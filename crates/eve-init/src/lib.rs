//! eve-init: the appliance's PID 1, in two stages (initramfs, then the slot's squashfs root),
//! plus a small CLI to read its status and request a reboot or power-off.

pub mod backoff;
pub mod bundle;
pub mod cli;
pub mod cmdline;
pub mod logsink;
pub mod machine;
pub mod partfind;
pub mod stage1;
pub mod supervisor;
pub mod sys;

pub mod verity;

/// Present only in the initramfs; its absence means stage 2.
pub const INITRAMFS_MARKER: &str = "/eve-initramfs";
