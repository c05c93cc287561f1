//! The command line of `cli.rs` (its clap types, here so that the manuals and completions
//! built into the image are made from the same definitions the binary parses).

use clap::Parser;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Reconcile guest volumes and their nvmet/vhost exports"
)]
pub struct Cli {
    /// Settings file [default: /persist/config/volumes.toml if present, else /etc/volumes.toml].
    /// Re-read before every pass.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// One pass, then exit.
    #[arg(long)]
    pub once: bool,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds between passes when nothing changes.
    #[arg(long, default_value_t = 30)]
    pub interval: u64,
    /// Seconds a kept zvol list is trusted before it is read again in full (drift that no
    /// device link shows, such as a property set by hand, is found then).
    #[arg(long, default_value_t = 600)]
    pub full_every: u64,
}
