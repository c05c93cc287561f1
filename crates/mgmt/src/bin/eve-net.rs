//! eve-net: the production image's network. Loads the firewall, then brings every Ethernet port
//! up with its static address from `/config/network.toml` or a DHCP client, and keeps those
//! clients running (see `mgmt::net` and `netconf`).
//!
//! Exit codes: 0 `--dry-run` printed the plan; 1 a step failed (the firewall could not be
//! loaded: no link was brought up); 2 usage.

use clap::Parser;
use mgmt::cli::eve_net::Cli;
use mgmt::net::{self, Policy, Step};
use std::io::Write;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

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
    let (settings, refused) = netconf::NetPolicy::load(&cli.network);
    if let Some(why) = refused {
        platform::log::warn(format!(
            "network settings REJECTED: {why}; using the defaults (DHCP on every port, the API on 8443 only)"
        ));
    }
    let (nvme_addr, nvme_port) =
        match volumes::config::Config::load_layered(cli.volumes_config.as_deref()) {
            Ok(c) => (c.nvme_tcp.address, c.nvme_tcp.port),
            Err(e) => {
                platform::log(format!(
                    "volume settings: {}; NVMe/TCP is not let in",
                    platform::chain(&e)
                ));
                ("127.0.0.1".to_string(), 0)
            }
        };
    let policy = Policy::new(&settings, &nvme_addr, nvme_port);
    let ports = net::ports(&platform::Roots::host());
    let plan = net::decide(&policy, &settings, &ports);
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
            Step::Address {
                port,
                address,
                gateway,
            } => {
                let a = address.to_string();
                let r =
                    run(&[IP, "addr", "replace", &a, "dev", port], None).and_then(
                        |()| match gateway {
                            Some(g) => {
                                let g = g.to_string();
                                run(
                                    &[IP, "route", "replace", "default", "via", &g, "dev", port],
                                    None,
                                )
                            }
                            None => Ok(()),
                        },
                    );
                match r {
                    Ok(()) => {
                        platform::log(format!(
                            "{port} has {a} (static){}",
                            gateway.map(|g| format!(" via {g}")).unwrap_or_default()
                        ));
                        Ok(())
                    }
                    // One port's address failing leaves the others (and the firewall) in place.
                    Err(e) => {
                        platform::log(format!("{port}: {e}; its static address is not set"));
                        Ok(())
                    }
                }
            }
            Step::Note(m) => {
                platform::log(m.clone());
                Ok(())
            }
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
    let mut open = vec![policy.api_port.to_string()];
    if let Some((l, allow)) = &policy.metrics {
        let p = l.port();
        open.push(if allow.is_empty() {
            format!("{p} (metrics)")
        } else {
            format!("{p} (metrics, from {} networks)", allow.len())
        });
    }
    if let Some((p, allow)) = &policy.nvme_tcp {
        open.push(format!("{p} (NVMe/TCP, from {} networks)", allow.len()));
    }
    platform::log(format!(
        "firewall loaded (TCP {} only); DHCP on {}",
        open.join(", "),
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
