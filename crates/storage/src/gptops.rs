//! Partitioning storage-init does: one persist partition on a blank drive, P3 in the boot disk's
//! free tail, and the pending -> done rename. Each writes the table once.

use crate::probe::P3_TYPE;
use gpt::partition_types::Type;
use std::collections::BTreeMap;
use std::path::Path;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum GptError {
    #[error("{dev}: {msg}")]
    Layout { dev: String, msg: String },
    #[error("{dev}: GPT")]
    Gpt {
        dev: String,
        #[source]
        source: gpt::GptError,
    },
    #[error("{dev}: protective MBR: {msg}")]
    Mbr { dev: String, msg: String },
    #[error("{dev}: open")]
    Open {
        dev: String,
        #[source]
        source: std::io::Error,
    },
}

const ALIGN_SECTORS: u64 = 2048;

fn ptype() -> Type {
    #[allow(clippy::expect_used)] // a constant GUID
    P3_TYPE.parse().expect("valid type GUID")
}

/// Largest free region, aligned to 1 MiB: (first_lba, last_lba).
pub fn free_tail(free: &[(u64, u64)]) -> Option<(u64, u64)> {
    free.iter()
        .map(|&(start, len)| {
            let first = start.div_ceil(ALIGN_SECTORS) * ALIGN_SECTORS;
            let end = start + len; // exclusive
            (first, end.saturating_sub(1))
        })
        .filter(|(f, l)| l > f && l - f >= ALIGN_SECTORS)
        .max_by_key(|(f, l)| l - f)
}

/// The smallest P3 worth making: ZFS refuses vdevs under 64 MiB.
pub const P3_MIN_BYTES: u64 = 64 << 20;

/// Pure: bytes free after the last used partition of a disk of `disk_bytes`, leaving the backup
/// GPT (33 sectors) at the end and aligning the start to 1 MiB.
pub fn tail_room(disk_bytes: u64, last_used_lba: u64) -> u64 {
    let sectors = disk_bytes / 512;
    let first = (last_used_lba + 1).div_ceil(ALIGN_SECTORS) * ALIGN_SECTORS;
    sectors.saturating_sub(33).saturating_sub(first) * 512
}

/// Pure: the bytes of the one partition [`partition_whole`] makes on a drive of `disk_bytes`:
/// from the first 1 MiB boundary to the last usable sector (a 128-entry table: the backup's 32
/// sectors of entries and its header at the end).
pub fn whole_partition_bytes(disk_bytes: u64) -> u64 {
    let sectors = disk_bytes / 512;
    let last_usable = sectors.saturating_sub(34);
    (last_usable + 1).saturating_sub(ALIGN_SECTORS) * 512
}

/// Read-only: whether the boot disk has room for P3 after its last partition.
pub fn p3_room(dev: &Path) -> bool {
    use std::io::Seek;
    let Ok(mut f) = std::fs::File::open(dev) else {
        return false;
    };
    let Ok(size) = f.seek(std::io::SeekFrom::End(0)) else {
        return false;
    };
    let last = gpt::GptConfig::new()
        .writable(false)
        .open(dev)
        .map(|g| {
            g.partitions()
                .values()
                .filter(|p| p.is_used())
                .map(|p| p.last_lba)
                .max()
                .unwrap_or(2047)
        })
        .unwrap_or(u64::MAX / 1024);
    tail_room(size, last) >= P3_MIN_BYTES
}

/// The partition map padded to the header's entry count, so a rewrite keeps the table size.
fn full_table(
    parts: &BTreeMap<u32, gpt::partition::Partition>,
    entries: u32,
) -> BTreeMap<u32, gpt::partition::Partition> {
    let mut m = parts.clone();
    for n in 1..=entries.max(128) {
        m.entry(n).or_insert_with(gpt::partition::Partition::zero);
    }
    m
}

/// Writes `parts` as the new table (both GPT copies) in one go and syncs the device.
fn commit(
    mut g: gpt::GptDisk<std::fs::File>,
    parts: BTreeMap<u32, gpt::partition::Partition>,
    d: &str,
) -> Result<(), GptError> {
    let gerr = |source| GptError::Gpt {
        dev: d.to_string(),
        source,
    };
    g.update_partitions(parts).map_err(gerr)?;
    let f = g.write().map_err(gerr)?;
    f.sync_all().map_err(|source| GptError::Open {
        dev: d.to_string(),
        source,
    })
}

/// Adds persist partition `num` spanning `lbas` (inclusive) and commits; returns its new GUID.
fn add_and_commit(
    g: gpt::GptDisk<std::fs::File>,
    num: u32,
    lbas: (u64, u64),
    name: &str,
    d: &str,
) -> Result<Uuid, GptError> {
    let guid = Uuid::new_v4();
    let mut parts = g.partitions().clone();
    parts.insert(
        num,
        gpt::partition::Partition {
            part_type_guid: ptype(),
            part_guid: guid,
            first_lba: lbas.0,
            last_lba: lbas.1,
            flags: 0,
            name: name.into(),
        },
    );
    commit(g, parts, d)?;
    Ok(guid)
}

fn open_rw(dev: &Path) -> Result<std::fs::File, GptError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .map_err(|source| GptError::Open {
            dev: dev.display().to_string(),
            source,
        })
}

/// `dev`'s existing GPT, opened for writing, and the device's name for errors.
fn open_table(dev: &Path) -> Result<(gpt::GptDisk<std::fs::File>, String), GptError> {
    let d = dev.display().to_string();
    let g = gpt::GptConfig::new()
        .writable(true)
        .open_from_device(open_rw(dev)?)
        .map_err(|source| GptError::Gpt {
            dev: d.clone(),
            source,
        })?;
    Ok((g, d))
}

/// Writes a new GPT with one partition named `name` spanning the drive; returns its GUID.
pub fn partition_whole(dev: &Path, name: &str) -> Result<Uuid, GptError> {
    let d = dev.display().to_string();
    let mut f = open_rw(dev)?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let size = if len == 0 {
        use std::io::Seek;
        f.seek(std::io::SeekFrom::End(0))
            .map_err(|source| GptError::Open {
                dev: d.clone(),
                source,
            })?
    } else {
        len
    };
    let sectors = size / 512;
    gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(sectors - 1).unwrap_or(u32::MAX))
        .overwrite_lba0(&mut f)
        .map_err(|e| GptError::Mbr {
            dev: d.clone(),
            msg: e.to_string(),
        })?;
    let mut g = gpt::GptConfig::new()
        .writable(true)
        .change_partition_count(true)
        .create_from_device(f, None)
        .map_err(|source| GptError::Gpt {
            dev: d.clone(),
            source,
        })?;
    let mut map = BTreeMap::new();
    for n in 1..=128u32 {
        map.insert(n, gpt::partition::Partition::zero());
    }
    g.update_partitions(map).map_err(|source| GptError::Gpt {
        dev: d.clone(),
        source,
    })?;
    let (first, last) = free_tail(&g.find_free_sectors()).ok_or_else(|| GptError::Layout {
        dev: d.clone(),
        msg: "no room for a partition".into(),
    })?;
    let guid = add_and_commit(g, 1, (first, last), name, &d)?;
    Ok(guid)
}

/// Adds a partition named `name` in the largest free region of an existing GPT (moving the backup
/// header to the real end of a disk larger than the image written to it). Returns (number, GUID).
pub fn add_tail_partition(dev: &Path, name: &str) -> Result<(u32, Uuid), GptError> {
    let (mut g, d) = open_table(dev)?;
    // Re-initialising the headers relocates the backup GPT to the device's last sector.
    let entries = g.header().num_parts;
    let parts = full_table(g.partitions(), entries);
    g.update_partitions(parts).map_err(|source| GptError::Gpt {
        dev: d.clone(),
        source,
    })?;
    let (first, last) = free_tail(&g.find_free_sectors()).ok_or_else(|| GptError::Layout {
        dev: d.clone(),
        msg: "no free space for P3".into(),
    })?;
    let num = g
        .partitions()
        .iter()
        .find(|(_, p)| !p.is_used())
        .map(|(n, _)| *n)
        .ok_or_else(|| GptError::Layout {
            dev: d.clone(),
            msg: "partition table full".into(),
        })?;
    let guid = add_and_commit(g, num, (first, last), name, &d)?;
    Ok((num, guid))
}

/// Renames partitions called `from` to `to`; returns how many changed.
pub fn rename(dev: &Path, from: &str, to: &str) -> Result<usize, GptError> {
    let (g, d) = open_table(dev)?;
    let entries = g.header().num_parts;
    let mut parts = full_table(g.partitions(), entries);
    let mut n = 0;
    for p in parts.values_mut().filter(|p| p.name == from) {
        p.name = to.into();
        n += 1;
    }
    if n > 0 {
        commit(g, parts, &d)?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {

    #[test]
    fn room_for_p3_is_what_follows_the_last_partition() {
        // An image-sized disk: the last partition ends just before the backup GPT.
        let disk = 1074u64 << 20;
        let last = disk / 512 - 34;
        assert_eq!(tail_room(disk, last), 0);
        assert!(tail_room(disk + (1 << 30), last) >= P3_MIN_BYTES);
        assert!(tail_room(disk + (32 << 20), last) < P3_MIN_BYTES);
    }

    use super::*;

    fn disk(mib: u64) -> (tempfile::TempDir, std::path::PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("disk.img");
        std::fs::File::create(&p)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        (t, p)
    }

    #[test]
    fn free_tail_aligns_and_picks_the_largest() {
        assert_eq!(
            free_tail(&[(34, 2014), (4096, 100_000)]),
            Some((4096, 104_095))
        );
        assert_eq!(free_tail(&[(34, 100)]), None);
        assert_eq!(free_tail(&[(2100, 10_000)]), Some((4096, 12_099)));
    }

    #[test]
    fn whole_drive_gets_one_aligned_partition_then_rename() {
        let (_t, p) = disk(64);
        let guid = partition_whole(&p, "eve-persist-pending").unwrap();
        let g = gpt::GptConfig::new().open(&p).unwrap();
        let used: Vec<_> = g.partitions().values().filter(|x| x.is_used()).collect();
        assert_eq!(used.len(), 1);
        assert_eq!(used[0].part_guid, guid);
        assert_eq!(used[0].first_lba, 2048);
        assert_eq!(
            (used[0].last_lba - used[0].first_lba + 1) * 512,
            whole_partition_bytes(64 << 20),
            "the size a replacement check reckons with is the size partition_whole makes"
        );
        assert!(used[0].last_lba > (60 << 20) / 512);
        assert_eq!(g.header().num_parts, 128);
        assert_eq!(rename(&p, "eve-persist-pending", "eve-persist").unwrap(), 1);
        assert_eq!(
            rename(&p, "eve-persist-pending", "eve-persist").unwrap(),
            0,
            "idempotent"
        );
        assert_eq!(
            crate::probe::gpt_partitions(&p),
            [(1, "eve-persist".to_string(), guid)]
        );
    }

    #[test]
    fn tail_partition_fills_a_grown_disk_after_existing_ones() {
        let (_t, p) = disk(16);
        partition_whole(&p, "IMGA").unwrap();
        // Grow the "drive" as when a small image is dd'ed to a big disk.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let (n, guid) = add_tail_partition(&p, "P3-pending").unwrap();
        assert_eq!(n, 2);
        let g = gpt::GptConfig::new().open(&p).unwrap();
        assert_eq!(
            g.header().backup_lba,
            (64 << 20) / 512 - 1,
            "backup header moved to the end"
        );
        let p3 = &g.partitions()[&2];
        assert_eq!((p3.part_guid, p3.name.as_str()), (guid, "P3-pending"));
        assert!(p3.first_lba > g.partitions()[&1].last_lba && p3.last_lba > (60 << 20) / 512);
    }
}
