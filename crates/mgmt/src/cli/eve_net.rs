//! The command line of `eve_net.rs` (its clap types, here so that the manuals and completions
//! built into the image are made from the same definitions the binary parses).

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Firewall, then static addresses or DHCP on every Ethernet port"
)]
pub struct Cli {
    /// The network settings (CONFIG partition); the defaults when absent or wrong.
    #[arg(long, default_value = netconf::PATH)]
    pub network: std::path::PathBuf,
    /// The volume settings that say where NVMe/TCP listens [default: as `storagectl volume`
    /// reads them].
    #[arg(long)]
    pub volumes_config: Option<std::path::PathBuf>,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long, default_value = "/usr/lib/eve/udhcpc.script")]
    pub dhcp_script: String,
}
