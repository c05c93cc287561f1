//! Finds the partition with a given GPT unique GUID (GRUB passes the slot's as root=PARTUUID=).

use gpt::disk::LogicalBlockSize;
use platform::Roots;
use std::path::PathBuf;
use uuid::Uuid;

/// Whole disks worth reading a GPT from (not loop, ram, zram, optical or device-mapper nodes).
fn candidate_disk(name: &str) -> bool {
    !["loop", "ram", "zram", "sr", "dm-", "md", "nbd", "zd"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// Partition number holding `guid` on the disk at `dev`, trying 512- and 4096-byte sectors.
fn partition_number(dev: &std::path::Path, guid: Uuid) -> Option<u32> {
    for lb in [LogicalBlockSize::Lb512, LogicalBlockSize::Lb4096] {
        if let Ok(g) = gpt::GptConfig::new()
            .writable(false)
            .logical_block_size(lb)
            .open(dev)
        {
            return g
                .partitions()
                .iter()
                .find(|(_, p)| p.part_guid == guid)
                .map(|(n, _)| *n);
        }
    }
    None
}

/// All partitions (device node paths) carrying `guid`, in disk-name order.
pub fn find(roots: &Roots, guid: Uuid) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(roots.sys.join("block")) else {
        return out;
    };
    let mut disks: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    disks.sort();
    for disk in disks.into_iter().filter(|d| candidate_disk(d)) {
        let Some(n) = partition_number(&roots.dev.join(&disk), guid) else {
            continue;
        };
        let Ok(parts) = std::fs::read_dir(roots.sys.join("block").join(&disk)) else {
            continue;
        };
        for p in parts.filter_map(|e| e.ok()) {
            let num = std::fs::read_to_string(p.path().join("partition")).unwrap_or_default();
            if num.trim() == n.to_string() {
                out.push(roots.dev.join(p.file_name()));
            }
        }
    }
    out
}

/// A one-line inventory of block devices, for the error when the root is not found.
pub fn inventory(roots: &Roots) -> String {
    let v = platform::sysfs::names(&roots.sys.join("class/block"));
    if v.is_empty() {
        "no block devices".into()
    } else {
        v.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A disk image with a GPT whose partition 2 has `guid`, and the sysfs entries the kernel makes.
    fn fixture(base: &std::path::Path, disk: &str, part_prefix: &str, guid: Uuid) {
        std::fs::create_dir_all(base.join("dev")).unwrap();
        let path = base.join("dev").join(disk);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.set_len(8 << 20).unwrap();
        let mut g = gpt::GptConfig::new()
            .writable(true)
            .create_from_device(f, None)
            .unwrap();
        let mk = |n: u32, first: u64, g: Uuid| gpt::partition::Partition {
            part_type_guid: gpt::partition_types::LINUX_FS,
            part_guid: g,
            first_lba: first,
            last_lba: first + 2047,
            flags: 0,
            name: format!("p{n}"),
        };
        let mut m = BTreeMap::new();
        m.insert(1, mk(1, 2048, Uuid::new_v4()));
        m.insert(2, mk(2, 4096, guid));
        g.update_partitions(m).unwrap();
        g.write().unwrap();
        for n in 1..=2 {
            let d = base
                .join("sys/block")
                .join(disk)
                .join(format!("{disk}{part_prefix}{n}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("partition"), format!("{n}\n")).unwrap();
        }
        std::fs::create_dir_all(base.join("sys/block").join(disk).join("queue")).unwrap();
    }

    #[test]
    fn finds_the_partition_by_guid_on_nvme_and_virtio_names() {
        let t = tempfile::tempdir().unwrap();
        let want = Uuid::new_v4();
        fixture(t.path(), "nvme0n1", "p", want);
        fixture(t.path(), "vda", "", Uuid::new_v4());
        std::fs::create_dir_all(t.path().join("sys/block/loop0")).unwrap();
        let roots = Roots::under(t.path());
        assert_eq!(find(&roots, want), [t.path().join("dev/nvme0n1p2")]);
        assert!(find(&roots, Uuid::new_v4()).is_empty());
    }

    #[test]
    fn duplicate_guids_are_all_reported() {
        let t = tempfile::tempdir().unwrap();
        let want = Uuid::new_v4();
        fixture(t.path(), "sda", "", want);
        fixture(t.path(), "vda", "", want);
        let found = find(&Roots::under(t.path()), want);
        assert_eq!(
            found,
            [t.path().join("dev/sda2"), t.path().join("dev/vda2")]
        );
    }

    #[test]
    fn skips_virtual_devices() {
        assert!(!candidate_disk("loop3") && !candidate_disk("zd0") && !candidate_disk("dm-1"));
        assert!(candidate_disk("nvme0n1") && candidate_disk("mmcblk0") && candidate_disk("sda"));
    }
}
