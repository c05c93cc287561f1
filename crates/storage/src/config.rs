//! Where the policy comes from: the CONFIG partition's storage.toml overrides the image's
//! /etc/storage.toml; the last policy that validated is kept on the pool.

use crate::cmd::{run, MOUNT};
use platform::log;
use std::path::{Path, PathBuf};

pub const CONFIG_DIR: &str = "/config";
pub const IMAGE_POLICY: &str = "/etc/storage.toml";

/// Mounts the boot disk's CONFIG partition read-only at /config (idempotent; absent is fine).
/// A CONFIG partition that is there but does not mount is an error: the policy it may hold cannot
/// be read, which must not look like "no override".
pub fn mount_config(roots: &platform::Roots, boot_disk: Option<&str>) -> Result<(), String> {
    let Some(disk) = boot_disk else { return Ok(()) };
    let parts = crate::probe::gpt_partitions(&roots.dev.join(disk));
    let Some((_, _, guid)) = parts.iter().find(|(_, n, _)| n == platform::layout::CONFIG) else {
        return Ok(());
    };
    if std::fs::read_to_string(roots.mounts())
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(CONFIG_DIR))
    {
        return Ok(());
    }
    let dev = roots.by_partuuid(&guid.to_string()).display().to_string();
    run(
        MOUNT,
        &[
            "-t".into(),
            "vfat".into(),
            "-o".into(),
            "ro".into(),
            dev.clone(),
            CONFIG_DIR.into(),
        ],
        None,
    )
    .map(|_| ())
    .map_err(|e| {
        log(format!("CONFIG partition not mounted: {e}"));
        format!("the CONFIG partition ({dev}) is present but did not mount: {e}")
    })
}

use crate::policy::Candidate;

/// Pure: the first policy file present in `order`, read by `read` (NotFound means absent). A
/// file that exists but cannot be read, or is not UTF-8, is a candidate that fails, so a bad
/// override never falls through to the image's policy.
pub fn first_present(
    order: &[PathBuf],
    read: impl Fn(&Path) -> std::io::Result<Vec<u8>>,
) -> Vec<Candidate> {
    for p in order {
        match read(p) {
            Ok(b) => {
                let text = String::from_utf8(b).map_err(|e| {
                    let at = e.utf8_error().valid_up_to();
                    let line = e.as_bytes()[..at].iter().filter(|&&c| c == b'\n').count() + 1;
                    (line, format!("not UTF-8 text (byte {at})"))
                });
                return vec![(p.clone(), text)];
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return vec![(p.clone(), Err((0, format!("cannot be read: {e}"))))],
        }
    }
    Vec::new()
}

/// The policy file in force: CONFIG's if present, else the image's. `config_error` is set when
/// the CONFIG partition exists but did not mount: that counts as a bad CONFIG policy.
pub fn candidates(config_error: Option<String>) -> Vec<Candidate> {
    let config = Path::new(CONFIG_DIR).join("storage.toml");
    if let Some(e) = config_error {
        return vec![(config, Err((0, e)))];
    }
    first_present(&[config, PathBuf::from(IMAGE_POLICY)], |p| std::fs::read(p))
}

pub fn last_good_path(pool: &str) -> PathBuf {
    last_good_in(&Path::new("/").join(pool))
}

/// Where the last good policy is kept on the pool mounted at `mount`.
pub fn last_good_in(mount: &Path) -> PathBuf {
    mount.join(".storage/policy.toml")
}

/// The policy storage-init last applied on `pool` (kept there), else the image's.
pub fn last_good_policy(pool: &str) -> Option<crate::policy::Policy> {
    [last_good_path(pool), PathBuf::from(IMAGE_POLICY)]
        .iter()
        .find_map(|p| {
            let t = std::fs::read_to_string(p).ok()?;
            crate::policy::Policy::parse(p, &t, None).ok()
        })
}

/// The `[encryption]` section of the image's own policy (verified with the rest of the image),
/// else the built-in one: the only source of how the vault is sealed.
pub fn image_encryption() -> crate::policy::Encryption {
    std::fs::read_to_string(IMAGE_POLICY)
        .ok()
        .and_then(|t| crate::policy::Policy::parse(Path::new(IMAGE_POLICY), &t, None).ok())
        .unwrap_or_else(crate::policy::Policy::builtin)
        .encryption
}

/// Records a later change of the vault's state (unlocked by the recovery key) in the outcome
/// storage-init wrote for the health check ([`platform::Roots::storage_outcome`]).
pub fn record_vault_state(
    roots: &platform::Roots,
    pool: &str,
    state: &str,
    bound_to: Option<&str>,
) {
    let path = roots.storage_outcome();
    let mut v: serde_json::Value = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| serde_json::json!({ "pool": pool, "vault": format!("{pool}/vault") }));
    v["vault_state"] = state.into();
    v["vault_reason"] = serde_json::Value::Null;
    if let Some(b) = bound_to {
        v["vault_bound_to"] = b.into();
    }
    if let Err(e) = platform::fsx::write_atomic(&path, v.to_string().as_bytes(), None) {
        eprintln!("storagectl: {}", platform::chain(&e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_or_binary_override_is_a_bad_policy_not_an_absent_one() {
        let order = [
            PathBuf::from("/config/storage.toml"),
            PathBuf::from("/etc/storage.toml"),
        ];
        let c = first_present(&order, |p| {
            if p.starts_with("/config") {
                Err(std::io::Error::from_raw_os_error(libc::EIO))
            } else {
                Ok(b"[pool]\n".to_vec())
            }
        });
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].0, order[0]);
        assert!(c[0].1.as_ref().unwrap_err().1.contains("cannot be read"));
        let c = first_present(&order, |p| {
            if p.starts_with("/config") {
                Ok(b"[pool]\nname = \"\xff\"\n".to_vec())
            } else {
                Ok(b"[pool]\n".to_vec())
            }
        });
        assert_eq!(
            c[0].1.as_ref().unwrap_err().0,
            2,
            "the line of the bad byte"
        );
        assert!(c[0].1.as_ref().unwrap_err().1.contains("UTF-8"));
        let c = first_present(&order, |p| {
            if p.starts_with("/config") {
                Err(std::io::ErrorKind::NotFound.into())
            } else {
                Ok(b"[pool]\n".to_vec())
            }
        });
        assert_eq!(c, vec![(order[1].clone(), Ok("[pool]\n".to_string()))]);
        let c = candidates(Some("did not mount".into()));
        assert!(c[0].1.as_ref().unwrap_err().1.contains("did not mount"));
    }
}
