//! What every crate of the appliance shares: where the kernel's trees are ([`Roots`]), the one
//! command runner ([`cmd`]), I/O errors that name their path and the error chain a binary prints
//! ([`error`]), sizes and intervals ([`units`]), the boot disk's partition names ([`layout`]),
//! which block devices are never drives ([`disk`]), eve-init's status schema ([`status`]), the
//! rollback floor stage 1 and the vault share ([`rollback`]), UEFI signature databases
//! ([`efisig`]), the firmware's TPM event log ([`eventlog`]), the one logger ([`log`]) and how
//! a failure is told to scripts: exit codes and JSON errors ([`exit`]), and the one atomic file
//! writer ([`fsx`]).

pub mod cmd;
pub mod disk;
pub mod efisig;
pub mod error;
pub mod eventlog;
pub mod exit;
pub mod fsx;
pub mod layout;
pub mod lock;
pub mod log;
pub mod prom;
pub mod rollback;
pub mod roots;
pub mod status;
pub mod sysfs;
pub mod table;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod tpmcmd;
pub mod units;
pub mod zfs;

pub use cmd::{Cmd, CmdError};
pub use error::{chain, io, IoContext, IoError};
pub use log::log;
pub use roots::Roots;
pub use units::Size;
