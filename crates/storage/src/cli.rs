//! The command line of `cli.rs` (its clap types, here so that the manuals and completions
//! built into the image are made from the same definitions the binary parses).

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Find every drive, pool them into ZFS and give /persist services their datasets"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Show every device, its verdict and the actions that would be taken; change nothing.
    Plan {
        #[arg(long)]
        json: bool,
    },
    /// Bring storage up (the onboot step).
    Run {
        /// Observe and print the plan and dataset diff only.
        #[arg(long)]
        dry_run: bool,
    },
    /// Raise the TPM's rollback floor to the running release's security epoch and update-key
    /// serial, once its slot is good (run after `abupdate health`). Exit 1 when it could not be
    /// raised.
    RaiseFloor,
    /// Write the firmware dbx update the running release carries (revoking older boot loaders),
    /// once its slot is good and the ESP holds its boot loader; the vault's seal is made to open
    /// after it first. Exit 1 when it could not be written.
    DbxUpdate {
        /// Say what would be done; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}
