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

/// The accepted rotations, oldest first. Missing means none were made. A file that does not parse
/// is an error here (stage 1 then trusts the image's keys alone, so the vault stays sealed until
/// it is repaired); for updates it is a damaged cache ([`trust`]).
pub fn load_chain(esp: &Path) -> Result<Vec<SignedKeyList>> {
    let p = esp.join(CHAIN);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| Error::Device(format!("{}: unreadable key rotations ({e})", p.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::Io(platform::io("read", &p)(e))),
    }
}

/// Replaces the chain: a new file beside it, fsynced, then renamed over it.
pub fn store_chain(esp: &Path, chain: &[SignedKeyList]) -> Result<()> {
    let p = esp.join(CHAIN);
    let text = serde_json::to_vec_pretty(chain)
        .map_err(|e| Error::Device(format!("{}: {e}", p.display())))?;
    write_file(&p, &text)
}

/// Replaces `p` whole ([`platform::fsx::write_atomic`]). A temporary an earlier release left
/// beside it (`<p>.new`, after a cut write) goes too: the ESP is small.
pub fn write_file(p: &Path, bytes: &[u8]) -> Result<()> {
    platform::fsx::write_atomic(p, bytes, None)?;
    let old = p.with_extension("new");
    if old.is_file() {
        let _ = std::fs::remove_file(&old);
    }
    Ok(())
}

/// The keys the image and the stored rotations give, the part of the stored chain that verified
/// (what a repaired chain is built on), and why the stored chain was not used, if it was not. The
/// ESP's chain is a cache: a missing, unreadable or broken one leaves the image's own list, and
/// the key floor (the TPM's, checked against every update) keeps retired keys out until an update
/// carrying the vendor's full chain repairs it.
pub fn trust(
    release: &Release,
    stored: Result<Vec<SignedKeyList>>,
) -> Result<(Trust, Vec<SignedKeyList>, Option<String>)> {
    let builtin = || {
        Trust::from_list(&release.update_keys)
            .map_err(|e| Error::Device(format!("the image's update keys ({RELEASE}): {e}")))
    };
    match stored {
        Ok(chain) => match Trust::with_chain(&release.update_keys, &chain) {
            Ok(t) => Ok((t, chain, None)),
            Err(e) => Ok((
                builtin()?,
                Vec::new(),
                Some(format!("the key rotations in {CHAIN} do not verify: {e}")),
            )),
        },
        Err(e) => Ok((builtin()?, Vec::new(), Some(platform::chain(&e)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::Signer25519;

    #[test]
    fn a_lost_or_broken_chain_leaves_the_images_keys_and_says_why() {
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
        let (tr, used, why) = trust(&rel, load_chain(t.path())).unwrap();
        assert_eq!(
            (tr.ids(), used, why),
            (vec![b.id()], vec![rot.clone()], None)
        );
        // Lost or garbage: the image's own list, and the reason (the key floor decides).
        std::fs::write(t.path().join(CHAIN), b"{garbage").unwrap();
        let (tr, used, why) = trust(&rel, load_chain(t.path())).unwrap();
        assert_eq!((tr.ids(), used), (vec![a.id()], vec![]));
        assert!(why.unwrap().contains("keys.json: unreadable key rotations"));
        // A chain whose link was not signed by a trusted key: the same.
        let forged = b.sign_list(&KeyList::new(2, &[b.public()])).unwrap();
        let (tr, _, why) = trust(&rel, Ok(vec![forged])).unwrap();
        assert_eq!(tr.serial, 1);
        assert!(why.unwrap().contains("do not verify"));
    }
}
