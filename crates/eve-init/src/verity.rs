//! Stage 1's verified root: find the slot's signed verity descriptor (`abupdate::verity`), check
//! it with the keys baked into this (GRUB-verified) initramfs, open the squashfs through a
//! dm-verity device, and read every block once, so a damaged or changed image fails the boot
//! here, before anything runs from it, instead of at some later read.

use abupdate::trust::{KeyList, SignedKeyList, Trust};
use abupdate::verity::{self, Descriptor};
use devicemapper::{DevId, DmFlags, DmName, DmOptions, DM};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// In the initramfs: the update keys the image was built to trust (a `KeyList`).
pub const BOOT_KEYS: &str = "/etc/eve/boot-keys.json";
/// In the initramfs: the profile it was built for (`prod` or `dev`).
pub const PROFILE: &str = "/etc/eve/profile";
const DM_NAME: &str = "eve-root";

/// Pure: whether an initramfs built for `built` (`None`: it says nothing, taken as production)
/// may boot a slot whose signed descriptor names `slot`: a production image boots production
/// slots only, so a development build (console shell, test agent) written to its disk never runs.
pub fn check_profile(built: Option<&str>, slot: &str) -> Result<(), String> {
    let built = built.map(str::trim).unwrap_or("prod");
    if built != "dev" && slot != "prod" {
        return Err(format!(
            "the slot holds a {} build; this production box boots production builds only",
            if slot.is_empty() {
                "profile-less"
            } else {
                slot
            }
        ));
    }
    Ok(())
}

#[derive(Debug)]
pub struct Verified {
    pub node: PathBuf,
    pub descriptor: Descriptor,
}

/// The built-in keys plus the rotations recorded on the ESP (`None` when it could not be read).
/// Also the serial of the list built in, which the rollback floor checks on its own: a chain
/// beyond it may have been forked by a key the list still trusts.
pub fn trust(keys_file: &Path, chain: Option<&[SignedKeyList]>) -> Result<(Trust, u32), String> {
    let raw = std::fs::read(keys_file).map_err(|e| format!("{}: {e}", keys_file.display()))?;
    let list = KeyList::parse(&raw).map_err(|e| format!("{}: {e}", keys_file.display()))?;
    let (t, err) = Trust::boot(&list, chain.unwrap_or_default());
    if let Some(e) = err {
        crate::sys::log(format!(
            "WARNING: the key rotations on the ESP do not verify ({e}); only the built-in keys are trusted"
        ));
    }
    if t.ids().is_empty() {
        return Err(format!("{}: no keys", keys_file.display()));
    }
    Ok((t, list.serial))
}

/// The signed descriptor of the slot on `dev`, checked against `trust` (nothing mapped).
pub fn descriptor(dev: &Path, trust: &Trust) -> Result<Descriptor, String> {
    verity::read_descriptor(dev, trust)
}

/// Checks the descriptor of the slot on `dev` and maps it through dm-verity.
pub fn open(dev: &Path, trust: &Trust, dev_root: &Path) -> Result<Verified, String> {
    let d = descriptor(dev, trust)?;
    let (sectors, params) = verity::table(&d, &dev.to_string_lossy());
    let dm = DM::new().map_err(|e| format!("device-mapper: {e}"))?;
    let name = DmName::new(DM_NAME).map_err(|e| format!("device-mapper name: {e}"))?;
    // dm-verity refuses a writable table.
    let ro = DmOptions::default().set_flags(DmFlags::DM_READONLY);
    dm.device_create(name, None, ro)
        .map_err(|e| format!("device-mapper create {DM_NAME}: {e}"))?;
    let id = DevId::Name(name);
    let table = [(0u64, sectors, "verity".to_string(), params)];
    let info = dm
        .table_load(&id, &table, ro)
        .and_then(|_| dm.device_suspend(&id, DmOptions::default()))
        .map_err(|e| {
            let _ = dm.device_remove(&id, DmOptions::default());
            format!("device-mapper verity table for {}: {e}", dev.display())
        })?;
    let node = dev_root.join(format!("dm-{}", info.device().minor));
    let start = Instant::now();
    while !node.exists() {
        if start.elapsed() > Duration::from_secs(10) {
            return Err(format!("{} did not appear", node.display()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Verified {
        node,
        descriptor: d,
    })
}

/// Reads the whole verified device once; a block that does not hash to the signed tree fails
/// the read (EIO). Returns the bytes read.
pub fn read_all(node: &Path) -> Result<u64, String> {
    let mut f = File::open(node).map_err(|e| format!("open {}: {e}", node.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(format!(
                    "the image does not match its signed root hash near byte {total} ({e})"
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_production_initramfs_boots_production_slots_only() {
        assert!(check_profile(Some("prod\n"), "prod").is_ok());
        assert!(check_profile(Some("dev"), "dev").is_ok());
        assert!(check_profile(Some("dev"), "prod").is_ok());
        for (built, slot) in [
            (Some("prod"), "dev"),
            (Some("prod"), ""),
            // An initramfs that says nothing is a production one.
            (None, "dev"),
            (Some(""), "dev"),
            (Some("anything"), "dev"),
        ] {
            let e = check_profile(built, slot).unwrap_err();
            assert!(
                e.contains("production builds only"),
                "{built:?} {slot}: {e}"
            );
        }
    }
}
