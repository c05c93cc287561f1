//! nvmet (the kernel's NVMe-oF target) as data: hosts, subsystems with namespaces and allowed
//! hosts, ports with their subsystem links. Observe reads configfs, `diff` is pure and ordered by
//! the kernel's dependencies, `apply` performs one step at a time.
//!
//! The reconciler owns only what its [`Scope`] names (an NQN prefix and a set of port ids) and
//! never touches other subsystems, hosts or ports an operator made by hand.

use crate::cfs::{run_plan, Cfs, CfsError, Ops, PlanError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Nvmet {
    pub hosts: BTreeMap<String, Host>,
    pub subsystems: BTreeMap<String, Subsystem>,
    pub ports: BTreeMap<u16, Port>,
}

/// A host NQN with its DH-HMAC-CHAP secrets (`DHHC-1:...`); `ctrl_key` makes it bidirectional.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Host {
    pub key: Option<String>,
    pub ctrl_key: Option<String>,
    /// `hmac(sha256)` and friends.
    pub hash: String,
    /// `null` or an ffdhe group.
    pub dhgroup: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Subsystem {
    pub serial: String,
    pub model: String,
    /// Never true for what we export; observed so a hand-made `1` is corrected.
    pub allow_any_host: bool,
    pub allowed_hosts: BTreeSet<String>,
    pub namespaces: BTreeMap<u32, Namespace>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Namespace {
    pub device_path: String,
    /// Both as the kernel prints them: lowercase 8-4-4-4-12.
    pub uuid: String,
    pub nguid: String,
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Port {
    /// `loop` or `tcp`.
    pub trtype: String,
    /// `ipv4`/`ipv6` for tcp; empty for loop.
    pub adrfam: String,
    pub traddr: String,
    pub trsvcid: String,
    pub subsystems: BTreeSet<String>,
}

impl Port {
    /// Two ports are the same listener when their addresses match; loop has no address.
    fn same_address(&self, o: &Port) -> bool {
        self.trtype == o.trtype
            && (self.trtype == "loop"
                || (self.adrfam == o.adrfam
                    && self.traddr == o.traddr
                    && self.trsvcid == o.trsvcid))
    }
}

/// What this reconciler owns.
#[derive(Debug, Clone)]
pub struct Scope {
    pub nqn_prefix: String,
    pub port_ids: BTreeSet<u16>,
}

impl Scope {
    fn owns(&self, nqn: &str) -> bool {
        nqn.starts_with(&self.nqn_prefix)
    }
}

/// `<configfs>/nvmet`.
#[derive(Debug, Clone)]
pub struct Tree {
    pub root: PathBuf,
}

impl Tree {
    pub fn new(configfs: &Path) -> Tree {
        Tree {
            root: configfs.join("nvmet"),
        }
    }
    fn host(&self, h: &str) -> PathBuf {
        self.root.join("hosts").join(h)
    }
    fn subsys(&self, s: &str) -> PathBuf {
        self.root.join("subsystems").join(s)
    }
    fn ns(&self, s: &str, nsid: u32) -> PathBuf {
        self.subsys(s).join("namespaces").join(nsid.to_string())
    }
    fn port(&self, p: u16) -> PathBuf {
        self.root.join("ports").join(p.to_string())
    }
    pub fn available(&self) -> bool {
        self.root.join("subsystems").is_dir()
    }
}

/// Reads the part of nvmet that `scope` owns.
pub fn observe<F: Cfs + ?Sized>(fs: &F, t: &Tree, scope: &Scope) -> Result<Nvmet, CfsError> {
    observe_since(fs, t, scope, None)
}

/// Reads like [`observe`], but where `prev` (an earlier observation) knows a subsystem, only what
/// can change under a running export is read again: who may connect (`attr_allow_any_host`, the
/// allowed hosts), which namespaces exist and whether each is enabled. The kernel refuses a new
/// device path, UUID or NGUID while a namespace is enabled, so for one enabled then and now those
/// are carried over, as are serial and model (fixed once a host has seen them); a namespace that
/// is new, or was or is disabled, is read in full. That is 2 files and 2 directories per
/// subsystem instead of 7 and 2. What it cannot see (a namespace disabled, re-pointed and enabled
/// again between two passes) the caller finds by passing `None` now and then.
pub fn observe_since<F: Cfs + ?Sized>(
    fs: &F,
    t: &Tree,
    scope: &Scope,
    prev: Option<&Nvmet>,
) -> Result<Nvmet, CfsError> {
    let o = Ops { fs };
    let mut n = Nvmet::default();
    let opt = |p: PathBuf| o.get(&p).ok().filter(|s| !s.is_empty());
    for h in o.list(&t.root.join("hosts"))? {
        if !scope.owns(&h) {
            continue;
        }
        let d = t.host(&h);
        n.hosts.insert(
            h,
            Host {
                key: opt(d.join("dhchap_key")),
                ctrl_key: opt(d.join("dhchap_ctrl_key")),
                hash: opt(d.join("dhchap_hash")).unwrap_or_default(),
                dhgroup: opt(d.join("dhchap_dhgroup")).unwrap_or_default(),
            },
        );
    }
    for s in o.list(&t.root.join("subsystems"))? {
        if !scope.owns(&s) {
            continue;
        }
        let d = t.subsys(&s);
        let known = prev.and_then(|p| p.subsystems.get(&s));
        let (serial, model) = match known {
            Some(k) => (k.serial.clone(), k.model.clone()),
            None => (
                opt(d.join("attr_serial")).unwrap_or_default(),
                opt(d.join("attr_model")).unwrap_or_default(),
            ),
        };
        let mut sub = Subsystem {
            serial,
            model,
            allow_any_host: opt(d.join("attr_allow_any_host")).as_deref() == Some("1"),
            allowed_hosts: o.list(&d.join("allowed_hosts"))?.into_iter().collect(),
            namespaces: BTreeMap::new(),
        };
        for ns in o.list(&d.join("namespaces"))? {
            let Ok(id) = ns.parse::<u32>() else { continue };
            let nd = d.join("namespaces").join(&ns);
            let enabled = opt(nd.join("enable")).as_deref() == Some("1");
            let was = known
                .and_then(|k| k.namespaces.get(&id))
                .filter(|w| w.enabled && enabled);
            let n = match was {
                Some(w) => w.clone(),
                None => Namespace {
                    device_path: opt(nd.join("device_path")).unwrap_or_default(),
                    uuid: opt(nd.join("device_uuid")).unwrap_or_default(),
                    nguid: opt(nd.join("device_nguid")).unwrap_or_default(),
                    enabled,
                },
            };
            sub.namespaces.insert(id, n);
        }
        n.subsystems.insert(s, sub);
    }
    for p in o.list(&t.root.join("ports"))? {
        let Ok(id) = p.parse::<u16>() else { continue };
        if !scope.port_ids.contains(&id) {
            continue;
        }
        let d = t.port(id);
        n.ports.insert(
            id,
            Port {
                trtype: opt(d.join("addr_trtype")).unwrap_or_default(),
                adrfam: opt(d.join("addr_adrfam")).unwrap_or_default(),
                traddr: opt(d.join("addr_traddr")).unwrap_or_default(),
                trsvcid: opt(d.join("addr_trsvcid")).unwrap_or_default(),
                subsystems: o.list(&d.join("subsystems"))?.into_iter().collect(),
            },
        );
    }
    Ok(n)
}

/// One step of a plan, in the order the kernel accepts them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    UnlinkPort {
        port: u16,
        nqn: String,
    },
    RemovePort {
        port: u16,
    },
    DisallowHost {
        nqn: String,
        host: String,
    },
    RemoveNamespace {
        nqn: String,
        nsid: u32,
    },
    RemoveSubsystem {
        nqn: String,
    },
    RemoveHost {
        host: String,
    },
    PutHost {
        host: String,
        spec: Host,
    },
    AddSubsystem {
        nqn: String,
        serial: String,
        model: String,
    },
    DenyAnyHost {
        nqn: String,
    },
    PutNamespace {
        nqn: String,
        nsid: u32,
        spec: Namespace,
        exists: bool,
    },
    AllowHost {
        nqn: String,
        host: String,
    },
    AddPort {
        port: u16,
        spec: Port,
    },
    LinkPort {
        port: u16,
        nqn: String,
    },
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::UnlinkPort { port, nqn } => write!(f, "unlink {nqn} from port {port}"),
            Op::RemovePort { port } => write!(f, "remove port {port}"),
            Op::DisallowHost { nqn, host } => write!(f, "disallow {host} on {nqn}"),
            Op::RemoveNamespace { nqn, nsid } => write!(f, "remove namespace {nsid} of {nqn}"),
            Op::RemoveSubsystem { nqn } => write!(f, "remove subsystem {nqn}"),
            Op::RemoveHost { host } => write!(f, "remove host {host}"),
            Op::PutHost { host, .. } => write!(f, "set host {host} and its DH-HMAC-CHAP keys"),
            Op::AddSubsystem { nqn, serial, .. } => {
                write!(f, "add subsystem {nqn} (serial {serial})")
            }
            Op::DenyAnyHost { nqn } => write!(f, "set allow_any_host=0 on {nqn}"),
            Op::PutNamespace {
                nqn, nsid, spec, ..
            } => write!(
                f,
                "set namespace {nsid} of {nqn} to {} (uuid {}) and enable it",
                spec.device_path, spec.uuid
            ),
            Op::AllowHost { nqn, host } => write!(f, "allow {host} on {nqn}"),
            Op::AddPort { port, spec } => {
                if spec.trtype == "loop" {
                    write!(f, "add port {port} (loop)")
                } else {
                    write!(
                        f,
                        "add port {port} ({} {}:{})",
                        spec.trtype, spec.traddr, spec.trsvcid
                    )
                }
            }
            Op::LinkPort { port, nqn } => write!(f, "link {nqn} to port {port}"),
        }
    }
}

/// The steps that turn `have` into `want`. Anything that cannot be changed in place (a port's
/// address, a subsystem's serial or model once set) is torn down and rebuilt.
pub fn diff(want: &Nvmet, have: &Nvmet) -> Vec<Op> {
    let mut ops = Vec::new();
    // Ports and subsystems rebuilt from scratch.
    let rebuild_port: BTreeSet<u16> = have
        .ports
        .iter()
        .filter(|(id, p)| want.ports.get(id).is_none_or(|w| !w.same_address(p)))
        .map(|(id, _)| *id)
        .collect();
    let rebuild_sub: BTreeSet<&String> = have
        .subsystems
        .iter()
        .filter(|(n, s)| {
            want.subsystems
                .get(*n)
                .is_none_or(|w| w.serial != s.serial || w.model != s.model)
        })
        .map(|(n, _)| n)
        .collect();
    let empty = Subsystem::default();

    // Teardown: port links, ports, allowed hosts, namespaces, subsystems, hosts.
    for (id, p) in &have.ports {
        for nqn in &p.subsystems {
            let keep = !rebuild_port.contains(id)
                && !rebuild_sub.contains(nqn)
                && want
                    .ports
                    .get(id)
                    .is_some_and(|w| w.subsystems.contains(nqn));
            if !keep {
                ops.push(Op::UnlinkPort {
                    port: *id,
                    nqn: nqn.clone(),
                });
            }
        }
    }
    ops.extend(rebuild_port.iter().map(|&port| Op::RemovePort { port }));
    for (nqn, s) in &have.subsystems {
        let w = want
            .subsystems
            .get(nqn)
            .filter(|_| !rebuild_sub.contains(nqn));
        for host in &s.allowed_hosts {
            let keep =
                w.is_some_and(|w| w.allowed_hosts.contains(host)) && want.hosts.contains_key(host);
            if !keep {
                ops.push(Op::DisallowHost {
                    nqn: nqn.clone(),
                    host: host.clone(),
                });
            }
        }
    }
    for (nqn, s) in &have.subsystems {
        let w = want
            .subsystems
            .get(nqn)
            .filter(|_| !rebuild_sub.contains(nqn));
        for nsid in s.namespaces.keys() {
            if !w.is_some_and(|w| w.namespaces.contains_key(nsid)) {
                ops.push(Op::RemoveNamespace {
                    nqn: nqn.clone(),
                    nsid: *nsid,
                });
            }
        }
    }
    ops.extend(rebuild_sub.iter().map(|nqn| Op::RemoveSubsystem {
        nqn: (*nqn).clone(),
    }));
    for host in have.hosts.keys() {
        if !want.hosts.contains_key(host) {
            ops.push(Op::RemoveHost { host: host.clone() });
        }
    }

    // Build: hosts, subsystems, namespaces, allowed hosts, ports, port links.
    for (host, spec) in &want.hosts {
        if have.hosts.get(host) != Some(spec) {
            ops.push(Op::PutHost {
                host: host.clone(),
                spec: spec.clone(),
            });
        }
    }
    for (nqn, w) in &want.subsystems {
        let fresh = rebuild_sub.contains(nqn) || !have.subsystems.contains_key(nqn);
        let h = if fresh { &empty } else { &have.subsystems[nqn] };
        if fresh {
            ops.push(Op::AddSubsystem {
                nqn: nqn.clone(),
                serial: w.serial.clone(),
                model: w.model.clone(),
            });
        } else if h.allow_any_host {
            ops.push(Op::DenyAnyHost { nqn: nqn.clone() });
        }
        for (nsid, ns) in &w.namespaces {
            let want_ns = Namespace {
                enabled: true,
                ..ns.clone()
            };
            match h.namespaces.get(nsid) {
                Some(cur) if *cur == want_ns => {}
                cur => ops.push(Op::PutNamespace {
                    nqn: nqn.clone(),
                    nsid: *nsid,
                    spec: want_ns,
                    exists: cur.is_some(),
                }),
            }
        }
    }
    for (nqn, w) in &want.subsystems {
        let fresh = rebuild_sub.contains(nqn) || !have.subsystems.contains_key(nqn);
        for host in &w.allowed_hosts {
            if fresh || !have.subsystems[nqn].allowed_hosts.contains(host) {
                ops.push(Op::AllowHost {
                    nqn: nqn.clone(),
                    host: host.clone(),
                });
            }
        }
    }
    for (id, w) in &want.ports {
        let fresh = rebuild_port.contains(id) || !have.ports.contains_key(id);
        if fresh {
            ops.push(Op::AddPort {
                port: *id,
                spec: Port {
                    subsystems: BTreeSet::new(),
                    ..w.clone()
                },
            });
        }
    }
    for (id, w) in &want.ports {
        let fresh = rebuild_port.contains(id) || !have.ports.contains_key(id);
        for nqn in &w.subsystems {
            let linked =
                !fresh && !rebuild_sub.contains(nqn) && have.ports[id].subsystems.contains(nqn);
            if !linked {
                ops.push(Op::LinkPort {
                    port: *id,
                    nqn: nqn.clone(),
                });
            }
        }
    }
    ops
}

/// Performs one step; `Ok(false)` when the kernel already had it (a re-run after a crash).
pub fn apply_op<F: Cfs + ?Sized>(fs: &F, t: &Tree, op: &Op) -> Result<bool, CfsError> {
    let o = Ops { fs };
    match op {
        Op::UnlinkPort { port, nqn } => o.unlink(&t.port(*port).join("subsystems").join(nqn)),
        Op::RemovePort { port } => o.rmdir(&t.port(*port)),
        Op::DisallowHost { nqn, host } => o.unlink(&t.subsys(nqn).join("allowed_hosts").join(host)),
        Op::RemoveNamespace { nqn, nsid } => {
            let d = t.ns(nqn, *nsid);
            if o.get(&d.join("enable")).is_ok() {
                o.set(&d.join("enable"), "0")?;
            }
            o.rmdir(&d)
        }
        Op::RemoveSubsystem { nqn } => o.rmdir(&t.subsys(nqn)),
        Op::RemoveHost { host } => o.rmdir(&t.host(host)),
        Op::PutHost { host, spec } => {
            let d = t.host(host);
            let mut c = o.mkdir(&d)?;
            c |= o.set(&d.join("dhchap_hash"), &spec.hash)?;
            c |= o.set(&d.join("dhchap_dhgroup"), &spec.dhgroup)?;
            if let Some(k) = &spec.key {
                c |= o.set(&d.join("dhchap_key"), k)?;
            }
            if let Some(k) = &spec.ctrl_key {
                c |= o.set(&d.join("dhchap_ctrl_key"), k)?;
            }
            Ok(c)
        }
        Op::AddSubsystem { nqn, serial, model } => {
            let d = t.subsys(nqn);
            let mut c = o.mkdir(&d)?;
            // Serial and model only take before any host has seen the subsystem.
            c |= o.set(&d.join("attr_serial"), serial)?;
            c |= o.set(&d.join("attr_model"), model)?;
            c |= o.set(&d.join("attr_allow_any_host"), "0")?;
            Ok(c)
        }
        Op::DenyAnyHost { nqn } => o.set(&t.subsys(nqn).join("attr_allow_any_host"), "0"),
        Op::PutNamespace {
            nqn, nsid, spec, ..
        } => {
            let d = t.ns(nqn, *nsid);
            let mut c = o.mkdir(&d)?;
            // The device and its ids are only writable while the namespace is disabled.
            let same = |f: &str, v: &str| o.get(&d.join(f)).ok().as_deref() == Some(v);
            let ids_ok = same("device_path", &spec.device_path)
                && same("device_uuid", &spec.uuid)
                && same("device_nguid", &spec.nguid);
            if !ids_ok {
                c |= o.set(&d.join("enable"), "0")?;
                c |= o.set(&d.join("device_path"), &spec.device_path)?;
                c |= o.set(&d.join("device_uuid"), &spec.uuid)?;
                c |= o.set(&d.join("device_nguid"), &spec.nguid)?;
            }
            c |= o.set(&d.join("enable"), "1")?;
            Ok(c)
        }
        Op::AllowHost { nqn, host } => o.symlink(
            &t.host(host),
            &t.subsys(nqn).join("allowed_hosts").join(host),
        ),
        Op::AddPort { port, spec } => {
            let d = t.port(*port);
            let mut c = o.mkdir(&d)?;
            // Address attributes are read-only once a subsystem is linked (EACCES).
            if spec.trtype != "loop" {
                c |= o.set(&d.join("addr_adrfam"), &spec.adrfam)?;
                c |= o.set(&d.join("addr_traddr"), &spec.traddr)?;
                c |= o.set(&d.join("addr_trsvcid"), &spec.trsvcid)?;
            }
            c |= o.set(&d.join("addr_trtype"), &spec.trtype)?;
            Ok(c)
        }
        Op::LinkPort { port, nqn } => {
            o.symlink(&t.subsys(nqn), &t.port(*port).join("subsystems").join(nqn))
        }
    }
}

/// Applies a plan in order (see [`crate::cfs::run_plan`]).
pub fn apply<F: Cfs + ?Sized>(
    fs: &F,
    t: &Tree,
    ops: &[Op],
) -> Result<Vec<(String, bool)>, PlanError> {
    run_plan("nvmet", ops, |op| apply_op(fs, t, op))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cfs::fake::FaultyFs;

    const P: &str = "nqn.t:";

    fn fake() -> FaultyFs {
        FaultyFs::with_groups(vec![
            ("subsystems", vec!["namespaces", "allowed_hosts"]),
            ("ports", vec!["subsystems", "referrals"]),
        ])
    }

    fn tree(d: &Path) -> Tree {
        let t = Tree::new(d);
        for s in ["hosts", "subsystems", "ports"] {
            std::fs::create_dir_all(t.root.join(s)).unwrap();
        }
        t
    }

    fn scope() -> Scope {
        Scope {
            nqn_prefix: P.into(),
            port_ids: [1, 2].into(),
        }
    }

    fn want(vols: &[(&str, &str)]) -> Nvmet {
        let mut n = Nvmet::default();
        for (v, dev) in vols {
            let host = format!("{P}vm:{v}");
            let nqn = format!("{P}vol:{v}");
            n.hosts.insert(
                host.clone(),
                Host {
                    key: Some(format!("DHHC-1:00:{v}:")),
                    ctrl_key: Some(format!("DHHC-1:00:c{v}:")),
                    hash: "hmac(sha256)".into(),
                    dhgroup: "null".into(),
                },
            );
            n.subsystems.insert(
                nqn.clone(),
                Subsystem {
                    serial: format!("S{v}"),
                    model: "EVE volume".into(),
                    allow_any_host: false,
                    allowed_hosts: [host].into(),
                    namespaces: [(
                        1,
                        Namespace {
                            device_path: dev.to_string(),
                            uuid: format!("uuid-{v}"),
                            nguid: format!("nguid-{v}"),
                            enabled: true,
                        },
                    )]
                    .into(),
                },
            );
            n.ports
                .entry(2)
                .or_insert(Port {
                    trtype: "tcp".into(),
                    adrfam: "ipv4".into(),
                    traddr: "127.0.0.1".into(),
                    trsvcid: "4420".into(),
                    subsystems: BTreeSet::new(),
                })
                .subsystems
                .insert(nqn);
        }
        n
    }

    fn kinds(ops: &[Op]) -> Vec<&'static str> {
        ops.iter()
            .map(|o| match o {
                Op::UnlinkPort { .. } => "unlink_port",
                Op::RemovePort { .. } => "remove_port",
                Op::DisallowHost { .. } => "disallow",
                Op::RemoveNamespace { .. } => "remove_ns",
                Op::RemoveSubsystem { .. } => "remove_subsys",
                Op::RemoveHost { .. } => "remove_host",
                Op::PutHost { .. } => "put_host",
                Op::AddSubsystem { .. } => "add_subsys",
                Op::DenyAnyHost { .. } => "deny_any",
                Op::PutNamespace { .. } => "put_ns",
                Op::AllowHost { .. } => "allow",
                Op::AddPort { .. } => "add_port",
                Op::LinkPort { .. } => "link_port",
            })
            .collect()
    }

    /// observe -> diff -> apply until nothing is left to do; returns the ops of the first pass.
    fn converge(fs: &FaultyFs, t: &Tree, w: &Nvmet) -> Vec<Op> {
        let have = observe(fs, t, &scope()).unwrap();
        let ops = diff(w, &have);
        apply(fs, t, &ops).unwrap();
        let after = observe(fs, t, &scope()).unwrap();
        assert_eq!(&after, w, "observed state after apply");
        assert!(
            diff(w, &after).is_empty(),
            "a second pass has nothing to do"
        );
        ops
    }

    #[test]
    fn create_from_nothing_in_dependency_order_then_a_second_pass_is_a_no_op() {
        let d = tempfile::tempdir().unwrap();
        let (fs, t) = (fake(), tree(d.path()));
        let w = want(&[("a", "/dev/zvol/p/a"), ("b", "/dev/zvol/p/b")]);
        let ops = converge(&fs, &t, &w);
        assert_eq!(
            kinds(&ops),
            [
                "put_host",
                "put_host",
                "add_subsys",
                "put_ns",
                "add_subsys",
                "put_ns",
                "allow",
                "allow",
                "add_port",
                "link_port",
                "link_port"
            ]
        );
        let ns = t.ns(&format!("{P}vol:a"), 1);
        assert_eq!(std::fs::read_to_string(ns.join("enable")).unwrap(), "1");
        assert_eq!(
            std::fs::read_to_string(t.subsys(&format!("{P}vol:a")).join("attr_allow_any_host"))
                .unwrap(),
            "0"
        );
        // Re-applying the same plan (a crash after it finished) changes nothing.
        let changed: Vec<bool> = apply(&fs, &t, &ops)
            .unwrap()
            .into_iter()
            .map(|x| x.1)
            .collect();
        assert!(changed.iter().all(|c| !c), "{changed:?}");
    }

    #[test]
    fn a_light_read_carries_only_what_the_kernel_keeps_fixed_under_an_enabled_namespace() {
        let d = tempfile::tempdir().unwrap();
        let (fs, t) = (fake(), tree(d.path()));
        let w = want(&[("a", "/dev/zvol/p/a"), ("b", "/dev/zvol/p/b")]);
        converge(&fs, &t, &w);
        let prev = observe(&fs, &t, &scope()).unwrap();
        assert_eq!(observe_since(&fs, &t, &scope(), Some(&prev)).unwrap(), w);
        let (a, b) = (format!("{P}vol:a"), format!("{P}vol:b"));
        // Edited behind the kernel's rules (the fake allows it): a light read does not look.
        std::fs::write(t.ns(&a, 1).join("device_path"), "/dev/other").unwrap();
        std::fs::write(t.subsys(&a).join("attr_serial"), "X").unwrap();
        assert_eq!(observe_since(&fs, &t, &scope(), Some(&prev)).unwrap(), w);
        // What can change under a running export is seen: a namespace disabled (and then its
        // device path read again), any host let in, a host link gone.
        std::fs::write(t.ns(&a, 1).join("enable"), "0").unwrap();
        std::fs::write(t.subsys(&b).join("attr_allow_any_host"), "1").unwrap();
        std::fs::remove_file(t.subsys(&b).join("allowed_hosts").join(format!("{P}vm:b"))).unwrap();
        let light = observe_since(&fs, &t, &scope(), Some(&prev)).unwrap();
        let ns = &light.subsystems[&a].namespaces[&1];
        assert!(!ns.enabled);
        assert_eq!(ns.device_path, "/dev/other");
        assert!(light.subsystems[&b].allow_any_host);
        assert!(light.subsystems[&b].allowed_hosts.is_empty());
        // Enabled again: still read in full, since the last observation had it disabled.
        std::fs::write(t.ns(&a, 1).join("enable"), "1").unwrap();
        let again = observe_since(&fs, &t, &scope(), Some(&light)).unwrap();
        assert_eq!(
            again.subsystems[&a].namespaces[&1].device_path,
            "/dev/other"
        );
        // A full read sees everything, the serial included.
        let full = observe(&fs, &t, &scope()).unwrap();
        assert_eq!(full.subsystems[&a].serial, "X");
        assert_eq!(
            observe_since(&fs, &t, &scope(), Some(&Nvmet::default())).unwrap(),
            full,
            "a subsystem the earlier read did not know is read in full"
        );
    }

    #[test]
    fn changes_are_made_in_place_when_the_kernel_allows_and_rebuilt_when_not() {
        let d = tempfile::tempdir().unwrap();
        let (fs, t) = (fake(), tree(d.path()));
        converge(
            &fs,
            &t,
            &want(&[("a", "/dev/zvol/p/a"), ("b", "/dev/zvol/p/b")]),
        );

        // A new device path: only the namespace, disabled while it changes.
        let mut w = want(&[("a", "/dev/zvol/p/a2"), ("b", "/dev/zvol/p/b")]);
        fs.clear();
        assert_eq!(kinds(&converge(&fs, &t, &w)), ["put_ns"]);
        let log = fs.log.borrow().join("\n");
        let (off, path, on) = (
            log.find("enable").unwrap(),
            log.find("device_path").unwrap(),
            log.rfind("enable").unwrap(),
        );
        assert!(off < path && path < on, "{log}");

        // A new serial cannot be written once hosts have seen it: the subsystem is rebuilt.
        w.subsystems.get_mut(&format!("{P}vol:a")).unwrap().serial = "S-new".into();
        assert_eq!(
            kinds(&converge(&fs, &t, &w)),
            [
                "unlink_port",
                "disallow",
                "remove_ns",
                "remove_subsys",
                "add_subsys",
                "put_ns",
                "allow",
                "link_port"
            ]
        );

        // A new address: the port is read-only while linked, so it is unlinked and remade.
        w.ports.get_mut(&2).unwrap().traddr = "10.1.0.1".into();
        assert_eq!(
            kinds(&converge(&fs, &t, &w)),
            [
                "unlink_port",
                "unlink_port",
                "remove_port",
                "add_port",
                "link_port",
                "link_port"
            ]
        );

        // New CHAP keys are written in place.
        w.hosts.get_mut(&format!("{P}vm:b")).unwrap().key = Some("DHHC-1:00:new:".into());
        assert_eq!(kinds(&converge(&fs, &t, &w)), ["put_host"]);

        // allow_any_host set by hand is turned off.
        std::fs::write(
            t.subsys(&format!("{P}vol:b")).join("attr_allow_any_host"),
            "1",
        )
        .unwrap();
        assert_eq!(kinds(&converge(&fs, &t, &w)), ["deny_any"]);
    }

    #[test]
    fn delete_tears_down_in_the_safe_order_and_leaves_foreign_objects_alone() {
        let d = tempfile::tempdir().unwrap();
        let (fs, t) = (fake(), tree(d.path()));
        converge(
            &fs,
            &t,
            &want(&[("a", "/dev/zvol/p/a"), ("b", "/dev/zvol/p/b")]),
        );
        // Someone else's subsystem, host and port.
        std::fs::create_dir_all(t.subsys("nqn.other:x").join("namespaces")).unwrap();
        std::fs::create_dir_all(t.host("nqn.other:h")).unwrap();
        std::fs::create_dir_all(t.port(9).join("subsystems")).unwrap();

        let ops = converge(&fs, &t, &want(&[("b", "/dev/zvol/p/b")]));
        assert_eq!(
            kinds(&ops),
            [
                "unlink_port",
                "disallow",
                "remove_ns",
                "remove_subsys",
                "remove_host"
            ]
        );
        // The fake refuses rmdir of anything still linked or populated, as configfs does, so
        // reaching an empty tree proves the order.
        let ops = converge(&fs, &t, &Nvmet::default());
        assert_eq!(
            kinds(&ops),
            [
                "unlink_port",
                "remove_port",
                "disallow",
                "remove_ns",
                "remove_subsys",
                "remove_host"
            ]
        );
        assert!(t.subsys("nqn.other:x").is_dir());
        assert!(t.host("nqn.other:h").is_dir());
        assert!(t.port(9).is_dir());
        assert!(!t.port(2).exists());
    }

    #[test]
    fn every_kernel_error_stops_the_plan_names_the_step_and_path_and_the_next_pass_converges() {
        let full = want(&[("a", "/dev/zvol/p/a")]);
        let cases: [(&str, &str, i32, &str, bool); 5] = [
            // (op, path suffix, errno, expected hint, fault hits the teardown)
            ("rmdir", "vol:a", libc::EBUSY, "in use", true),
            (
                "rmdir",
                "ports/2",
                libc::ENOTEMPTY,
                "still has children",
                true,
            ),
            ("write", "addr_traddr", libc::EACCES, "not writable", false),
            ("write", "attr_serial", libc::EINVAL, "rejected", false),
            (
                "symlink",
                "allowed_hosts/nqn.t:vm:a",
                libc::EINVAL,
                "rejected",
                false,
            ),
        ];
        for (op, suffix, errno, hint, teardown) in cases {
            let d = tempfile::tempdir().unwrap();
            let (fs, t) = (fake(), tree(d.path()));
            if teardown {
                converge(&fs, &t, &full);
            }
            let w = if teardown {
                Nvmet::default()
            } else {
                full.clone()
            };
            fs.fail(op, suffix, errno);
            let have = observe(&fs, &t, &scope()).unwrap();
            let ops = diff(&w, &have);
            let e = apply(&fs, &t, &ops).unwrap_err();
            let chain = format!("{e}: {}", e.source);
            assert!(chain.contains(suffix), "{op} {suffix}: {chain}");
            assert!(chain.contains(hint), "{op} {suffix}: {chain}");
            assert!(
                chain.starts_with(&format!("nvmet: step {} of {}", e.step, ops.len())),
                "{chain}"
            );
            assert_eq!(e.source.source.raw_os_error(), Some(errno));
            assert_eq!(e.done, e.step - 1, "steps before the failure were done");
            // The kernel relents (the host disconnected, the link went): the next pass finishes.
            fs.clear();
            converge(&fs, &t, &w);
        }
    }

    #[test]
    fn a_partial_state_left_by_a_crash_converges() {
        let d = tempfile::tempdir().unwrap();
        let (fs, t) = (fake(), tree(d.path()));
        let w = want(&[("a", "/dev/zvol/p/a"), ("b", "/dev/zvol/p/b")]);
        let ops = diff(&w, &observe(&fs, &t, &scope()).unwrap());
        // Stop after every prefix of the plan, and after a half-done namespace (disabled).
        for cut in 0..ops.len() {
            let d = tempfile::tempdir().unwrap();
            let t = tree(d.path());
            apply(&fs, &t, &ops[..cut]).unwrap();
            let ns = t.ns(&format!("{P}vol:a"), 1);
            if ns.join("enable").exists() {
                std::fs::write(ns.join("enable"), "0").unwrap();
            }
            converge(&fs, &t, &w);
        }
    }
}
