//! The raw GPT disk image: EVE's partition layout, placed on 1 MiB boundaries, written sparsely.

use crate::error::{Error, IoContext, Result};
use gpt::partition_types::Type;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use uuid::Uuid;

pub const SECTOR: u64 = 512;
pub const ALIGN: u64 = 1 << 20;
/// The partition entry array gpt tools expect (and room for P3 and more later).
pub const TABLE_ENTRIES: u32 = 128;

pub const EFI_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
pub const LINUX_TYPE: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
pub const BASIC_DATA_TYPE: &str = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7";
/// EVE's persist partition type, used by storage-init when it creates P3.
pub const P3_TYPE: &str = "5F24425A-2DFA-11E8-A270-7B663FACCC2C";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartSpec {
    pub name: String,
    pub type_guid: String,
    pub size: u64,
    pub content: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub spec: PartSpec,
    pub number: u32,
    pub first_lba: u64,
    pub last_lba: u64,
    pub guid: Uuid,
}

/// Places partitions in order on 1 MiB boundaries; returns them and the image size (which leaves
/// room for the backup GPT). Partition GUIDs derive from `seed` so a rebuild is byte-identical.
pub fn layout(specs: &[PartSpec], seed: &str) -> Result<(Vec<Placed>, u64)> {
    let ns = Uuid::new_v5(&Uuid::NAMESPACE_OID, b"eve-storage-image");
    let mut next = ALIGN;
    let mut out = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        if s.size == 0 {
            return Err(Error::Layout(format!("partition {} has size 0", s.name)));
        }
        let size = s.size.div_ceil(ALIGN) * ALIGN;
        let first = next / SECTOR;
        let last = (next + size) / SECTOR - 1;
        out.push(Placed {
            spec: s.clone(),
            number: i as u32 + 1,
            first_lba: first,
            last_lba: last,
            guid: Uuid::new_v5(&ns, format!("{seed}/{}", s.name).as_bytes()),
        });
        next += size;
    }
    Ok((out, next + ALIGN))
}

pub fn disk_guid(seed: &str) -> Uuid {
    Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("eve-storage-image/{seed}/disk").as_bytes(),
    )
}

/// Writes protective MBR and both GPT headers for `parts` onto `dev` (already sized).
pub fn write_gpt<D: gpt::DiskDevice>(
    dev: D,
    parts: &[Placed],
    disk: Uuid,
    total: u64,
) -> Result<D, gpt::GptError> {
    let mut dev = dev;
    let mbr = gpt::mbr::ProtectiveMBR::with_lb_size(
        u32::try_from(total / SECTOR - 1).unwrap_or(0xFFFF_FFFF),
    );
    mbr.overwrite_lba0(&mut dev)
        .map_err(|e| gpt::GptError::Io(std::io::Error::other(e.to_string())))?;
    let mut g = gpt::GptConfig::new()
        .writable(true)
        .change_partition_count(true)
        .create_from_device(dev, Some(disk))?;
    let mut map = BTreeMap::new();
    for n in 1..=TABLE_ENTRIES {
        map.insert(n, gpt::partition::Partition::zero());
    }
    for p in parts {
        let t: Type = p
            .spec
            .type_guid
            .parse()
            .map_err(|_| gpt::GptError::Overflow("partition type"))?;
        map.insert(
            p.number,
            gpt::partition::Partition {
                part_type_guid: t,
                part_guid: p.guid,
                first_lba: p.first_lba,
                last_lba: p.last_lba,
                flags: 0,
                name: p.spec.name.clone(),
            },
        );
    }
    g.update_partitions(map)?;
    g.write()
}

/// Creates `path` as a sparse raw image holding the GPT and each partition's content.
pub fn assemble(path: &Path, parts: &[Placed], disk: Uuid, total: u64) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .at("create", path)?;
    f.set_len(total).at("resize", path)?;
    for p in parts {
        let Some(src) = &p.spec.content else { continue };
        let mut inp = std::fs::File::open(src).at("open", src)?;
        let len = inp.metadata().at("stat", src)?.len();
        let room = (p.last_lba - p.first_lba + 1) * SECTOR;
        if len > room {
            return Err(Error::Layout(format!(
                "{} is {len} bytes but partition {} holds {room}; raise its size",
                src.display(),
                p.spec.name
            )));
        }
        f.seek(SeekFrom::Start(p.first_lba * SECTOR))
            .at("seek", path)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = inp.read(&mut buf).at("read", src)?;
            if n == 0 {
                break;
            }
            // Leave holes for zero blocks: the image stays sparse and `dd conv=sparse` friendly.
            if buf[..n].iter().all(|&b| b == 0) {
                f.seek(SeekFrom::Current(n as i64)).at("seek", path)?;
            } else {
                f.write_all(&buf[..n]).at("write", path)?;
            }
        }
    }
    let f = write_gpt(f, parts, disk, total).map_err(|source| Error::Gpt {
        path: path.into(),
        source,
    })?;
    f.sync_all().at("sync", path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use platform::layout;
    use std::io::Cursor;

    fn specs() -> Vec<PartSpec> {
        let p = |n: &str, t: &str, mib: u64| PartSpec {
            name: n.into(),
            type_guid: t.into(),
            size: mib << 20,
            content: None,
        };
        vec![
            p(layout::EFI, EFI_TYPE, 32),
            p(layout::IMGA, LINUX_TYPE, 300),
            p(layout::IMGB, LINUX_TYPE, 300),
            p(layout::CONFIG, BASIC_DATA_TYPE, 1),
        ]
    }

    #[test]
    fn layout_is_aligned_contiguous_and_deterministic() {
        let (parts, total) = layout(&specs(), "v1").unwrap();
        assert_eq!(parts[0].first_lba, 2048);
        for w in parts.windows(2) {
            assert_eq!(w[1].first_lba, w[0].last_lba + 1);
        }
        for p in &parts {
            assert_eq!(p.first_lba * SECTOR % ALIGN, 0);
        }
        assert_eq!(total, (1 + 32 + 300 + 300 + 1 + 1) << 20);
        let (again, _) = layout(&specs(), "v1").unwrap();
        assert_eq!(parts, again);
        let (other, _) = layout(&specs(), "v2").unwrap();
        assert_ne!(parts[1].guid, other[1].guid);
        assert_ne!(parts[1].guid, parts[2].guid);
    }

    #[test]
    fn odd_sizes_round_up_and_zero_is_refused() {
        let mut s = specs();
        s[3].size = 1000;
        let (parts, _) = layout(&s, "x").unwrap();
        assert_eq!((parts[3].last_lba - parts[3].first_lba + 1) * SECTOR, ALIGN);
        s[3].size = 0;
        assert!(layout(&s, "x").unwrap_err().to_string().contains("CONFIG"));
    }

    #[test]
    fn in_memory_gpt_reads_back_with_names_types_and_guids() {
        let (parts, total) = layout(&specs(), "v1").unwrap();
        let dev = Cursor::new(vec![0u8; total as usize]);
        let dev = write_gpt(dev, &parts, disk_guid("v1"), total).unwrap();
        let g = gpt::GptConfig::new().open_from_device(dev).unwrap();
        assert_eq!(g.guid(), &disk_guid("v1"));
        assert_eq!(g.header().num_parts, TABLE_ENTRIES);
        let used: Vec<_> = g.partitions().values().filter(|p| p.is_used()).collect();
        assert_eq!(used.len(), 4);
        assert_eq!(used[1].name, "IMGA");
        assert_eq!(used[1].part_guid, parts[1].guid);
        assert_eq!(
            used[0].part_type_guid.guid.to_string().to_uppercase(),
            EFI_TYPE
        );
        assert_eq!(used[3].last_lba, parts[3].last_lba);
    }

    #[test]
    fn assemble_places_content_and_refuses_overflow() {
        let d = tempfile::tempdir().unwrap();
        let content = d.path().join("a.img");
        std::fs::write(&content, b"SQSH-payload").unwrap();
        let mut s = specs();
        s[1].content = Some(content.clone());
        let (parts, total) = layout(&s, "v1").unwrap();
        let img = d.path().join("disk.raw");
        assemble(&img, &parts, disk_guid("v1"), total).unwrap();
        let bytes = std::fs::read(&img).unwrap();
        let off = (parts[1].first_lba * SECTOR) as usize;
        assert_eq!(&bytes[off..off + 12], b"SQSH-payload");
        assert_eq!(&bytes[512..520], b"EFI PART");
        std::fs::write(&content, vec![1u8; (2 << 20) + 1]).unwrap();
        s[1].size = 2 << 20;
        let (parts, total) = layout(&s, "v1").unwrap();
        assert!(assemble(&img, &parts, disk_guid("v1"), total)
            .unwrap_err()
            .to_string()
            .contains("IMGA"));
    }
}
