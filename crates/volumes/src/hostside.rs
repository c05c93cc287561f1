//! The host's NVMe initiator side, through sysfs and `/dev/nvme-fabrics`: which controllers are
//! connected to our subsystems, the loop connections that make nvme-loop volumes appear as
//! `/dev/nvmeXnY`, and which hosts are connected to a subsystem (for refusing a delete).

use crate::error::{Error, Result};
use platform::IoContext;
use platform::Roots;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ctrl {
    /// `nvme3`.
    pub name: String,
    pub subsysnqn: String,
    pub hostnqn: String,
    pub transport: String,
    pub state: String,
}

fn attr(d: &Path, f: &str) -> String {
    platform::sysfs::attr(&d.join(f)).unwrap_or_default()
}

/// Fabrics controllers the host has (`/sys/class/nvme/nvme*`), by name.
pub fn controllers(roots: &Roots) -> Vec<Ctrl> {
    let dir = roots.sys.join("class/nvme");
    let mut v: Vec<Ctrl> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let d = e.path();
            Ctrl {
                name: e.file_name().to_string_lossy().into_owned(),
                subsysnqn: attr(&d, "subsysnqn"),
                hostnqn: attr(&d, "hostnqn"),
                transport: attr(&d, "transport"),
                state: attr(&d, "state"),
            }
        })
        .filter(|c| c.transport == "loop" || c.transport == "tcp")
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// The block device of a subsystem's namespace 1 on this host, if connected.
pub fn namespace_dev(roots: &Roots, subsysnqn: &str) -> Option<PathBuf> {
    let is_ns = |n: &str| {
        n.strip_prefix("nvme")
            .and_then(|r| r.split_once('n'))
            .is_some_and(|(a, b)| {
                !a.is_empty()
                    && a.chars().all(|c| c.is_ascii_digit())
                    && !b.is_empty()
                    && b.chars().all(|c| c.is_ascii_digit())
            })
    };
    let subs = roots.sys.join("class/nvme-subsystem");
    for e in std::fs::read_dir(&subs).into_iter().flatten().flatten() {
        if attr(&e.path(), "subsysnqn") != subsysnqn {
            continue;
        }
        let mut names: Vec<String> = std::fs::read_dir(e.path())
            .into_iter()
            .flatten()
            .flatten()
            .map(|x| x.file_name().to_string_lossy().into_owned())
            .filter(|n| is_ns(n))
            .collect();
        names.sort();
        if let Some(n) = names.first() {
            return Some(roots.dev.join(n));
        }
    }
    None
}

/// Hosts connected to a subsystem: local fabrics controllers (any transport) other than our own
/// loop connection, plus remote ones when the kernel has nvmet debugfs.
pub fn connected_hosts(roots: &Roots, subsysnqn: &str, own_loop: bool) -> Vec<String> {
    let mut v: Vec<String> = controllers(roots)
        .into_iter()
        .filter(|c| c.subsysnqn == subsysnqn && !(own_loop && c.transport == "loop"))
        .map(|c| format!("{} ({} via {})", c.hostnqn, c.name, c.transport))
        .collect();
    // CONFIG_NVME_TARGET_DEBUGFS lists every controller of a subsystem, remote ones included.
    let dbg = roots.debugfs.join("nvmet").join(subsysnqn);
    for e in std::fs::read_dir(&dbg).into_iter().flatten().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with("ctrl") {
            let host = attr(&e.path(), "hostnqn");
            let addr = attr(&e.path(), "host_traddr");
            if !v.iter().any(|x| x.starts_with(&host)) {
                v.push(format!("{host} ({n} from {addr})"));
            }
        }
    }
    v
}

/// Whether the kernel lists remote hosts per subsystem (nvmet debugfs, which Debian's kernel is
/// built without): when it does not, only the NVMe/TCP port's open connections say anything.
pub fn sees_remote_controllers(roots: &Roots) -> bool {
    roots.debugfs.join("nvmet").is_dir()
}

/// The peers of every TCP connection to local `port` (`/proc/net/tcp` and `tcp6`) that is being
/// made or in use (every state but LISTEN, TIME_WAIT and CLOSE): NVMe/TCP hosts, one line per
/// queue, deduplicated by address. A host between two connections has none and is not seen.
pub fn tcp_peers(roots: &Roots, port: u16) -> Vec<std::net::IpAddr> {
    let mut v = Vec::new();
    for f in ["net/tcp", "net/tcp6"] {
        let text = std::fs::read_to_string(roots.proc.join(f)).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st ...; 0A LISTEN, 06 TIME_WAIT, 07 CLOSE.
            let (Some(local), Some(remote), Some(st)) = (cols.get(1), cols.get(2), cols.get(3))
            else {
                continue;
            };
            if matches!(*st, "0A" | "06" | "07") {
                continue;
            }
            let lport = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if lport != Some(port) {
                continue;
            }
            if let Some(ip) = remote.rsplit_once(':').and_then(|(a, _)| proc_addr(a)) {
                if !v.contains(&ip) {
                    v.push(ip);
                }
            }
        }
    }
    v
}

/// An address as `/proc/net/tcp*` prints it: 32-bit words in the kernel's byte order.
fn proc_addr(hex: &str) -> Option<std::net::IpAddr> {
    let word = |i: usize| {
        hex.get(i * 8..i * 8 + 8)
            .and_then(|w| u32::from_str_radix(w, 16).ok())
            .map(u32::to_ne_bytes)
    };
    match hex.len() {
        8 => Some(std::net::Ipv4Addr::from(word(0)?).into()),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            let a = std::net::Ipv6Addr::from(b);
            Some(a.to_ipv4_mapped().map_or(a.into(), Into::into))
        }
        _ => None,
    }
}

/// Connects the host to a loop subsystem as `hostnqn` with CHAP; returns the controller name.
pub fn connect_loop(
    roots: &Roots,
    subsysnqn: &str,
    hostnqn: &str,
    hostid: &str,
    key: &str,
    ctrl_key: &str,
) -> Result<String> {
    let p = roots.dev.join("nvme-fabrics");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .at("open", &p)?;
    let opts = format!(
        "transport=loop,nqn={subsysnqn},hostnqn={hostnqn},hostid={hostid},dhchap_secret={key},dhchap_ctrl_secret={ctrl_key}"
    );
    f.write_all(opts.as_bytes()).at("connect through", &p)?;
    // The reply is read from the same open file, without seeking (the device cannot seek).
    let mut s = String::new();
    f.read_to_string(&mut s).at("read", &p)?;
    parse_instance(&s)
        .map(|n| format!("nvme{n}"))
        .ok_or_else(|| Error::State {
            path: p.clone(),
            msg: format!("unexpected reply `{}`", s.trim()),
        })
}

/// `instance=3,cntlid=1` -> 3.
pub fn parse_instance(s: &str) -> Option<u32> {
    s.trim()
        .split(',')
        .find_map(|kv| kv.strip_prefix("instance="))
        .and_then(|n| n.parse().ok())
}

pub fn disconnect(roots: &Roots, ctrl: &str) -> Result<()> {
    let p = roots
        .sys
        .join("class/nvme")
        .join(ctrl)
        .join("delete_controller");
    std::fs::write(&p, "1").at("write", &p)?;
    Ok(())
}

/// Our loop connections by subsystem.
pub fn loop_connections(roots: &Roots, prefix: &str) -> BTreeMap<String, Vec<Ctrl>> {
    let mut m: BTreeMap<String, Vec<Ctrl>> = BTreeMap::new();
    for c in controllers(roots) {
        if c.transport == "loop" && c.subsysnqn.starts_with(prefix) {
            m.entry(c.subsysnqn.clone()).or_default().push(c);
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(p: &Path, v: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, v).unwrap();
    }

    #[test]
    fn finds_controllers_namespaces_and_connected_hosts_in_sysfs() {
        let d = tempfile::tempdir().unwrap();
        let r = Roots::under(d.path());
        let c = r.sys.join("class/nvme");
        for (n, t, s, h) in [
            ("nvme0", "pcie", "nqn.x:local", "-"),
            ("nvme1", "loop", "nqn.e:vol:a", "nqn.e:vm:v1"),
            ("nvme2", "tcp", "nqn.e:vol:b", "nqn.e:vm:v2"),
        ] {
            put(&c.join(n).join("transport"), &format!("{t}\n"));
            put(&c.join(n).join("subsysnqn"), &format!("{s}\n"));
            put(&c.join(n).join("hostnqn"), &format!("{h}\n"));
        }
        put(
            &r.sys.join("class/nvme-subsystem/nvme-subsys1/subsysnqn"),
            "nqn.e:vol:a\n",
        );
        std::fs::create_dir_all(r.sys.join("class/nvme-subsystem/nvme-subsys1/nvme1n1")).unwrap();
        std::fs::create_dir_all(r.sys.join("class/nvme-subsystem/nvme-subsys1/nvme1")).unwrap();
        assert_eq!(controllers(&r).len(), 2);
        assert_eq!(
            namespace_dev(&r, "nqn.e:vol:a"),
            Some(r.dev.join("nvme1n1"))
        );
        assert_eq!(namespace_dev(&r, "nqn.e:vol:b"), None);
        assert!(connected_hosts(&r, "nqn.e:vol:a", true).is_empty());
        assert_eq!(connected_hosts(&r, "nqn.e:vol:a", false).len(), 1);
        assert_eq!(
            connected_hosts(&r, "nqn.e:vol:b", true),
            vec!["nqn.e:vm:v2 (nvme2 via tcp)".to_string()]
        );
        put(
            &r.debugfs.join("nvmet/nqn.e:vol:c/ctrl1/hostnqn"),
            "nqn.e:vm:far\n",
        );
        put(
            &r.debugfs.join("nvmet/nqn.e:vol:c/ctrl1/host_traddr"),
            "10.0.0.9\n",
        );
        assert_eq!(connected_hosts(&r, "nqn.e:vol:c", true).len(), 1);
        assert_eq!(loop_connections(&r, "nqn.e:").len(), 1);
        assert_eq!(parse_instance("instance=3,cntlid=1\n"), Some(3));
        assert_eq!(parse_instance("oops"), None);
    }

    #[test]
    fn established_connections_to_the_port_name_their_peers() {
        let d = tempfile::tempdir().unwrap();
        let r = Roots::under(d.path());
        assert!(!sees_remote_controllers(&r));
        assert!(tcp_peers(&r, 4420).is_empty());
        // 4420 is 0x1144. A listener, two queues from one host, one from another, one to
        // another port, one closing.
        put(
            &r.proc.join("net/tcp"),
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100090A:1144 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0100090A:1144 0200090A:B1C2 01 00000000:00000000 00:00000000 00000000     0        0 0 1
   2: 0100090A:1144 0200090A:B1C4 01 00000000:00000000 00:00000000 00000000     0        0 0 1
   3: 0100090A:1144 0300090A:9000 01 00000000:00000000 00:00000000 00000000     0        0 0 1
   4: 0100090A:20FB 0400090A:9000 01 00000000:00000000 00:00000000 00000000     0        0 0 1
   5: 0100090A:1144 0500090A:9000 06 00000000:00000000 00:00000000 00000000     0        0 0 1
   6: 0100090A:1144 0700090A:9000 03 00000000:00000000 00:00000000 00000000     0        0 0 1
",
        );
        put(
            &r.proc.join("net/tcp6"),
            "  sl  local_address                         remote_address                        st
   0: 00000000000000000000000001000000:1144 0000000000000000FFFF00000600090A:A000 01
   1: 00000000000000000000000001000000:1144 000080FE00000000000000000100000A:A000 01
",
        );
        let want: Vec<std::net::IpAddr> = ["10.9.0.2", "10.9.0.3", "10.9.0.7", "10.9.0.6"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let got = tcp_peers(&r, 4420);
        assert_eq!(&got[..4], &want[..], "{got:?}");
        assert_eq!(got.len(), 5, "{got:?}");
        assert!(got[4].is_ipv6(), "{got:?}");
        std::fs::create_dir_all(r.debugfs.join("nvmet")).unwrap();
        assert!(sees_remote_controllers(&r));
    }
}
