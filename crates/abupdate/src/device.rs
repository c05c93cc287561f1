//! Finds the boot disk (the one holding the running slot's PARTUUID, from the kernel command line)
//! and its ESP and slot partitions by GPT name.

use crate::error::{Error, Result};
use crate::state::Slot;
use gpt::disk::LogicalBlockSize;
use platform::Roots;
use std::path::{Path, PathBuf};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub dev: PathBuf,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BootDisk {
    pub disk: PathBuf,
    pub running: Slot,
    pub esp: Part,
    pub a: Part,
    pub b: Part,
}

impl BootDisk {
    pub fn slot(&self, s: Slot) -> &Part {
        match s {
            Slot::A => &self.a,
            Slot::B => &self.b,
        }
    }
}

/// `eve.slot=` and `root=PARTUUID=` from the kernel command line.
pub fn parse_cmdline(cmdline: &str) -> Result<(Slot, Uuid)> {
    let mut slot = None;
    let mut uuid = None;
    for w in cmdline.split_whitespace() {
        if let Some(s) = w.strip_prefix("eve.slot=") {
            slot = Slot::parse(s);
        } else if let Some(u) = w.strip_prefix("root=PARTUUID=") {
            uuid = Uuid::parse_str(u).ok();
        }
    }
    match (slot, uuid) {
        (Some(s), Some(u)) => Ok((s, u)),
        _ => Err(Error::Device(format!(
            "the kernel command line has no eve.slot=A|B and root=PARTUUID=<guid> (was GRUB's slot \
             entry used?): `{}`",
            cmdline.trim()
        ))),
    }
}

/// The slot GRUB refused before booting this one (`eve.refused=A|B`), if any.
pub fn refused_slot(cmdline: &str) -> Option<Slot> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("eve.refused="))
        .and_then(Slot::parse)
}

/// A disk the boot disk may be: not made by the kernel, and not an optical drive (reading an
/// empty one's GPT only waits).
fn candidate_disk(name: &str) -> bool {
    !platform::disk::is_virtual_name(name) && !platform::disk::is_optical_name(name)
}

type Table = Vec<(u32, String, Uuid, u64)>;

/// (number, name, unique guid, bytes) of every partition on `dev`.
fn read_table(dev: &Path) -> Option<Table> {
    for lb in [LogicalBlockSize::Lb512, LogicalBlockSize::Lb4096] {
        if let Ok(g) = gpt::GptConfig::new()
            .writable(false)
            .logical_block_size(lb)
            .open(dev)
        {
            return Some(
                g.partitions()
                    .iter()
                    .map(|(n, p)| {
                        let bytes = p.bytes_len(lb).unwrap_or(0);
                        (*n, p.name.clone(), p.part_guid, bytes)
                    })
                    .collect(),
            );
        }
    }
    None
}

fn part_node(roots: &Roots, disk: &str, num: u32) -> Option<PathBuf> {
    let rd = std::fs::read_dir(roots.sys.join("block").join(disk)).ok()?;
    for p in rd.filter_map(|e| e.ok()) {
        let n = std::fs::read_to_string(p.path().join("partition")).unwrap_or_default();
        if n.trim() == num.to_string() {
            return Some(roots.dev.join(p.file_name()));
        }
    }
    None
}

pub fn find(roots: &Roots, running: Slot, root: Uuid) -> Result<BootDisk> {
    let rd = std::fs::read_dir(roots.sys.join("block"))
        .map_err(|e| Error::Device(format!("{}: {e}", roots.sys.join("block").display())))?;
    let mut disks: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|d| candidate_disk(d))
        .collect();
    disks.sort();
    for disk in disks {
        let dev = roots.dev.join(&disk);
        let Some(table) = read_table(&dev) else {
            continue;
        };
        if !table.iter().any(|(_, _, g, _)| *g == root) {
            continue;
        }
        let by_name = |name: &str| -> Result<Part> {
            let (num, _, _, bytes) =
                table.iter().find(|(_, n, _, _)| n == name).ok_or_else(|| {
                    Error::Device(format!(
                        "boot disk {} has no `{name}` partition",
                        dev.display()
                    ))
                })?;
            let node = part_node(roots, &disk, *num).ok_or_else(|| {
                Error::Device(format!(
                    "partition {num} (`{name}`) of {} has no device node",
                    dev.display()
                ))
            })?;
            Ok(Part {
                dev: node,
                bytes: *bytes,
            })
        };
        let bd = BootDisk {
            disk: dev.clone(),
            running,
            esp: by_name(platform::layout::EFI)?,
            a: by_name(Slot::A.partition_name())?,
            b: by_name(Slot::B.partition_name())?,
        };
        let (_, _, guid, _) = table
            .iter()
            .find(|(_, n, _, _)| n == running.partition_name())
            .ok_or_else(|| Error::Device("no running slot partition".into()))?;
        if *guid != root {
            return Err(Error::Device(format!(
                "the kernel says slot {running}, but root PARTUUID {root} is not {} on {}",
                running.partition_name(),
                dev.display()
            )));
        }
        return Ok(bd);
    }
    Err(Error::Device(format!(
        "no disk holds the running root PARTUUID {root}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slot_grub_refused_comes_from_the_command_line() {
        assert_eq!(
            refused_slot("root=PARTUUID=x eve.slot=B eve.refused=A quiet"),
            Some(Slot::A)
        );
        assert_eq!(refused_slot("eve.slot=A"), None);
        assert_eq!(refused_slot("eve.refused=C eve.refused="), None);
    }

    /// A 64 MiB sparse disk file with the appliance's GPT layout; returns slot A's guid.
    fn disk(path: &Path) -> Uuid {
        let f = std::fs::File::create(path).unwrap();
        f.set_len(64 << 20).unwrap();
        drop(f);
        let mut g = gpt::GptConfig::new()
            .writable(true)
            .logical_block_size(LogicalBlockSize::Lb512)
            .create(path)
            .unwrap();
        for (name, mib) in [("EFI", 4), ("IMGA", 16), ("IMGB", 16), ("CONFIG", 1)] {
            g.add_partition(name, mib << 20, gpt::partition_types::LINUX_FS, 0, None)
                .unwrap();
        }
        let a = g
            .partitions()
            .values()
            .find(|p| p.name == "IMGA")
            .unwrap()
            .part_guid;
        g.write().unwrap();
        a
    }

    fn tree(base: &Path) -> Roots {
        let roots = Roots::under(base);
        for (p, n) in [("vda1", 1), ("vda2", 2), ("vda3", 3), ("vda4", 4)] {
            let d = roots.sys.join("block/vda").join(p);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("partition"), format!("{n}\n")).unwrap();
        }
        std::fs::create_dir_all(roots.sys.join("block/loop0")).unwrap();
        std::fs::create_dir_all(&roots.dev).unwrap();
        roots
    }

    #[test]
    fn finds_esp_and_slots_on_the_disk_holding_the_root() {
        let t = tempfile::tempdir().unwrap();
        let roots = tree(t.path());
        let a = disk(&roots.dev.join("vda"));
        let bd = find(&roots, Slot::A, a).unwrap();
        assert_eq!(bd.esp.dev, roots.dev.join("vda1"));
        assert_eq!(bd.a.dev, roots.dev.join("vda2"));
        assert_eq!(bd.b.dev, roots.dev.join("vda3"));
        assert_eq!(bd.b.bytes, 16 << 20);
        // The kernel claiming slot B while root is IMGA is an inconsistency worth stopping for.
        let e = find(&roots, Slot::B, a).unwrap_err().to_string();
        assert!(e.contains("not IMGB"), "{e}");
        let e = find(&roots, Slot::A, Uuid::nil()).unwrap_err().to_string();
        assert!(e.contains("no disk holds"), "{e}");
    }

    #[test]
    fn cmdline_needs_slot_and_root() {
        let u = "0b5c8a9e-4a0d-4f3e-9e6b-5f0f7b0f4a11";
        let (s, g) = parse_cmdline(&format!("root=PARTUUID={u} eve.slot=B quiet")).unwrap();
        assert_eq!((s, g.to_string()), (Slot::B, u.to_string()));
        assert!(parse_cmdline("root=/dev/vda2").is_err());
        assert!(parse_cmdline(&format!("root=PARTUUID={u} eve.slot=C")).is_err());
    }
}
