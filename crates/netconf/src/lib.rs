//! The box's network settings, `network.toml` on the CONFIG partition (optional): the API's
//! port, static addresses per Ethernet port (DHCP for the rest), a plain-HTTP metrics listener
//! (off unless named), and where NVMe/TCP exports listen with the hosts that may reach them
//! (loopback and nobody unless named). Read by `eve-net` (firewall, addresses), `mgmtd` (ports)
//! and the volume service (the NVMe/TCP address). A file that cannot be read or is wrong is
//! refused whole with its path and field, and the defaults (DHCP everywhere, the API alone,
//! NVMe/TCP on loopback) apply: the box stays reachable to be fixed and exposes nothing new.
//!
//! The file is on a partition anyone holding the box can edit, so nothing here may give data
//! away: an NVMe/TCP export still needs the VM's DH-HMAC-CHAP secret, which lives only on the
//! encrypted vault.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// Where it is read from.
pub const PATH: &str = "/config/network.toml";

/// An address with its prefix length, `192.0.2.10/24`; a bare address is a host (/32, /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Net {
    pub fn parse(s: &str) -> Result<Net, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("`{s}`: the prefix length must be 0 to {max}"))?,
        };
        Ok(Net { addr, prefix })
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A static address on one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Static {
    pub address: Net,
    pub gateway: Option<IpAddr>,
}

/// A plain-HTTP `GET /metrics` listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metrics {
    pub listen: SocketAddr,
    /// Who may scrape it; empty: anyone who reaches the address.
    pub allow: Vec<Net>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetPolicy {
    pub api_port: u16,
    pub metrics: Option<Metrics>,
    /// Where NVMe/TCP exports listen, over the volume settings' address (none: theirs).
    pub nvme_tcp_listen: Option<IpAddr>,
    /// Hosts that may reach the NVMe/TCP port (when it listens beyond loopback).
    pub nvme_tcp_allow: Vec<Net>,
    /// Ports with static addresses; the others use DHCP.
    pub statics: BTreeMap<String, Static>,
}

impl Default for NetPolicy {
    fn default() -> NetPolicy {
        NetPolicy {
            api_port: 8443,
            metrics: None,
            nvme_tcp_listen: None,
            nvme_tcp_allow: Vec::new(),
            statics: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    api: Api,
    metrics: Option<MetricsFile>,
    #[serde(default)]
    nvme_tcp: NvmeTcp,
    #[serde(default)]
    interfaces: BTreeMap<String, Iface>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Api {
    port: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsFile {
    listen: String,
    #[serde(default)]
    allow: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NvmeTcp {
    listen: Option<String>,
    #[serde(default)]
    allow: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Iface {
    address: String,
    gateway: Option<String>,
}

fn nets(field: &str, v: &[String]) -> Result<Vec<Net>, String> {
    v.iter()
        .map(|s| Net::parse(s).map_err(|e| format!("{field}: {e}")))
        .collect()
}

impl NetPolicy {
    /// Pure: the settings in `text` (named `path` in errors).
    pub fn parse(path: &Path, text: &str) -> Result<NetPolicy, String> {
        let at = |m: String| format!("{}: {m}", path.display());
        let f: File = toml::from_str(text).map_err(|e| at(e.to_string()))?;
        let mut p = NetPolicy::default();
        if let Some(port) = f.api.port {
            if port == 0 {
                return Err(at("api.port: 0 is not a port".into()));
            }
            p.api_port = port;
        }
        if let Some(m) = f.metrics {
            let listen: SocketAddr = m.listen.parse().map_err(|_| {
                at(format!(
                    "metrics.listen: `{}` is not ADDRESS:PORT (an IP address, not a name)",
                    m.listen
                ))
            })?;
            if listen.port() == p.api_port || listen.port() == 0 {
                return Err(at(format!(
                    "metrics.listen: port {} is taken or not a port",
                    listen.port()
                )));
            }
            p.metrics = Some(Metrics {
                listen,
                allow: nets("metrics.allow", &m.allow).map_err(at)?,
            });
        }
        p.nvme_tcp_allow = nets("nvme_tcp.allow", &f.nvme_tcp.allow).map_err(at)?;
        if let Some(n) = p.nvme_tcp_allow.iter().find(|n| n.prefix == 0) {
            return Err(at(format!(
                "nvme_tcp.allow: `{n}` lets every host in: name the VM hosts (or their network)"
            )));
        }
        if let Some(l) = &f.nvme_tcp.listen {
            let ip: IpAddr = l.parse().map_err(|_| {
                at(format!(
                    "nvme_tcp.listen: `{l}` is not an IP address (the port is the volume settings')"
                ))
            })?;
            // Beyond loopback with nobody allowed would be an address the firewall drops: a
            // mistake, said now rather than found when a VM cannot connect.
            // (`::` takes IPv4 too, as Linux binds it dual-stack.)
            let reachable = p
                .nvme_tcp_allow
                .iter()
                .any(|n| n.addr.is_ipv4() == ip.is_ipv4() || (ip.is_ipv6() && ip.is_unspecified()));
            if !ip.is_loopback() && !reachable {
                return Err(at(format!(
                    "nvme_tcp.listen: {ip} is beyond loopback but nvme_tcp.allow names no {} host that may connect",
                    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
                )));
            }
            p.nvme_tcp_listen = Some(ip);
        }
        for (name, i) in f.interfaces {
            let field = format!("interfaces.{name}");
            if name.is_empty()
                || name.len() > 15
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                return Err(at(format!("{field}: `{name}` is not an interface name")));
            }
            let address =
                Net::parse(&i.address).map_err(|e| at(format!("{field}.address: {e}")))?;
            if address.prefix == if address.addr.is_ipv4() { 32 } else { 128 } {
                return Err(at(format!(
                    "{field}.address: `{}` needs its prefix length (like /24)",
                    i.address
                )));
            }
            let gateway = match i.gateway {
                None => None,
                Some(g) => {
                    let ip: IpAddr = g
                        .parse()
                        .map_err(|_| at(format!("{field}.gateway: `{g}` is not an IP address")))?;
                    if ip.is_ipv4() != address.addr.is_ipv4() {
                        return Err(at(format!(
                            "{field}.gateway: {ip} is not of the address's family"
                        )));
                    }
                    Some(ip)
                }
            };
            p.statics.insert(name, Static { address, gateway });
        }
        Ok(p)
    }

    /// The file's settings; the defaults when there is none; the defaults and why when it is
    /// unreadable or wrong (the caller logs it).
    pub fn load(path: &Path) -> (NetPolicy, Option<String>) {
        match std::fs::read_to_string(path) {
            Ok(t) => match NetPolicy::parse(path, &t) {
                Ok(p) => (p, None),
                Err(e) => (NetPolicy::default(), Some(e)),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (NetPolicy::default(), None),
            Err(e) => (
                NetPolicy::default(),
                Some(format!("{}: {e}", path.display())),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<NetPolicy, String> {
        NetPolicy::parse(Path::new("/config/network.toml"), t)
    }

    #[test]
    fn a_full_file_and_an_empty_one() {
        let p = parse(
            r#"
[api]
port = 9443
[metrics]
listen = "192.0.2.10:9100"
allow = ["192.0.2.0/24", "2001:db8::1"]
[nvme_tcp]
listen = "192.0.2.10"
allow = ["10.1.0.7"]
[interfaces.enp1s0]
address = "192.0.2.10/24"
gateway = "192.0.2.1"
"#,
        )
        .unwrap();
        assert_eq!(p.api_port, 9443);
        let m = p.metrics.unwrap();
        assert_eq!(m.listen, "192.0.2.10:9100".parse().unwrap());
        assert_eq!(m.allow[1].to_string(), "2001:db8::1/128");
        assert_eq!(p.nvme_tcp_allow[0].to_string(), "10.1.0.7/32");
        assert_eq!(p.nvme_tcp_listen, Some("192.0.2.10".parse().unwrap()));
        let s = &p.statics["enp1s0"];
        assert_eq!(s.address.to_string(), "192.0.2.10/24");
        assert_eq!(s.gateway, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(parse("").unwrap(), NetPolicy::default());
    }

    #[test]
    fn bad_fields_are_named_with_the_file() {
        for (t, want) in [
            ("[api]\nport = 0\n", "api.port"),
            ("[api]\nport = 70000\n", "port"),
            ("[metrics]\nlisten = \"box:9100\"\n", "metrics.listen"),
            (
                "[metrics]\nlisten = \"0.0.0.0:8443\"\n",
                "metrics.listen: port 8443",
            ),
            (
                "[metrics]\nlisten = \"0.0.0.0:9100\"\nallow = [\"10.0.0.0/33\"]\n",
                "metrics.allow",
            ),
            ("[nvme_tcp]\nallow = [\"everyone\"]\n", "nvme_tcp.allow"),
            (
                "[nvme_tcp]\nlisten = \"box\"\nallow = [\"10.0.0.1\"]\n",
                "nvme_tcp.listen: `box`",
            ),
            (
                "[nvme_tcp]\nlisten = \"10.0.0.5:4420\"\nallow = [\"10.0.0.1\"]\n",
                "the port is the volume settings'",
            ),
            (
                "[nvme_tcp]\nlisten = \"10.0.0.5\"\n",
                "nvme_tcp.allow names no IPv4 host",
            ),
            (
                "[nvme_tcp]\nallow = [\"0.0.0.0/0\"]\n",
                "lets every host in",
            ),
            ("[nvme_tcp]\nallow = [\"::/0\"]\n", "lets every host in"),
            (
                "[nvme_tcp]\nlisten = \"10.0.0.5\"\nallow = [\"fd00::1\"]\n",
                "no IPv4 host",
            ),
            (
                "[interfaces.eth0]\naddress = \"10.0.0.5\"\n",
                "needs its prefix length",
            ),
            (
                "[interfaces.eth0]\naddress = \"10.0.0.5/24\"\ngateway = \"fe80::1\"\n",
                "family",
            ),
            (
                "[interfaces.\"eth0; reboot\"]\naddress = \"10.0.0.5/24\"\n",
                "not an interface name",
            ),
            (
                "[interfaces.eth0]\naddress = \"10.0.0.5/24\"\nmtu = 9000\n",
                "mtu",
            ),
            ("[firewall]\nopen = true\n", "firewall"),
        ] {
            let e = parse(t).unwrap_err();
            assert!(
                e.starts_with("/config/network.toml: ") && e.contains(want),
                "{t}: {e}"
            );
        }
    }

    #[test]
    fn an_unreadable_or_wrong_file_falls_back_to_the_defaults_and_says_why() {
        let d = tempfile::tempdir().unwrap();
        let (p, why) = NetPolicy::load(&d.path().join("absent.toml"));
        assert_eq!((p, why), (NetPolicy::default(), None));
        let f = d.path().join("network.toml");
        std::fs::write(&f, "[api]\nport = \"x\"\n").unwrap();
        let (p, why) = NetPolicy::load(&f);
        assert_eq!(p, NetPolicy::default());
        assert!(why.unwrap().contains("network.toml"));
        std::fs::write(&f, [0xff, 0xfe]).unwrap();
        assert!(NetPolicy::load(&f).1.is_some());
    }
}
