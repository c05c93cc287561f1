//! The command line of `cli.rs` (its clap types, here so that the manuals and completions
//! built into the image are made from the same definitions the binary parses).

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "EVE storage appliance init (PID 1) and its control commands"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Show onboot steps and services as init sees them.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Stop services, unmount and reboot.
    Reboot,
    /// Stop services, unmount and power off.
    Poweroff,
}
