//! Guest disks: each volume is a zvol (thin or thick, in the encrypted vault or clear) exported to
//! its VM through the kernel's own targets (nvmet over TCP or loop, LIO vhost-scsi), so guest I/O
//! ends in the block layer instead of a per-VM qemu block layer. Specs are files in a spool
//! directory; the daemon (`volumed`) and the CLI (`storagectl volume`) run the same reconcile pass.

pub mod apply;
pub mod cache;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod connect;
pub mod decide;
pub mod denied;
pub mod env;
pub mod error;
pub mod guard;
pub mod holders;
pub mod hostside;
pub mod ids;
pub mod import;
pub mod memo;
pub mod name;
pub mod ops;
pub mod parallel;
pub mod reconcile;
pub mod snap;
pub mod spec;
pub mod spool;
pub mod target;
pub mod zvol;

pub use error::{Error, Result};
