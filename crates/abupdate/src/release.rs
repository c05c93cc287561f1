//! What the running image is (`/etc/eve/release.json`, written by the builder): its version,
//! security epoch, build profile, how it was signed and the update keys it trusts; and the key
//! rotations this box accepted since, kept on the ESP (`EFI/eve/keys.json`).

use crate::artifact::Running;
use crate::error::{Error, IoContext, Result};
use crate::trust::{KeyList, SignedKeyList, Trust};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Under the image's /etc.
pub const RELEASE: &str = "eve/release.json";
/// Inside the ESP, beside the slot state.
pub const CHAIN: &str = "EFI/eve/keys.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    pub version: String,
    pub security_epoch: u32,
    /// `prod` or `dev` (shell and test agent).
    pub profile: String,
    /// `release` or `dev` (signed with the builder's development key).
    pub signing: String,
    pub update_keys: KeyList,
}

impl Release {
    pub fn load(etc: &Path) -> Result<Release> {
        let p = etc.join(RELEASE);
        let b = std::fs::read(&p).at("read (the image's release facts and update keys)", &p)?;
        serde_json::from_slice(&b).map_err(|e| Error::Device(format!("{}: {e}", p.display())))
    }
    pub fn running(&self) -> Running {
        Running {
            version: self.version.clone(),
            security_epoch: self.security_epoch,
            profile: self.profile.clone(),
        }
    }
}

/// The accepted rotations, oldest first. Missing means none were made; a file that does not parse
/// is an error, never "no rotations" (that would trust retired keys again).
pub fn load_chain(esp: &Path) -> Result<Vec<SignedKeyList>> {
    let p = esp.join(CHAIN);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            Error::Device(format!(
                "{}: unreadable key rotations ({e}); refusing updates until it is restored",
                p.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::Io(platform::IoError {
            op: "read",
            path: p,
            source: e,
        })),
    }
}

/// Replaces the chain: a new file beside it, fsynced, then renamed over it.
pub fn store_chain(esp: &Path, chain: &[SignedKeyList]) -> Result<()> {
    let p = esp.join(CHAIN);
    let tmp = esp.join("EFI/eve/keys.new");
    let text = serde_json::to_vec_pretty(chain)
        .map_err(|e| Error::Device(format!("{}: {e}", p.display())))?;
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).at("create", d)?;
    }
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).at("create", &tmp)?;
        f.write_all(&text).at("write", &tmp)?;
        f.sync_all().at("fsync", &tmp)?;
    }
    std::fs::rename(&tmp, &p).at("rename", &p)?;
    if let Some(d) = p.parent() {
        std::fs::File::open(d)
            .and_then(|f| f.sync_all())
            .at("fsync", d)?;
    }
    Ok(())
}

/// The keys this box trusts: the image's list, then every stored rotation in order. `recorded` is
/// the newest list serial the slot state remembers accepting: a chain that ends below it was lost
/// or rolled back, and the box refuses rather than trust retired keys again.
pub fn trust(release: &Release, chain: &[SignedKeyList], recorded: u32) -> Result<Trust> {
    let t = Trust::with_chain(&release.update_keys, chain)
        .map_err(|e| Error::Device(format!("update keys ({CHAIN} on the ESP): {e}")))?;
    if t.serial < recorded {
        return Err(Error::Device(format!(
            "update keys: this box accepted key list {recorded}, but the image and {CHAIN} on the              ESP give only list {}: the stored key rotations are missing or were rolled back;              refusing updates until {CHAIN} is restored",
            t.serial
        )));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::Signer25519;

    #[test]
    fn chain_round_trips_and_garbage_is_an_error_not_an_empty_chain() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(load_chain(t.path()).unwrap(), vec![]);
        let (a, b) = (
            Signer25519::from_seed(&[1; 32]),
            Signer25519::from_seed(&[2; 32]),
        );
        let rot = a.sign_list(&KeyList::new(2, &[b.public()])).unwrap();
        store_chain(t.path(), std::slice::from_ref(&rot)).unwrap();
        assert_eq!(load_chain(t.path()).unwrap(), vec![rot.clone()]);
        let rel = Release {
            version: "v1".into(),
            security_epoch: 0,
            profile: "prod".into(),
            signing: "release".into(),
            update_keys: KeyList::new(1, &[a.public()]),
        };
        assert_eq!(
            trust(&rel, std::slice::from_ref(&rot), 2).unwrap().ids(),
            vec![b.id()]
        );
        // The chain lost while the state remembers list 2: refused, not the built-in keys.
        let e = trust(&rel, &[], 2).unwrap_err().to_string();
        assert!(e.contains("missing or were rolled back"), "{e}");
        assert_eq!(trust(&rel, &[], 0).unwrap().ids(), vec![a.id()]);
        std::fs::write(t.path().join(CHAIN), b"{garbage").unwrap();
        let e = load_chain(t.path()).unwrap_err().to_string();
        assert!(e.contains("keys.json") && e.contains("refusing"), "{e}");
    }
}
