//! The OS update artifact (`abupdate::artifact` defines the format): a header with the manifest,
//! then the slot image (squashfs, signed verity descriptor, hash tree: `verity`). Built by `make image` next to the disk, and by `pack-update` from a
//! root directory (how tests make v2/v3 variants of a built image).

use crate::cmd;
use crate::error::{Error, IoContext, Result};
use abupdate::artifact;
use abupdate::trust::Signer25519;
use std::fs;
use std::path::Path;

/// Squashes `root` the way slots are built: gzip (GRUB's squash4 reads it and it boots fast under
/// emulation), fixed timestamps for reproducible images.
pub fn squash(root: &Path, out: &Path) -> Result<()> {
    squash_at(root, out, 9)
}

/// As [`squash`], at gzip level 1: about 8 times less CPU for a slot 7% larger. For throwaway
/// images (the VM tests' variants), where the build's CPU is taken from the guests under test.
pub fn squash_quick(root: &Path, out: &Path) -> Result<()> {
    squash_at(root, out, 1)
}

fn squash_at(root: &Path, out: &Path, level: u8) -> Result<()> {
    let _ = fs::remove_file(out);
    cmd::run(
        cmd::MKSQUASHFS,
        &[
            root.to_string_lossy().into_owned(),
            out.to_string_lossy().into_owned(),
            "-comp".into(),
            "gzip".into(),
            "-Xcompression-level".into(),
            level.to_string(),
            "-noappend".into(),
            "-no-progress".into(),
            "-mkfs-time".into(),
            "0".into(),
            "-all-time".into(),
            "0".into(),
        ],
        None,
    )
    .map(|_| ())
}

/// Writes `out` = header signed by `key` + the slot image made from `squashfs` (its verity
/// descriptor signed by the same key); returns the manifest.
pub fn pack(
    squashfs: &Path,
    version: &str,
    info: artifact::BuildInfo,
    key: &Signer25519,
    out: &Path,
) -> Result<artifact::Manifest> {
    let slot = out.with_extension("slot");
    crate::verity::slot_image(
        squashfs,
        &slot,
        key,
        version,
        info.security_epoch,
        &info.profile,
    )?;
    let m = pack_slot(&slot, version, info, key, out);
    let _ = fs::remove_file(&slot);
    m
}

/// Writes `out` = header signed by `key` + `slot` (a slot image); returns the manifest.
pub fn pack_slot(
    slot: &Path,
    version: &str,
    info: artifact::BuildInfo,
    key: &Signer25519,
    out: &Path,
) -> Result<artifact::Manifest> {
    let payload = fs::read(slot).at("read", slot)?;
    let m = artifact::manifest_for(version, "x86_64", &payload, info).map_err(|source| {
        Error::Update {
            path: out.into(),
            source,
        }
    })?;
    let header = artifact::header(&m, key).map_err(|source| Error::Update {
        path: out.into(),
        source,
    })?;
    let mut whole = header;
    whole.extend_from_slice(&payload);
    platform::fsx::write_atomic(out, &whole, None)?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packed_update_passes_abupdate_checks() {
        let t = tempfile::tempdir().unwrap();
        let sq = t.path().join("s.squashfs");
        let mut payload = artifact::SQUASHFS_MAGIC.to_vec();
        payload.extend_from_slice(&[1u8; 5000]);
        payload[40..48].copy_from_slice(&5004u64.to_le_bytes());
        fs::write(&sq, &payload).unwrap();
        let out = t.path().join("u.update");
        let key = Signer25519::from_seed(&[4; 32]);
        let m = pack(&sq, "v2", Default::default(), &key, &out).unwrap();
        let mut src = abupdate::install::Source::open(out.to_str().unwrap()).unwrap();
        let trust =
            abupdate::trust::Trust::from_list(&abupdate::trust::KeyList::new(1, &[key.public()]))
                .unwrap();
        let running = artifact::Running {
            version: "v1".into(),
            security_epoch: 0,
            profile: "dev".into(),
        };
        let want = artifact::Expect {
            arch: "x86_64",
            trust: &trust,
            key_floor: artifact::KeyFloor::none(),
            running: &running,
            allow_downgrade: false,
        };
        assert_eq!(
            abupdate::install::check(&mut src, &want, None)
                .unwrap()
                .manifest,
            m
        );
        // The payload is a verified slot: stage 1 finds and accepts its descriptor.
        let slot = &fs::read(&out).unwrap()[artifact::PAYLOAD_OFFSET as usize..];
        let at = abupdate::verity::descriptor_offset(slot, slot.len() as u64).unwrap();
        assert_eq!(at, 8192);
        let d = abupdate::verity::verify(
            &slot[at as usize..at as usize + 4096],
            at,
            slot.len() as u64,
            &trust,
        )
        .unwrap();
        assert_eq!(&slot[..5004], &payload[..]);
        assert_eq!((d.version.as_str(), d.hash_offset), ("v2", 12288));
        fs::write(&sq, b"not squashfs").unwrap();
        let e = pack(&sq, "v2", Default::default(), &key, &out).unwrap_err();
        assert!(platform::chain(&e).contains("not a squashfs"));
    }
}
