//! Step "build-manifest": the compressed image and `<stem>.build.json`, which records what went
//! into the image (packages, kernel, ZFS, keys, sizes) for the tests and the reproducibility check.

use crate::cmd;
use crate::context::{sha256_file, Options};
use crate::error::{IoContext, Result};
use crate::record::*;
use crate::step::resolve::Resolved;
use std::fs;
use std::path::Path;

/// What the earlier steps made, by path and value.
#[derive(Debug)]
pub struct Made<'a> {
    pub image: &'a Path,
    pub work: &'a Path,
    pub sqfs: &'a Path,
    pub slot_img: &'a Path,
    pub upd: &'a Path,
    pub vars: &'a Path,
    pub git_rev: &'a str,
    pub cmdline: &'a str,
    pub nmods: usize,
    pub descriptor: &'a abupdate::verity::Descriptor,
    pub upd_manifest: &'a abupdate::artifact::Manifest,
}

pub fn record(
    opts: &Options,
    m: &crate::manifest::Manifest,
    r: &Resolved,
    keys: &crate::step::Keys,
    made: &Made,
) -> Result<BuildManifest> {
    let crate::step::Keys {
        signing,
        trusted,
        rotation,
        boot,
        mgmt,
    } = *keys;
    let Made {
        image,
        work,
        sqfs,
        slot_img,
        upd,
        vars,
        git_rev,
        cmdline,
        nmods,
        descriptor,
        upd_manifest,
    } = *made;
    let Resolved {
        pkgs,
        build_pkgs,
        kver,
        zfs_version,
        kernel_pkg,
        zfs_user,
        boot_pkgs,
    } = r;
    let zst = opts.out.join(format!("{}.raw.zst", opts.profile.stem()));
    cmd::run(
        cmd::ZSTD,
        &[
            std::ffi::OsStr::new("-q"),
            std::ffi::OsStr::new("-f"),
            std::ffi::OsStr::new("-T0"),
            image.as_os_str(),
            std::ffi::OsStr::new("-o"),
            zst.as_os_str(),
        ],
        None,
    )?;
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(image).at("stat", image)?;
    let bm = BuildManifest {
        version: opts.version.clone(),
        profile: opts.profile,
        signing: SigningInfo {
            kind: signing.kind.into(),
            key_id: signing.key.id(),
            dev_key_file: (signing.kind == "dev").then(|| signing.key_file.display().to_string()),
            trusted_keys: abupdate::trust::Trust::from_list(trusted)
                .map(|t| t.ids())
                .unwrap_or_default(),
            key_serial: trusted.serial,
            security_epoch: opts.security_epoch,
            rotation_to: rotation
                .and_then(|r| abupdate::trust::KeyList::parse(r.list.as_bytes()).ok())
                .map(|l| l.serial),
        },
        git_revision: git_rev.to_string(),
        kernel: KernelInfo {
            package: kernel_pkg.name.clone(),
            version: kernel_pkg.version.clone(),
            release: kver.clone(),
            modules: nmods,
        },
        zfs: ZfsInfo {
            version: zfs_version.clone(),
            dkms_package: build_pkgs[0].version.clone(),
            userland_package: zfs_user.version.clone(),
        },
        cmdline: cmdline.to_string(),
        onboot: m.onboot.iter().map(|e| e.name.clone()).collect(),
        services: m.services.iter().map(|e| e.name.clone()).collect(),
        packages: pkgs.clone(),
        build_packages: build_pkgs.clone(),
        image: ImageInfo {
            path: image.display().to_string(),
            sha256: sha256_file(image)?,
            size: meta.len(),
            allocated: meta.blocks() * 512,
            compressed_path: zst.display().to_string(),
            compressed_size: fs::metadata(&zst).at("stat", &zst)?.len(),
            squashfs_size: fs::metadata(sqfs).at("stat", sqfs)?.len(),
            slot_size: fs::metadata(slot_img).at("stat", slot_img)?.len(),
            initramfs_size: fs::metadata(work.join("rootfs/boot/initrd.img"))
                .at("stat", work)?
                .len(),
        },
        update: UpdateInfo {
            path: upd.display().to_string(),
            size: fs::metadata(upd).at("stat", upd)?.len(),
            payload_sha256: upd_manifest.payload.sha256.clone(),
        },
        mgmt: crate::record::MgmtInfo {
            ca: mgmt.kind.into(),
            dev_dir: (mgmt.kind == "dev").then(|| mgmt.dir.display().to_string()),
        },
        secure_boot: SecureBootInfo {
            boot_keys: boot.kind.into(),
            dev_boot_keys_dir: (boot.kind == "dev").then(|| boot.dir.display().to_string()),
            ovmf_vars: vars.display().to_string(),
            shim: format!("{} {}", boot_pkgs.shim.name, boot_pkgs.shim.version),
            grub_sbat_from: format!(
                "{} {}",
                boot_pkgs.grub_signed.name, boot_pkgs.grub_signed.version
            ),
            verity_root_hash: descriptor.root_hash.clone(),
        },
    };
    let p = opts.out.join(format!("{}.build.json", opts.profile.stem()));
    fs::write(&p, serde_json::to_vec_pretty(&bm).unwrap_or_default()).at("write", &p)?;
    Ok(bm)
}
