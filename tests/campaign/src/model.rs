//! What the box must hold: every acknowledged volume, block, snapshot and deletion, and how an
//! unacknowledged operation is settled from what the box shows (all of it or none of it). Pure.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// Volumes are this many blocks of [`BLOCK`] bytes; a write is one block.
pub const BLOCKS: usize = 8;
pub const BLOCK: usize = 1 << 20;

/// What a block that could not be read whole is recorded as: never taken for data.
pub const UNREADABLE: &str = "UNREADABLE";
/// What the world calls a failed inventory listing (never a volume's name: it has spaces).
pub const INVENTORY_FAILED: &str = "(the inventory: zfs list failed)";

pub fn hash(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub fn zero_block() -> String {
    hash(&vec![0u8; BLOCK])
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vol {
    pub vm: String,
    pub transport: String,
    /// Each block's content hash.
    pub blocks: Vec<String>,
    /// Acknowledged snapshots, oldest first, with the blocks they hold.
    pub snapshots: Vec<(String, Vec<String>)>,
    /// (volume, snapshot) this is a clone of.
    pub origin: Option<(String, String)>,
}

impl Vol {
    pub fn blank(vm: &str, transport: &str) -> Vol {
        Vol {
            vm: vm.into(),
            transport: transport.into(),
            blocks: vec![zero_block(); BLOCKS],
            snapshots: Vec::new(),
            origin: None,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Model {
    pub vols: BTreeMap<String, Vol>,
    pub deleted: BTreeSet<String>,
    /// What the inventory found beyond the model and was reported: reported once, not again
    /// after every later scenario.
    #[serde(default)]
    pub strays: BTreeSet<String>,
}

/// What an operation changes when it takes effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// A create, an import or a clone.
    Create {
        name: String,
        vol: Vol,
    },
    Write {
        name: String,
        block: usize,
        hash: String,
    },
    Delete {
        name: String,
    },
    Snapshot {
        name: String,
        snap: String,
    },
    Rollback {
        name: String,
        snap: String,
    },
    /// Nothing a volume holds (scrub, update, replace, policy, drives).
    None,
}

/// How the operation ended, as far as the campaign saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Ack {
    /// Returned 0: acknowledged; it must have taken effect, whatever came after.
    Acked,
    /// Returned non-zero: it may have been refused or failed, but all or nothing.
    Failed { status: i32, msg: String },
    /// Never returned (the power went): all or nothing.
    Unknown,
}

/// The volume daemon's names (`volumes::ids`): a subsystem per volume, a host per VM.
pub const NQN_BASE: &str = "nqn.2026-11.org.lfedge.eve";

/// An enabled nvmet namespace on a volume's device, in a subsystem ports offer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Export {
    pub subsystem: String,
    pub hosts: Vec<String>,
    pub any_host: bool,
    /// The offering ports' `addr_trtype`s (tcp, loop).
    pub transports: Vec<String>,
}

/// One volume as the box shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    pub zvol: bool,
    pub spec: bool,
    pub exported: bool,
    /// How it is exported, for each offered namespace on its device.
    pub exports: Vec<Export>,
    /// Block hashes, when its device could be read.
    pub blocks: Option<Vec<String>>,
    pub snapshots: BTreeSet<String>,
}

pub type World = BTreeMap<String, Seen>;

/// The names whose state the campaign must look at after `change`.
pub fn names_to_see(m: &Model, change: &Change) -> BTreeSet<String> {
    let mut n: BTreeSet<String> = m.vols.keys().chain(&m.deleted).cloned().collect();
    match change {
        Change::Create { name, .. }
        | Change::Write { name, .. }
        | Change::Delete { name }
        | Change::Snapshot { name, .. }
        | Change::Rollback { name, .. } => {
            n.insert(name.clone());
        }
        Change::None => {}
    }
    n
}

fn apply(m: &mut Model, change: &Change) {
    match change {
        Change::Create { name, vol } => {
            m.deleted.remove(name);
            m.vols.insert(name.clone(), vol.clone());
        }
        Change::Write { name, block, hash } => {
            if let Some(v) = m.vols.get_mut(name) {
                v.blocks[*block] = hash.clone();
            }
        }
        Change::Delete { name } => {
            m.vols.remove(name);
            m.deleted.insert(name.clone());
        }
        Change::Snapshot { name, snap } => {
            if let Some(v) = m.vols.get_mut(name) {
                let b = v.blocks.clone();
                v.snapshots.push((snap.clone(), b));
            }
        }
        Change::Rollback { name, snap } => {
            if let Some(v) = m.vols.get_mut(name) {
                if let Some((_, b)) = v.snapshots.iter().find(|(s, _)| s == snap) {
                    v.blocks = b.clone();
                }
            }
        }
        Change::None => {}
    }
}

/// Settles `change` into the model: an acknowledged one is applied; any other is applied when the
/// box shows it whole, left out when the box shows none of it, and a violation otherwise. A torn
/// unacknowledged block write is allowed (a disk may tear one) and the model takes what is there.
/// Returns (violations, notes).
pub fn settle(
    m: &mut Model,
    change: &Change,
    ack: &Ack,
    world: &World,
) -> (Vec<String>, Vec<String>) {
    let mut bad = Vec::new();
    let mut notes = Vec::new();
    if *ack == Ack::Acked {
        apply(m, change);
        return (bad, notes);
    }
    let seen = |n: &str| world.get(n).cloned().unwrap_or_default();
    match change {
        Change::Create { name, .. } => {
            let s = seen(name);
            if s.zvol && s.spec {
                notes.push(format!("{name}: the unacknowledged create took effect"));
                apply(m, change);
            } else if s.zvol || s.spec || s.exported {
                bad.push(format!(
                    "{name}: an unacknowledged create left a part behind (zvol {}, spec {}, export {})",
                    s.zvol, s.spec, s.exported
                ));
            }
        }
        Change::Write {
            name,
            block,
            hash: new,
        } => {
            let Some(v) = m.vols.get_mut(name) else {
                return (bad, notes);
            };
            match seen(name).blocks.and_then(|b| b.get(*block).cloned()) {
                // An unreadable block is no content: left to `check`, which reports it.
                Some(h) if h == UNREADABLE => {}
                Some(h) if &h == new => {
                    notes.push(format!("{name}: the unacknowledged write took effect"));
                    v.blocks[*block] = h;
                }
                Some(h) if h == v.blocks[*block] => {}
                Some(h) => {
                    notes.push(format!(
                        "{name}: block {block} torn by the unacknowledged write"
                    ));
                    v.blocks[*block] = h;
                }
                None => {}
            }
        }
        Change::Delete { name } => {
            let s = seen(name);
            if !s.zvol && !s.spec && !s.exported {
                notes.push(format!("{name}: the unacknowledged delete took effect"));
                apply(m, change);
            } else if !(s.zvol && s.spec) {
                bad.push(format!(
                    "{name}: an unacknowledged delete left a part behind (zvol {}, spec {}, export {})",
                    s.zvol, s.spec, s.exported
                ));
            }
        }
        Change::Snapshot { name, snap } => {
            if seen(name).snapshots.contains(snap) {
                notes.push(format!(
                    "{name}@{snap}: the unacknowledged snapshot took effect"
                ));
                apply(m, change);
            }
        }
        Change::Rollback { name, snap } => {
            let Some(v) = m.vols.get(name) else {
                return (bad, notes);
            };
            let Some(target) = v
                .snapshots
                .iter()
                .find(|(s, _)| s == snap)
                .map(|(_, b)| b.clone())
            else {
                return (bad, notes);
            };
            match seen(name).blocks {
                Some(b) if b == target => {
                    if b != v.blocks {
                        notes.push(format!("{name}: the unacknowledged rollback took effect"));
                    }
                    apply(m, change);
                }
                Some(b) if b == v.blocks => {}
                Some(_) => bad.push(format!(
                    "{name}: an unacknowledged rollback to {snap} left a mix of before and after"
                )),
                None => {}
            }
        }
        Change::None => {}
    }
    (bad, notes)
}

/// Names the box shows a part of that the model neither holds nor deleted, and has not reported.
pub fn strays(m: &Model, world: &World) -> Vec<String> {
    world
        .iter()
        .filter(|(n, s)| {
            !m.vols.contains_key(*n)
                && !m.deleted.contains(*n)
                && !m.strays.contains(*n)
                && (s.zvol || s.spec || s.exported)
        })
        .map(|(n, _)| n.clone())
        .collect()
}

/// Every invariant about volumes: each one the model holds exists, has its spec, is exported and
/// reads back block for block, with its acknowledged snapshots; each deleted one is gone
/// entirely. Returns (violations, invariants checked).
pub fn check(m: &Model, world: &World) -> (Vec<String>, u32) {
    let mut bad = Vec::new();
    let mut n = 0;
    for (name, v) in &m.vols {
        let s = world.get(name).cloned().unwrap_or_default();
        n += 4;
        if !s.zvol {
            bad.push(format!("{name}: acknowledged volume has no zvol"));
            continue;
        }
        if !s.spec {
            bad.push(format!("{name}: acknowledged volume has no spec"));
        }
        if !s.exported {
            bad.push(format!("{name}: acknowledged volume is not exported"));
        }
        // As its spec says: its own subsystem, open to its VM's host only, on its transport.
        let want_sub = format!("{NQN_BASE}:vol:{name}");
        let want_host = format!("{NQN_BASE}:vm:{}", v.vm);
        let want_tr = if v.transport == "nvme-loop" {
            "loop"
        } else {
            "tcp"
        };
        for x in &s.exports {
            n += 1;
            if x.subsystem != want_sub
                || x.any_host
                || x.hosts != [want_host.clone()]
                || !x.transports.iter().any(|t| t == want_tr)
            {
                bad.push(format!(
                    "{name}: exported otherwise than its spec says (want {want_sub} for {want_host} over {want_tr}; see subsystem {}, hosts {:?}, any host {}, transports {:?})",
                    x.subsystem, x.hosts, x.any_host, x.transports
                ));
            }
        }
        match &s.blocks {
            None => bad.push(format!("{name}: its device could not be read")),
            Some(b) => {
                for (i, (want, got)) in v.blocks.iter().zip(b).enumerate() {
                    if want != got {
                        bad.push(format!(
                            "{name}: block {i} reads {} but {} was acknowledged",
                            &got[..12.min(got.len())],
                            &want[..12]
                        ));
                    }
                }
                if b.len() != v.blocks.len() {
                    bad.push(format!(
                        "{name}: {} blocks read, {} expected",
                        b.len(),
                        v.blocks.len()
                    ));
                }
            }
        }
        for (snap, _) in &v.snapshots {
            n += 1;
            if !s.snapshots.contains(snap) {
                bad.push(format!("{name}@{snap}: acknowledged snapshot is gone"));
            }
        }
    }
    // The inventory: nothing on the box the campaign never acknowledged (a leftover staging
    // zvol, an orphan spec, an export of a device no volume owns).
    n += 1;
    for name in strays(m, world) {
        let s = &world[&name];
        bad.push(if name == INVENTORY_FAILED {
            name
        } else {
            format!(
                "{name}: on the box but never acknowledged (zvol {}, spec {}, export {})",
                s.zvol, s.spec, s.exported
            )
        });
    }
    for name in &m.deleted {
        n += 1;
        let s = world.get(name).cloned().unwrap_or_default();
        if s.zvol || s.spec || s.exported {
            bad.push(format!(
                "{name}: acknowledged deletion came back (zvol {}, spec {}, export {})",
                s.zvol, s.spec, s.exported
            ));
        }
    }
    (bad, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(blocks: Vec<String>) -> Seen {
        Seen {
            zvol: true,
            spec: true,
            exported: true,
            exports: vec![Export {
                subsystem: format!("{NQN_BASE}:vol:a"),
                hosts: vec![format!("{NQN_BASE}:vm:vm1")],
                any_host: false,
                transports: vec!["loop".into()],
            }],
            blocks: Some(blocks),
            snapshots: BTreeSet::new(),
        }
    }

    fn one() -> (Model, World) {
        let mut m = Model::default();
        m.vols.insert("a".into(), Vol::blank("vm1", "nvme-loop"));
        let w: World = [("a".to_string(), seen(vec![zero_block(); BLOCKS]))].into();
        (m, w)
    }

    #[test]
    fn an_acknowledged_write_that_reads_back_old_is_a_violation() {
        let (mut m, w) = one();
        let c = Change::Write {
            name: "a".into(),
            block: 3,
            hash: hash(b"new"),
        };
        let (bad, _) = settle(&mut m, &c, &Ack::Acked, &w);
        assert!(bad.is_empty());
        let (bad, n) = check(&m, &w);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].contains("block 3"), "{bad:?}");
        assert!(n >= 4);
    }

    #[test]
    fn an_unacknowledged_write_may_land_tear_or_vanish() {
        for got in [hash(b"new"), zero_block(), hash(b"torn")] {
            let (mut m, mut w) = one();
            let mut b = vec![zero_block(); BLOCKS];
            b[2] = got.clone();
            w.insert("a".into(), seen(b));
            let c = Change::Write {
                name: "a".into(),
                block: 2,
                hash: hash(b"new"),
            };
            let (bad, _) = settle(&mut m, &c, &Ack::Unknown, &w);
            assert!(bad.is_empty());
            assert_eq!(m.vols["a"].blocks[2], got);
            assert!(check(&m, &w).0.is_empty());
        }
    }

    #[test]
    fn an_unreadable_block_is_never_taken_for_data() {
        let (mut m, mut w) = one();
        let mut b = vec![zero_block(); BLOCKS];
        b[1] = UNREADABLE.into();
        w.insert("a".into(), seen(b));
        let c = Change::Write {
            name: "a".into(),
            block: 1,
            hash: hash(b"new"),
        };
        assert!(settle(&mut m, &c, &Ack::Unknown, &w).0.is_empty());
        assert_eq!(m.vols["a"].blocks[1], zero_block());
        let (bad, _) = check(&m, &w);
        assert!(bad[0].contains("block 1 reads UNREADABLE"), "{bad:?}");
    }

    #[test]
    fn an_unacknowledged_create_is_all_or_nothing() {
        let c = Change::Create {
            name: "b".into(),
            vol: Vol::blank("vm1", "nvme-tcp"),
        };
        let (mut m, w) = one();
        assert!(settle(&mut m, &c, &Ack::Unknown, &w).0.is_empty());
        assert!(!m.vols.contains_key("b"));
        let mut w2 = w.clone();
        w2.insert(
            "b".into(),
            Seen {
                zvol: true,
                ..Default::default()
            },
        );
        let (bad, _) = settle(
            &mut m,
            &c,
            &Ack::Failed {
                status: 1,
                msg: "x".into(),
            },
            &w2,
        );
        assert!(bad[0].contains("left a part behind"), "{bad:?}");
        let mut w3 = w.clone();
        w3.insert("b".into(), seen(vec![zero_block(); BLOCKS]));
        assert!(settle(&mut m, &c, &Ack::Unknown, &w3).0.is_empty());
        assert!(m.vols.contains_key("b"));
    }

    #[test]
    fn what_the_box_holds_beyond_the_model_is_a_violation() {
        let (m, mut w) = one();
        assert!(check(&m, &w).0.is_empty());
        w.insert(
            "a:new".into(),
            Seen {
                zvol: true,
                ..Default::default()
            },
        );
        w.insert(
            "export of /dev/zd48".into(),
            Seen {
                exported: true,
                ..Default::default()
            },
        );
        // A name the model only asked about, with nothing on the box, is no finding.
        w.insert("gone".into(), Seen::default());
        let (bad, _) = check(&m, &w);
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(
            bad[0].contains("a:new: on the box but never acknowledged"),
            "{bad:?}"
        );
        assert!(bad[1].contains("export of /dev/zd48"), "{bad:?}");
        // Reported once: a stray the campaign noted is not a new finding in every later check.
        let mut m = m;
        m.strays.extend(strays(&m, &w));
        assert!(check(&m, &w).0.is_empty());
    }

    #[test]
    fn an_export_must_be_the_one_its_spec_asks_for() {
        let (m, w) = one();
        assert!(check(&m, &w).0.is_empty());
        for bad_export in [
            Export {
                any_host: true,
                ..w["a"].exports[0].clone()
            },
            Export {
                hosts: vec![format!("{NQN_BASE}:vm:vm2")],
                ..w["a"].exports[0].clone()
            },
            Export {
                transports: vec!["tcp".into()],
                ..w["a"].exports[0].clone()
            },
            Export {
                subsystem: format!("{NQN_BASE}:vol:b"),
                ..w["a"].exports[0].clone()
            },
        ] {
            let mut w2 = w.clone();
            w2.get_mut("a").unwrap().exports = vec![bad_export.clone()];
            let (bad, _) = check(&m, &w2);
            assert!(
                bad.len() == 1 && bad[0].contains("exported otherwise"),
                "{bad_export:?}: {bad:?}"
            );
        }
    }

    #[test]
    fn an_acknowledged_deletion_must_stay_deleted() {
        let (mut m, w) = one();
        settle(
            &mut m,
            &Change::Delete { name: "a".into() },
            &Ack::Acked,
            &World::new(),
        );
        assert!(check(&m, &World::new()).0.is_empty());
        let (bad, _) = check(&m, &w);
        assert!(bad[0].contains("came back"), "{bad:?}");
    }

    #[test]
    fn a_rollback_is_whole_and_a_snapshot_must_stay() {
        let (mut m, mut w) = one();
        w.get_mut("a").unwrap().snapshots.insert("s".into());
        settle(
            &mut m,
            &Change::Snapshot {
                name: "a".into(),
                snap: "s".into(),
            },
            &Ack::Acked,
            &w,
        );
        let new = hash(b"n");
        settle(
            &mut m,
            &Change::Write {
                name: "a".into(),
                block: 0,
                hash: new.clone(),
            },
            &Ack::Acked,
            &w,
        );
        let c = Change::Rollback {
            name: "a".into(),
            snap: "s".into(),
        };
        // Half rolled back: block 0 old, block 1 changed from both.
        let mut mixed = vec![zero_block(); BLOCKS];
        mixed[1] = hash(b"odd");
        w.get_mut("a").unwrap().blocks = Some(mixed);
        let (bad, _) = settle(&mut m.clone(), &c, &Ack::Unknown, &w);
        assert!(bad[0].contains("mix"), "{bad:?}");
        // Whole: the snapshot's blocks.
        w.get_mut("a").unwrap().blocks = Some(vec![zero_block(); BLOCKS]);
        assert!(settle(&mut m, &c, &Ack::Unknown, &w).0.is_empty());
        assert_eq!(m.vols["a"].blocks[0], zero_block());
        w.get_mut("a").unwrap().snapshots.clear();
        assert!(check(&m, &w)
            .0
            .iter()
            .any(|v| v.contains("snapshot is gone")));
    }
}
