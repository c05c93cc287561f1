//! The target state, pure: from validated volumes and their identities to the nvmet and LIO
//! states they need, and the zvol steps that take the pool from what it has to what the specs say.

use crate::config::Config;
use crate::ids::{self, HostIds, VolumeIds};
use crate::spec::{Transport, Volume};
use crate::zvol::{self, Zvol};
use ktarget::lio::{self, Lio};
use ktarget::nvmet::{self, Nvmet};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

pub const MODEL: &str = "EVE volume";
pub const CHAP_HASH: &str = "hmac(sha256)";

/// One volume as the planner sees it.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub vol: Volume,
    pub ids: VolumeIds,
    pub host: HostIds,
}

pub fn nvmet_scope(cfg: &Config) -> nvmet::Scope {
    nvmet::Scope {
        nqn_prefix: format!("{}:", ids::NQN_BASE),
        port_ids: [cfg.loop_port, cfg.tcp_port_id].into(),
    }
}

/// The nvmet and LIO objects for `wanted` (only volumes whose zvol is or will be ready).
/// Fails when one device would be exported twice.
pub fn targets(wanted: &[Wanted], pool: &str, cfg: &Config) -> Result<(Nvmet, Lio), String> {
    let mut n = Nvmet::default();
    let mut l = Lio::default();
    let mut devices = BTreeSet::new();
    for w in wanted {
        let ds = zvol::dataset(pool, &w.vol);
        let dev = zvol::export_path(&ds);
        if !devices.insert(dev.clone()) {
            return Err(format!("{dev} would be exported twice"));
        }
        match w.vol.transport {
            Transport::NvmeTcp | Transport::NvmeLoop => {
                let nqn = ids::subsystem_nqn(&w.vol.name);
                n.hosts.insert(
                    w.host.nqn.clone(),
                    nvmet::Host {
                        key: Some(w.host.key.clone()),
                        ctrl_key: Some(w.host.ctrl_key.clone()),
                        hash: CHAP_HASH.into(),
                        dhgroup: "null".into(),
                    },
                );
                n.subsystems.insert(
                    nqn.clone(),
                    nvmet::Subsystem {
                        serial: w.ids.serial.clone(),
                        model: MODEL.into(),
                        allow_any_host: false,
                        allowed_hosts: [w.host.nqn.clone()].into(),
                        namespaces: [(
                            1,
                            nvmet::Namespace {
                                device_path: dev,
                                uuid: w.ids.uuid.clone(),
                                nguid: w.ids.nguid.clone(),
                                enabled: true,
                            },
                        )]
                        .into(),
                    },
                );
                let (id, port) = if w.vol.transport == Transport::NvmeLoop {
                    (
                        cfg.loop_port,
                        nvmet::Port {
                            trtype: "loop".into(),
                            ..Default::default()
                        },
                    )
                } else {
                    let v6 = cfg.nvme_tcp.address.contains(':');
                    (
                        cfg.tcp_port_id,
                        nvmet::Port {
                            trtype: "tcp".into(),
                            adrfam: if v6 { "ipv6" } else { "ipv4" }.into(),
                            traddr: cfg.nvme_tcp.address.clone(),
                            trsvcid: cfg.nvme_tcp.port.to_string(),
                            subsystems: BTreeSet::new(),
                        },
                    )
                };
                n.ports.entry(id).or_insert(port).subsystems.insert(nqn);
            }
            Transport::VhostScsi => {
                l.backstores.insert(
                    w.vol.name.clone(),
                    lio::Backstore {
                        udev_path: dev,
                        serial: w.ids.serial.clone(),
                        enabled: true,
                    },
                );
                l.vhost.insert(
                    w.ids.wwpn.clone(),
                    lio::VhostTarget {
                        nexus: initiator_wwn(&w.ids.wwpn),
                        lun0: w.vol.name.clone(),
                    },
                );
            }
            Transport::VhostNvme => {
                return Err(format!(
                    "{}: vhost-nvme is not supported by this kernel",
                    w.vol.name
                ))
            }
        }
    }
    Ok((n, l))
}

/// The nexus' initiator port, derived from the target's WWPN so it is stable too.
pub fn initiator_wwn(wwpn: &str) -> String {
    match (wwpn.get(..11), wwpn.get(12..)) {
        (Some(a), Some(b)) => format!("{a}f{b}"),
        _ => format!("{wwpn}f"),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ZOp {
    /// Create, fill with the initial content, then mark ready.
    Create {
        name: String,
    },
    /// A creation that was interrupted (no content marker): destroy and start over.
    Recreate {
        name: String,
        dataset: String,
    },
    Grow {
        name: String,
        dataset: String,
        from: u64,
        to: u64,
    },
    Destroy {
        name: String,
        dataset: String,
    },
    /// A staging zvol left by an interrupted creation.
    Discard {
        dataset: String,
    },
}

impl fmt::Display for ZOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ZOp::Create { name } => write!(f, "create zvol for {name}"),
            ZOp::Recreate { name, dataset } => {
                write!(
                    f,
                    "recreate {dataset} for {name} (its creation was interrupted)"
                )
            }
            ZOp::Grow {
                dataset, from, to, ..
            } => write!(f, "grow {dataset} from {from} to {to} bytes"),
            ZOp::Destroy { dataset, .. } => write!(f, "destroy {dataset}"),
            ZOp::Discard { dataset } => {
                write!(f, "destroy {dataset} (left by an interrupted creation)")
            }
        }
    }
}

/// A volume whose spec cannot be met without losing data; reported, never applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub name: String,
    pub msg: String,
}

pub fn zvol_diff(
    want: &BTreeMap<String, Volume>,
    have: &[Zvol],
    pool: &str,
) -> (Vec<ZOp>, Vec<Conflict>) {
    let mut ops = Vec::new();
    let mut conflicts = Vec::new();
    let by_name: BTreeMap<&str, &Zvol> = have
        .iter()
        .filter(|z| !z.staging)
        .map(|z| (z.volume.as_str(), z))
        .collect();
    for z in have.iter().filter(|z| z.staging) {
        ops.push(ZOp::Discard {
            dataset: z.dataset.clone(),
        });
    }
    for z in have.iter().filter(|z| !z.staging) {
        if !want.contains_key(&z.volume) {
            ops.push(ZOp::Destroy {
                name: z.volume.clone(),
                dataset: z.dataset.clone(),
            });
        }
    }
    for (name, v) in want {
        let ds = zvol::dataset(pool, v);
        match by_name.get(name.as_str()) {
            None => ops.push(ZOp::Create { name: name.clone() }),
            Some(z) if z.dataset != ds => conflicts.push(Conflict {
                name: name.clone(),
                msg: format!(
                    "exists as {} but the spec puts it at {ds}; moving between vault and clear is not supported",
                    z.dataset
                ),
            }),
            Some(z) if !z.ready => ops.push(ZOp::Recreate {
                name: name.clone(),
                dataset: z.dataset.clone(),
            }),
            Some(z) if v.size < z.volsize => conflicts.push(Conflict {
                name: name.clone(),
                msg: format!(
                    "the spec's size {} is smaller than the zvol's {}; shrinking would lose data",
                    v.size, z.volsize
                ),
            }),
            Some(z) if v.size > z.volsize => ops.push(ZOp::Grow {
                name: name.clone(),
                dataset: z.dataset.clone(),
                from: z.volsize,
                to: v.size,
            }),
            Some(_) => {}
        }
    }
    (ops, conflicts)
}

/// Pure: which new volumes fit above the pool's free-space floor, in order; a thick volume
/// needs its whole size, a thin one only that the pool is not under the floor already. Returns
/// the refused ones with the reason.
pub fn over_floor(new: &[(&str, u64)], free: u64, floor: u64) -> Vec<(String, String)> {
    let mut left = free;
    let mut refused = Vec::new();
    for (name, need) in new {
        if left < floor.saturating_add(*need) {
            refused.push((
                name.to_string(),
                format!(
                    "refused: the pool has {left} bytes free; {need} more would leave less than the free-space floor of {floor} bytes"
                ),
            ));
        } else {
            left -= need;
        }
    }
    refused
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::RawSpec;

    pub fn vol(name: &str, t: &str, extra: &str) -> Volume {
        RawSpec::parse(
            "t.toml",
            &format!("name=\"{name}\"\nsize=\"1G\"\nvm=\"vm1\"\ntransport=\"{t}\"\n{extra}"),
        )
        .unwrap()
        .validate("t.toml")
        .unwrap()
    }

    fn wanted(v: Volume) -> Wanted {
        Wanted {
            ids: VolumeIds {
                serial: format!("S-{}", v.name),
                uuid: "u".into(),
                nguid: "g".into(),
                wwpn: "naa.5001405e0000000a".into(),
            },
            host: HostIds {
                nqn: ids::host_nqn(&v.vm),
                key: "k".into(),
                ctrl_key: "c".into(),
            },
            vol: v,
        }
    }

    #[test]
    fn each_transport_maps_to_its_objects_with_access_limited_to_the_vm() {
        let cfg = Config::default();
        let w = vec![
            wanted(vol("a", "nvme-tcp", "")),
            wanted(vol("b", "nvme-loop", "encrypted = false")),
            wanted(vol("c", "vhost-scsi", "vcpus = 2")),
        ];
        let (n, l) = targets(&w, "persist", &cfg).unwrap();
        assert_eq!(n.subsystems.len(), 2);
        let a = &n.subsystems["nqn.2026-11.org.lfedge.eve:vol:a"];
        assert!(!a.allow_any_host);
        assert_eq!(
            a.allowed_hosts,
            ["nqn.2026-11.org.lfedge.eve:vm:vm1".to_string()].into()
        );
        assert_eq!(
            a.namespaces[&1].device_path,
            "/dev/zvol/persist/vault/volumes/a"
        );
        assert_eq!(
            n.subsystems["nqn.2026-11.org.lfedge.eve:vol:b"].namespaces[&1].device_path,
            "/dev/zvol/persist/clear/volumes/b"
        );
        assert_eq!(n.ports[&2].traddr, "127.0.0.1");
        assert_eq!(n.ports[&2].trsvcid, "4420");
        assert_eq!(n.ports[&2].subsystems.len(), 1);
        assert_eq!(n.ports[&1].trtype, "loop");
        assert_eq!(n.hosts.len(), 1);
        assert_eq!(
            l.backstores["c"].udev_path,
            "/dev/zvol/persist/vault/volumes/c"
        );
        assert_eq!(l.vhost["naa.5001405e0000000a"].lun0, "c");
        assert_eq!(
            l.vhost["naa.5001405e0000000a"].nexus,
            "naa.5001405f0000000a"
        );
    }

    #[test]
    fn the_free_space_floor_holds_for_every_new_volume() {
        assert!(over_floor(&[("a", 0), ("b", 50)], 200, 100).is_empty());
        let r = over_floor(&[("a", 60), ("b", 60), ("c", 0)], 200, 100);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].0, "b");
        assert!(r[0].1.contains("floor"));
        assert_eq!(
            over_floor(&[("t", 0)], 50, 100).len(),
            1,
            "thin under the floor"
        );
        assert_eq!(over_floor(&[("x", u64::MAX)], 10, 1).len(), 1);
    }

    #[test]
    fn one_device_is_never_exported_twice_and_vhost_nvme_is_refused() {
        let cfg = Config::default();
        let w = vec![
            wanted(vol("a", "nvme-tcp", "")),
            wanted(vol("a", "vhost-scsi", "")),
        ];
        assert!(targets(&w, "persist", &cfg)
            .unwrap_err()
            .contains("exported twice"));
        let w = vec![wanted(vol("a", "vhost-nvme", ""))];
        assert!(targets(&w, "persist", &cfg)
            .unwrap_err()
            .contains("not supported by this kernel"));
    }

    fn z(name: &str, ds: &str, size: u64, ready: bool) -> Zvol {
        Zvol {
            dataset: ds.into(),
            volume: name.into(),
            vm: "vm1".into(),
            volsize: size,
            volblocksize: 16384,
            refreservation: 0,
            used: 0,
            snapshots_used: 0,
            ready,
            staging: ds.ends_with(":new"),
        }
    }

    #[test]
    fn zvols_are_created_grown_recreated_destroyed_and_never_shrunk_or_moved() {
        let want: BTreeMap<String, Volume> = [
            ("new", vol("new", "nvme-tcp", "")),
            ("grow", vol("grow", "nvme-tcp", "")),
            ("half", vol("half", "nvme-tcp", "")),
            ("shrink", vol("shrink", "nvme-tcp", "")),
            ("moved", vol("moved", "nvme-tcp", "")),
            ("same", vol("same", "nvme-tcp", "")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let g = 1u64 << 30;
        let have = vec![
            z("grow", "persist/vault/volumes/grow", g / 2, true),
            z("half", "persist/vault/volumes/half", g, false),
            z("shrink", "persist/vault/volumes/shrink", 2 * g, true),
            z("moved", "persist/clear/volumes/moved", g, true),
            z("same", "persist/vault/volumes/same", g, true),
            z("gone", "persist/vault/volumes/gone", g, true),
            z("new", "persist/vault/volumes/new:new", g, false),
        ];
        let (ops, conflicts) = zvol_diff(&want, &have, "persist");
        assert_eq!(
            zvol_diff(&want, &have, "persist").0,
            ops,
            "pure: same answer twice"
        );
        assert_eq!(
            ops,
            vec![
                ZOp::Discard {
                    dataset: "persist/vault/volumes/new:new".into()
                },
                ZOp::Destroy {
                    name: "gone".into(),
                    dataset: "persist/vault/volumes/gone".into()
                },
                ZOp::Grow {
                    name: "grow".into(),
                    dataset: "persist/vault/volumes/grow".into(),
                    from: g / 2,
                    to: g
                },
                ZOp::Recreate {
                    name: "half".into(),
                    dataset: "persist/vault/volumes/half".into()
                },
                ZOp::Create { name: "new".into() },
            ]
        );
        let names: Vec<&str> = conflicts.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["moved", "shrink"]);
    }
}
