//! The command line of `cli.rs` (its clap types, here so that the manuals and completions
//! built into the image are made from the same definitions the binary parses).

use clap::Parser;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Scrub and trim the pool on schedule, one operation at a time"
)]
pub struct Cli {
    #[arg(long, default_value = "persist")]
    pub pool: String,
    /// Seconds between looks at the pool when nothing falls due sooner.
    #[arg(long, default_value_t = 300)]
    pub interval: u64,
    /// One look (and at most one start), then exit.
    #[arg(long)]
    pub once: bool,
    /// Print what would start, start nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Where the pool's datasets are mounted (the pool's root is `<root>/<pool>`).
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// The Prometheus textfile (for node_exporter's textfile collector), rewritten after every
    /// health look. A flag of the image, not of the policy: the CONFIG partition must not choose
    /// where a root daemon writes.
    #[arg(long, default_value = "/run/metrics/eve-storage.prom")]
    pub textfile: PathBuf,
}
