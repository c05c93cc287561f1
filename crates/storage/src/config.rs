//! Where the policy comes from: the CONFIG partition's storage.toml overrides the image's
//! /etc/storage.toml; the last policy that validated is kept on the pool.

use crate::bringup::log;
use crate::zfs::run;
use std::path::{Path, PathBuf};

pub const MOUNT: &str = "/bin/mount";
pub const CONFIG_DIR: &str = "/config";
pub const IMAGE_POLICY: &str = "/etc/storage.toml";

/// Mounts the boot disk's CONFIG partition read-only at /config (idempotent; absent is fine).
pub fn mount_config(boot_disk: Option<&str>) {
    let Some(disk) = boot_disk else { return };
    let parts = crate::probe::gpt_partitions(&Path::new("/dev").join(disk));
    let Some((_, _, guid)) = parts.iter().find(|(_, n, _)| n == "CONFIG") else {
        return;
    };
    if std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(CONFIG_DIR))
    {
        return;
    }
    let dev = format!("/dev/disk/by-partuuid/{guid}");
    if let Err(e) = run(
        MOUNT,
        &[
            "-t".into(),
            "vfat".into(),
            "-o".into(),
            "ro".into(),
            dev,
            CONFIG_DIR.into(),
        ],
        None,
    ) {
        log(format!("CONFIG partition not mounted: {e}"));
    }
}

/// The policy file in force: CONFIG's if present, else the image's.
pub fn candidates() -> Vec<(PathBuf, String)> {
    for p in [
        Path::new(CONFIG_DIR).join("storage.toml"),
        PathBuf::from(IMAGE_POLICY),
    ] {
        if let Ok(text) = std::fs::read_to_string(&p) {
            return vec![(p, text)];
        }
    }
    Vec::new()
}

pub fn last_good_path(pool: &str) -> PathBuf {
    Path::new("/").join(pool).join(".storage/policy.toml")
}
