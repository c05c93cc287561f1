//! eve-net: the production image's network. Loads the firewall, then brings every Ethernet port
//! up with a DHCP client and keeps those clients running (see `mgmt::net`).
//!
//! Exit codes: 0 `--dry-run` printed the plan; 1 a step failed (the firewall could not be
//! loaded: no link was brought up); 2 usage.

use clap::Parser;
use mgmt::net::{self, Policy, Step};
use std::io::Write;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(version, about = "Firewall, then DHCP on every Ethernet port")]
struct Cli {
    /// The management API's port, the one TCP port let in.
    #[arg(long, default_value_t = 8443)]
    api_port: u16,
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    #[arg(long, default_value = "/usr/lib/eve/udhcpc.script")]
    dhcp_script: String,
}

const MODPROBE: &str = "/sbin/modprobe";
const NFT: &str = "/usr/sbin/nft";
const IP: &str = "/bin/ip";
const BUSYBOX: &str = "/usr/bin/busybox";

fn run(argv: &[&str], stdin: Option<&str>) -> Result<(), String> {
    let mut c = Command::new(argv[0]);
    c.args(&argv[1..]).stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = c.spawn().map_err(|e| format!("{}: {e}", argv.join(" ")))?;
    if let (Some(text), Some(mut i)) = (stdin, child.stdin.take()) {
        i.write_all(text.as_bytes())
            .map_err(|e| format!("{}: {e}", argv.join(" ")))?;
    }
    let st = child
        .wait()
        .map_err(|e| format!("{}: {e}", argv.join(" ")))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("{}: {st}", argv.join(" ")))
    }
}

fn main() -> ExitCode {
    platform::log::set_name("eve-net");
    let cli = Cli::parse();
    let policy = Policy {
        api_port: cli.api_port,
        metrics_port: None,
    };
    let ports = net::ports(&platform::Roots::host());
    let plan = net::decide(&policy, &ports);
    if cli.dry_run {
        for s in &plan {
            println!("{s}");
        }
        return ExitCode::SUCCESS;
    }
    let mut dhcp = Vec::new();
    for s in &plan {
        let r = match s {
            Step::LoadModules(m) => {
                let mut argv = vec![MODPROBE, "-a"];
                argv.extend(m.iter().copied());
                run(&argv, None)
            }
            Step::Firewall(rules) => run(&[NFT, "-f", "-"], Some(rules)),
            Step::LinkUp(n) => run(&[IP, "link", "set", n, "up"], None),
            Step::Dhcp(n) => {
                dhcp.push(n.clone());
                Ok(())
            }
        };
        if let Err(e) = r {
            // Nothing after a failed step runs: above all, no link comes up without the firewall.
            platform::log(format!("{e}; stopping here"));
            return ExitCode::FAILURE;
        }
    }
    platform::log(format!(
        "firewall loaded (TCP {} only); DHCP on {}",
        cli.api_port,
        if dhcp.is_empty() {
            "no port".to_string()
        } else {
            dhcp.join(", ")
        }
    ));
    // One DHCP client per port, restarted when it exits.
    let spawn = |n: &str| {
        Command::new(BUSYBOX)
            .args([
                "udhcpc",
                "-f",
                "-i",
                n,
                "-s",
                &cli.dhcp_script,
                "-A",
                "10",
                "-x",
                "hostname:eve-storage",
            ])
            .stdin(Stdio::null())
            .spawn()
    };
    let mut kids: Vec<(String, Option<std::process::Child>)> = dhcp
        .iter()
        .map(|n| {
            (
                n.clone(),
                spawn(n)
                    .map_err(|e| platform::log(format!("udhcpc on {n}: {e}")))
                    .ok(),
            )
        })
        .collect();
    loop {
        std::thread::sleep(Duration::from_secs(5));
        for (n, k) in kids.iter_mut() {
            let done = match k {
                Some(c) => !matches!(c.try_wait(), Ok(None)),
                None => true,
            };
            if done {
                platform::log(format!("udhcpc on {n} stopped; starting it again"));
                *k = spawn(n)
                    .map_err(|e| platform::log(format!("udhcpc on {n}: {e}")))
                    .ok();
            }
        }
    }
}
