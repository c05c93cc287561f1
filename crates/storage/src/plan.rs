//! storage-init's decisions, pure. The pool: from the drives and pools observed and the policy,
//! import the existing pool, create one (finishing an interrupted creation), or refuse with a
//! reason; never a new pool over a finished one, never a device the verdicts did not allow. What
//! it holds: from what the imported pool holds and what the box is, the policy in force, the ARC
//! cap, the vault's decision and the dataset changes. [`BootPlan`] is both, as `storage-init
//! plan` prints it.

use crate::datasets::{self, Action};
use crate::discover::Verdict;
use crate::observe::Contents;
pub use crate::observe::{Drive, Observed, P3};
use crate::policy::{self, Candidate, Encryption, Policy, PoolFacts, Source, Topology};
use crate::vault::{self, SecureBoot};
use serde::Serialize;

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

/// The ARC ceiling: the policy's, else a quarter of RAM but at least 256 MiB, leaving the
/// rest for VMs (ZFS's own default is half of RAM).
pub fn arc_max(policy: &Policy, ram: u64, pool_size: u64) -> u64 {
    match &policy.pool.arc_max {
        Some(s) => s.get_ref().bytes(pool_size),
        None => (ram / 4).max(256 << 20),
    }
}

/// Pure: the policy in force from the candidate files, the pool's size and last good policy
/// (once it is up) and what the pool already is, with how the vault is sealed pinned to the
/// signed image's (`image`). The lines say where it came from and what was rejected; the third
/// value is the policy text to keep on the pool as the last good one.
pub fn settle_policy(
    candidates: &[Candidate],
    pool_size: Option<u64>,
    last_good: Option<&str>,
    facts: &PoolFacts,
    image: &Encryption,
) -> (Policy, Vec<String>, Option<String>) {
    let (p, src, keep) = policy::choose(candidates, last_good, pool_size, facts);
    // How the vault is sealed is the signed image's to say, never the CONFIG partition's.
    let (p, ignored) = policy::pin_encryption(p, image);
    let mut notes: Vec<String> = ignored
        .map(|why| format!("policy: {why}"))
        .into_iter()
        .collect();
    notes.push(match &src {
        Source::File(f) => format!("policy: {}", f.display()),
        Source::LastGood { rejected } => {
            format!("policy REJECTED: {rejected}; using the last good policy stored on the pool")
        }
        Source::Builtin { rejected: Some(e) } => {
            format!("policy REJECTED: {e}; using the built-in policy")
        }
        Source::Builtin { rejected: None } => {
            "policy: none found; using the built-in policy".to_string()
        }
    });
    (p, notes, keep)
}

/// What the boot does with the imported pool's contents, decided at once from
/// [`Contents`]: applied in this order by [`crate::apply::contents`].
#[derive(Debug, Clone)]
pub struct ContentsPlan {
    pub pool: String,
    /// The policy in force, settled against the pool's facts, size and last good policy.
    pub policy: Policy,
    /// Where the policy came from and what was rejected, for the log.
    pub policy_notes: Vec<String>,
    /// The policy text to keep on the pool as the last good one.
    pub keep_last_good: Option<String>,
    /// The console's warning when the pool is not ONLINE.
    pub warning: Option<String>,
    pub ram: u64,
    pub arc_max: u64,
    pub secure_boot: SecureBoot,
    pub vault: vault::Decision,
    /// The dataset changes in order (the vault's own creation is the vault decision's), or why
    /// the datasets could not be read.
    pub datasets: Result<Vec<Action>, String>,
}

/// Pure: the contents plan from what the pool holds, the policy candidates and the image's
/// encryption.
pub fn decide_contents(c: &Contents, candidates: &[Candidate], image: &Encryption) -> ContentsPlan {
    let (mut policy, policy_notes, keep) = settle_policy(
        candidates,
        Some(c.size),
        c.last_good.as_deref(),
        &c.facts,
        image,
    );
    // The pool was found (or is made) under this name; a policy that calls it something else
    // was rejected by the facts already, and never renames it here.
    policy.pool.name = c.pool.clone();
    let warning = (c.health != "ONLINE").then(|| {
        format!(
            "WARNING: POOL {} IS {}: a member is missing or failing; data is served from the rest\n{}",
            c.pool,
            c.health,
            c.status.as_deref().unwrap_or_default()
        )
    });
    let datasets = c
        .datasets
        .as_ref()
        .map(|have| datasets::diff(&datasets::desired(&policy, c.size), have, &c.pool))
        .map_err(Clone::clone);
    ContentsPlan {
        pool: c.pool.clone(),
        arc_max: arc_max(&policy, c.ram, c.size),
        ram: c.ram,
        secure_boot: c.secure_boot,
        vault: vault::decide_seen(&c.vault, &policy, c.secure_boot),
        policy,
        policy_notes,
        keep_last_good: keep,
        warning,
        datasets,
    }
}

/// Pure: the usable size of a pool about to be made from members of `sizes` bytes in
/// `topology` (the smallest member bounds mirrors and raidz). An estimate: ZFS keeps some for
/// itself, and the run reads the real size once the pool exists.
pub fn estimate_size(topology: Topology, sizes: &[u64]) -> u64 {
    let n = sizes.len() as u64;
    let min = sizes.iter().copied().min().unwrap_or(0);
    match topology {
        Topology::Stripe => sizes.iter().sum(),
        Topology::Mirror => min,
        Topology::Raidz1 => min * n.saturating_sub(1),
        Topology::Raidz2 => min * n.saturating_sub(2),
    }
}

/// The whole boot as one plan: the pool step, then what becomes of its contents. The contents
/// are decided from the pool as it is when it is imported already, and from an empty pool
/// when it is about to be made; a pool still to be imported is read once it is.
#[derive(Debug, Clone)]
pub struct BootPlan {
    pub pool: Plan,
    pub contents: Result<ContentsPlan, String>,
}

fn action_json(a: &Action) -> serde_json::Value {
    match a {
        Action::Create {
            name,
            props,
            encrypted,
        } => {
            serde_json::json!({ "action": "create", "name": name, "props": props, "encrypted": encrypted })
        }
        Action::Set {
            name,
            prop,
            from,
            to,
        } => {
            serde_json::json!({ "action": "set", "name": name, "prop": prop, "from": from, "to": to })
        }
        Action::Unmanaged { name } => serde_json::json!({ "action": "unmanaged", "name": name }),
    }
}

fn action_text(a: &Action, pool: &str, vault_ok: bool) -> String {
    let vault = format!("{pool}/vault");
    match a {
        Action::Create { name, .. } if *name == vault => {
            format!("{name}: made by the vault step")
        }
        Action::Create {
            name,
            encrypted: true,
            props,
        } if !vault_ok => format!(
            "{name}: create {} once the vault is usable (it is not, as decided)",
            props_text(props)
        ),
        Action::Create { name, props, .. } => format!("{name}: create {}", props_text(props)),
        Action::Set {
            name,
            prop,
            from,
            to,
        } => format!("{name}: {prop} {from} -> {to}"),
        Action::Unmanaged { name } => format!("{name}: not in the policy; left alone"),
    }
}

fn props_text(props: &std::collections::BTreeMap<String, String>) -> String {
    props
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether the vault will be usable after `d` (what lives in it is created then).
pub fn vault_usable_after(d: &vault::Decision) -> bool {
    matches!(
        d,
        vault::Decision::Create(_)
            | vault::Decision::Unencrypted
            | vault::Decision::Unlocked
            | vault::Decision::Unseal { .. }
            | vault::Decision::Keyfile
    )
}

impl BootPlan {
    /// The plan for a person, one step a line, in the order the run applies it.
    pub fn text(&self) -> String {
        let mut out = format!("pool: {}\n", pool_text(&self.pool));
        let c = match &self.contents {
            Ok(c) => c,
            Err(why) => {
                out.push_str(&format!("then: {why}\n"));
                return out;
            }
        };
        for n in &c.policy_notes {
            out.push_str(&format!("{n}\n"));
        }
        if let Some(w) = &c.warning {
            out.push_str(&format!("{}\n", w.lines().next().unwrap_or_default()));
        }
        out.push_str(&format!(
            "arc: cap at {} MiB (RAM {} MiB)\n",
            c.arc_max >> 20,
            c.ram >> 20
        ));
        out.push_str(&format!(
            "vault: {}/vault: {} (Secure Boot {})\n",
            c.pool,
            c.vault.describe(),
            c.secure_boot.describe()
        ));
        match &c.datasets {
            Ok(actions) if actions.is_empty() => out.push_str("datasets: as the policy says\n"),
            Ok(actions) => {
                let ok = vault_usable_after(&c.vault);
                for a in actions {
                    out.push_str(&format!("datasets: {}\n", action_text(a, &c.pool, ok)));
                }
            }
            Err(why) => out.push_str(&format!("datasets: cannot be read: {why}\n")),
        }
        out.push_str(&format!(
            "mounts: the pool's root and the policy's datasets at the policy's mountpoints{}\n",
            if vault_usable_after(&c.vault) {
                ""
            } else {
                "; nothing of the vault's"
            }
        ));
        if c.keep_last_good.is_some() {
            out.push_str("files: keep this policy on the pool as the last good one\n");
        }
        out.push_str("files: the outcome the boot health check reads\n");
        out
    }

    /// The plan for scripts: `pool` is the pool step (as `plan` always was), the rest beside it.
    pub fn json(&self) -> serde_json::Value {
        let contents = match &self.contents {
            Err(why) => serde_json::json!({ "decided": false, "why": why }),
            Ok(c) => serde_json::json!({
                "decided": true,
                "pool": c.pool,
                "policy": c.policy_notes,
                "warning": c.warning,
                "ram": c.ram,
                "arc_max": c.arc_max,
                "secure_boot": c.secure_boot,
                "vault": {
                    "action": c.vault.word(),
                    "text": c.vault.describe(),
                    "usable_after": vault_usable_after(&c.vault),
                },
                "datasets": match &c.datasets {
                    Ok(a) => serde_json::json!(a.iter().map(action_json).collect::<Vec<_>>()),
                    Err(why) => serde_json::json!({ "error": why }),
                },
                "keep_last_good": c.keep_last_good.is_some(),
            }),
        };
        serde_json::json!({ "plan": self.pool, "contents": contents })
    }
}

fn pool_text(p: &Plan) -> String {
    match p {
        Plan::AlreadyImported { guid } => format!("imported already (guid {guid})"),
        Plan::Import { guid } => format!("import (guid {guid}), not mounted, no cache file"),
        Plan::Create {
            topology,
            new_p3,
            use_p3,
            partition,
            reuse_pending,
            autotrim,
        } => {
            let mut parts = Vec::new();
            if *new_p3 {
                parts.push("P3 made in the boot disk's free space".to_string());
            } else if *use_p3 {
                parts.push("P3 from an interrupted first boot".to_string());
            }
            if !partition.is_empty() {
                parts.push(format!(
                    "whole drives partitioned: {}",
                    partition.join(", ")
                ));
            }
            if !reuse_pending.is_empty() {
                parts.push(format!(
                    "partitions from an interrupted first boot: {}",
                    reuse_pending.join(", ")
                ));
            }
            format!(
                "create ({}) on {}{}",
                format!("{topology:?}").to_lowercase(),
                parts.join("; "),
                if *autotrim { "; autotrim on" } else { "" }
            )
        }
        Plan::Refuse { reason } => format!("REFUSE: {reason}"),
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

    #[test]
    fn arc_max_defaults_to_a_quarter_of_ram_with_a_floor() {
        let p = Policy::builtin();
        assert_eq!(arc_max(&p, 16 << 30, 0), 4 << 30);
        assert_eq!(arc_max(&p, 512 << 20, 0), 256 << 20);
        let p = Policy::parse(
            std::path::Path::new("t"),
            "[pool]\narc_max = \"1G\"\n",
            None,
        )
        .unwrap();
        assert_eq!(arc_max(&p, 16 << 30, 0), 1 << 30);
    }

    fn contents(health: &str, datasets: Result<crate::zfs::Props, String>) -> Contents {
        Contents {
            pool: "persist".into(),
            health: health.into(),
            status: (health != "ONLINE").then(|| "  pool: persist\n state: DEGRADED\n".into()),
            size: 100 << 30,
            last_good: None,
            facts: PoolFacts {
                name: Some("persist".into()),
                ..Default::default()
            },
            datasets,
            vault: vault::Seen {
                observed: Err("pool I/O is currently suspended".into()),
                tpm_present: true,
                floor_absent: false,
            },
            secure_boot: SecureBoot::On,
            ram: 8 << 30,
        }
    }

    #[test]
    fn the_contents_are_decided_at_once_and_say_what_they_could_not_read() {
        let cands = vec![(
            std::path::PathBuf::from("/config/storage.toml"),
            Ok("[pool]\nname = \"tank\"\n".to_string()),
        )];
        let image = Policy::builtin().encryption;
        let c = decide_contents(
            &contents("DEGRADED", Err("`zfs get` failed: I/O error".into())),
            &cands,
            &image,
        );
        // A policy naming another pool is rejected against the pool there is.
        assert!(
            c.policy_notes
                .iter()
                .any(|n| n.starts_with("policy REJECTED")),
            "{:?}",
            c.policy_notes
        );
        assert_eq!(c.policy.pool.name, "persist");
        assert!(c
            .warning
            .as_deref()
            .unwrap()
            .contains("POOL persist IS DEGRADED"));
        assert!(c.warning.as_deref().unwrap().contains("state: DEGRADED"));
        // A vault whose state cannot be read is left alone; datasets that cannot be read are
        // said to be so, never an empty list.
        assert!(matches!(c.vault, vault::Decision::Unreadable { .. }));
        assert!(!vault_usable_after(&c.vault));
        assert_eq!(
            c.datasets.as_ref().unwrap_err(),
            "`zfs get` failed: I/O error"
        );
        let whole = BootPlan {
            pool: Plan::Import { guid: 1 },
            contents: Ok(c),
        };
        let text = whole.text();
        assert!(
            text.contains("datasets: cannot be read: `zfs get` failed"),
            "{text}"
        );
        assert!(text.contains("nothing of the vault's"), "{text}");
        assert_eq!(whole.json()["contents"]["vault"]["action"], "unreadable");
        // Healthy, readable: no warning, and the policy's datasets all to be made.
        let c = decide_contents(&contents("ONLINE", Ok(Default::default())), &[], &image);
        assert!(c.warning.is_none());
        assert_eq!(
            c.datasets.unwrap().len(),
            datasets::desired(&Policy::builtin(), 0).len()
        );
        assert_eq!(c.arc_max, 2 << 30);
    }

    #[test]
    fn a_new_pool_is_sized_by_its_smallest_member_unless_striped() {
        let g = 1u64 << 30;
        assert_eq!(estimate_size(Topology::Stripe, &[4 * g, 8 * g]), 12 * g);
        assert_eq!(estimate_size(Topology::Mirror, &[4 * g, 8 * g]), 4 * g);
        assert_eq!(
            estimate_size(Topology::Raidz1, &[4 * g, 8 * g, 8 * g]),
            8 * g
        );
        assert_eq!(estimate_size(Topology::Raidz2, &[4 * g; 4]), 8 * g);
        assert_eq!(estimate_size(Topology::Raidz2, &[4 * g]), 0);
        assert_eq!(estimate_size(Topology::Mirror, &[]), 0);
    }
}
