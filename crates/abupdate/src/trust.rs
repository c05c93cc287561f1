//! Who may change the OS: the ed25519 keys an update must be signed with, and their rotation.
//!
//! The image carries its trusted keys (`/etc/eve/update-keys.json`, a [`KeyList`] with a serial);
//! it is inside the verified slot, so it needs no signature of its own. A rotation is a new
//! [`KeyList`] with a higher serial, signed by a key the box trusts at that moment
//! ([`SignedKeyList`]); an update may carry one, and once that update is installed the box keeps
//! the chain of accepted rotations on the ESP and trusts the newest list. The cryptography is
//! ed25519-dalek's strict verification (no malleable or small-order signatures).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Every signed message starts with its purpose, so a signature over one kind of document can
/// never be replayed as another.
pub const MANIFEST_CONTEXT: &[u8] = b"eve-update manifest v2\n";
pub const KEY_LIST_CONTEXT: &[u8] = b"eve-update key list v1\n";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TrustError {
    #[error("key {0:?} is not a base64 ed25519 public key")]
    BadKey(String),
    #[error("signature is not 64 base64-encoded bytes")]
    BadSignature,
    #[error("signed by key {0}, which this box does not trust (trusted: {1})")]
    Untrusted(String, String),
    #[error(
        "signature by key {0} does not verify: the signed text was changed or the key is wrong"
    )]
    Invalid(String),
    #[error("key list serial {0} is not above the trusted list's serial {1}")]
    Stale(u32, u32),
    #[error("key list is empty")]
    Empty,
    #[error("key list: {0}")]
    Parse(String),
    #[error("signing key: {0}")]
    SigningKey(String),
}

/// Short, stable name of a public key: the first 8 bytes of sha256 of its 32 bytes, in hex.
pub fn key_id(k: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(k.as_bytes())[..8])
}

/// A set of keys, any one of which may sign; `serial` orders rotations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyList {
    pub serial: u32,
    /// Raw 32-byte ed25519 public keys, base64.
    pub keys: Vec<String>,
}

impl KeyList {
    pub fn new(serial: u32, keys: &[VerifyingKey]) -> KeyList {
        KeyList {
            serial,
            keys: keys.iter().map(|k| B64.encode(k.as_bytes())).collect(),
        }
    }
    pub fn parse(text: &[u8]) -> Result<KeyList, TrustError> {
        serde_json::from_slice(text).map_err(|e| TrustError::Parse(e.to_string()))
    }
}

/// A rotation: `list` is the exact JSON text that was signed, so no re-serialisation can change
/// what the signature covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedKeyList {
    pub list: String,
    pub key: String,
    pub sig: String,
}

/// One signature line of an update: which key, and the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sig {
    pub key: String,
    pub sig: String,
}

/// The keys a box trusts now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trust {
    pub serial: u32,
    keys: Vec<VerifyingKey>,
}

fn decode_key(s: &str) -> Result<VerifyingKey, TrustError> {
    let raw = B64.decode(s).map_err(|_| TrustError::BadKey(s.into()))?;
    let arr: [u8; 32] = raw
        .as_slice()
        .try_into()
        .map_err(|_| TrustError::BadKey(s.into()))?;
    // Rejects points that are not on the curve; weak (small-order) keys are refused by
    // `verify_strict` at use.
    VerifyingKey::from_bytes(&arr).map_err(|_| TrustError::BadKey(s.into()))
}

fn decode_sig(s: &str) -> Result<Signature, TrustError> {
    let raw = B64.decode(s).map_err(|_| TrustError::BadSignature)?;
    Signature::from_slice(&raw).map_err(|_| TrustError::BadSignature)
}

fn with_context(context: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(context.len() + msg.len());
    m.extend_from_slice(context);
    m.extend_from_slice(msg);
    m
}

impl Trust {
    pub fn from_list(l: &KeyList) -> Result<Trust, TrustError> {
        if l.keys.is_empty() {
            return Err(TrustError::Empty);
        }
        let keys = l
            .keys
            .iter()
            .map(|k| decode_key(k))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Trust {
            serial: l.serial,
            keys,
        })
    }

    pub fn ids(&self) -> Vec<String> {
        self.keys.iter().map(key_id).collect()
    }

    /// Checks `sig` over `context + msg` with the trusted key it names.
    pub fn verify(&self, context: &[u8], msg: &[u8], sig: &Sig) -> Result<(), TrustError> {
        let k = self
            .keys
            .iter()
            .find(|k| key_id(k) == sig.key)
            .ok_or_else(|| TrustError::Untrusted(sig.key.clone(), self.ids().join(", ")))?;
        let s = decode_sig(&sig.sig)?;
        k.verify_strict(&with_context(context, msg), &s)
            .map_err(|_| TrustError::Invalid(sig.key.clone()))
    }

    /// The trust after accepting rotation `s`: signed by a key trusted now, with a higher serial.
    /// `Stale` (checked first) means the box is already at that list or past it: a caller may
    /// ignore such a rotation, since ignoring one grants nothing.
    pub fn rotate(&self, s: &SignedKeyList) -> Result<Trust, TrustError> {
        let l = KeyList::parse(s.list.as_bytes())?;
        if l.serial <= self.serial {
            return Err(TrustError::Stale(l.serial, self.serial));
        }
        self.verify(
            KEY_LIST_CONTEXT,
            s.list.as_bytes(),
            &Sig {
                key: s.key.clone(),
                sig: s.sig.clone(),
            },
        )?;
        Trust::from_list(&l)
    }

    /// The built-in list followed by the stored chain of rotations, each checked against the one
    /// before. Entries not newer than the current trust are skipped (an image built after a
    /// rotation already carries that list).
    pub fn with_chain(builtin: &KeyList, chain: &[SignedKeyList]) -> Result<Trust, TrustError> {
        let mut t = Trust::from_list(builtin)?;
        for s in chain {
            let l = KeyList::parse(s.list.as_bytes())?;
            if l.serial <= t.serial {
                continue;
            }
            t = t.rotate(s)?;
        }
        Ok(t)
    }
}

impl Trust {
    /// The keys a slot's image may be signed with to boot: the built-in list and every list of the
    /// stored rotation chain that verifies from it. Unlike [`Trust::with_chain`], keys a rotation
    /// retired stay valid here, since the older slot (signed before the rotation) must stay
    /// bootable for a rollback; they no longer sign updates. A chain that does not verify adds
    /// nothing (the error says why).
    pub fn boot(builtin: &KeyList, chain: &[SignedKeyList]) -> (Trust, Option<TrustError>) {
        let Ok(mut all) = Trust::from_list(builtin) else {
            return (
                Trust {
                    serial: builtin.serial,
                    keys: Vec::new(),
                },
                Some(TrustError::Empty),
            );
        };
        let mut t = all.clone();
        for s in chain {
            let Ok(l) = KeyList::parse(s.list.as_bytes()) else {
                return (
                    all,
                    Some(TrustError::Parse("a rotation does not parse".into())),
                );
            };
            if l.serial <= t.serial {
                continue;
            }
            match t.rotate(s) {
                Ok(n) => {
                    for k in &n.keys {
                        if !all.keys.contains(k) {
                            all.keys.push(*k);
                        }
                    }
                    all.serial = n.serial;
                    t = n;
                }
                Err(e) => return (all, Some(e)),
            }
        }
        (all, None)
    }
}

/// A private key as the builder holds it: a PKCS#8 PEM file (`openssl genpkey -algorithm ed25519`).
#[derive(Debug)]
pub struct Signer25519 {
    key: SigningKey,
}

impl Signer25519 {
    pub fn from_pem(pem: &str) -> Result<Signer25519, TrustError> {
        SigningKey::from_pkcs8_pem(pem)
            .map(|key| Signer25519 { key })
            .map_err(|e| TrustError::SigningKey(e.to_string()))
    }
    pub fn from_seed(seed: &[u8; 32]) -> Signer25519 {
        Signer25519 {
            key: SigningKey::from_bytes(seed),
        }
    }
    /// PKCS#8 v1 (RFC 5208: the private key alone), which every reader takes: OpenSSL 3.0 of
    /// Debian 12 refuses the v2 form (RFC 5958, the public key beside it) for Ed25519.
    pub fn to_pem(&self) -> Result<String, TrustError> {
        use ed25519_dalek::pkcs8::{EncodePrivateKey, KeypairBytes};
        KeypairBytes {
            secret_key: self.key.to_bytes(),
            public_key: None,
        }
        .to_pkcs8_pem(Default::default())
        .map(|p| p.to_string())
        .map_err(|e| TrustError::SigningKey(e.to_string()))
    }
    pub fn public(&self) -> VerifyingKey {
        self.key.verifying_key()
    }
    pub fn id(&self) -> String {
        key_id(&self.public())
    }
    pub fn sign(&self, context: &[u8], msg: &[u8]) -> Sig {
        Sig {
            key: self.id(),
            sig: B64.encode(self.key.sign(&with_context(context, msg)).to_bytes()),
        }
    }
    /// A rotation to `list`, signed by this key.
    pub fn sign_list(&self, list: &KeyList) -> Result<SignedKeyList, TrustError> {
        let text = serde_json::to_string(list).map_err(|e| TrustError::Parse(e.to_string()))?;
        let s = self.sign(KEY_LIST_CONTEXT, text.as_bytes());
        Ok(SignedKeyList {
            list: text,
            key: s.key,
            sig: s.sig,
        })
    }
}

/// A public key from a PEM file (`openssl pkey -pubout`) or a bare base64 key.
pub fn public_from_text(text: &str) -> Result<VerifyingKey, TrustError> {
    let t = text.trim();
    if t.starts_with("-----BEGIN") {
        VerifyingKey::from_public_key_pem(t).map_err(|_| TrustError::BadKey(t.into()))
    } else {
        decode_key(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(n: u8) -> Signer25519 {
        Signer25519::from_seed(&[n; 32])
    }

    /// A key as `eve-imgbuild new-key` writes it is read by the system's OpenSSL (3.0 on Debian
    /// 12), which finds the same public key; and it reads back here.
    #[test]
    fn keys_are_pkcs8_that_openssl_reads() {
        let k = signer(9);
        let pem = k.to_pem().unwrap();
        assert_eq!(Signer25519::from_pem(&pem).unwrap().id(), k.id());
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("k.pem");
        std::fs::write(&f, &pem).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&f)
            .output()
            .expect("openssl (Debian's openssl package)");
        assert!(out.status.success(), "openssl pkey refused it: {out:?}");
        let public = public_from_text(&String::from_utf8_lossy(&out.stdout)).unwrap();
        assert_eq!(public, k.public());
    }

    #[test]
    fn fixed_vectors_do_not_drift() {
        // RFC 8032 test 1: the all-zero message under its secret key; proves we sign plain ed25519.
        let seed: [u8; 32] =
            hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
                .unwrap()
                .try_into()
                .unwrap();
        let s = Signer25519::from_seed(&seed);
        assert_eq!(
            hex::encode(s.public().as_bytes()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        assert_eq!(
            hex::encode(s.key.sign(b"").to_bytes()),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
        // Our framing over it: key id and a context-prefixed signature, fixed forever.
        assert_eq!(s.id(), "21fe31dfa154a261");
        let sig = s.sign(MANIFEST_CONTEXT, b"{}");
        let t = Trust::from_list(&KeyList::new(1, &[s.public()])).unwrap();
        t.verify(MANIFEST_CONTEXT, b"{}", &sig).unwrap();
        assert_eq!(
            t.verify(KEY_LIST_CONTEXT, b"{}", &sig),
            Err(TrustError::Invalid(s.id())),
            "a manifest signature is not a key-list signature"
        );
    }

    #[test]
    fn boot_trust_keeps_retired_keys_and_ignores_a_broken_chain() {
        let (old, new, evil) = (signer(1), signer(2), signer(9));
        let builtin = KeyList::new(1, &[old.public()]);
        let rot = old.sign_list(&KeyList::new(2, &[new.public()])).unwrap();
        let (t, e) = Trust::boot(&builtin, std::slice::from_ref(&rot));
        assert_eq!(e, None);
        assert_eq!(t.ids(), vec![old.id(), new.id()]);
        // Updates trust the new list only.
        assert_eq!(
            Trust::with_chain(&builtin, &[rot]).unwrap().ids(),
            vec![new.id()]
        );
        // A chain link signed by a key nobody trusted adds nothing.
        let forged = evil.sign_list(&KeyList::new(2, &[evil.public()])).unwrap();
        let (t, e) = Trust::boot(&builtin, &[forged]);
        assert!(matches!(e, Some(TrustError::Untrusted(..))));
        assert_eq!(t.ids(), vec![old.id()]);
    }

    #[test]
    fn pem_keys_round_trip() {
        let s = signer(3);
        let pem = s.to_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(Signer25519::from_pem(&pem).unwrap().id(), s.id());
        assert!(Signer25519::from_pem("not a key").is_err());
        let b64 = B64.encode(s.public().as_bytes());
        assert_eq!(public_from_text(&b64).unwrap(), s.public());
        assert!(public_from_text("AAAA").is_err());
    }

    #[test]
    fn wrong_untrusted_and_tampered_signatures_are_refused() {
        let (a, b) = (signer(1), signer(2));
        let t = Trust::from_list(&KeyList::new(1, &[a.public()])).unwrap();
        let sig = a.sign(MANIFEST_CONTEXT, b"msg");
        t.verify(MANIFEST_CONTEXT, b"msg", &sig).unwrap();
        assert_eq!(
            t.verify(MANIFEST_CONTEXT, b"msG", &sig),
            Err(TrustError::Invalid(a.id()))
        );
        let by_b = b.sign(MANIFEST_CONTEXT, b"msg");
        assert!(matches!(
            t.verify(MANIFEST_CONTEXT, b"msg", &by_b),
            Err(TrustError::Untrusted(..))
        ));
        // b's signature relabelled as a's.
        let forged = Sig {
            key: a.id(),
            sig: by_b.sig.clone(),
        };
        assert_eq!(
            t.verify(MANIFEST_CONTEXT, b"msg", &forged),
            Err(TrustError::Invalid(a.id()))
        );
        let garbage = Sig {
            key: a.id(),
            sig: "!!".into(),
        };
        assert_eq!(
            t.verify(MANIFEST_CONTEXT, b"msg", &garbage),
            Err(TrustError::BadSignature)
        );
        assert_eq!(
            Trust::from_list(&KeyList {
                serial: 1,
                keys: vec![]
            }),
            Err(TrustError::Empty)
        );
    }

    #[test]
    fn rotation_needs_a_trusted_signer_and_a_higher_serial() {
        let (old, new, evil) = (signer(1), signer(2), signer(9));
        let builtin = KeyList::new(1, &[old.public()]);
        let t = Trust::from_list(&builtin).unwrap();
        let rot = old.sign_list(&KeyList::new(2, &[new.public()])).unwrap();
        let t2 = t.rotate(&rot).unwrap();
        assert_eq!(t2.ids(), vec![new.id()]);
        assert_eq!(t2.serial, 2);
        // The retired key no longer signs anything.
        let by_old = old.sign(MANIFEST_CONTEXT, b"m");
        assert!(matches!(
            t2.verify(MANIFEST_CONTEXT, b"m", &by_old),
            Err(TrustError::Untrusted(..))
        ));
        // A list signed by an untrusted key, a replayed older list, an edited list.
        let bad = evil.sign_list(&KeyList::new(3, &[evil.public()])).unwrap();
        assert!(matches!(t2.rotate(&bad), Err(TrustError::Untrusted(..))));
        let replay = new.sign_list(&KeyList::new(2, &[old.public()])).unwrap();
        assert_eq!(t2.rotate(&replay), Err(TrustError::Stale(2, 2)));
        let mut edited = rot.clone();
        edited.list = edited.list.replace("\"serial\":2", "\"serial\":7");
        assert!(matches!(t.rotate(&edited), Err(TrustError::Invalid(_))));
        // The stored chain replays the same way, and a broken link refuses the whole chain.
        assert_eq!(
            Trust::with_chain(&builtin, std::slice::from_ref(&rot)).unwrap(),
            t2
        );
        assert_eq!(
            Trust::with_chain(
                &KeyList::new(2, &[new.public()]),
                std::slice::from_ref(&rot)
            )
            .unwrap(),
            t2,
            "an image that already carries the rotated list skips it"
        );
        assert!(Trust::with_chain(&builtin, &[rot, bad]).is_err());
    }
}
