//! The command line of `storage-init` (its clap types, here so that the manuals and completions
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
    /// Show every device and its verdict, then the whole plan of a run in the order it would be
    /// applied: the pool, the policy in force, the ARC cap, the vault, the datasets, the mounts
    /// and the files. Changes nothing (the CONFIG partition is read in a mount namespace of its
    /// own). A pool still to be imported is read only once it is: the plan says so.
    Plan {
        #[arg(long)]
        json: bool,
    },
    /// Bring storage up (the onboot step).
    Run {
        /// Print the plan as `plan` does and change nothing.
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
