//! A/B OS updates for the appliance: slot state kept in GRUB environment blocks on the ESP (read and
//! counted down by stock GRUB at power-on), update artifacts, install into the inactive slot,
//! the end-of-boot health check that marks a slot good or bad, and rollback.

pub mod artifact;
#[cfg(feature = "remote")]
pub mod cli;
pub mod cmd;
pub mod device;
pub mod error;
pub mod esp;
pub mod grubenv;
pub mod health;
pub mod install;
pub mod loader;
pub mod metrics;
pub mod release;
pub mod state;
pub mod system;
pub mod trust;
pub mod verity;
