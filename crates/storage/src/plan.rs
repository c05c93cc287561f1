//! The pool decision, pure: from what was observed and the policy, either import the existing pool,
//! create one (finishing an interrupted creation), or refuse with a reason. Never a new pool over a
//! finished one, and never a device the verdicts did not allow.

use crate::discover::Verdict;
use crate::policy::{Policy, Topology};
use serde::Serialize;

/// A candidate drive as the plan sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Drive {
    pub name: String,
    pub stable_id: String,
    pub verdict: Verdict,
    /// Holds only storage-init partitions still named pending (an interrupted first boot).
    pub ours_pending: bool,
    pub rotational: bool,
}

/// The boot disk's P3 partition, if present.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum P3 {
    Absent,
    Pending { partuuid: String },
    Done { partuuid: String },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Observed {
    pub boot_disk: Option<String>,
    pub p3: P3,
    /// Whether the boot disk has free space for a new P3 (a disk exactly the image's size has
    /// none): without it the pool is made from the other drives.
    pub p3_room: bool,
    pub drives: Vec<Drive>,
    /// Pools `zpool import` offers: (name, guid).
    pub importable: Vec<(String, u64)>,
    /// Pools already imported: (name, guid).
    pub imported: Vec<(String, u64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Plan {
    /// The pool is already imported (storage-init ran before in this boot).
    AlreadyImported {
        guid: u64,
    },
    Import {
        guid: u64,
    },
    Create {
        topology: Topology,
        /// Make P3 in the boot disk's free space first.
        new_p3: bool,
        /// P3 (new or pending) is a member; false when the boot disk has no room for one.
        use_p3: bool,
        /// Whole drives to partition (by kernel name), then pool.
        partition: Vec<String>,
        /// Interrupted first boot: drives already partitioned as pending, reused.
        reuse_pending: Vec<String>,
        autotrim: bool,
    },
    Refuse {
        reason: String,
    },
}

fn verdict_word(v: &Verdict) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|j| j["verdict"].as_str().map(String::from))
        .unwrap_or_else(|| "?".into())
}

pub fn decide(obs: &Observed, policy: &Policy) -> Plan {
    let pool = &policy.pool.name;
    if let Some((_, guid)) = obs.imported.iter().find(|(n, _)| n == pool) {
        return Plan::AlreadyImported { guid: *guid };
    }
    let ours: Vec<&(String, u64)> = obs.importable.iter().filter(|(n, _)| n == pool).collect();
    if ours.len() > 1 {
        return Plan::Refuse {
            reason: format!(
                "{} pools named `{pool}` are importable; attach only this box's drives",
                ours.len()
            ),
        };
    }
    if let Some((_, guid)) = ours.first() {
        return Plan::Import { guid: *guid };
    }
    // No importable pool. Labels of a finished pool mean members are missing: never make a new one.
    if matches!(obs.p3, P3::Done { .. }) {
        return Plan::Refuse { reason: format!("P3 belongs to a finished `{pool}` pool that cannot be imported (members missing?); not creating a new pool") };
    }
    if let Some(d) = obs
        .drives
        .iter()
        .find(|d| matches!(&d.verdict, Verdict::PoolMember { .. }) && !d.ours_pending)
    {
        return Plan::Refuse { reason: format!("{} ({}) carries a `{pool}` label but the pool cannot be imported; not creating a new pool", d.name, d.stable_id) };
    }
    let mut partition = Vec::new();
    let mut reuse = Vec::new();
    for d in &obs.drives {
        if d.ours_pending {
            // A USB stick or a read-only drive carrying our partition name is still not ours.
            if crate::discover::reusable(&d.verdict) {
                reuse.push(d.name.clone());
            }
        } else if d.verdict == Verdict::Eligible {
            partition.push(d.name.clone());
        }
    }
    let have_p3 = obs.boot_disk.is_some()
        && (matches!(obs.p3, P3::Pending { .. }) || (matches!(obs.p3, P3::Absent) && obs.p3_room));
    let count = partition.len() + reuse.len() + usize::from(have_p3);
    let topology = policy.pool.topology;
    if count == 0 {
        let found: Vec<String> = obs
            .drives
            .iter()
            .map(|d| format!("{} ({})", d.name, verdict_word(&d.verdict)))
            .collect();
        return Plan::Refuse {
            reason: format!(
                "nothing to build a pool on: {}; other drives: {}",
                match &obs.boot_disk {
                    None => "no boot disk found".to_string(),
                    Some(b) => format!("boot disk {b} has no free space for P3"),
                },
                if found.is_empty() {
                    "none".to_string()
                } else {
                    found.join(", ")
                }
            ),
        };
    }
    if count < topology.min_drives() {
        return Plan::Refuse {
            reason: format!("topology {topology:?} needs at least {} devices, found {count} (P3 and eligible drives)", topology.min_drives()),
        };
    }
    let autotrim = obs
        .drives
        .iter()
        .filter(|d| partition.contains(&d.name) || reuse.contains(&d.name))
        .all(|d| !d.rotational);
    Plan::Create {
        topology,
        new_p3: matches!(obs.p3, P3::Absent) && have_p3,
        use_p3: have_p3,
        partition,
        reuse_pending: reuse,
        autotrim,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn drive(name: &str, verdict: Verdict) -> Drive {
        Drive {
            name: name.into(),
            stable_id: format!("id-{name}"),
            verdict,
            ours_pending: false,
            rotational: false,
        }
    }

    fn obs() -> Observed {
        Observed {
            boot_disk: Some("vda".into()),
            p3: P3::Absent,
            p3_room: true,
            drives: vec![
                drive("nvme0n1", Verdict::Eligible),
                drive("nvme1n1", Verdict::Eligible),
                drive(
                    "sdb",
                    Verdict::Removable {
                        reason: "usb".into(),
                    },
                ),
                drive(
                    "sdc",
                    Verdict::ForeignData {
                        reason: "ext4".into(),
                    },
                ),
                drive(
                    "sdd",
                    Verdict::OtherPool {
                        pool: "tank".into(),
                        guid: 1,
                    },
                ),
            ],
            importable: vec![("tank".into(), 1)],
            imported: vec![],
        }
    }

    fn policy(topo: &str) -> Policy {
        Policy::parse(
            Path::new("t"),
            &format!("[pool]\ntopology = \"{topo}\"\n"),
            None,
        )
        .unwrap()
    }

    #[test]
    fn first_boot_pools_p3_and_eligible_drives_only() {
        match decide(&obs(), &policy("stripe")) {
            Plan::Create {
                new_p3,
                partition,
                reuse_pending,
                autotrim,
                ..
            } => {
                assert!(new_p3 && autotrim);
                assert_eq!(partition, ["nvme0n1", "nvme1n1"]);
                assert!(reuse_pending.is_empty());
            }
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn later_boot_imports_and_never_creates_over_a_finished_pool() {
        let mut o = obs();
        o.importable.push(("persist".into(), 77));
        assert_eq!(decide(&o, &policy("stripe")), Plan::Import { guid: 77 });
        o.imported.push(("persist".into(), 77));
        assert_eq!(
            decide(&o, &policy("stripe")),
            Plan::AlreadyImported { guid: 77 }
        );
        // Members missing so badly the pool is not even offered: refuse, do not recreate.
        let mut o = obs();
        o.p3 = P3::Done {
            partuuid: "x".into(),
        };
        assert!(
            matches!(decide(&o, &policy("stripe")), Plan::Refuse { reason } if reason.contains("not creating"))
        );
        let mut o = obs();
        o.drives.push(drive(
            "nvme2n1",
            Verdict::PoolMember {
                pool: "persist".into(),
                guid: 5,
            },
        ));
        assert!(
            matches!(decide(&o, &policy("stripe")), Plan::Refuse { reason } if reason.contains("nvme2n1"))
        );
    }

    #[test]
    fn interrupted_first_boot_resumes_with_pending_partitions() {
        let mut o = obs();
        o.p3 = P3::Pending {
            partuuid: "p".into(),
        };
        o.drives[0].ours_pending = true;
        o.drives[0].verdict = Verdict::PoolMember {
            pool: "persist".into(),
            guid: 3,
        };
        match decide(&o, &policy("stripe")) {
            Plan::Create {
                new_p3,
                partition,
                reuse_pending,
                ..
            } => {
                assert!(!new_p3);
                assert_eq!(reuse_pending, ["nvme0n1"]);
                assert_eq!(partition, ["nvme1n1"]);
            }
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn a_boot_disk_without_room_for_p3_is_left_out_and_an_empty_box_says_what_it_found() {
        let mut o = obs();
        o.p3_room = false;
        match decide(&o, &policy("stripe")) {
            Plan::Create {
                new_p3,
                use_p3,
                partition,
                ..
            } => {
                assert!(!new_p3 && !use_p3);
                assert_eq!(partition, ["nvme0n1", "nvme1n1"]);
            }
            p => panic!("{p:?}"),
        }
        for d in &mut o.drives {
            d.verdict = Verdict::Removable {
                reason: "usb".into(),
            };
        }
        match decide(&o, &policy("stripe")) {
            Plan::Refuse { reason } => {
                assert!(reason.contains("no free space for P3"), "{reason}");
                assert!(reason.contains("nvme0n1 (removable)"), "{reason}");
            }
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn pending_partitions_on_an_ineligible_drive_are_never_reused() {
        for v in [
            Verdict::Removable {
                reason: "USB device".into(),
            },
            Verdict::ReadOnly {
                reason: "ro".into(),
            },
            Verdict::TooSmall {
                reason: "small".into(),
            },
            Verdict::OtherPool {
                pool: "tank".into(),
                guid: 9,
            },
            Verdict::Unreadable {
                reason: "no medium".into(),
            },
        ] {
            let mut o = obs();
            o.drives[0].ours_pending = true;
            o.drives[0].verdict = v.clone();
            match decide(&o, &policy("stripe")) {
                Plan::Create {
                    partition,
                    reuse_pending,
                    ..
                } => {
                    assert!(reuse_pending.is_empty(), "{v:?}");
                    assert_eq!(partition, ["nvme1n1"], "{v:?}");
                }
                p => panic!("{v:?}: {p:?}"),
            }
        }
    }

    #[test]
    fn topology_needs_enough_devices_and_two_same_named_pools_are_refused() {
        assert!(
            matches!(decide(&obs(), &policy("raidz1")), Plan::Create { .. }),
            "P3 + 2 drives = 3"
        );
        assert!(
            matches!(decide(&obs(), &policy("raidz2")), Plan::Refuse { reason } if reason.contains("at least 4"))
        );
        let mut o = obs();
        o.importable = vec![("persist".into(), 1), ("persist".into(), 2)];
        assert!(
            matches!(decide(&o, &policy("stripe")), Plan::Refuse { reason } if reason.contains("2 pools"))
        );
        let mut o = obs();
        o.drives[1].rotational = true;
        assert!(matches!(
            decide(&o, &policy("stripe")),
            Plan::Create {
                autotrim: false,
                ..
            }
        ));
    }
}
