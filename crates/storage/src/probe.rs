//! What is on a device: partition table, filesystems, ZFS labels (libblkid's low-level probe,
//! through libblkid-rs), and whether the partitions are ones storage-init made.

use crate::discover::{BlockDev, Signatures};
use std::collections::BTreeMap;
use std::path::Path;
use uuid::Uuid;

/// GPT partition names storage-init writes. `PENDING` until the pool exists, then `DONE`:
/// a power cut in between leaves pending partitions, which are safe to reuse.
pub const PART_PENDING: &str = "eve-persist-pending";
pub const PART_DONE: &str = "eve-persist";
/// The boot disk's persist partition (EVE's name), with the same pending convention.
pub const P3_PENDING: &str = "P3-pending";
pub const P3_DONE: &str = "P3";
/// EVE's persist partition type.
pub const P3_TYPE: &str = "5F24425A-2DFA-11E8-A270-7B663FACCC2C";

/// `KEY=value` lines, as `blkid -p -o export` prints them (the fixture format for tests).
pub fn parse_export(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Signatures from the whole device's and each partition's probe output (pure).
pub fn signatures(
    whole: &BTreeMap<String, String>,
    parts: &[BTreeMap<String, String>],
) -> Signatures {
    let mut s = Signatures {
        partition_table: whole.get("PTTYPE").cloned(),
        ..Default::default()
    };
    for m in std::iter::once(whole).chain(parts) {
        if let Some(t) = m.get("TYPE") {
            s.contents.push(t.clone());
            if t == "zfs_member" {
                if let (Some(name), Some(guid)) =
                    (m.get("LABEL"), m.get("UUID").and_then(|u| u.parse().ok()))
                {
                    s.zfs_pools.push((name.clone(), guid));
                }
            }
        }
    }
    s
}

#[derive(Debug, thiserror::Error)]
#[error("{dev}: probing with libblkid: {msg}")]
pub struct ProbeError {
    pub dev: String,
    pub msg: String,
}

/// Every NAME=value libblkid's superblock and partition chains report for `dev` (empty when blank).
fn probe_one(dev: &Path) -> Result<BTreeMap<String, String>, ProbeError> {
    use libblkid_rs::{BlkidProbe, BlkidSafeprobeRet};
    let err = |e: libblkid_rs::BlkidErr| ProbeError {
        dev: dev.display().to_string(),
        msg: e.to_string(),
    };
    let mut pr = BlkidProbe::new_from_filename(dev).map_err(err)?;
    pr.enable_superblocks(true).map_err(err)?;
    pr.enable_partitions(true).map_err(err)?;
    let mut m = BTreeMap::new();
    match pr.do_safeprobe().map_err(err)? {
        BlkidSafeprobeRet::None => return Ok(m),
        // Several signatures at once is itself foreign data: report it, never treat as blank.
        BlkidSafeprobeRet::Ambiguous => {
            m.insert("TYPE".into(), "ambivalent".into());
            return Ok(m);
        }
        BlkidSafeprobeRet::Success => {}
    }
    for i in 0..pr.numof_values().map_err(err)? {
        let (k, v) = pr.get_value(i as libc::c_uint).map_err(err)?;
        m.insert(k, v);
    }
    Ok(m)
}

/// GPT partitions as (number, name, unique GUID), empty when the disk has no readable GPT.
pub fn gpt_partitions(dev: &std::path::Path) -> Vec<(u32, String, Uuid)> {
    gpt::GptConfig::new()
        .writable(false)
        .open(dev)
        .map(|g| {
            g.partitions()
                .iter()
                .filter(|(_, p)| p.is_used())
                .map(|(n, p)| (*n, p.name.clone(), p.part_guid))
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Probed {
    pub sig: Signatures,
    /// GPT (number, name, guid) of each partition.
    pub gpt: Vec<(u32, String, Uuid)>,
}

impl Probed {
    /// True when the disk holds only storage-init's partitions (of either state).
    pub fn only_ours(&self) -> bool {
        !self.gpt.is_empty()
            && self
                .gpt
                .iter()
                .all(|(_, n, _)| n == PART_PENDING || n == PART_DONE)
    }
    pub fn pending(&self) -> bool {
        self.gpt
            .iter()
            .any(|(_, n, _)| n == PART_PENDING || n == P3_PENDING)
    }
}

pub fn probe(d: &BlockDev, roots: &platform::Roots) -> Result<Probed, ProbeError> {
    let whole = probe_one(&d.dev)?;
    let mut parts = Vec::new();
    for p in &d.partitions {
        parts.push(probe_one(&roots.dev.join(p))?);
    }
    Ok(Probed {
        sig: signatures(&whole, &parts),
        gpt: gpt_partitions(&d.dev),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_blkid_export_for_tables_filesystems_and_zfs_labels() {
        let whole = parse_export("DEVNAME=/dev/sda\nPTUUID=0a1b\nPTTYPE=gpt\n");
        let p1 = parse_export("DEVNAME=/dev/sda1\nLABEL=tank\nUUID=16080224468442356185\nUUID_SUB=99\nVERSION=5000\nTYPE=zfs_member\nUSAGE=raid\n");
        let p2 = parse_export(
            "DEVNAME=/dev/sda2\nUUID=ab-cd\nBLOCK_SIZE=4096\nTYPE=ext4\nUSAGE=filesystem\n",
        );
        let s = signatures(&whole, &[p1, p2]);
        assert_eq!(s.partition_table.as_deref(), Some("gpt"));
        assert_eq!(s.contents, ["zfs_member", "ext4"]);
        assert_eq!(s.zfs_pools, [("tank".to_string(), 16080224468442356185)]);
        assert_eq!(signatures(&BTreeMap::new(), &[]), Signatures::default());
    }

    #[test]
    fn ours_and_pending() {
        let g = Uuid::nil();
        let p = Probed {
            sig: Signatures::default(),
            gpt: vec![(1, PART_PENDING.into(), g)],
        };
        assert!(p.only_ours() && p.pending());
        let p = Probed {
            sig: Signatures::default(),
            gpt: vec![(1, PART_DONE.into(), g)],
        };
        assert!(p.only_ours() && !p.pending());
        let p = Probed {
            sig: Signatures::default(),
            gpt: vec![(1, "Microsoft basic data".into(), g)],
        };
        assert!(!p.only_ours());
        assert!(!Probed::default().only_ours());
    }
}
