//! The command line of `cli.rs` (its clap types, here so that the manuals and completions
//! built into the image are made from the same definitions the binary parses).

use crate::state;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "abupdate",
    about = "A/B OS updates with boot counting and rollback"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
    #[command(flatten)]
    pub remote: mgmt_client::Flags,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Running slot, both slots' versions and states, tries left, last failures.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Check an update artifact and write it to the inactive slot, to be tried on the next boot.
    Install {
        /// The update file, or `-` for stdin.
        image: String,
        /// Boots the new slot gets to prove itself.
        #[arg(long, default_value_t = state::DEFAULT_TRIES)]
        tries: u8,
        /// Install a lower version of the same security epoch (never a lower epoch).
        #[arg(long)]
        allow_downgrade: bool,
    },
    /// Check an update artifact (signature, architecture, epoch, checksum) without installing it;
    /// prints its manifest.
    Verify {
        image: String,
        #[arg(long)]
        allow_downgrade: bool,
    },
    /// Mark the running slot good (the health check does this after a healthy boot).
    MarkGood,
    /// Mark a slot bad so it is not booted (default: the running slot).
    MarkBad {
        #[arg(long)]
        slot: Option<String>,
        #[arg(long, default_value = "manual")]
        reason: String,
    },
    /// Boot the other slot next time, if it holds a good image.
    Rollback,
    /// Withdraw an installed slot that has not been booted yet.
    Cancel,
    /// Put the running image's boot loader (shim, GRUB) on the ESP, once the running slot is good,
    /// unless the ESP holds a newer release's (run after the health check, before the rollback
    /// floor is raised).
    Bootloader {
        /// Say what would be done; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// End-of-boot health check: records failed trials, then marks a slot on trial good or bad
    /// (and reboots into the other slot when it is bad).
    Health {
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
        #[arg(long, default_value_t = 15)]
        settle_secs: u64,
        /// Record a failed trial but do not reboot.
        #[arg(long)]
        no_reboot: bool,
    },
}
