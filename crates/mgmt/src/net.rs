//! The production image's network (`eve-net`): a firewall that lets in only the management API
//! (and DHCP replies), loaded before any link comes up, then DHCP on every Ethernet port. It
//! observes the ports, decides one plan (pure, printable with `--dry-run`), then applies it.

use platform::Roots;
use std::path::Path;

/// What the firewall lets in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub api_port: u16,
    /// A plain-HTTP metrics listener's port, when the policy enables one.
    pub metrics_port: Option<u16>,
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
    if let Some(m) = p.metrics_port {
        tcp.push(m.to_string());
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
  }}
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
    Dhcp(String),
}

pub const MODULES: &[&str] = &[
    "nf_tables",
    "nft_ct",
    "nft_limit",
    "nft_reject_inet",
    "nf_conntrack",
];

/// The firewall first: if it cannot be loaded, no link comes up (fail closed).
pub fn decide(p: &Policy, ports: &[String]) -> Vec<Step> {
    let mut s = vec![
        Step::LoadModules(MODULES.to_vec()),
        Step::Firewall(ruleset(p)),
    ];
    s.extend(ports.iter().map(|n| Step::LinkUp(n.clone())));
    s.extend(ports.iter().map(|n| Step::Dhcp(n.clone())));
    s
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::LoadModules(m) => write!(f, "modprobe -a {}", m.join(" ")),
            Step::Firewall(r) => write!(f, "nft -f - <<EOF\n{r}EOF"),
            Step::LinkUp(n) => write!(f, "ip link set {n} up"),
            Step::Dhcp(n) => write!(f, "udhcpc on {n} (supervised)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_firewall_comes_before_any_link_and_admits_only_the_api() {
        let plan = decide(
            &Policy {
                api_port: 8443,
                metrics_port: None,
            },
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
        let m = ruleset(&Policy {
            api_port: 8443,
            metrics_port: Some(9100),
        });
        assert!(m.contains("tcp dport { 8443, 9100 }"));
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
