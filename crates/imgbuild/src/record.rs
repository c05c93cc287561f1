//! The build record, `<stem>.build.json`: what went into an image (packages, kernel, ZFS, keys,
//! sizes), for the tests, the reproducibility check and whoever ships the image.

use crate::apt::Package;
use crate::context::Profile;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct SigningInfo {
    /// `release` or `dev`.
    pub kind: String,
    pub key_id: String,
    /// Only for a development key (the tests sign variants with it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev_key_file: Option<String>,
    pub trusted_keys: Vec<String>,
    pub key_serial: u32,
    pub security_epoch: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation_to: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct BuildManifest {
    pub version: String,
    pub profile: Profile,
    pub signing: SigningInfo,
    pub git_revision: String,
    pub kernel: KernelInfo,
    pub zfs: ZfsInfo,
    pub cmdline: String,
    pub onboot: Vec<String>,
    pub services: Vec<String>,
    pub packages: Vec<Package>,
    pub build_packages: Vec<Package>,
    pub image: ImageInfo,
    pub update: UpdateInfo,
    pub secure_boot: SecureBootInfo,
    pub mgmt: MgmtInfo,
}

/// The management API's operator CAs.
#[derive(Debug, Serialize)]
pub struct MgmtInfo {
    /// `release` (MGMT_CA) or `dev`.
    pub ca: String,
    /// Only for the development CAs: where their client certificates are (`admin.pem`,
    /// `admin.key`, `reader.pem`, `reader.key`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev_dir: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct UpdateInfo {
    pub path: String,
    pub size: u64,
    pub payload_sha256: String,
}

#[derive(Debug, Serialize)]
pub struct KernelInfo {
    pub package: String,
    pub version: String,
    pub release: String,
    pub modules: usize,
}

#[derive(Debug, Serialize)]
pub struct ZfsInfo {
    pub version: String,
    pub dkms_package: String,
    pub userland_package: String,
}

#[derive(Debug, Serialize)]
pub struct ImageInfo {
    pub path: String,
    pub sha256: String,
    pub size: u64,
    pub allocated: u64,
    pub compressed_path: String,
    pub compressed_size: u64,
    pub squashfs_size: u64,
    /// The slot image: squashfs, verity descriptor and hash tree.
    pub slot_size: u64,
    pub initramfs_size: u64,
}

#[derive(Debug, Serialize)]
pub struct SecureBootInfo {
    /// `release` or `dev` boot keys.
    pub boot_keys: String,
    /// Only for development keys (the tests sign variants with them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev_boot_keys_dir: Option<String>,
    /// OVMF variables with the keys enrolled, for qemu.
    pub ovmf_vars: String,
    pub shim: String,
    pub grub_sbat_from: String,
    pub verity_root_hash: String,
}
