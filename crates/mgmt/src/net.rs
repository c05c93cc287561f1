//! The production image's network (`eve-net`): a firewall that lets in only the management API
//! (and DHCP replies, and what `network.toml` opens), loaded before any link comes up, then the
//! static addresses `network.toml` gives and DHCP on every other Ethernet port. It observes the
//! ports and the settings, decides one plan (pure, printable with `--dry-run`), then applies it.

use netconf::{Net, NetPolicy};
use platform::Roots;
use std::path::Path;

/// What the firewall lets in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub api_port: u16,
    /// A plain-HTTP metrics listener's address and who may reach it (empty: anyone).
    pub metrics: Option<(std::net::SocketAddr, Vec<Net>)>,
    /// The NVMe/TCP port and the hosts that may reach it, when the volume settings put it beyond
    /// loopback (nobody, when none are named).
    pub nvme_tcp: Option<(u16, Vec<Net>)>,
    /// The address NVMe/TCP listens on, when it is one address (the rules then admit that
    /// address only, not every address of the box).
    pub nvme_listen: Option<std::net::IpAddr>,
    /// What the settings asked that the firewall does not do, and why.
    pub notes: Vec<String>,
}

impl Policy {
    /// From the network settings and where NVMe/TCP listens (`address`, `port`).
    pub fn new(n: &NetPolicy, nvme_address: &str, nvme_port: u16) -> Policy {
        let ip = nvme_address.parse::<std::net::IpAddr>().ok();
        let loopback = ip.is_some_and(|a| a.is_loopback());
        let mut notes = Vec::new();
        // The API's port is open to everyone (mutual TLS guards it): NVMe/TCP on it would be too.
        let clash = !loopback && nvme_port == n.api_port;
        if clash {
            notes.push(format!(
                "NVMe/TCP's port {nvme_port} is the API's: NVMe/TCP is not let in (give one of them another port)"
            ));
        }
        let nvme_tcp = (!loopback && !clash).then(|| (nvme_port, n.nvme_tcp_allow.clone()));
        Policy {
            nvme_listen: ip.filter(|a| !a.is_unspecified()),
            notes,
            api_port: n.api_port,
            // A metrics port that is NVMe/TCP's would let everyone reach the exports: not opened
            // (`decide` says so).
            metrics: n
                .metrics
                .as_ref()
                .filter(|m| nvme_tcp.as_ref().is_none_or(|(p, _)| *p != m.listen.port()))
                .map(|m| (m.listen, m.allow.clone())),
            nvme_tcp,
        }
    }
}

/// The metrics port's rules: to its listen address only (when it names one), from the allowed
/// networks only (when there are any).
fn metrics_rules(listen: std::net::SocketAddr, allow: &[Net]) -> String {
    let ip = listen.ip();
    let port = listen.port();
    if ip.is_unspecified() {
        return from_rules(port, allow);
    }
    let fam = if ip.is_ipv4() { "ip" } else { "ip6" };
    let from: Vec<String> = allow
        .iter()
        .filter(|n| n.addr.is_ipv4() == ip.is_ipv4())
        .map(|n| n.to_string())
        .collect();
    if !allow.is_empty() && from.is_empty() {
        return String::new();
    }
    let saddr = if from.is_empty() {
        String::new()
    } else {
        format!("{fam} saddr {{ {} }} ", from.join(", "))
    };
    format!("    {fam} daddr {ip} {saddr}tcp dport {port} ct state new accept\n")
}

/// `ip saddr { .. } tcp dport P ct state new accept` for each family `from` has.
fn from_rules(port: u16, from: &[Net]) -> String {
    let mut out = String::new();
    for (fam, v4) in [("ip", true), ("ip6", false)] {
        let set: Vec<String> = from
            .iter()
            .filter(|n| n.addr.is_ipv4() == v4)
            .map(|n| n.to_string())
            .collect();
        if !set.is_empty() {
            out.push_str(&format!(
                "    {fam} saddr {{ {} }} tcp dport {port} ct state new accept\n",
                set.join(", ")
            ));
        }
    }
    out
}

/// The nftables ruleset: input and forward drop by default; loopback, replies to what the box
/// itself opened, ICMP errors and echo, DHCP replies and the API port get through. Links the box
/// makes itself for its VMs (veth, bridges, taps) are host-only: what listens on them (an NVMe/TCP
/// port the volume settings put on a host-only address) is reached from there alone, never from
/// an Ethernet port. A port that appears later is dropped like the rest, never let through.
/// Applied as one transaction (`nft -f`), replacing whatever was there. Protocols are nft's own
/// keywords, never names nft would look up in /etc/protocols (the image has none).
pub fn ruleset(p: &Policy) -> String {
    let mut tcp = vec![p.api_port.to_string()];
    let mut from = String::new();
    match &p.metrics {
        Some((listen, allow)) if allow.is_empty() && listen.ip().is_unspecified() => {
            tcp.push(listen.port().to_string())
        }
        Some((listen, allow)) => from.push_str(&metrics_rules(*listen, allow)),
        None => {}
    }
    if let Some((port, allow)) = p.nvme_tcp.as_ref().filter(|(_, a)| !a.is_empty()) {
        from.push_str(&match p.nvme_listen {
            Some(ip) => metrics_rules(std::net::SocketAddr::new(ip, *port), allow),
            None => from_rules(*port, allow),
        });
    }
    format!(
        "flush ruleset
table inet eve {{
  chain input {{
    type filter hook input priority filter; policy drop;
    iif \"lo\" accept
    iifname {{ \"veth*\", \"br*\", \"vnet*\", \"tap*\" }} accept
    ct state established,related accept
    ct state invalid drop
    icmp type {{ echo-request, destination-unreachable, time-exceeded, parameter-problem }} limit rate 20/second accept
    icmpv6 type {{ echo-request, destination-unreachable, packet-too-big, time-exceeded, parameter-problem, nd-neighbor-solicit, nd-neighbor-advert }} accept
    udp sport 67 udp dport 68 accept
    udp sport 547 udp dport 546 accept
    tcp dport {{ {} }} ct state new accept
{from}  }}
  chain forward {{
    type filter hook forward priority filter; policy drop;
  }}
}}
",
        tcp.join(", ")
    )
}

/// The Ethernet ports: interfaces of type 1 (ARPHRD_ETHER) backed by a device (not a bridge,
/// veth or tunnel the box made itself), by name.
pub fn ports(roots: &Roots) -> Vec<String> {
    let dir = roots.sys.join("class/net");
    let mut out: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| is_port(&e.path()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn is_port(iface: &Path) -> bool {
    let ty = std::fs::read_to_string(iface.join("type")).unwrap_or_default();
    ty.trim() == "1" && iface.join("device").exists()
}

/// One step of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    LoadModules(Vec<&'static str>),
    Firewall(String),
    LinkUp(String),
    /// A static address on a port, and its default route when it has a gateway.
    Address {
        port: String,
        address: Net,
        gateway: Option<std::net::IpAddr>,
    },
    Dhcp(String),
    /// Something the settings ask for that cannot be done (a port that is not there): said.
    Note(String),
}

pub const MODULES: &[&str] = &[
    "nf_tables",
    "nft_ct",
    "nft_limit",
    "nft_reject_inet",
    "nf_conntrack",
];

/// The firewall first: if it cannot be loaded, no link comes up (fail closed). Then every port
/// up, the static addresses, DHCP on the other ports.
pub fn decide(p: &Policy, n: &NetPolicy, ports: &[String]) -> Vec<Step> {
    let mut s = vec![
        Step::LoadModules(MODULES.to_vec()),
        Step::Firewall(ruleset(p)),
    ];
    s.extend(ports.iter().map(|n| Step::LinkUp(n.clone())));
    for port in ports {
        match n.statics.get(port) {
            Some(st) => s.push(Step::Address {
                port: port.clone(),
                address: st.address,
                gateway: st.gateway,
            }),
            None => s.push(Step::Dhcp(port.clone())),
        }
    }
    for name in n.statics.keys().filter(|k| !ports.contains(k)) {
        s.push(Step::Note(format!(
            "network.toml names port {name}, which this box does not have (ports: {})",
            if ports.is_empty() {
                "none".to_string()
            } else {
                ports.join(", ")
            }
        )));
    }
    if n.metrics.is_some() && p.metrics.is_none() {
        s.push(Step::Note(
            "network.toml's metrics port is NVMe/TCP's: not opened (the exports would be open to all)".into(),
        ));
    }
    for note in &p.notes {
        s.push(Step::Note(note.clone()));
    }
    if let Some((port, allow)) = &p.nvme_tcp {
        if allow.is_empty() {
            s.push(Step::Note(format!(
                "NVMe/TCP listens beyond loopback (port {port}) but network.toml's nvme_tcp.allow names no host: the firewall lets nobody reach it"
            )));
        }
    }
    s
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::LoadModules(m) => write!(f, "modprobe -a {}", m.join(" ")),
            Step::Firewall(r) => write!(f, "nft -f - <<EOF\n{r}EOF"),
            Step::LinkUp(n) => write!(f, "ip link set {n} up"),
            Step::Address {
                port,
                address,
                gateway,
            } => {
                write!(f, "ip addr replace {address} dev {port}")?;
                if let Some(g) = gateway {
                    write!(f, "; ip route replace default via {g} dev {port}")?;
                }
                Ok(())
            }
            Step::Dhcp(n) => write!(f, "udhcpc on {n} (supervised)"),
            Step::Note(m) => write!(f, "# {m}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_firewall_comes_before_any_link_and_admits_only_the_api() {
        let n = NetPolicy::default();
        let plan = decide(
            &Policy::new(&n, "127.0.0.1", 4420),
            &n,
            &["eth0".into(), "eth1".into()],
        );
        assert!(matches!(plan[1], Step::Firewall(_)));
        assert_eq!(plan[2], Step::LinkUp("eth0".into()));
        assert_eq!(plan[5], Step::Dhcp("eth1".into()));
        let Step::Firewall(r) = &plan[1] else {
            unreachable!()
        };
        assert!(r.starts_with("flush ruleset\n"));
        assert!(r.contains("policy drop;") && r.contains("tcp dport { 8443 } ct state new accept"));
        assert_eq!(
            r.matches("dport").count(),
            3,
            "DHCP, DHCPv6 and the API only:\n{r}"
        );
        assert!(
            !r.contains("l4proto"),
            "a protocol name nft resolves through /etc/protocols:\n{r}"
        );
        // Host-only links by name; nothing lets an Ethernet port through.
        assert!(
            r.contains(r#"iifname { "veth*", "br*", "vnet*", "tap*" } accept"#),
            "{r}"
        );
        assert!(!r.contains("\"eth") && !r.contains("\"en"), "{r}");
    }

    #[test]
    fn the_settings_open_the_metrics_port_and_nvme_tcp_to_the_hosts_they_name() {
        let n = NetPolicy::parse(
            Path::new("network.toml"),
            r#"
[metrics]
listen = "0.0.0.0:9100"
[nvme_tcp]
allow = ["10.1.0.7", "10.2.0.0/16", "fd00::5"]
[interfaces.eth1]
address = "192.0.2.10/24"
gateway = "192.0.2.1"
[interfaces.eth9]
address = "192.0.2.11/24"
"#,
        )
        .unwrap();
        // Loopback NVMe/TCP: never in the firewall, whatever the allow list.
        let r = ruleset(&Policy::new(&n, "127.0.0.1", 4420));
        assert!(
            r.contains("tcp dport { 8443, 9100 } ct state new accept"),
            "{r}"
        );
        assert!(!r.contains("4420"), "{r}");
        // On one address: to that address only, from the allowed hosts of its family.
        let r = ruleset(&Policy::new(&n, "10.0.0.5", 4420));
        assert!(
            r.contains("ip daddr 10.0.0.5 ip saddr { 10.1.0.7/32, 10.2.0.0/16 } tcp dport 4420 ct state new accept")
                && !r.contains("fd00::5"),
            "{r}"
        );
        // On every address: from the allowed hosts, to any.
        let r = ruleset(&Policy::new(&n, "0.0.0.0", 4420));
        assert!(
            r.contains("ip saddr { 10.1.0.7/32, 10.2.0.0/16 } tcp dport 4420 ct state new accept")
                && r.contains("ip6 saddr { fd00::5/128 } tcp dport 4420 ct state new accept"),
            "{r}"
        );
        // On the API's port: the API is open to all, so NVMe/TCP is not let in, and said.
        let mut clash = n.clone();
        clash.api_port = 4420;
        let p = Policy::new(&clash, "10.0.0.5", 4420);
        assert_eq!(p.nvme_tcp, None);
        assert!(decide(&p, &clash, &[])
            .iter()
            .any(|s| matches!(s, Step::Note(m) if m.contains("is the API's"))));
        // Metrics limited to a network: not in the open set.
        let mut limited = n.clone();
        if let Some(m) = limited.metrics.as_mut() {
            m.allow = vec![Net::parse("192.0.2.0/24").unwrap()];
        }
        let r = ruleset(&Policy::new(&limited, "127.0.0.1", 4420));
        assert!(
            r.contains("tcp dport { 8443 } ct state new accept")
                && r.contains("ip saddr { 192.0.2.0/24 } tcp dport 9100 ct state new accept"),
            "{r}"
        );
        // A metrics listener on one address: the rule names it.
        let mut on_one = limited.clone();
        if let Some(m) = on_one.metrics.as_mut() {
            m.listen = "192.0.2.10:9100".parse().unwrap();
        }
        let r = ruleset(&Policy::new(&on_one, "127.0.0.1", 4420));
        assert!(
            r.contains(
                "ip daddr 192.0.2.10 ip saddr { 192.0.2.0/24 } tcp dport 9100 ct state new accept"
            ),
            "{r}"
        );
        // On NVMe/TCP's port: never opened, and said.
        let mut clash = n.clone();
        if let Some(m) = clash.metrics.as_mut() {
            m.listen = "0.0.0.0:4420".parse().unwrap();
        }
        let p = Policy::new(&clash, "10.0.0.5", 4420);
        assert_eq!(p.metrics, None);
        let r = ruleset(&p);
        assert!(!r.contains("tcp dport { 8443, 4420 }"), "{r}");
        assert!(decide(&p, &clash, &[])
            .iter()
            .any(|s| matches!(s, Step::Note(m) if m.contains("metrics port is NVMe/TCP's"))));
        // Static where named, DHCP elsewhere, the absent port said; and NVMe/TCP beyond loopback
        // with nobody allowed is said too.
        let plan = decide(
            &Policy::new(&n, "127.0.0.1", 4420),
            &n,
            &["eth0".into(), "eth1".into()],
        );
        assert!(plan.contains(&Step::Dhcp("eth0".into())));
        assert!(!plan.contains(&Step::Dhcp("eth1".into())));
        assert!(plan.iter().any(|s| s.to_string()
            == "ip addr replace 192.0.2.10/24 dev eth1; ip route replace default via 192.0.2.1 dev eth1"));
        assert!(plan
            .iter()
            .any(|s| matches!(s, Step::Note(m) if m.contains("eth9"))));
        let none = NetPolicy::default();
        let plan = decide(&Policy::new(&none, "0.0.0.0", 4420), &none, &[]);
        assert!(plan
            .iter()
            .any(|s| matches!(s, Step::Note(m) if m.contains("lets nobody reach it"))));
        let r = ruleset(&Policy::new(&none, "0.0.0.0", 4420));
        assert!(!r.contains("4420"), "{r}");
    }

    #[test]
    fn ports_are_ethernet_devices_only() {
        let d = tempfile::tempdir().unwrap();
        let roots = Roots::under(d.path());
        let net = d.path().join("sys/class/net");
        for (name, ty, dev) in [
            ("eth0", "1", true),
            ("lo", "772", false),
            ("veth0", "1", false),
            ("enp1s0", "1", true),
            ("wwan0", "519", true),
        ] {
            let p = net.join(name);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("type"), format!("{ty}\n")).unwrap();
            if dev {
                std::fs::create_dir(p.join("device")).unwrap();
            }
        }
        assert_eq!(
            ports(&roots),
            vec!["enp1s0".to_string(), "eth0".to_string()]
        );
    }
}
