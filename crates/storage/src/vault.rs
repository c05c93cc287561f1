//! The vault and its key: create or unlock `<pool>/vault`, its key sealed to the TPM and bound
//! to the boot state (PCR 7 whenever Secure Boot is on) and to this vault's identity (its GUID),
//! and the recovery key: 32 random bytes shown once on the console when the vault is made, whose
//! X25519 public half the vault key is wrapped to in a property of the vault, for a box whose
//! TPM or board was replaced.
//!
//! What is on the disk never decides more than the TPM and the operator did: a vault that is not
//! encrypted where this box would encrypt, a seal not made in this boot state, or a seal naming
//! another vault is refused; a missing or changed recovery property is reported as tampering and
//! never replaced by a new key. New seals and recovery keys are made only with a new vault or by
//! an operator's command, and each one rotates the vault key (`zfs change-key`), so old seals and
//! wraps, kept in old properties or `zpool history`, open nothing.
//!
//! The decisions are pure and unit-tested; `ensure`, `recover` and `new_recovery_key` act through
//! the [`Host`] seam (zfs and the TPM), so they are unit-tested against its fake too.

use crate::cmd::CmdError;
use crate::host::Host;
use crate::policy::{Encryption, Policy, WithoutTpm};
use crate::tpm::{self, Key};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use platform::log;
use platform::rollback;
use serde::Serialize;
use std::path::Path;

/// The vault dataset property holding the vault key wrapped by the recovery key.
pub const RECOVERY_PROPERTY: &str = "org.lfedge.eve:recovery";
/// EFI global variables (SecureBoot, SetupMode).
pub const EFI_GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// PCR 7: the firmware's Secure Boot state, its PK/KEK/db/dbx, and which db entries authorised
/// what booted. A signed update does not change it; Secure Boot off or other keys do.
pub const SECURE_BOOT_PCR: u8 = 7;
const RECOVERY_AAD: &[u8] = b"org.lfedge.eve:recovery v1";
/// systemd's recovery keys use the same alphabet: it reads the same on any keyboard layout.
const MODHEX: &[u8; 16] = b"cbdefghijklnrtuv";

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("not a recovery key: {0}")]
    BadRecoveryKey(String),
    #[error("the recovery key does not open this vault (a typo, or another box's key)")]
    WrongRecoveryKey,
    #[error("{0} has no recovery key (it was made before recovery keys, or without a TPM)")]
    NoRecovery(String),
    #[error("{0} is not the vault this recovery key was made for (its proof does not match): a vault put in place of the box's own, wrapped to the recovery key's public half; nothing was opened. Look at the disks before anything else")]
    NotThisVault(String),
    #[error("{0} carries no proof that it is the vault this recovery key was made for (made by an earlier release, or the proof was removed); if you are sure nobody changed this box's disks, repeat with --accept-unproven")]
    Unproven(String),
    #[error("recovery property is malformed: {0}")]
    Blob(String),
    #[error("{0} is locked: unlock it first")]
    Locked(String),
    #[error("the firmware's dbx against this boot's TPM event log: {0}")]
    Firmware(String),
    #[error("no randomness: {0}")]
    Random(String),
    #[error(transparent)]
    Tpm(#[from] tpm::TpmError),
    #[error(transparent)]
    Cmd(#[from] CmdError),
    #[error(transparent)]
    Io(#[from] platform::IoError),
}

impl platform::exit::Classify for VaultError {
    fn kind(&self) -> platform::exit::Kind {
        use platform::exit::Kind;
        match self {
            VaultError::BadRecoveryKey(_) | VaultError::Blob(_) => Kind::BadInput,
            VaultError::WrongRecoveryKey
            | VaultError::NoRecovery(_)
            | VaultError::NotThisVault(_)
            | VaultError::Unproven(_)
            | VaultError::Firmware(_) => Kind::Refused,
            VaultError::Locked(_) => Kind::VaultLocked,
            VaultError::Random(_) | VaultError::Tpm(_) | VaultError::Cmd(_) | VaultError::Io(_) => {
                Kind::Failed
            }
        }
    }
}

/// The firmware's Secure Boot state, from efivarfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SecureBoot {
    On,
    Off,
    /// No platform key enrolled: the firmware accepts any key, so nothing is enforced.
    SetupMode,
    /// Not booted through UEFI (or efivarfs is not mounted).
    Unknown,
}

impl SecureBoot {
    pub fn describe(self) -> &'static str {
        match self {
            SecureBoot::On => "on",
            SecureBoot::Off => "off",
            SecureBoot::SetupMode => "off (setup mode: no platform key enrolled)",
            SecureBoot::Unknown => "unknown (no UEFI variables)",
        }
    }
}

/// The value byte of an efivarfs file (4 bytes of attributes, then the data).
pub fn efivar_byte(raw: &[u8]) -> Option<u8> {
    (raw.len() == 5).then(|| raw[4])
}

/// Pure: the state from the SecureBoot and SetupMode variables' contents (`None`: absent).
pub fn secure_boot_from(secure_boot: Option<&[u8]>, setup_mode: Option<&[u8]>) -> SecureBoot {
    match (
        secure_boot.and_then(efivar_byte),
        setup_mode.and_then(efivar_byte),
    ) {
        (_, Some(1)) => SecureBoot::SetupMode,
        (Some(1), _) => SecureBoot::On,
        (Some(0), _) => SecureBoot::Off,
        _ => SecureBoot::Unknown,
    }
}

/// Reads the state under `sys` (`/sys` on the box).
pub fn secure_boot(sys: &Path) -> SecureBoot {
    let dir = sys.join("firmware/efi/efivars");
    let read = |name: &str| std::fs::read(dir.join(format!("{name}-{EFI_GLOBAL}"))).ok();
    let (sb, sm) = (read("SecureBoot"), read("SetupMode"));
    if sb.is_none() && !sys.join("firmware/efi").exists() {
        return SecureBoot::Unknown;
    }
    secure_boot_from(sb.as_deref(), sm.as_deref())
}

/// The PCRs a newly sealed key is bound to: the policy's, plus PCR 7 when Secure Boot is on (and
/// the policy does not opt out).
pub fn wanted_pcrs(enc: &Encryption, sb: SecureBoot) -> Vec<u8> {
    let mut p = enc.pcrs.clone();
    if sb == SecureBoot::On && enc.bind_secure_boot {
        p.push(SECURE_BOOT_PCR);
    }
    p.sort_unstable();
    p.dedup();
    p
}

/// What a sealed key is bound to, in words.
pub fn binding_text(pcrs: &[u8]) -> String {
    match pcrs {
        [] => "this TPM only (no PCRs: any OS booted on this box can unseal it)".into(),
        [7] => "this TPM and PCR 7 (Secure Boot state and keys)".into(),
        p => format!(
            "this TPM and PCRs {}{}",
            p.iter().map(u8::to_string).collect::<Vec<_>>().join(", "),
            if p.contains(&7) {
                " (7: Secure Boot state and keys)"
            } else {
                ""
            }
        ),
    }
}

/// A recovery key: 32 random bytes, shown as 8 groups of 8 modhex characters.
#[derive(Debug)]
pub struct RecoveryKey(zeroize::Zeroizing<[u8; 32]>);

impl RecoveryKey {
    pub fn generate() -> Result<RecoveryKey, VaultError> {
        let mut k = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut k[..]).map_err(|e| VaultError::Random(e.to_string()))?;
        Ok(RecoveryKey(k))
    }

    pub fn from_bytes(b: [u8; 32]) -> RecoveryKey {
        RecoveryKey(zeroize::Zeroizing::new(b))
    }

    /// Accepts what was shown, with or without the dashes, spaces and line breaks, any case.
    pub fn parse(text: &str) -> Result<RecoveryKey, VaultError> {
        let chars: Vec<u8> = text
            .bytes()
            .filter(|b| !b.is_ascii_whitespace() && *b != b'-')
            .map(|b| b.to_ascii_lowercase())
            .collect();
        if chars.len() != 64 {
            return Err(VaultError::BadRecoveryKey(format!(
                "{} letters; a recovery key has 64 (8 groups of 8)",
                chars.len()
            )));
        }
        let mut out = zeroize::Zeroizing::new([0u8; 32]);
        for (i, pair) in chars.chunks(2).enumerate() {
            let nib = |c: u8| {
                MODHEX.iter().position(|m| *m == c).ok_or_else(|| {
                    VaultError::BadRecoveryKey(format!(
                        "`{}` is not one of {}",
                        c as char,
                        String::from_utf8_lossy(MODHEX)
                    ))
                })
            };
            out[i] = (nib(pair[0])? << 4 | nib(pair[1])?) as u8;
        }
        Ok(RecoveryKey(out))
    }

    pub fn display(&self) -> String {
        let s: String = self
            .0
            .iter()
            .flat_map(|b| [MODHEX[(b >> 4) as usize], MODHEX[(b & 15) as usize]])
            .map(char::from)
            .collect();
        s.as_bytes()
            .chunks(8)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("-")
    }

    fn cipher(&self, salt: &[u8]) -> Result<Aes256Gcm, VaultError> {
        let mut kek = zeroize::Zeroizing::new([0u8; 32]);
        hkdf::Hkdf::<sha2::Sha256>::new(Some(salt), &self.0[..])
            .expand(RECOVERY_AAD, &mut kek[..])
            .map_err(|e| VaultError::Blob(e.to_string()))?;
        Aes256Gcm::new_from_slice(&kek[..]).map_err(|e| VaultError::Blob(e.to_string()))
    }
}

/// An earlier release's recovery property (kept to test that it still unwraps): the vault key
/// wrapped by `rk` (AES-256-GCM under a key derived by HKDF-SHA256 with a random
/// salt): `r1:<salt>:<nonce>:<ciphertext>`, base64 fields.
#[cfg(test)]
pub fn wrap(vault_key: &[u8], rk: &RecoveryKey) -> Result<String, VaultError> {
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut salt).map_err(|e| VaultError::Random(e.to_string()))?;
    getrandom::fill(&mut nonce).map_err(|e| VaultError::Random(e.to_string()))?;
    let ct = rk
        .cipher(&salt)?
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: vault_key,
                aad: RECOVERY_AAD,
            },
        )
        .map_err(|e| VaultError::Blob(e.to_string()))?;
    Ok(format!(
        "r1:{}:{}:{}",
        B64.encode(salt),
        B64.encode(nonce),
        B64.encode(ct)
    ))
}

/// The vault key from a recovery property (either form) with the recovery key.
pub fn unwrap(blob: &str, rk: &RecoveryKey) -> Result<Key, VaultError> {
    if blob.trim().starts_with("r2:") {
        return unwrap2(blob, rk);
    }
    unwrap1(blob, rk)
}

fn unwrap1(blob: &str, rk: &RecoveryKey) -> Result<Key, VaultError> {
    let parts: Vec<&str> = blob.trim().split(':').collect();
    let ["r1", salt, nonce, ct] = parts.as_slice() else {
        return Err(VaultError::Blob(format!(
            "expected r1:<salt>:<nonce>:<ciphertext>, found {} fields",
            parts.len()
        )));
    };
    let dec = |s: &str| B64.decode(s).map_err(|e| VaultError::Blob(e.to_string()));
    let (salt, nonce, ct) = (dec(salt)?, dec(nonce)?, dec(ct)?);
    if nonce.len() != 12 {
        return Err(VaultError::Blob("nonce is not 12 bytes".into()));
    }
    let key = rk
        .cipher(&salt)?
        .decrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &ct,
                aad: RECOVERY_AAD,
            },
        )
        .map_err(|_| VaultError::WrongRecoveryKey)?;
    if key.len() != tpm::KEY_LEN {
        return Err(VaultError::Blob(format!("a {}-byte key", key.len())));
    }
    Ok(Key::new(key))
}

/// Version 2 of the recovery property: the vault key encrypted to the recovery key's X25519
/// public key (so the box can re-wrap a rotated vault key for the same recovery key without
/// knowing it), with a tag keyed by the vault key itself, so a property the box did not write
/// (deleted, replaced, or an old copy from `zpool history`) is told from its own.
const RECOVERY2_INFO: &[u8] = b"org.lfedge.eve:recovery v2";

impl RecoveryKey {
    /// The X25519 secret the recovery key stands for.
    fn secret(&self) -> Result<x25519_dalek::StaticSecret, VaultError> {
        let mut s = zeroize::Zeroizing::new([0u8; 32]);
        hkdf::Hkdf::<sha2::Sha256>::new(None, &self.0[..])
            .expand(b"org.lfedge.eve:recovery x25519", &mut s[..])
            .map_err(|e| VaultError::Blob(e.to_string()))?;
        Ok(x25519_dalek::StaticSecret::from(*s))
    }

    /// The public half, stored in the recovery property.
    pub fn public(&self) -> Result<[u8; 32], VaultError> {
        Ok(x25519_dalek::PublicKey::from(&self.secret()?).to_bytes())
    }
}

fn kek2(shared: &[u8], eph: &[u8], rpub: &[u8]) -> Result<Aes256Gcm, VaultError> {
    let mut salt = Vec::with_capacity(64);
    salt.extend_from_slice(eph);
    salt.extend_from_slice(rpub);
    let mut kek = zeroize::Zeroizing::new([0u8; 32]);
    hkdf::Hkdf::<sha2::Sha256>::new(Some(&salt), shared)
        .expand(RECOVERY2_INFO, &mut kek[..])
        .map_err(|e| VaultError::Blob(e.to_string()))?;
    Aes256Gcm::new_from_slice(&kek[..]).map_err(|e| VaultError::Blob(e.to_string()))
}

/// The tag over a v2 recovery property's fields, keyed by the vault key it wraps.
fn tag2(vault_key: &[u8], fields: &[&[u8]]) -> Result<Vec<u8>, VaultError> {
    use hmac::Mac;
    let mut m = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(vault_key)
        .map_err(|e| VaultError::Blob(e.to_string()))?;
    m.update(RECOVERY2_INFO);
    for f in fields {
        m.update(&(f.len() as u32).to_be_bytes());
        m.update(f);
    }
    Ok(m.finalize().into_bytes().to_vec())
}

/// The vault key wrapped for the recovery key whose public half is `rpub`:
/// `r2:<rpub>:<ephemeral public>:<nonce>:<ciphertext>:<tag>`, base64 fields.
pub fn wrap_to(
    vault_key: &[u8],
    rpub: &[u8; 32],
    proof: Option<&str>,
) -> Result<String, VaultError> {
    let mut eph = zeroize::Zeroizing::new([0u8; 32]);
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut eph[..]).map_err(|e| VaultError::Random(e.to_string()))?;
    getrandom::fill(&mut nonce).map_err(|e| VaultError::Random(e.to_string()))?;
    let eph = x25519_dalek::StaticSecret::from(*eph);
    let eph_pub = x25519_dalek::PublicKey::from(&eph).to_bytes();
    let shared = eph.diffie_hellman(&x25519_dalek::PublicKey::from(*rpub));
    let ct = kek2(shared.as_bytes(), &eph_pub, rpub)?
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: vault_key,
                aad: RECOVERY2_INFO,
            },
        )
        .map_err(|e| VaultError::Blob(e.to_string()))?;
    let tag = tag2(vault_key, &[rpub, &eph_pub, &nonce, &ct])?;
    let mut w = format!(
        "r2:{}:{}:{}:{}:{}",
        B64.encode(rpub),
        B64.encode(eph_pub),
        B64.encode(nonce),
        B64.encode(ct),
        B64.encode(tag)
    );
    if let Some(p) = proof {
        w.push(':');
        w.push_str(p);
    }
    Ok(w)
}

/// What only the holder of recovery key `rk` can compute for the vault with `guid`: written
/// with the wrap when the box makes the key, checked by [`recover`] before it opens anything.
/// A vault put in place of the box's own, wrapped to the recovery key's public half (which is
/// on the disk for anyone to read), cannot carry it.
pub fn vault_proof(rk: &RecoveryKey, guid: u64) -> Result<String, VaultError> {
    use hmac::Mac;
    let mut k = zeroize::Zeroizing::new([0u8; 32]);
    hkdf::Hkdf::<sha2::Sha256>::new(None, &rk.0[..])
        .expand(b"org.lfedge.eve:vault proof v1", &mut k[..])
        .map_err(|e| VaultError::Blob(e.to_string()))?;
    let mut m = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&k[..])
        .map_err(|e| VaultError::Blob(e.to_string()))?;
    m.update(&guid.to_le_bytes());
    Ok(B64.encode(m.finalize().into_bytes()))
}

/// The proof a recovery property carries, if any.
pub fn proof_of(blob: &str) -> Option<String> {
    parse2(blob).ok().and_then(|r| r.proof)
}

/// The fields of a v2 recovery property. `proof` (optional, last) is [`vault_proof`]: it lets
/// the holder of the recovery key tell the vault it was made for from one wrapped to its public
/// half by someone else.
struct Recovery2 {
    rpub: [u8; 32],
    eph: [u8; 32],
    nonce: Vec<u8>,
    ct: Vec<u8>,
    tag: Vec<u8>,
    proof: Option<String>,
}

fn parse2(blob: &str) -> Result<Recovery2, VaultError> {
    let parts: Vec<&str> = blob.trim().split(':').collect();
    let (rpub, eph, nonce, ct, tag, proof) = match parts.as_slice() {
        ["r2", rpub, eph, nonce, ct, tag] => (rpub, eph, nonce, ct, tag, None),
        ["r2", rpub, eph, nonce, ct, tag, proof] => {
            (rpub, eph, nonce, ct, tag, Some(proof.to_string()))
        }
        _ => {
            return Err(VaultError::Blob(format!(
                "expected r2:<public>:<ephemeral>:<nonce>:<ciphertext>:<tag>[:<proof>], found {} fields",
                parts.len()
            )))
        }
    };
    let dec = |s: &str| B64.decode(s).map_err(|e| VaultError::Blob(e.to_string()));
    let key32 = |s: &str| {
        <[u8; 32]>::try_from(dec(s)?).map_err(|_| VaultError::Blob("a key is not 32 bytes".into()))
    };
    let r = Recovery2 {
        rpub: key32(rpub)?,
        eph: key32(eph)?,
        nonce: dec(nonce)?,
        ct: dec(ct)?,
        tag: dec(tag)?,
        proof,
    };
    if r.nonce.len() != 12 {
        return Err(VaultError::Blob("nonce is not 12 bytes".into()));
    }
    Ok(r)
}

fn unwrap2(blob: &str, rk: &RecoveryKey) -> Result<Key, VaultError> {
    let r = parse2(blob)?;
    let secret = rk.secret()?;
    if x25519_dalek::PublicKey::from(&secret).to_bytes() != r.rpub {
        return Err(VaultError::WrongRecoveryKey);
    }
    let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(r.eph));
    let key = kek2(shared.as_bytes(), &r.eph, &r.rpub)?
        .decrypt(
            Nonce::from_slice(&r.nonce),
            Payload {
                msg: &r.ct,
                aad: RECOVERY2_INFO,
            },
        )
        .map_err(|_| VaultError::Blob("the recovery property does not decrypt".into()))?;
    let key = Key::new(key);
    if key.len() != tpm::KEY_LEN {
        return Err(VaultError::Blob(format!("a {}-byte key", key.len())));
    }
    let want = tag2(&key, &[&r.rpub, &r.eph, &r.nonce, &r.ct])?;
    if !constant_eq(&want, &r.tag) {
        return Err(VaultError::Blob(
            "the recovery property's tag does not match: it was not written by this box".into(),
        ));
    }
    Ok(key)
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the recovery property says, checked against the vault key that unlocked the vault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecoveryState {
    /// Written by this box for this key: a rotated key can be re-wrapped to its public half.
    Ok,
    /// Gone: tampering (the box never removes it). No new key is made behind the operator's back.
    Missing,
    /// Not what this box wrote for this key (replaced, or an old copy put back): tampering.
    Changed,
    /// An earlier release's form, which cannot be checked; `storagectl vault recovery-key`
    /// replaces it.
    Legacy,
}

impl RecoveryState {
    pub fn as_str(&self) -> &'static str {
        match self {
            RecoveryState::Ok => "ok",
            RecoveryState::Missing => "missing",
            RecoveryState::Changed => "changed",
            RecoveryState::Legacy => "legacy",
        }
    }
}

/// Pure: the recovery property `blob` checked with the vault key; `Ok` carries its public half.
pub fn check_recovery(blob: Option<&str>, vault_key: &[u8]) -> (RecoveryState, Option<[u8; 32]>) {
    let Some(blob) = blob else {
        return (RecoveryState::Missing, None);
    };
    if blob.starts_with("r1:") {
        return (RecoveryState::Legacy, None);
    }
    match parse2(blob) {
        Ok(r) => {
            let want = tag2(vault_key, &[&r.rpub, &r.eph, &r.nonce, &r.ct]);
            if want.is_ok_and(|w| constant_eq(&w, &r.tag)) {
                (RecoveryState::Ok, Some(r.rpub))
            } else {
                (RecoveryState::Changed, None)
            }
        }
        Err(_) => (RecoveryState::Changed, None),
    }
}
/// What became of the vault this boot.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Vault {
    Unlocked,
    /// Created unencrypted because the policy allows it without a TPM.
    Unencrypted,
    /// Exists but stays locked (or was refused as not this box's); nothing under it is touched.
    Locked {
        reason: String,
    },
    /// Not created (e.g. no TPM and the policy requires one), or its state could not be read.
    Absent {
        reason: String,
    },
}

impl Vault {
    pub fn usable(&self) -> bool {
        matches!(self, Vault::Unlocked | Vault::Unencrypted)
    }
    pub fn state(&self) -> &'static str {
        match self {
            Vault::Unlocked => "unlocked",
            Vault::Unencrypted => "unencrypted",
            Vault::Locked { .. } => "locked",
            Vault::Absent { .. } => "absent",
        }
    }
}

/// The vault dataset property holding the next sealed key while the key is being rotated.
pub const SEALED_NEXT: &str = "org.lfedge.eve:sealed-key-next";
/// The vault dataset property holding the next recovery wrap while the key is being rotated.
pub const RECOVERY_NEXT: &str = "org.lfedge.eve:recovery-next";
/// The highest rollback floors (epoch, serial, built-in key list) this vault saw stage 1 confirm,
/// tagged with the vault key: what a recovery may not set the floor below (someone who deletes
/// the TPM's counters or clears it, then boots an older signed release and waits for the
/// operator's recovery, does not get the vault sealed to that release). `s1:<e>,<s>,<k>:<tag>`.
pub const SEEN_PROPERTY: &str = "org.lfedge.eve:floor-seen";
const SEEN_INFO: &[u8] = b"org.lfedge.eve:floor-seen v1";

/// The vault's properties, as `zfs get` gave them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub encryption: String,
    pub keystatus: String,
    /// The dataset's GUID: its identity, which a seal of this box names.
    pub guid: Option<u64>,
    pub sealed: Option<String>,
    pub recovery: Option<String>,
    pub sealed_next: Option<String>,
    pub recovery_next: Option<String>,
    /// [`SEEN_PROPERTY`].
    pub seen: Option<String>,
}

pub const PROPS: [&str; 8] = [
    "encryption",
    "keystatus",
    "guid",
    tpm::SEALED_PROPERTY,
    RECOVERY_PROPERTY,
    SEALED_NEXT,
    RECOVERY_NEXT,
    SEEN_PROPERTY,
];

/// Pure: the properties from `zfs get -H -p -o property,value` output (`-` is "not set").
pub fn parse_props(out: &str) -> Observed {
    let get = |k: &str| {
        out.lines().find_map(|l| {
            l.split_once('\t')
                .filter(|(p, _)| *p == k)
                .map(|(_, v)| v.trim().to_string())
        })
    };
    let set = |k: &str| get(k).filter(|v| !v.is_empty() && v != "-");
    Observed {
        encryption: get("encryption").unwrap_or_default(),
        keystatus: get("keystatus").unwrap_or_default(),
        guid: get("guid").and_then(|g| g.parse().ok()),
        sealed: set(tpm::SEALED_PROPERTY),
        recovery: set(RECOVERY_PROPERTY),
        sealed_next: set(SEALED_NEXT),
        recovery_next: set(RECOVERY_NEXT),
        seen: set(SEEN_PROPERTY),
    }
}

/// Pure: [`SEEN_PROPERTY`]'s value for floors `f` of the vault `guid`, tagged with its key.
pub fn seen_value(vault_key: &[u8], guid: u64, f: &[u64; 3]) -> Result<String, VaultError> {
    let text = format!("{},{},{}", f[0], f[1], f[2]);
    let tag = seen_tag(vault_key, guid, &text)?;
    Ok(format!("s1:{text}:{}", B64.encode(tag)))
}

fn seen_tag(vault_key: &[u8], guid: u64, text: &str) -> Result<Vec<u8>, VaultError> {
    use hmac::Mac;
    let mut m = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(vault_key)
        .map_err(|e| VaultError::Blob(e.to_string()))?;
    m.update(SEEN_INFO);
    m.update(&guid.to_be_bytes());
    m.update(text.as_bytes());
    Ok(m.finalize().into_bytes().to_vec())
}

/// Pure: the floors [`SEEN_PROPERTY`] records, if it is this vault's and tagged with `vault_key`
/// (`None`: missing, from another key, or changed).
pub fn check_seen(prop: Option<&str>, vault_key: &[u8], guid: u64) -> Option<[u64; 3]> {
    let rest = prop?.strip_prefix("s1:")?;
    let (text, tag) = rest.rsplit_once(':')?;
    let want = seen_tag(vault_key, guid, text).ok()?;
    let tag = B64.decode(tag).ok()?;
    if !constant_eq(&want, &tag) {
        return None;
    }
    let v: Vec<u64> = text
        .split(',')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    v.try_into().ok()
}

/// Pure: the higher of two records, per counter.
pub fn max_floors(a: Option<[u64; 3]>, b: Option<[u64; 3]>) -> Option<[u64; 3]> {
    match (a, b) {
        (Some(a), Some(b)) => Some(std::array::from_fn(|i| a[i].max(b[i]))),
        (a, b) => a.or(b),
    }
}

/// Where storage-init leaves, for later seal replacements in the same boot (which do not hold
/// the old key to check the property with), the floors the vault saw as checked at its unlock.
pub fn seen_path(roots: &platform::Roots) -> std::path::PathBuf {
    roots.run.join("eve/vault-floor-seen.json")
}

/// The floors to record with a key rotated without the old key in hand: what this boot's
/// unlock found, and the TPM's now.
fn seen_now(host: &mut dyn Host) -> Option<[u64; 3]> {
    let at_unlock = std::fs::read(seen_path(host.roots()))
        .ok()
        .and_then(|b| serde_json::from_slice::<[u64; 3]>(&b).ok());
    max_floors(at_unlock, host.tpm_floor_now())
}

/// Pure: whether `zfs get` failed because the dataset does not exist (anything else, such as a
/// pool that is suspended, says nothing about existence and must never lead to creating it).
pub fn missing(e: &CmdError) -> bool {
    e.to_string().contains("dataset does not exist")
}

fn observe(host: &mut dyn Host, name: &str) -> Result<Option<Observed>, CmdError> {
    let args = [
        "get",
        "-H",
        "-p",
        "-o",
        "property,value",
        &PROPS.join(","),
        name,
    ]
    .map(String::from);
    match host.zfs(&args, None) {
        Ok(out) => Ok(Some(parse_props(&out))),
        Err(e) if missing(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

fn keyfile(policy: &Policy) -> Result<Key, String> {
    let p = policy
        .encryption
        .keyfile
        .as_ref()
        .ok_or("no keyfile configured")?;
    let k = Key::new(std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?);
    if k.len() != tpm::KEY_LEN {
        return Err(format!(
            "{}: a raw key is {} bytes, this is {}",
            p.display(),
            tpm::KEY_LEN,
            k.len()
        ));
    }
    Ok(k)
}

/// Sets `props` on `name` in one `zfs set` (one transaction: all or none).
fn set_properties(host: &mut dyn Host, name: &str, props: &[(&str, &str)]) -> Result<(), CmdError> {
    let mut args = vec!["set".to_string()];
    args.extend(props.iter().map(|(p, v)| format!("{p}={v}")));
    args.push(name.into());
    host.zfs(&args, None).map(|_| ())
}

/// Drops the rotation's `-next` properties (logged, not fatal: a stale one is tried and ignored).
fn clear_next(host: &mut dyn Host, name: &str) {
    for p in [SEALED_NEXT, RECOVERY_NEXT] {
        if let Err(e) = host.zfs(&["inherit".into(), p.into(), name.into()], None) {
            log(format!("{name}: clearing {p}: {e}"));
        }
    }
}

/// Writes the recovery banner to the console device `console` (`/dev/console` on the box), so it
/// is seen once and never lands in a log file (init copies every service's output to /run/log
/// and /persist/log).
pub fn show_on_console(console: &Path, vault: &str, shown: &str) {
    let text = zeroize::Zeroizing::new(recovery_banner(vault, shown));
    let r = std::fs::OpenOptions::new()
        .write(true)
        .open(console)
        .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()));
    match r {
        Ok(()) => log(format!(
            "{vault}: a recovery key was made and shown on the console (it is not logged)"
        )),
        Err(e) => log(format!(
            "{vault}: a recovery key was made but could not be shown on {}: {e}; make a new one with `storagectl vault recovery-key`",
            console.display()
        )),
    }
}

/// The banner that shows a recovery key (`shown`: [`RecoveryKey::display`]) once.
pub fn recovery_banner(vault: &str, shown: &str) -> String {
    format!(
        "\r\n======================== VAULT RECOVERY KEY ========================\r\n\
         {vault} can be unlocked without this box's TPM (a replaced board or TPM) with:\r\n\r\n    \
         {}\r\n\r\n\
         Write it down now and keep it away from the box: it is shown only this once and the\r\n\
         box does not keep it. To use it: `storagectl vault recover` (reads it on stdin).\r\n\
         ====================================================================\r\n",
        shown
    )
}

/// What a seal of this release holds: a tag, the vault's GUID, then the key, so a seal names the
/// one vault it opens.
const PAYLOAD_TAG: &[u8; 4] = b"eve2";

/// Pure: the data sealed for the vault with `guid` and `key`.
pub fn payload(guid: u64, key: &[u8]) -> Key {
    let mut p = Key::new(Vec::with_capacity(12 + key.len()));
    p.extend_from_slice(PAYLOAD_TAG);
    p.extend_from_slice(&guid.to_le_bytes());
    p.extend_from_slice(key);
    p
}

/// Pure: the key in unsealed `data` (a seal of `version`), if it names the vault with `guid`.
/// An earlier release's seal (version 1) holds the bare key and names no vault.
pub fn open_payload(data: &[u8], version: u8, guid: Option<u64>) -> Result<Key, String> {
    if version == 1 {
        return match data.len() {
            tpm::KEY_LEN => Ok(Key::new(data.to_vec())),
            n => Err(format!("the unsealed key is {n} bytes")),
        };
    }
    if data.len() != 12 + tpm::KEY_LEN || &data[..4] != PAYLOAD_TAG {
        return Err("the unsealed data is not a vault key of this release".into());
    }
    let mut g = [0u8; 8];
    g.copy_from_slice(&data[4..12]);
    let sealed_for = u64::from_le_bytes(g);
    match guid {
        Some(g) if g == sealed_for => Ok(Key::new(data[12..].to_vec())),
        Some(g) => Err(format!(
            "the seal belongs to the vault with GUID {sealed_for}, not to this dataset (GUID {g}): a vault put in place of the one this box made"
        )),
        None => Err("the dataset's GUID could not be read".into()),
    }
}

/// What to do with `<pool>/vault` this boot, from what could be read of it.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Its state could not be read: neither created nor unlocked (absence is never inferred).
    Unreadable { reason: String },
    /// There is none: create it, its key from where the policy and the box allow.
    Create(NewKey),
    /// There is none, and none may be made (no TPM, and the policy requires one).
    CannotCreate { reason: String },
    /// It exists unencrypted (made without a TPM under allow-unencrypted).
    Unencrypted,
    /// Its key is loaded already.
    Unlocked,
    /// Left locked, untouched: not a vault this box made, or sealed more weakly than this boot
    /// requires. Only the recovery key opens it.
    Refused { reason: String },
    /// Locked: unseal its key with the TPM (the seals in order: current, then a rotation's next),
    /// check it names this vault, load it.
    Unseal { blobs: Vec<String> },
    /// Locked, not sealed, no TPM: load the key from the development keyfile.
    Keyfile,
}

/// Where a new vault's key comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewKey {
    /// Generated by the TPM and sealed to it, with a recovery key shown once.
    Tpm,
    /// The development keyfile (no TPM, `without_tpm = "keyfile"`).
    Keyfile,
    /// None: an unencrypted vault (no TPM, `without_tpm = "allow-unencrypted"`).
    Unencrypted,
}

const RECOVER_HINT: &str = "`storagectl vault recover` unlocks it with the recovery key";

/// Pure: the decision from the vault's observed properties (`Err`: `zfs get` failed for a reason
/// other than absence), whether the box has a TPM, the policy, and the boot-state PCRs this boot
/// seals to (`wanted`): a seal whose parent is not gated on all of them could have been made
/// outside this boot state (by anyone with the TPM), so it is not trusted. A seal without the
/// rollback PCR is trusted only while the TPM holds no rollback floor (`floor_absent`).
pub fn decide(
    name: &str,
    obs: Result<Option<&Observed>, String>,
    tpm_present: bool,
    policy: &Policy,
    wanted: &[u8],
    floor_absent: bool,
) -> Decision {
    let obs = match obs {
        Err(e) => {
            return Decision::Unreadable {
                reason: format!(
                "could not read {name}'s state ({e}); it is neither created nor unlocked this boot"
            ),
            }
        }
        Ok(o) => o,
    };
    let require = policy.encryption.without_tpm == WithoutTpm::Require;
    let Some(obs) = obs else {
        return match (tpm_present, policy.encryption.without_tpm) {
            (true, _) => Decision::Create(NewKey::Tpm),
            (false, WithoutTpm::Require) => Decision::CannotCreate {
                reason: format!("no TPM (no /dev/{}) and the policy requires one (encryption.without_tpm = \"require\")", tpm::DEVICE),
            },
            (false, WithoutTpm::AllowUnencrypted) => Decision::Create(NewKey::Unencrypted),
            (false, WithoutTpm::Keyfile) => Decision::Create(NewKey::Keyfile),
        };
    };
    if obs.encryption == "off" || obs.encryption.is_empty() {
        if tpm_present || require {
            return Decision::Refused {
                reason: format!(
                    "{name} is not encrypted, but this box {}: it is not the vault this box made, and nothing is written into it",
                    if tpm_present { "has a TPM" } else { "requires one (encryption.without_tpm = \"require\")" }
                ),
            };
        }
        return Decision::Unencrypted;
    }
    if obs.keystatus == "available" {
        return Decision::Unlocked;
    }
    let blobs: Vec<&String> = [&obs.sealed, &obs.sealed_next]
        .into_iter()
        .flatten()
        .collect();
    if !tpm_present {
        return match blobs.is_empty() {
            true => Decision::Keyfile,
            false => Decision::Refused {
                reason: format!(
                    "its key is sealed to a TPM and this box has none (no /dev/{}); {RECOVER_HINT}",
                    tpm::DEVICE
                ),
            },
        };
    }
    if blobs.is_empty() {
        return Decision::Refused {
            reason: format!(
                "{name} is encrypted but holds no sealed key: not a vault this box sealed (or its first boot was cut short); {RECOVER_HINT}"
            ),
        };
    }
    let gated = |s: &tpm::Sealed| {
        let gate = s.gated_on();
        wanted.iter().all(|p| gate.contains(p))
    };
    let trusted: Vec<String> = blobs
        .iter()
        .filter(|b| {
            // Without a boot-state gate anything may boot (and measure what it likes), so the
            // rollback PCR matters only under one. A seal from before the floor is still good
            // while the TPM holds no floor: the first boot of the release that brings it (the
            // seal is replaced once the floor is set: `finish_floor_migration`).
            tpm::parse_blob(b).is_ok_and(|s| {
                gated(&s) && (wanted.is_empty() || floor_absent || s.pcrs.contains(&rollback::PCR))
            })
        })
        .map(|b| b.to_string())
        .collect();
    if trusted.is_empty()
        && blobs
            .iter()
            .any(|b| tpm::parse_blob(b).is_ok_and(|s| gated(&s)))
    {
        return Decision::Refused {
            reason: format!(
                "its key is sealed without the rollback floor (PCR {}): an older release could unseal it, so it is not trusted; {RECOVER_HINT} and seals it anew",
                rollback::PCR
            ),
        };
    }
    if trusted.is_empty() {
        let sealed_to = tpm::parse_blob(blobs[0])
            .map(|s| binding_text(&s.gated_on()))
            .unwrap_or_else(|e| e.to_string());
        return Decision::Refused {
            reason: format!(
                "its key is sealed to {sealed_to}, but this boot seals to {}: a seal made while Secure Boot was off, by an earlier release, or not by this box could have been made by anyone holding the TPM, so it is not trusted; {RECOVER_HINT} and seals it anew",
                binding_text(wanted)
            ),
        };
    }
    Decision::Unseal { blobs: trusted }
}

/// Unseals each blob in turn, checks it names the vault (`guid`) and loads it; the first that
/// loads wins. `Ok((key, index))`, or every reason it failed.
fn unseal_and_load(
    host: &mut dyn Host,
    name: &str,
    guid: Option<u64>,
    blobs: &[String],
) -> Result<(Key, usize), String> {
    let mut why = Vec::new();
    for (i, blob) in blobs.iter().enumerate() {
        let r = tpm::parse_blob(blob)
            .and_then(|s| host.tpm_unseal(blob).map(|d| (s, d)))
            .map_err(|e| {
                let bound = tpm::parse_blob(blob)
                    .map(|s| format!(" (sealed to {})", binding_text(&s.boot_pcrs())))
                    .unwrap_or_default();
                format!("{}{bound}", platform::chain(&e))
            })
            .and_then(|(s, data)| open_payload(&data, s.version, guid));
        let key = match r {
            Ok(k) => k,
            Err(e) => {
                why.push(e);
                continue;
            }
        };
        match load_key(host, name, &key) {
            Ok(()) => return Ok((key, i)),
            Err(e) => why.push(format!("the unsealed key does not open {name}: {e}")),
        }
    }
    why.dedup();
    Err(why.join("; "))
}

/// What [`decide`] is given about the vault, read through the host before anything of it is
/// decided: its properties (`Err`: they could not be read, which is never taken for absence),
/// whether the box has a TPM, and whether the TPM holds no rollback floor.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub observed: Result<Option<Observed>, String>,
    pub tpm_present: bool,
    pub floor_absent: bool,
}

/// Reads [`Seen`] for the vault `name` (`<pool>/vault`).
pub fn see(host: &mut dyn Host, name: &str) -> Seen {
    let observed = observe(host, name).map_err(|e| e.to_string());
    seen_with(host, observed)
}

/// [`Seen`] for a vault known not to exist yet (its pool is about to be made).
pub fn see_none(host: &mut dyn Host) -> Seen {
    seen_with(host, Ok(None))
}

fn seen_with(host: &mut dyn Host, observed: Result<Option<Observed>, String>) -> Seen {
    let tpm_present = host.tpm_present();
    Seen {
        observed,
        tpm_present,
        floor_absent: tpm_present && host.tpm_floor_absent(),
    }
}

/// Pure: [`decide`] over what was seen, under the policy and this boot's Secure Boot state.
pub fn decide_seen(seen: &Seen, policy: &Policy, sb: SecureBoot) -> Decision {
    let name = format!("{}/vault", policy.pool.name);
    let wanted = wanted_pcrs(&policy.encryption, sb);
    decide(
        &name,
        seen.observed
            .as_ref()
            .map(Option::as_ref)
            .map_err(Clone::clone),
        seen.tpm_present,
        policy,
        &wanted,
        seen.floor_absent,
    )
}

impl Decision {
    /// One word for scripts (`storage-init plan --json`).
    pub fn word(&self) -> &'static str {
        match self {
            Decision::Unreadable { .. } => "unreadable",
            Decision::Create(_) => "create",
            Decision::CannotCreate { .. } => "cannot-create",
            Decision::Unencrypted => "unencrypted",
            Decision::Unlocked => "unlocked",
            Decision::Refused { .. } => "refuse",
            Decision::Unseal { .. } => "unseal",
            Decision::Keyfile => "keyfile",
        }
    }

    /// What the decision does, for a person (never a sealed blob's bytes).
    pub fn describe(&self) -> String {
        match self {
            Decision::Unreadable { reason } => format!("leave it alone: {reason}"),
            Decision::Create(NewKey::Tpm) => {
                "create it with a key generated by the TPM and sealed to it; show a recovery key once"
                    .into()
            }
            Decision::Create(NewKey::Keyfile) => {
                "create it with the development keyfile's key (no TPM)".into()
            }
            Decision::Create(NewKey::Unencrypted) => {
                "create it UNENCRYPTED (no TPM; the policy allows it)".into()
            }
            Decision::CannotCreate { reason } => format!("none is made: {reason}"),
            Decision::Unencrypted => "use it as it is: not encrypted".into(),
            Decision::Unlocked => "nothing: its key is loaded already".into(),
            Decision::Refused { reason } => format!("leave it locked: {reason}"),
            Decision::Unseal { blobs } => format!(
                "unseal its key with the TPM ({} seal(s) to try), check it names this vault, load it",
                blobs.len()
            ),
            Decision::Keyfile => "load its key from the development keyfile (no TPM)".into(),
        }
    }
}

/// Creates or unlocks `<pool>/vault` as [`decide`] says, and checks its recovery property: the
/// observe, decide and act of one pass, for callers that do not plan the vault with the rest.
pub fn ensure(
    host: &mut dyn Host,
    policy: &Policy,
    sb: SecureBoot,
) -> (Vault, Option<RecoveryState>) {
    let name = format!("{}/vault", policy.pool.name);
    let seen = see(host, &name);
    let decision = decide_seen(&seen, policy, sb);
    act(host, policy, sb, &seen, decision)
}

/// Carries out `decision` (made from `seen`). Never destroys or recreates an existing vault,
/// never creates one whose existence it could not establish, never makes a recovery key for an
/// existing vault and never re-seals: a new seal is made only with a new vault, or by an
/// operator's command ([`recover`], [`new_recovery_key`]).
pub fn act(
    host: &mut dyn Host,
    policy: &Policy,
    sb: SecureBoot,
    seen: &Seen,
    decision: Decision,
) -> (Vault, Option<RecoveryState>) {
    let name = format!("{}/vault", policy.pool.name);
    let wanted = wanted_pcrs(&policy.encryption, sb);
    let obs = seen
        .observed
        .as_ref()
        .ok()
        .and_then(Option::as_ref)
        .cloned();
    let locked = |reason: String| {
        log(format!(
            "VAULT LOCKED: {name}: {reason}; its data is kept, nothing under it is changed"
        ));
        (Vault::Locked { reason }, None)
    };
    let (key, used) = match decision {
        Decision::Unreadable { reason } => {
            log(format!("VAULT UNAVAILABLE: {reason}"));
            return (Vault::Absent { reason }, None);
        }
        Decision::CannotCreate { reason } => {
            log(format!("vault not created: {reason}"));
            return (Vault::Absent { reason }, None);
        }
        Decision::Create(how) => return (create(host, policy, &name, how, &wanted), None),
        Decision::Unencrypted => {
            log(format!(
                "WARNING: {name} is NOT encrypted (created without a TPM under allow-unencrypted)"
            ));
            return (Vault::Unencrypted, None);
        }
        Decision::Unlocked => return (Vault::Unlocked, None),
        Decision::Refused { reason } => {
            log(format!("VAULT REFUSED: {name}: {reason}"));
            return locked(reason);
        }
        Decision::Keyfile => match keyfile(policy) {
            Ok(k) => match load_key(host, &name, &k) {
                Ok(()) => (k, None),
                Err(e) => return locked(e.to_string()),
            },
            Err(e) => return locked(e),
        },
        Decision::Unseal { blobs } => {
            let guid = obs.as_ref().and_then(|o| o.guid);
            match unseal_and_load(host, &name, guid, &blobs) {
                Ok((k, i)) => (k, Some(blobs[i].clone())),
                Err(reason) => {
                    return locked(format!(
                        "{reason}; Secure Boot is {}; {RECOVER_HINT}",
                        sb.describe()
                    ))
                }
            }
        }
    };
    log(format!("{name}: unlocked"));
    let Some(obs) = obs else {
        return (Vault::Unlocked, None);
    };
    let Some(used) = used else {
        return (Vault::Unlocked, None);
    };
    let state = settle_rotation(host, &name, &obs, &used, &key);
    note_floor_seen(host, &name, &obs, &key);
    if let (Some((rpub, proof)), Some(guid)) = (checked_recovery(&obs, &used, &key), obs.guid) {
        note_recovery(host, &name, guid, &rpub, proof.as_deref());
    }
    settle_transition(host, &name, &obs, &used, &key, &wanted);
    // Seals from before the floor, and seals bound to the older "floor checked" (from before the
    // built-in key-list floor, which any initramfs of those releases measures): replaced once
    // this release is judged good and the floor records its origins.
    let replace = tpm::parse_blob(&used).is_ok_and(|s| {
        if s.pcrs.contains(&rollback::PCR) {
            host.tpm_floor_without_origins()
        } else {
            !wanted.is_empty()
        }
    });
    if replace {
        note_floor_migration(host, &name, &obs, &used, &key, &state);
    }
    (Vault::Unlocked, Some(state))
}

/// After an unlock by the seal (so stage 1 confirmed the floor the TPM holds): raises the
/// vault's record of the floors it saw to them, and leaves it on /run for this boot.
fn note_floor_seen(host: &mut dyn Host, name: &str, obs: &Observed, key: &Key) {
    let Some(guid) = obs.guid else { return };
    let old = check_seen(obs.seen.as_deref(), key, guid);
    let seen = max_floors(old, host.tpm_floor_now());
    let Some(f) = seen else { return };
    if seen != old {
        match seen_value(key, guid, &f) {
            Ok(v) => {
                if let Err(e) = set_properties(host, name, &[(SEEN_PROPERTY, &v)]) {
                    log(format!("{name}: {e}"));
                }
            }
            Err(e) => log(format!("{name}: {e}")),
        }
    }
    let p = seen_path(host.roots());
    let text = serde_json::json!(f).to_string();
    if let Err(e) = platform::fsx::write_atomic(&p, text.as_bytes(), None) {
        log(platform::chain(&e));
    }
}

fn note_floor_migration(
    host: &mut dyn Host,
    name: &str,
    obs: &Observed,
    used: &str,
    key: &Key,
    state: &RecoveryState,
) {
    let checked = checked_recovery(obs, used, key);
    let proof = checked.as_ref().and_then(|r| r.1.clone());
    let rpub = checked.map(|r| r.0);
    let (Some(rpub), Some(guid)) = (rpub, obs.guid) else {
        log(format!(
            "{name}: its seal predates the rollback floor and its recovery property is {}: the seal is not replaced; once the floor is set the vault will need `storagectl vault recover`",
            state.as_str()
        ));
        return;
    };
    let note = serde_json::json!({ "vault": name, "guid": guid, "rpub": B64.encode(rpub), "proof": proof });
    let p = host.roots().vault_floor_migration();
    match platform::fsx::write_atomic(&p, note.to_string().as_bytes(), None) {
        Ok(()) => log(format!(
            "{name}: unlocked with a seal from before the rollback floor or its built-in key-list check; it is replaced once this release is judged good"
        )),
        Err(e) => log(platform::chain(&e)),
    }
}

/// `storage-init raise-floor`, once the floor is set: replaces a seal from before the floor, or
/// from before its origins (noted by this boot's storage-init), by rotating the vault key to a
/// seal bound to stage 1's value for the floor with its origins, wrapped for the same recovery
/// key. `None` when there was nothing to replace. The caller holds the floor lock; the note is
/// claimed (renamed) first, so two runs never both rotate.
pub fn finish_floor_migration(
    host: &mut dyn Host,
    enc: &Encryption,
    sb: SecureBoot,
) -> Option<Result<String, VaultError>> {
    let p = host.roots().vault_floor_migration();
    let claimed = p.with_extension("claimed");
    std::fs::rename(&p, &claimed).ok()?;
    let text = std::fs::read_to_string(&claimed).ok()?;
    let r = (|| {
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| VaultError::Blob(format!("{}: {e}", p.display())))?;
        let bad = |f: &str| VaultError::Blob(format!("{}: field {f}", p.display()));
        let name = v["vault"].as_str().ok_or_else(|| bad("vault"))?.to_string();
        let guid = v["guid"].as_u64().ok_or_else(|| bad("guid"))?;
        let rpub: [u8; 32] = v["rpub"]
            .as_str()
            .and_then(|r| B64.decode(r).ok())
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| bad("rpub"))?;
        let wanted = wanted_pcrs(enc, sb);
        rotate_recording_origins(host, &name, guid, &wanted, &rpub, v["proof"].as_str())?;
        Ok(format!(
            "{name}: its key rotated and sealed to {} and the rollback floor with its key-list check; the older seal opens nothing now",
            binding_text(&wanted)
        ))
    })();
    let _ = std::fs::remove_file(&claimed);
    Some(r)
}

/// [`rotate`]; on a box whose floor records no origins yet, through the three steps that keep a
/// seal in force that stage 1's measurement opens: the key-list counter made and the origins
/// chosen (stage 1 still measures the older value), the key rotated to a seal bound to the
/// value for those origins, then the origins recorded. A power cut between the last two leaves
/// the vault waiting for the recovery key, once.
fn rotate_recording_origins(
    host: &mut dyn Host,
    name: &str,
    guid: u64,
    pcrs: &[u8],
    rpub: &[u8; 32],
    proof: Option<&str>,
) -> Result<(), VaultError> {
    let seen = seen_now(host);
    if !host.tpm_floor_without_origins() {
        return rotate(
            host,
            name,
            guid,
            pcrs,
            rpub,
            proof,
            Floors {
                origins: None,
                seen,
                transition: None,
            },
        );
    }
    let origins = host.tpm_migrate_begin()?;
    let floors = Floors {
        origins: Some(origins),
        seen,
        transition: None,
    };
    rotate(host, name, guid, pcrs, rpub, proof, floors)?;
    host.tpm_migrate_commit(&origins)?;
    Ok(())
}

/// After unlocking with seal `used`: finishes or drops a rotation a power cut interrupted, and
/// checks the recovery property that goes with the key now in force.
fn settle_rotation(
    host: &mut dyn Host,
    name: &str,
    obs: &Observed,
    used: &str,
    key: &Key,
) -> RecoveryState {
    let by_next = obs.sealed.as_deref() != Some(used);
    // A rotation's recovery wrap is promoted only if this box wrote it for the key in force: a
    // `-next` property is on the disk like any other and may be someone else's.
    let next_ok = obs
        .recovery_next
        .as_deref()
        .filter(|r| check_recovery(Some(r), key).0 == RecoveryState::Ok);
    if by_next {
        // change-key happened, the switch of the properties did not: make it now.
        log(format!(
            "{name}: finishing a key rotation that was cut short"
        ));
        let mut props = vec![(tpm::SEALED_PROPERTY, used)];
        if let Some(r) = next_ok {
            props.push((RECOVERY_PROPERTY, r));
        }
        match set_properties(host, name, &props) {
            Ok(()) => clear_next(host, name),
            Err(e) => log(format!("{name}: {e}")),
        }
    } else if obs.sealed_next.is_some() || obs.recovery_next.is_some() {
        // A rotation stopped before change-key: the old key is still in force.
        clear_next(host, name);
    }
    let recovery = next_ok.filter(|_| by_next).or(obs.recovery.as_deref());
    let (state, _) = check_recovery(recovery, key);
    match state {
        RecoveryState::Ok => {}
        RecoveryState::Legacy => log(format!(
            "{name}: its recovery key is in an earlier release's form; `storagectl vault recovery-key` makes a new one (and rotates the vault key)"
        )),
        RecoveryState::Missing | RecoveryState::Changed => log(format!(
            "TAMPER ALERT: {name}: its recovery property ({RECOVERY_PROPERTY}) is {}: the box never does that, so someone with the disks did; no new recovery key is made. If your recovery key is safe, make a new one with `storagectl vault recovery-key` (that rotates the vault key, so copies of old properties open nothing)",
            if state == RecoveryState::Missing { "gone" } else { "not the one this box wrote" }
        )),
    }
    state
}

/// What a rotated key's seal and records say of the rollback floor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Floors {
    /// Seal for stage 1's value with these origins (a replacement about to record them), not for
    /// the floor the TPM holds.
    pub origins: Option<[u64; 3]>,
    /// The floors the vault saw confirmed ([`SEEN_PROPERTY`]), recorded with the new key.
    pub seen: Option<[u64; 3]>,
    /// Seal for this firmware `dbx` transition ([`prepare_dbx`], which found it and writes the
    /// firmware only if the seal is made for it); `None`: whatever one is pending now.
    pub transition: Option<tpm::Transition>,
}

/// Rotates the vault's wrapping key (`zfs change-key`; the vault's key must be loaded): a new key
/// sealed for `guid` to `pcrs` (the rollback PCR at stage 1's value for the floor the TPM holds,
/// or for `floors.origins`) and wrapped for the recovery key `rpub`, so every seal and wrap made
/// before, in old properties or `zpool history`, opens nothing. Power-cut safe: the new seal and
/// wrap are stored as `-next` first, so whichever key is in force has its seal on disk.
pub fn rotate(
    host: &mut dyn Host,
    name: &str,
    guid: u64,
    pcrs: &[u8],
    rpub: &[u8; 32],
    proof: Option<&str>,
    floors: Floors,
) -> Result<(), VaultError> {
    let key = tpm::generate()?;
    let data = payload(guid, &key);
    let transition = match &floors.transition {
        Some(t) => Some(t.clone()),
        None => transition_now(host, name, pcrs),
    };
    let sealed = match (&floors.origins, transition) {
        (origins, Some(t)) => host.tpm_seal_transition(&data, pcrs, origins.as_ref(), &t)?,
        (Some(o), None) => host.tpm_seal_counted(&data, pcrs, o)?,
        (None, None) => host.tpm_seal(&data, pcrs)?,
    };
    let wrapped = wrap_to(&key, rpub, proof)?;
    set_properties(
        host,
        name,
        &[(SEALED_NEXT, &sealed), (RECOVERY_NEXT, &wrapped)],
    )?;
    let args = [
        "change-key",
        "-o",
        "keyformat=raw",
        "-o",
        "keylocation=prompt",
        name,
    ]
    .map(String::from);
    if let Err(e) = host.zfs(&args, Some(&key)) {
        // The `-next` properties stay: change-key may have committed before it reported the
        // error, and then they are the only seal and wrap of the key in force. A stale pair is
        // tried after the current one at the next unlock and dropped.
        return Err(e.into());
    }
    let seen = floors
        .seen
        .map(|f| seen_value(&key, guid, &f))
        .transpose()?;
    let mut props = vec![
        (tpm::SEALED_PROPERTY, sealed.as_str()),
        (RECOVERY_PROPERTY, wrapped.as_str()),
    ];
    if let Some(v) = &seen {
        props.push((SEEN_PROPERTY, v.as_str()));
    }
    set_properties(host, name, &props)?;
    clear_next(host, name);
    Ok(())
}

/// The firmware `dbx` transition a seal to `pcrs` made now must cover ([`crate::dbx`]): while
/// the firmware's `dbx` differs from what this boot measured, or is about to, a seal of this
/// boot's PCR 7 alone would not open at the next boot.
fn transition_now(host: &mut dyn Host, name: &str, pcrs: &[u8]) -> Option<tpm::Transition> {
    if !transition_fits(pcrs) || !host.tpm_present() {
        return None;
    }
    match host.dbx_transition() {
        Ok(t) => t,
        Err(e) => {
            log(format!(
                "WARNING: {name}: the firmware's dbx could not be checked against this boot's event log ({e}): the key is sealed to this boot's PCR 7 alone"
            ));
            None
        }
    }
}

/// Whether a seal to `pcrs` can be a transition seal: one that binds PCR 7.
fn transition_fits(pcrs: &[u8]) -> bool {
    pcrs.contains(&7)
}

/// Where storage-init leaves, for this boot, the recovery key's public half checked against the
/// unlocked vault's key, so a rotation later in the boot (a firmware `dbx` update) wraps the new
/// key for the operator's recovery key and not for one written on the disk. On tmpfs.
pub fn recovery_note_path(roots: &platform::Roots) -> std::path::PathBuf {
    roots.run.join("eve/vault-recovery.json")
}

/// The recovery wrap that goes with the seal `used` (its `-next` when a rotation was cut short),
/// checked against `key`: its public half and proof.
fn checked_recovery(obs: &Observed, used: &str, key: &Key) -> Option<([u8; 32], Option<String>)> {
    let recovery = if obs.sealed.as_deref() == Some(used) {
        obs.recovery.as_deref()
    } else {
        obs.recovery_next.as_deref().or(obs.recovery.as_deref())
    };
    let checked = recovery
        .filter(|r| check_recovery(Some(r), key).0 == RecoveryState::Ok)
        .and_then(|r| parse2(r).ok())?;
    Some((checked.rpub, checked.proof))
}

fn note_recovery(host: &mut dyn Host, name: &str, guid: u64, rpub: &[u8; 32], proof: Option<&str>) {
    let note = serde_json::json!({ "vault": name, "guid": guid, "rpub": B64.encode(rpub), "proof": proof });
    let p = recovery_note_path(host.roots());
    if let Err(e) = platform::fsx::write_atomic(&p, note.to_string().as_bytes(), None) {
        log(platform::chain(&e));
    }
}

/// After an unlock by a transition seal (made before a firmware `dbx` update): rotates the key
/// to a seal of the state this boot is in, so the state before the update opens nothing more
/// (the firmware never goes back to it, and a seal that still named it would open for whoever
/// rebuilt it). A transition still pending is kept.
fn settle_transition(
    host: &mut dyn Host,
    name: &str,
    obs: &Observed,
    used: &str,
    key: &Key,
    wanted: &[u8],
) {
    let Ok(sealed) = tpm::parse_blob(used) else {
        return;
    };
    let Some(had) = sealed.transition else { return };
    if transition_now(host, name, wanted).as_ref() == Some(&had) {
        log(format!(
            "{name}: its seal covers the firmware dbx update still to be written"
        ));
        return;
    }
    let (Some((rpub, proof)), Some(guid)) = (checked_recovery(obs, used, key), obs.guid) else {
        log(format!(
            "{name}: unlocked by the seal made for a firmware dbx update; its recovery property does not check out, so it is not rotated"
        ));
        return;
    };
    let floors = Floors {
        origins: None,
        seen: seen_now(host),
        transition: None,
    };
    match rotate(host, name, guid, wanted, &rpub, proof.as_deref(), floors) {
        Ok(()) => log(format!(
            "{name}: unlocked by the seal made for the firmware dbx update; its key rotated and sealed to {} as it is now",
            binding_text(wanted)
        )),
        Err(e) => log(format!(
            "{name}: the seal made for the firmware dbx update could not be replaced ({}); it still opens at the next boot",
            platform::chain(&e)
        )),
    }
}

/// What [`prepare_dbx`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbxReady {
    /// Nothing the vault opens with changes (no TPM, no vault, or a seal without PCR 7).
    Unaffected(String),
    /// The seal in force opens in both states already.
    Covered,
    /// The key was rotated to a seal that opens in both.
    Rotated,
}

/// Before the firmware's `dbx` is written: makes sure the vault's seal opens at the next boot,
/// whose PCR 7 measures the new `dbx`, by rotating the key to a transition seal (or finding one
/// in force). Refuses while the vault is locked: its seal, made for another state, would then
/// never open again. The caller holds the floor lock (rotations take turns).
pub fn prepare_dbx(
    host: &mut dyn Host,
    pool: &str,
    enc: &Encryption,
    sb: SecureBoot,
) -> Result<DbxReady, VaultError> {
    let name = format!("{pool}/vault");
    if !host.tpm_present() {
        return Ok(DbxReady::Unaffected(
            "no TPM: the vault is not sealed".into(),
        ));
    }
    let Some(obs) = observe(host, &name)? else {
        return Ok(DbxReady::Unaffected(format!("no {name}")));
    };
    if obs.encryption == "off" || obs.encryption.is_empty() {
        return Ok(DbxReady::Unaffected(format!("{name} is not encrypted")));
    }
    let wanted = wanted_pcrs(enc, sb);
    let current = obs.sealed.as_deref().and_then(|b| tpm::parse_blob(b).ok());
    let binds7 = current.as_ref().is_some_and(|s| s.pcrs.contains(&7));
    if !binds7 && !wanted.contains(&7) {
        return Ok(DbxReady::Unaffected(format!(
            "{name}'s seal does not bind PCR 7"
        )));
    }
    if obs.keystatus != "available" {
        return Err(VaultError::Locked(name));
    }
    let needed = host.dbx_transition().map_err(VaultError::Firmware)?;
    let Some(needed) = needed else {
        return Ok(DbxReady::Covered);
    };
    if current.as_ref().and_then(|s| s.transition.as_ref()) == Some(&needed) {
        return Ok(DbxReady::Covered);
    }
    let p = recovery_note_path(host.roots());
    let note: serde_json::Value = std::fs::read(&p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|v: &serde_json::Value| v["vault"] == name.as_str())
        .ok_or_else(|| {
            VaultError::NoRecovery(format!(
                "{name} (no recovery key checked against its key this boot: {} is missing)",
                p.display()
            ))
        })?;
    let bad = |f: &str| VaultError::Blob(format!("{}: field {f}", p.display()));
    let guid = note["guid"].as_u64().ok_or_else(|| bad("guid"))?;
    if obs.guid != Some(guid) {
        return Err(VaultError::Blob(format!(
            "{}: it names another vault than {name}",
            p.display()
        )));
    }
    let rpub: [u8; 32] = note["rpub"]
        .as_str()
        .and_then(|r| B64.decode(r).ok())
        .and_then(|r| r.try_into().ok())
        .ok_or_else(|| bad("rpub"))?;
    let floors = Floors {
        origins: None,
        seen: seen_now(host),
        // A policy that no longer binds PCR 7 gets a seal the update does not touch.
        transition: transition_fits(&wanted).then_some(needed),
    };
    rotate(
        host,
        &name,
        guid,
        &wanted,
        &rpub,
        note["proof"].as_str(),
        floors,
    )?;
    Ok(DbxReady::Rotated)
}

fn load_key(host: &mut dyn Host, name: &str, key: &Key) -> Result<(), CmdError> {
    let args = ["load-key", "-L", "prompt", name].map(String::from);
    host.zfs(&args, Some(key)).map(|_| ())
}

fn guid_of(host: &mut dyn Host, name: &str) -> Result<u64, VaultError> {
    let out = host.zfs(
        &["get", "-H", "-p", "-o", "value", "guid", name].map(String::from),
        None,
    )?;
    out.trim()
        .parse()
        .map_err(|_| VaultError::Blob(format!("{name}: guid `{}`", out.trim())))
}

fn create(host: &mut dyn Host, policy: &Policy, name: &str, how: NewKey, wanted: &[u8]) -> Vault {
    let mountpoint = format!("mountpoint=/{}/vault", policy.pool.name);
    if how == NewKey::Unencrypted {
        log(format!(
            "WARNING: no TPM: creating {name} UNENCRYPTED as the policy allows"
        ));
        return match host.zfs(
            &["create".into(), "-o".into(), mountpoint, name.into()],
            None,
        ) {
            Ok(_) => Vault::Unencrypted,
            Err(e) => Vault::Absent {
                reason: e.to_string(),
            },
        };
    }
    let key = match how {
        NewKey::Keyfile => match keyfile(policy) {
            Ok(k) => {
                log("WARNING: no TPM: vault key from the development keyfile");
                k
            }
            Err(reason) => {
                log(format!("vault not created: {reason}"));
                return Vault::Absent { reason };
            }
        },
        _ => match tpm::generate() {
            Ok(k) => k,
            Err(e) => {
                log(format!("vault not created: {e}"));
                return Vault::Absent {
                    reason: e.to_string(),
                };
            }
        },
    };
    let mut args: Vec<String> = [
        "create",
        "-o",
        "encryption=aes-256-gcm",
        "-o",
        "keyformat=raw",
        "-o",
        "keylocation=prompt",
        "-o",
    ]
    .map(String::from)
    .to_vec();
    args.push(mountpoint);
    let recovery = match how {
        NewKey::Tpm => {
            let r = RecoveryKey::generate()
                .and_then(|rk| Ok((wrap_to(&key, &rk.public()?, None)?, rk)));
            match r {
                Ok((w, rk)) => {
                    args.extend(["-o".into(), format!("{RECOVERY_PROPERTY}={w}")]);
                    Some(rk)
                }
                Err(e) => {
                    log(format!("vault not created: {}", platform::chain(&e)));
                    return Vault::Absent {
                        reason: e.to_string(),
                    };
                }
            }
        }
        _ => None,
    };
    args.push(name.into());
    if recovery.is_some() {
        // Before the vault: a power cut after it must not leave a seal bound to a floor the TPM
        // does not hold yet (the next boot would wait for the recovery key).
        raise_floor(host, false);
    }
    if let Err(e) = host.zfs(&args, Some(&key)) {
        log(format!("vault not created: {}", platform::chain(&e)));
        return Vault::Absent {
            reason: e.to_string(),
        };
    }
    let Some(rk) = recovery else {
        log(format!(
            "{name}: created, aes-256-gcm, key from the keyfile"
        ));
        return Vault::Unlocked;
    };
    // Shown before the seal is made: if the seal cannot be stored, the recovery key still opens
    // the vault at the next boot.
    host.show_recovery(name, &zeroize::Zeroizing::new(rk.display()));
    let sealed = guid_of(host, name).and_then(|guid| {
        let data = payload(guid, &key);
        let blob = host.tpm_seal(&data, wanted)?;
        match host.tpm_unseal(&blob) {
            Ok(back) if back[..] != data[..] => {
                return Err(VaultError::Blob(
                    "the new seal does not give the key back".into(),
                ))
            }
            Ok(_) => {}
            // A first boot: there was no floor for stage 1 to confirm; the next boot checks it.
            Err(tpm::TpmError::FloorUnchecked) => {}
            Err(e) => return Err(e.into()),
        }
        // The wrap again, now with the proof (the GUID is known only once the vault exists).
        let wrapped = wrap_to(&key, &rk.public()?, Some(&vault_proof(&rk, guid)?))?;
        set_properties(
            host,
            name,
            &[(tpm::SEALED_PROPERTY, &blob), (RECOVERY_PROPERTY, &wrapped)],
        )?;
        Ok(())
    });
    match sealed {
        Ok(()) => log(format!(
            "{name}: created, aes-256-gcm, key sealed to {} for this vault only",
            binding_text(wanted)
        )),
        Err(e) => log(format!(
            "{name}: created and unlocked, but its key could not be sealed ({}): the next boot needs the recovery key",
            platform::chain(&e)
        )),
    }
    Vault::Unlocked
}

/// What `<pool>/vault`'s key is sealed to now, in words (`None`: no vault, or not TPM-sealed).
pub fn binding_of(host: &mut dyn Host, pool: &str) -> Option<String> {
    let obs = observe(host, &format!("{pool}/vault")).ok()??;
    tpm::parse_blob(obs.sealed.as_deref()?)
        .ok()
        .map(|s| binding_text(&s.boot_pcrs()))
}

/// The vault's boot binding as `storagectl status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Binding {
    pub secure_boot: SecureBoot,
    /// What the key is sealed to (`None`: not sealed to a TPM).
    pub sealed_to: Option<String>,
    /// The boot-state PCRs the seal is bound to (the boot-phase PCR, always bound, not listed).
    pub pcrs: Option<Vec<u8>>,
    pub recovery_key: bool,
}

/// Pure: the binding from the vault's properties and the Secure Boot state.
pub fn binding(obs: Option<&Observed>, sb: SecureBoot) -> Binding {
    let pcrs = obs
        .and_then(|o| o.sealed.as_deref())
        .and_then(|b| tpm::parse_blob(b).ok())
        .map(|s| s.boot_pcrs());
    Binding {
        secure_boot: sb,
        sealed_to: pcrs.as_deref().map(binding_text),
        pcrs,
        recovery_key: obs.is_some_and(|o| o.recovery.is_some()),
    }
}

/// Gathers [`binding`] for `<pool>/vault`.
pub fn gather_binding(host: &mut dyn Host, pool: &str) -> Binding {
    let obs = observe(host, &format!("{pool}/vault")).ok().flatten();
    let sb = secure_boot(&host.roots().sys);
    binding(obs.as_ref(), sb)
}

/// What `recover` did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recovered {
    pub vault: String,
    /// False when the key was already loaded (nothing to do).
    pub unlocked: bool,
    /// What the key is sealed to now, on this box's TPM (`None`: no TPM here, or not re-sealed:
    /// `warning` says why).
    pub sealed_to: Option<String>,
    /// What the operator must know: the seal not replaced, or a floor left above the release.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

impl Recovered {
    /// What `storagectl vault recover` prints.
    pub fn render(&self) -> String {
        if !self.unlocked {
            return format!("{}: already unlocked; nothing changed\n", self.vault);
        }
        let mut t = format!(
            "{}: unlocked with the recovery key; {}\n",
            self.vault,
            match (&self.sealed_to, &self.warning) {
                (Some(b), _) =>
                    format!("its key is now sealed to {b}: the next boot unlocks by itself"),
                (None, Some(_)) =>
                    "its seal is not replaced: the next boot needs the recovery key again".into(),
                (None, None) => "no TPM here: the next boot needs the recovery key again".into(),
            }
        );
        if let Some(w) = &self.warning {
            t.push_str(&format!("WARNING: {w}\n"));
        }
        t
    }
}

/// Unlocks `<pool>/vault` with the recovery key, then (with a TPM) rotates its key and seals the
/// new one to this box's TPM under the current Secure Boot state, so the next boot unlocks by
/// itself; the same recovery key keeps working. The vault's datasets are mounted as `policy`
/// says ([`crate::mounts`]).
pub fn recover(
    host: &mut dyn Host,
    policy: &Policy,
    rk: &RecoveryKey,
    enc: &Encryption,
    sb: SecureBoot,
    accept_unproven: bool,
) -> Result<Recovered, VaultError> {
    let name = format!("{}/vault", policy.pool.name);
    let obs =
        observe(host, &name)?.ok_or_else(|| VaultError::NoRecovery(format!("{name} (absent)")))?;
    if obs.keystatus == "available" {
        return Ok(Recovered {
            vault: name,
            unlocked: false,
            sealed_to: None,
            warning: None,
        });
    }
    let blobs: Vec<&String> = [&obs.recovery, &obs.recovery_next]
        .into_iter()
        .flatten()
        .collect();
    if blobs.is_empty() {
        return Err(VaultError::NoRecovery(name));
    }
    // A key that is not the one these wraps are for (a typo, another box's key) says so plainly.
    let rpub = rk.public()?;
    let for_this_key = |b: &&String| parse2(b).map_or(true, |r| r.rpub == rpub);
    if !blobs.iter().any(for_this_key) {
        return Err(VaultError::WrongRecoveryKey);
    }
    // Before anything is opened: is this the vault the key was made for?
    let proof = obs.guid.map(|g| vault_proof(rk, g)).transpose()?;
    let carried: Vec<String> = blobs.iter().filter_map(|b| proof_of(b)).collect();
    match (&proof, carried.is_empty()) {
        (Some(p), false) if carried.iter().any(|c| constant_eq(c.as_bytes(), p.as_bytes())) => {}
        (_, false) => return Err(VaultError::NotThisVault(name)),
        (_, true) if accept_unproven => log(format!(
            "{name}: WARNING: no proof that this is the vault the recovery key was made for; opened as the operator asked (--accept-unproven)"
        )),
        (_, true) => return Err(VaultError::Unproven(name)),
    }
    let mut last = VaultError::WrongRecoveryKey;
    let mut loaded = None;
    for blob in blobs {
        match unwrap(blob, rk) {
            Ok(key) => match load_key(host, &name, &key) {
                Ok(()) => {
                    loaded = Some(key);
                    break;
                }
                // A wrap of a key the vault no longer has (an old copy put back): not this one.
                Err(_) => last = VaultError::WrongRecoveryKey,
            },
            Err(e) => last = e,
        }
    }
    let Some(key) = loaded else {
        return Err(last);
    };
    crate::mounts::apply(host, policy, true);
    let wanted = wanted_pcrs(enc, sb);
    if !host.tpm_present() {
        return Ok(Recovered {
            vault: name,
            unlocked: true,
            sealed_to: None,
            warning: None,
        });
    }
    let guid = obs
        .guid
        .ok_or_else(|| VaultError::Blob(format!("{name}: its guid could not be read")))?;
    // The floors this vault saw confirmed (tagged with its key, so only this box wrote them): the
    // running release must not be below them, whatever the TPM holds now.
    let seen = check_seen(obs.seen.as_deref(), &key, guid);
    let target = host.floor_target();
    if let Some(why) = below_seen(seen, target) {
        return Ok(Recovered {
            vault: name,
            unlocked: true,
            sealed_to: None,
            warning: Some(format!(
                "{why}: the vault is unlocked for this boot only and its seal is not replaced; install a release at that floor (or boot the slot that holds one), then recover again"
            )),
        });
    }
    // The floor first: a power cut between the two must not leave a new seal bound to a floor
    // the TPM does not hold (another recovery would then be needed). A floor above the running
    // release is counted again only when the vault's record says the release is not below what
    // it saw.
    raise_floor(host, seen.is_some());
    let now = host.tpm_floor_now();
    let warning = match (now, target) {
        (Some(f), Some(t)) if (0..3).any(|i| f[i] > u64::from(t[i])) => Some(format!(
            "the TPM's rollback floor {f:?} stays above the running release's {t:?} (the vault holds no record of the floors it saw that would let it be counted again): stage 1 will not give this release the vault; install a release at the floor"
        )),
        _ => None,
    };
    rotate(
        host,
        &name,
        guid,
        &wanted,
        &rk.public()?,
        proof.as_deref(),
        Floors {
            origins: None,
            seen: max_floors(seen, now),
            transition: None,
        },
    )?;
    Ok(Recovered {
        vault: name,
        unlocked: true,
        sealed_to: Some(binding_text(&wanted)),
        warning,
    })
}

/// Pure: why the running release (its floor target) is below the floors the vault saw, if it is.
pub fn below_seen(seen: Option<[u64; 3]>, target: Option<[u32; 3]>) -> Option<String> {
    let (s, t) = (seen?, target?);
    let names = ["security epoch", "update-key serial", "built-in key list"];
    let i = (0..3).find(|&i| u64::from(t[i]) < s[i])?;
    Some(format!(
        "the running release's {} is {}, below {} which this vault saw confirmed",
        names[i], t[i], s[i]
    ))
}

/// Raises the TPM's rollback floor to the running release (defining it on a new vault or after
/// a recovery). A failure is loud: the next boot cannot confirm the floor, and the vault then
/// waits for the recovery key.
fn raise_floor(host: &mut dyn Host, lower: bool) {
    match host.tpm_raise_floor(lower) {
        Ok(what) => log(format!("rollback floor in the TPM: {what}")),
        Err(e) => log(format!(
            "WARNING: the rollback floor could not be set in the TPM ({}): the next boot will need the recovery key",
            platform::chain(&e)
        )),
    }
}

/// Makes a new recovery key for the unlocked vault and rotates the vault key (sealed anew to
/// `pcrs` on this TPM): the old recovery key, old seals and old wrapped copies open nothing. The
/// caller shows the key.
pub fn new_recovery_key(
    host: &mut dyn Host,
    pool: &str,
    enc: &Encryption,
    sb: SecureBoot,
) -> Result<RecoveryKey, VaultError> {
    let name = format!("{pool}/vault");
    let obs =
        observe(host, &name)?.ok_or_else(|| VaultError::NoRecovery(format!("{name} (absent)")))?;
    if obs.keystatus != "available" {
        return Err(VaultError::Locked(name));
    }
    if !host.tpm_present() {
        return Err(VaultError::NoRecovery(format!(
            "{name} (no TPM here to seal a rotated key to)"
        )));
    }
    let guid = obs
        .guid
        .ok_or_else(|| VaultError::Blob(format!("{name}: its guid could not be read")))?;
    let rk = RecoveryKey::generate()?;
    // A seal replacement this boot's storage-init noted would wrap for the old recovery key: this
    // rotation replaces the seal itself.
    let _ = std::fs::remove_file(host.roots().vault_floor_migration());
    rotate_recording_origins(
        host,
        &name,
        guid,
        &wanted_pcrs(enc, sb),
        &rk.public()?,
        Some(&vault_proof(&rk, guid)?),
    )?;
    Ok(rk)
}

/// The vault's own lock (`{run}/eve/vault.lock`), held by every program that changes its key
/// on this box (recovery, a new recovery key, the firmware dbx update, the floor migration's
/// re-seal): two rotations interleaved could leave a key in force that no seal or wrap holds.
/// Waits for the holder. Order: this lock before the rollback floor's (`floor_lock`), never after.
pub fn lock(roots: &platform::Roots) -> Result<platform::lock::Held, VaultError> {
    let p = roots.run.join("eve/vault.lock");
    // Waiting: `None` cannot come back.
    platform::lock::exclusive(&p, true)?.ok_or_else(|| VaultError::Locked(p.display().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `zfs set` calls other than the record of the floors seen.
    fn sets_but_seen(h: &FakeHost) -> Vec<&str> {
        h.calls_to("zfs set")
            .into_iter()
            .filter(|c| !c.contains(SEEN_PROPERTY))
            .collect()
    }

    fn sealed_obs(blob: &str) -> Observed {
        Observed {
            encryption: "aes-256-gcm".into(),
            keystatus: "unavailable".into(),
            guid: Some(42),
            sealed: Some(blob.into()),
            ..Observed::default()
        }
    }

    #[test]
    fn a_vault_that_cannot_be_read_is_never_created_and_an_existing_one_never_remade() {
        let mut p = Policy::builtin();
        let d = |obs: Result<Option<&Observed>, String>, tpm: bool, p: &Policy| {
            decide("persist/vault", obs, tpm, p, &[7], false)
        };
        // A suspended pool, an I/O error: nothing is created, whatever the TPM and policy say.
        for tpm in [true, false] {
            for w in [
                WithoutTpm::Require,
                WithoutTpm::AllowUnencrypted,
                WithoutTpm::Keyfile,
            ] {
                p.encryption.without_tpm = w;
                let r = d(Err("pool I/O is currently suspended".into()), tpm, &p);
                assert!(
                    matches!(&r, Decision::Unreadable { reason } if reason.contains("suspended")),
                    "{r:?}"
                );
            }
        }
        // Absent: made the way the box and the policy allow.
        p.encryption.without_tpm = WithoutTpm::Require;
        assert_eq!(d(Ok(None), true, &p), Decision::Create(NewKey::Tpm));
        assert!(matches!(
            d(Ok(None), false, &p),
            Decision::CannotCreate { .. }
        ));
        p.encryption.without_tpm = WithoutTpm::AllowUnencrypted;
        assert_eq!(
            d(Ok(None), false, &p),
            Decision::Create(NewKey::Unencrypted)
        );
        p.encryption.without_tpm = WithoutTpm::Keyfile;
        assert_eq!(d(Ok(None), false, &p), Decision::Create(NewKey::Keyfile));
        // Present, sealed under the PCR 7 gate: unsealed (current seal first, then a rotation's).
        let gated = "v2:7,11,12:Rw==:AAE=:AA==";
        let mut o = sealed_obs(gated);
        o.sealed_next = Some("v2:7,11,12:Rw==:AAI=:AA==".into());
        assert_eq!(
            d(Ok(Some(&o)), true, &p),
            Decision::Unseal {
                blobs: vec![gated.into(), "v2:7,11,12:Rw==:AAI=:AA==".into()]
            }
        );
        let open = Observed {
            keystatus: "available".into(),
            ..o.clone()
        };
        assert_eq!(d(Ok(Some(&open)), true, &p), Decision::Unlocked);
        // No TPM: a sealed vault is refused (the recovery key opens it); an unsealed one is the
        // development keyfile's.
        assert!(matches!(
            d(Ok(Some(&o)), false, &p),
            Decision::Refused { .. }
        ));
        let plain = Observed {
            sealed: None,
            sealed_next: None,
            ..o.clone()
        };
        assert_eq!(d(Ok(Some(&plain)), false, &p), Decision::Keyfile);
    }

    #[test]
    fn a_vault_this_box_did_not_make_is_refused_whatever_its_properties_say() {
        let p = Policy::builtin();
        let refused = |obs: &Observed, tpm: bool, wanted: &[u8]| match decide(
            "persist/vault",
            Ok(Some(obs)),
            tpm,
            &p,
            wanted,
            false,
        ) {
            Decision::Refused { reason } => reason,
            d => panic!("{obs:?}: {d:?}"),
        };
        // Unencrypted where a TPM is present or the policy requires one.
        let off = Observed {
            encryption: "off".into(),
            keystatus: "-".into(),
            ..Observed::default()
        };
        assert!(refused(&off, true, &[7]).contains("not encrypted"));
        assert!(refused(&off, false, &[]).contains("requires one"));
        let mut lax = Policy::builtin();
        lax.encryption.without_tpm = WithoutTpm::AllowUnencrypted;
        assert_eq!(
            decide("persist/vault", Ok(Some(&off)), false, &lax, &[], false),
            Decision::Unencrypted
        );
        // Encrypted, with no seal at all.
        let bare = Observed {
            sealed: None,
            ..sealed_obs("x")
        };
        assert!(refused(&bare, true, &[7]).contains("no sealed key"));
        // A seal made before the rollback floor (not bound to PCR 12): an older release would
        // unseal it.
        let r = refused(&sealed_obs("v2:7,11:Rw==:AAE=:AA=="), true, &[7]);
        assert!(
            r.contains("without the rollback floor (PCR 12)") && r.contains("recover"),
            "{r}"
        );
        // With Secure Boot on, a seal whose parent is not gated on PCR 7 could have been made by
        // anyone holding the TPM (a live USB): an ungated v2 seal, an earlier release's v1 seal
        // even when it claims PCR 7, and garbage.
        for blob in [
            "v2:11::AAE=:AA==",
            "v1:7:AAE=:AA==",
            "v1::AAE=:AA==",
            "nonsense",
        ] {
            let r = refused(&sealed_obs(blob), true, &[7]);
            assert!(r.contains("not trusted") && r.contains("recover"), "{r}");
        }
        // With Secure Boot off nothing gates a seal anyway: the earlier forms are tried.
        assert!(matches!(
            decide(
                "persist/vault",
                Ok(Some(&sealed_obs("v1::AAE=:AA=="))),
                true,
                &p,
                &[],
                false
            ),
            Decision::Unseal { .. }
        ));
    }

    #[test]
    fn a_seal_names_its_vault() {
        let data = payload(42, &[7u8; 32]);
        assert_eq!(open_payload(&data, 2, Some(42)).unwrap()[..], [7u8; 32]);
        let e = open_payload(&data, 2, Some(43)).unwrap_err();
        assert!(e.contains("GUID 42") && e.contains("GUID 43"), "{e}");
        assert!(open_payload(&data, 2, None).is_err());
        assert!(open_payload(&[7u8; 32], 2, Some(42)).is_err());
        assert!(open_payload(&data[..40], 2, Some(42)).is_err());
        // An earlier release's seal holds the bare key.
        assert_eq!(open_payload(&[7u8; 32], 1, None).unwrap()[..], [7u8; 32]);
        assert!(open_payload(&data, 1, Some(42)).is_err());
    }

    fn enc(pcrs: &[u8]) -> Encryption {
        Encryption {
            without_tpm: WithoutTpm::Require,
            keyfile: None,
            pcrs: pcrs.to_vec(),
            bind_secure_boot: true,
        }
    }

    #[test]
    fn secure_boot_state_from_efi_variables() {
        let on = [6u8, 0, 0, 0, 1];
        let off = [6u8, 0, 0, 0, 0];
        assert_eq!(secure_boot_from(Some(&on), Some(&off)), SecureBoot::On);
        assert_eq!(secure_boot_from(Some(&off), Some(&off)), SecureBoot::Off);
        assert_eq!(
            secure_boot_from(Some(&off), Some(&on)),
            SecureBoot::SetupMode
        );
        assert_eq!(secure_boot_from(None, None), SecureBoot::Unknown);
        assert_eq!(secure_boot_from(Some(&[1]), None), SecureBoot::Unknown);
        let t = tempfile::tempdir().unwrap();
        assert_eq!(secure_boot(t.path()), SecureBoot::Unknown);
        let d = t.path().join("firmware/efi/efivars");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("SecureBoot-{EFI_GLOBAL}")), on).unwrap();
        std::fs::write(d.join(format!("SetupMode-{EFI_GLOBAL}")), off).unwrap();
        assert_eq!(secure_boot(t.path()), SecureBoot::On);
    }

    #[test]
    fn the_seal_binds_pcr7_under_secure_boot() {
        assert_eq!(wanted_pcrs(&enc(&[]), SecureBoot::On), vec![7]);
        assert_eq!(wanted_pcrs(&enc(&[4, 7]), SecureBoot::On), vec![4, 7]);
        assert!(wanted_pcrs(&enc(&[]), SecureBoot::Off).is_empty());
        assert!(wanted_pcrs(&enc(&[]), SecureBoot::SetupMode).is_empty());
        let mut opt_out = enc(&[]);
        opt_out.bind_secure_boot = false;
        assert!(wanted_pcrs(&opt_out, SecureBoot::On).is_empty());
        assert!(binding_text(&[7]).contains("Secure Boot"));
        assert!(binding_text(&[]).contains("no PCRs"));
        assert!(binding_text(&[4, 7]).contains("4, 7"));
    }

    #[test]
    fn recovery_keys_round_trip_and_refuse_typos_and_other_keys() {
        let rk = RecoveryKey::from_bytes([0x5a; 32]);
        let shown = rk.display();
        assert_eq!(shown.len(), 64 + 7);
        assert_eq!(shown.split('-').count(), 8);
        assert!(shown.bytes().all(|b| b == b'-' || MODHEX.contains(&b)));
        let again =
            RecoveryKey::parse(&format!(" {}\n", shown.to_uppercase().replace('-', " "))).unwrap();
        assert_eq!(again.0[..], rk.0[..]);
        let vault_key = [9u8; 32];
        let other = RecoveryKey::from_bytes([0x5b; 32]);
        // This release's form, wrapped to the public half alone, and an earlier release's.
        let w2 = wrap_to(&vault_key, &rk.public().unwrap(), None).unwrap();
        let w1 = wrap(&vault_key, &rk).unwrap();
        assert!(w2.starts_with("r2:") && w1.starts_with("r1:"));
        for w in [&w2, &w1] {
            assert_eq!(unwrap(w, &again).unwrap()[..], vault_key[..]);
            assert!(matches!(
                unwrap(w, &other),
                Err(VaultError::WrongRecoveryKey)
            ));
            // A flipped byte of the wrapped key or its tag is caught.
            let mut bad = w.clone().into_bytes();
            let n = bad.len() - 3;
            bad[n] = if bad[n] == b'A' { b'B' } else { b'A' };
            assert!(unwrap(&String::from_utf8(bad).unwrap(), &rk).is_err());
        }
        assert_ne!(
            w2,
            wrap_to(&vault_key, &rk.public().unwrap(), None).unwrap()
        );
        assert!(matches!(
            RecoveryKey::parse("cbdefghi"),
            Err(VaultError::BadRecoveryKey(_))
        ));
        assert!(RecoveryKey::parse(&shown.replace('c', "a")).is_err() || !shown.contains('c'));
        assert!(unwrap("r2:a:b:c", &rk).is_err());
        assert!(unwrap("r3:a:b:c", &rk).is_err());
        assert!(recovery_banner("persist/vault", &rk.display()).contains(&shown));
    }

    #[test]
    fn only_a_recovery_property_this_box_wrote_for_this_key_checks_out() {
        let rk = RecoveryKey::from_bytes([0x21; 32]);
        let rpub = rk.public().unwrap();
        let key = [3u8; 32];
        let w = wrap_to(&key, &rpub, None).unwrap();
        assert_eq!(
            check_recovery(Some(&w), &key),
            (RecoveryState::Ok, Some(rpub))
        );
        assert_eq!(check_recovery(None, &key).0, RecoveryState::Missing);
        // Someone else's property: their own recovery key's public half, wrapped to without the
        // vault key; an old copy wrapping the key before a rotation; garbage.
        let theirs = RecoveryKey::from_bytes([0x22; 32]).public().unwrap();
        let forged = wrap_to(&[0u8; 32], &theirs, None).unwrap();
        let old = wrap_to(&[4u8; 32], &rpub, None).unwrap();
        for blob in [forged.as_str(), old.as_str(), "r2:garbage", "x"] {
            assert_eq!(
                check_recovery(Some(blob), &key).0,
                RecoveryState::Changed,
                "{blob}"
            );
        }
        // A public half swapped into a real property breaks its tag.
        let mut f: Vec<&str> = w.split(':').collect();
        let swapped = B64.encode(theirs);
        f[1] = &swapped;
        assert_eq!(
            check_recovery(Some(&f.join(":")), &key).0,
            RecoveryState::Changed
        );
        let legacy = wrap(&key, &rk).unwrap();
        assert_eq!(check_recovery(Some(&legacy), &key).0, RecoveryState::Legacy);
    }

    #[test]
    fn vault_properties_and_only_a_missing_dataset_counts_as_missing() {
        let o = parse_props(
            "encryption\taes-256-gcm\nkeystatus\tunavailable\nguid\t1234\norg.lfedge.eve:sealed-key\tv1:7:AA==:AA==\norg.lfedge.eve:recovery\t-\norg.lfedge.eve:sealed-key-next\tv2:x\n",
        );
        assert_eq!(o.keystatus, "unavailable");
        assert_eq!(o.guid, Some(1234));
        assert_eq!(o.sealed.as_deref(), Some("v1:7:AA==:AA=="));
        assert_eq!(o.sealed_next.as_deref(), Some("v2:x"));
        assert_eq!(o.recovery, None);
        assert_eq!(o.recovery_next, None);
        let gone = CmdError::Failed {
            argv: "zfs get".into(),
            status: "exit status: 1".into(),
            stderr: "cannot open 'persist/vault': dataset does not exist".into(),
        };
        assert!(missing(&gone));
        let io = CmdError::Failed {
            argv: "zfs get".into(),
            status: "exit status: 1".into(),
            stderr: "cannot open 'persist/vault': pool I/O is currently suspended".into(),
        };
        assert!(!missing(&io), "an unreadable vault is not an absent one");
    }

    use crate::host::fake::FakeHost;

    const GET: &str = "zfs get -H -p -o property,value";
    const GUID: &str = "zfs get -H -p -o value guid";
    const ABSENT: &str = "cannot open 'persist/vault': dataset does not exist";

    /// `zfs get` of the vault as a locked one with GUID 42 and these properties.
    fn vault_props(h: &mut FakeHost, props: &[(&str, &str)]) {
        let mut out = "encryption\taes-256-gcm\nkeystatus\tunavailable\nguid\t42\n".to_string();
        for (k, v) in props {
            out.push_str(&format!("{k}\t{v}\n"));
        }
        h.answer(GET, Ok(&out));
    }

    /// The value `zfs create`/`zfs set` gave `prop` in the recorded calls (the last one).
    fn written(h: &FakeHost, prop: &str) -> Option<String> {
        h.calls.iter().rev().find_map(|c| {
            c.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{prop}=")).map(String::from))
        })
    }

    /// A vault this box made: its key sealed for GUID 42 to `pcrs`, wrapped to `rk`.
    fn made(h: &mut FakeHost, key: &[u8; 32], pcrs: &[u8], rk: &RecoveryKey) -> (String, String) {
        let blob = h.tpm_seal(&payload(42, key), pcrs).unwrap();
        let w = wrap_to(key, &rk.public().unwrap(), None).unwrap();
        h.calls.clear();
        (blob, w)
    }

    #[test]
    fn a_new_vault_gets_a_key_on_stdin_sealed_for_it_and_a_recovery_key_shown_once() {
        let mut h = FakeHost::default();
        h.answer(GET, Err(ABSENT));
        h.answer(GUID, Ok("42\n"));
        let (v, rec) = ensure(&mut h, &Policy::builtin(), SecureBoot::On);
        assert_eq!((v, rec), (Vault::Unlocked, None));
        assert_eq!(h.calls_to("tpm-seal"), ["tpm-seal [7]"]);
        let create = h.calls_to("zfs create");
        assert_eq!(create.len(), 1);
        assert!(
            create[0].contains("encryption=aes-256-gcm")
                && create[0].contains("keylocation=prompt")
                && create[0].ends_with("persist/vault <stdin 32 bytes>"),
            "{}",
            create[0]
        );
        // The key went on stdin only; the recovery key, shown before the seal was stored, opens
        // the wrapped copy, whose tag the key checks.
        let key = h.stdin[0].clone();
        assert!(!h.calls.iter().any(|c| c.contains(&B64.encode(&key))));
        assert_eq!(h.shown.len(), 1);
        let shown_at = h.calls.iter().position(|c| c.starts_with("show-recovery"));
        let sealed_at = h
            .calls
            .iter()
            .position(|c| c.starts_with(&format!("zfs set {}=", tpm::SEALED_PROPERTY)));
        assert!(shown_at < sealed_at, "{:?}", h.calls);
        let rk = RecoveryKey::parse(&h.shown[0]).unwrap();
        let wrapped = written(&h, RECOVERY_PROPERTY).unwrap();
        assert_eq!(unwrap(&wrapped, &rk).unwrap()[..], key[..]);
        assert_eq!(check_recovery(Some(&wrapped), &key).0, RecoveryState::Ok);
        assert_eq!(
            proof_of(&wrapped),
            Some(vault_proof(&rk, 42).unwrap()),
            "the stored wrap proves the vault to the recovery key"
        );
        // What is stored is a seal this TPM opens to the key, naming this vault's GUID.
        let blob = written(&h, tpm::SEALED_PROPERTY).unwrap();
        let data = h.tpm_unseal(&blob).unwrap();
        assert_eq!(open_payload(&data, 2, Some(42)).unwrap()[..], key[..]);
        assert!(open_payload(&data, 2, Some(43)).is_err());
        // The rollback floor is set before the vault is made.
        let floor = h
            .calls
            .iter()
            .position(|c| c == "tpm-raise-floor lower=false");
        let created = h.calls.iter().position(|c| c.starts_with("zfs create"));
        assert!(floor.is_some() && floor < created, "{:?}", h.calls);
    }

    #[test]
    fn a_first_boot_seals_to_the_rollback_floor_stage_1_could_not_yet_confirm() {
        // No floor in the TPM yet: stage 1 measured "unchecked", so the new seal (bound to the
        // checked value) cannot be opened in this boot; it is stored all the same, and the floor
        // set for the next boot.
        let mut h = FakeHost {
            floor_checked: false,
            ..FakeHost::default()
        };
        h.answer(GET, Err(ABSENT));
        h.answer(GUID, Ok("42\n"));
        let (v, _) = ensure(&mut h, &Policy::builtin(), SecureBoot::On);
        assert_eq!(v, Vault::Unlocked);
        let blob = written(&h, tpm::SEALED_PROPERTY).unwrap();
        assert!(tpm::parse_blob(&blob).unwrap().pcrs.contains(&12), "{blob}");
        assert_eq!(h.calls_to("tpm-raise-floor").len(), 1);
        // At the next boot without the floor confirmed, the vault stays locked and says why.
        let mut next = FakeHost {
            floor_checked: false,
            sealed: h.sealed.clone(),
            ..FakeHost::default()
        };
        vault_props(&mut next, &[(tpm::SEALED_PROPERTY, &blob)]);
        let (v, _) = ensure(&mut next, &Policy::builtin(), SecureBoot::On);
        match v {
            Vault::Locked { reason } => assert!(reason.contains("rollback floor"), "{reason}"),
            v => panic!("{v:?}"),
        }
        assert!(
            next.calls_to("tpm-raise-floor").is_empty(),
            "never raised at an unlock"
        );
        // With the floor confirmed (the counters the first boot set), it unlocks by itself.
        let mut confirmed = FakeHost {
            sealed: h.sealed.clone(),
            ..FakeHost::default()
        };
        vault_props(&mut confirmed, &[(tpm::SEALED_PROPERTY, &blob)]);
        confirmed.answer(GUID, Ok("42\n"));
        let (v, _) = ensure(&mut confirmed, &Policy::builtin(), SecureBoot::On);
        assert_eq!(v, Vault::Unlocked);
    }

    #[test]
    fn a_seal_from_before_the_key_list_floor_is_replaced_once_the_floor_records_origins() {
        let key = [6u8; 32];
        let rk = RecoveryKey::from_bytes([0x21; 32]);
        let wrapped = wrap_to(&key, &rk.public().unwrap(), None).unwrap();
        // Bound to PCR 12, as every seal since the floor: what it was bound to (the older "floor
        // checked" or the value naming the origins) is told by the TPM's floor.
        let bound = "v2:7,11,12:Rw==:AAAAAQ==:AA==";
        for without_origins in [true, false] {
            let t = tempfile::tempdir().unwrap();
            let mut h = FakeHost {
                floor_without_origins: without_origins,
                roots: platform::Roots::under(t.path()),
                ..FakeHost::default()
            };
            let at = h.pcr7;
            h.sealed.push((payload(42, &key).to_vec(), vec![7], at));
            vault_props(
                &mut h,
                &[(tpm::SEALED_PROPERTY, bound), (RECOVERY_PROPERTY, &wrapped)],
            );
            h.answer(GUID, Ok("42\n"));
            let (v, _) = ensure(&mut h, &Policy::builtin(), SecureBoot::On);
            assert_eq!(v, Vault::Unlocked);
            assert!(
                h.calls_to("zfs change-key").is_empty(),
                "nothing rotated at boot"
            );
            assert_eq!(
                h.roots.vault_floor_migration().exists(),
                without_origins,
                "replaced only when the floor records no origins yet"
            );
            if !without_origins {
                continue;
            }
            // The good boot's replacement: the key-list counter made and the origins chosen,
            // the key rotated to a seal for them, and only then the origins recorded (until
            // then stage 1 measures the older value the seal in force opens with).
            h.calls.clear();
            h.answer(GUID, Ok("42\n"));
            let enc = Policy::builtin().encryption;
            let done = finish_floor_migration(&mut h, &enc, SecureBoot::On);
            assert!(matches!(done, Some(Ok(_))), "{done:?}");
            let at = |what: &str| {
                h.calls
                    .iter()
                    .position(|c| c.starts_with(what))
                    .unwrap_or_else(|| panic!("{what}: {:?}", h.calls))
            };
            assert!(at("tpm-migrate-begin") < at("tpm-seal-counted [1, 1, 5]"));
            assert!(at("tpm-seal-counted") < at("zfs change-key"));
            assert!(at("zfs change-key") < at("tpm-migrate-commit [1, 1, 5]"));
            assert!(!h.roots.vault_floor_migration().exists());
            assert!(
                finish_floor_migration(&mut h, &enc, SecureBoot::On).is_none(),
                "claimed once"
            );
        }
    }

    #[test]
    fn a_seal_from_before_the_floor_opens_only_while_there_is_none_and_is_then_replaced() {
        let key = [6u8; 32];
        let rk = RecoveryKey::from_bytes([0x21; 32]);
        let wrapped = wrap_to(&key, &rk.public().unwrap(), None).unwrap();
        let legacy = "v2:7,11:Rw==:AAAAAQ==:AA==";
        let setup = |floor_absent: bool| {
            let mut h = FakeHost {
                floor_absent,
                ..FakeHost::default()
            };
            let at = h.pcr7;
            h.sealed.push((payload(42, &key).to_vec(), vec![7], at));
            vault_props(
                &mut h,
                &[
                    (tpm::SEALED_PROPERTY, legacy),
                    (RECOVERY_PROPERTY, &wrapped),
                ],
            );
            h
        };
        // The TPM holds a floor: an older release could open this seal, so it is refused.
        let mut h = setup(false);
        let (v, _) = ensure(&mut h, &Policy::builtin(), SecureBoot::On);
        assert!(matches!(v, Vault::Locked { .. }), "{v:?}");
        assert!(h.calls_to("zfs load-key").is_empty());
        assert!(!h.roots.vault_floor_migration().exists());
        // No floor yet (the first boot of the release that brings it): unlocked, and the
        // recovery key's checked public half noted for the replacement.
        let t = tempfile::tempdir().unwrap();
        let mut h = setup(true);
        h.roots = platform::Roots::under(t.path());
        let (v, rec) = ensure(&mut h, &Policy::builtin(), SecureBoot::On);
        assert_eq!((v, rec), (Vault::Unlocked, Some(RecoveryState::Ok)));
        assert!(
            h.calls_to("zfs change-key").is_empty(),
            "nothing rotated at boot"
        );
        assert!(h.roots.vault_floor_migration().exists());
        // Once the floor is set: rotated to a seal bound to it, wrapped for the same recovery
        // key; the note is gone.
        h.answer(GUID, Ok("42\n"));
        let enc = Policy::builtin().encryption;
        let done = finish_floor_migration(&mut h, &enc, SecureBoot::On);
        assert!(matches!(done, Some(Ok(_))), "{done:?}");
        assert_eq!(h.calls_to("zfs change-key").len(), 1);
        let sealed = written(&h, SEALED_NEXT).unwrap();
        assert!(
            tpm::parse_blob(&sealed).unwrap().pcrs.contains(&12),
            "{sealed}"
        );
        let new_key = h.stdin.last().unwrap().clone();
        let rewrapped = written(&h, RECOVERY_NEXT).unwrap();
        assert_eq!(unwrap(&rewrapped, &rk).unwrap()[..], new_key[..]);
        assert!(!h.roots.vault_floor_migration().exists());
        assert!(finish_floor_migration(&mut h, &enc, SecureBoot::On).is_none());
        // A recovery property that does not check out is not trusted for the new wrap.
        let t = tempfile::tempdir().unwrap();
        let mut h = setup(true);
        h.roots = platform::Roots::under(t.path());
        let other = wrap_to(
            &key,
            &RecoveryKey::from_bytes([0x22; 32]).public().unwrap(),
            None,
        )
        .unwrap();
        let forged = format!("{}AAAA", &other[..other.len() - 4]);
        vault_props(
            &mut h,
            &[(tpm::SEALED_PROPERTY, legacy), (RECOVERY_PROPERTY, &forged)],
        );
        let (v, _) = ensure(&mut h, &Policy::builtin(), SecureBoot::On);
        assert_eq!(v, Vault::Unlocked);
        assert!(!h.roots.vault_floor_migration().exists());
    }

    #[test]
    fn recovery_opens_only_the_vault_its_key_was_made_for() {
        let rk = RecoveryKey::from_bytes([0x31; 32]);
        let rpub = rk.public().unwrap();
        let enc = Policy::builtin().encryption;
        let at = |proof: Option<&str>| {
            let mut h = FakeHost::default();
            let w = wrap_to(&[9u8; 32], &rpub, proof).unwrap();
            vault_props(&mut h, &[(RECOVERY_PROPERTY, &w)]);
            h
        };
        // A vault made in place of the box's own (GUID 42), wrapped to the public half that is
        // on the disk for anyone to read, with the proof copied from the real vault (GUID 7):
        // refused before anything is loaded.
        let copied = vault_proof(&rk, 7).unwrap();
        let mut h = at(Some(&copied));
        let r = recover(&mut h, &Policy::builtin(), &rk, &enc, SecureBoot::On, true);
        assert!(matches!(r, Err(VaultError::NotThisVault(_))), "{r:?}");
        assert!(h.calls_to("zfs load-key").is_empty() && h.calls_to("tpm").is_empty());
        // Another key altogether (a typo): said plainly, not as tampering.
        let mut h = at(Some(&copied));
        let other = RecoveryKey::from_bytes([0x33; 32]);
        let r = recover(
            &mut h,
            &Policy::builtin(),
            &other,
            &enc,
            SecureBoot::On,
            true,
        );
        assert!(matches!(r, Err(VaultError::WrongRecoveryKey)), "{r:?}");
        // No proof at all: refused unless the operator accepts it.
        let mut h = at(None);
        let r = recover(&mut h, &Policy::builtin(), &rk, &enc, SecureBoot::On, false);
        assert!(matches!(r, Err(VaultError::Unproven(_))), "{r:?}");
        assert!(h.calls_to("zfs load-key").is_empty());
        // The right proof: opened, and the rotated wrap carries the proof on.
        let proof = vault_proof(&rk, 42).unwrap();
        let mut h = at(Some(&proof));
        recover(&mut h, &Policy::builtin(), &rk, &enc, SecureBoot::On, false).unwrap();
        let next = written(&h, RECOVERY_NEXT).unwrap();
        assert_eq!(proof_of(&next).as_deref(), Some(proof.as_str()));
        // Only the recovery key's holder computes it, per vault.
        assert_ne!(vault_proof(&rk, 43).unwrap(), proof);
        assert_ne!(
            vault_proof(&RecoveryKey::from_bytes([0x32; 32]), 42).unwrap(),
            proof
        );
    }

    #[test]
    fn an_unreadable_uncreatable_or_refused_vault_is_left_exactly_as_it_is() {
        for (answer, tpm, reason) in [
            (Err("pool I/O is currently suspended"), true, "suspended"),
            (Err(ABSENT), false, "requires one"),
            (
                Ok("encryption\toff\nkeystatus\t-\nguid\t9\n"),
                true,
                "not encrypted",
            ),
            (
                Ok("encryption\taes-256-gcm\nkeystatus\tunavailable\nguid\t9\n"),
                true,
                "no sealed key",
            ),
        ] {
            let mut h = FakeHost {
                tpm,
                ..FakeHost::default()
            };
            h.answer(GET, answer);
            let (v, _) = ensure(&mut h, &Policy::builtin(), SecureBoot::On);
            let (Vault::Absent { reason: r } | Vault::Locked { reason: r }) = &v else {
                panic!("{v:?}")
            };
            assert!(r.contains(reason), "{r}");
            assert_eq!(h.calls.len(), 1, "only the read: {:?}", h.calls);
        }
    }

    #[test]
    fn a_vault_whose_seal_no_longer_opens_stays_locked_and_untouched() {
        let mut h = FakeHost::default();
        let rk = RecoveryKey::from_bytes([1; 32]);
        let (blob, w) = made(&mut h, &[3u8; 32], &[7], &rk);
        vault_props(
            &mut h,
            &[(tpm::SEALED_PROPERTY, &blob), (RECOVERY_PROPERTY, &w)],
        );
        // PCR 7 moved (other keys enrolled), a cleared TPM, then this boot's unlock phase already
        // over: locked each time, never loaded, re-sealed, re-keyed or recreated.
        for change in [
            |h: &mut FakeHost| h.pcr7 = 2,
            |h: &mut FakeHost| {
                h.pcr7 = 1;
                h.phase_over = true
            },
            |h: &mut FakeHost| h.sealed.clear(),
        ] {
            change(&mut h);
            let (v, _) = ensure(&mut h, &Policy::builtin(), SecureBoot::On);
            match &v {
                Vault::Locked { reason } => {
                    assert!(reason.contains("sealed to this TPM and PCR 7"), "{reason}")
                }
                v => panic!("{v:?}"),
            }
            assert!(h
                .calls
                .iter()
                .all(|c| c.starts_with("zfs get") || c == "tpm-unseal"));
            h.calls.clear();
        }
    }

    #[test]
    fn a_seal_moved_to_another_dataset_opens_nothing() {
        // The box's own seal, put on a dataset with another GUID: unsealed, then refused before
        // load-key.
        let mut h = FakeHost::default();
        let rk = RecoveryKey::from_bytes([1; 32]);
        let blob = h.tpm_seal(&payload(41, &[3u8; 32]), &[7]).unwrap();
        let w = wrap_to(&[3u8; 32], &rk.public().unwrap(), None).unwrap();
        vault_props(
            &mut h,
            &[(tpm::SEALED_PROPERTY, &blob), (RECOVERY_PROPERTY, &w)],
        );
        h.calls.clear();
        let (v, _) = ensure(&mut h, &Policy::builtin(), SecureBoot::On);
        assert!(
            matches!(&v, Vault::Locked { reason } if reason.contains("GUID 41")),
            "{v:?}"
        );
        assert!(h.calls_to("zfs load-key").is_empty() && h.stdin.is_empty());
    }

    #[test]
    fn unlocking_loads_the_key_and_never_reseals_or_makes_a_recovery_key() {
        let rk = RecoveryKey::from_bytes([1; 32]);
        for (recovery, state) in [
            (Some(true), RecoveryState::Ok),
            (None, RecoveryState::Missing),
            (Some(false), RecoveryState::Changed),
        ] {
            let mut h = FakeHost::default();
            let (blob, w) = made(&mut h, &[5u8; 32], &[7], &rk);
            let other = wrap_to(&[6u8; 32], &rk.public().unwrap(), None).unwrap();
            let mut props = vec![(tpm::SEALED_PROPERTY, blob.as_str())];
            match recovery {
                Some(true) => props.push((RECOVERY_PROPERTY, &w)),
                Some(false) => props.push((RECOVERY_PROPERTY, &other)),
                None => {}
            }
            vault_props(&mut h, &props);
            let (v, rec) = ensure(&mut h, &Policy::builtin(), SecureBoot::On);
            assert_eq!((v, rec), (Vault::Unlocked, Some(state)));
            assert_eq!(h.stdin, [vec![5u8; 32]], "load-key got the unsealed key");
            assert_eq!(
                h.calls_to("zfs load-key"),
                ["zfs load-key -L prompt persist/vault <stdin 32 bytes>"]
            );
            // Nothing written but the record of the floors seen: no seal, no recovery key.
            assert!(h.calls_to("tpm-seal").is_empty() && h.shown.is_empty());
            assert!(sets_but_seen(&h).is_empty() && h.calls_to("zfs change-key").is_empty());
            assert_eq!(
                check_seen(written(&h, SEEN_PROPERTY).as_deref(), &[5u8; 32], 42),
                Some([0, 1, 1]),
                "the TPM's floor, which stage 1 confirmed, recorded with the vault key"
            );
        }
        // An earlier release's seal, Secure Boot off: unlocked as it is (no re-seal at boot).
        let mut h = FakeHost::default();
        h.sealed.push((vec![5u8; 32], vec![], 1));
        vault_props(&mut h, &[(tpm::SEALED_PROPERTY, "v1::AAAAAQ==:AA==")]);
        let (v, rec) = ensure(&mut h, &Policy::builtin(), SecureBoot::Off);
        assert_eq!((v, rec), (Vault::Unlocked, Some(RecoveryState::Missing)));
        assert!(h.calls_to("tpm-seal").is_empty() && sets_but_seen(&h).is_empty());
    }

    #[test]
    fn a_failed_load_leaves_the_vault_locked_and_untouched() {
        let mut h = FakeHost::default();
        let rk = RecoveryKey::from_bytes([1; 32]);
        let (blob, w) = made(&mut h, &[5u8; 32], &[7], &rk);
        vault_props(
            &mut h,
            &[(tpm::SEALED_PROPERTY, &blob), (RECOVERY_PROPERTY, &w)],
        );
        h.fail = Some("zfs load-key");
        assert!(matches!(
            ensure(&mut h, &Policy::builtin(), SecureBoot::On).0,
            Vault::Locked { .. }
        ));
        assert!(h.calls_to("tpm-seal").is_empty() && h.calls_to("zfs set").is_empty());
    }

    #[test]
    fn a_rotation_cut_short_at_any_step_leaves_a_seal_that_opens_the_vault() {
        let rk = RecoveryKey::from_bytes([1; 32]);
        // The old key (5) with its seal; the rotation's next seal and wrap of the new key (6).
        let mut h = FakeHost::default();
        let (old, old_w) = made(&mut h, &[5u8; 32], &[7], &rk);
        let (next, next_w) = made(&mut h, &[6u8; 32], &[7], &rk);
        // Stopped before change-key: the vault still has key 5; the next ones are dropped.
        vault_props(
            &mut h,
            &[
                (tpm::SEALED_PROPERTY, &old),
                (RECOVERY_PROPERTY, &old_w),
                (SEALED_NEXT, &next),
                (RECOVERY_NEXT, &next_w),
            ],
        );
        let (v, rec) = ensure(&mut h, &Policy::builtin(), SecureBoot::On);
        assert_eq!((v, rec), (Vault::Unlocked, Some(RecoveryState::Ok)));
        assert_eq!(h.stdin, [vec![5u8; 32]]);
        assert_eq!(h.calls_to("zfs inherit").len(), 2);
        assert!(sets_but_seen(&h).is_empty());
        // Stopped after change-key: key 5 no longer loads, key 6 does, and its seal and wrap
        // become the vault's.
        let mut h2 = FakeHost {
            sealed: std::mem::take(&mut h.sealed),
            ..FakeHost::default()
        };
        vault_props(
            &mut h2,
            &[
                (tpm::SEALED_PROPERTY, &old),
                (RECOVERY_PROPERTY, &old_w),
                (SEALED_NEXT, &next),
                (RECOVERY_NEXT, &next_w),
            ],
        );
        h2.answer("zfs load-key", Ok(""));
        // The fake's load-key takes any key; make the old one fail as ZFS would.
        h2.fail = Some("zfs load-key");
        let (v, rec) = ensure(&mut h2, &Policy::builtin(), SecureBoot::On);
        assert_eq!((v, rec), (Vault::Unlocked, Some(RecoveryState::Ok)));
        assert_eq!(h2.stdin, [vec![5u8; 32], vec![6u8; 32]]);
        assert_eq!(
            written(&h2, tpm::SEALED_PROPERTY).as_deref(),
            Some(next.as_str())
        );
        assert_eq!(
            written(&h2, RECOVERY_PROPERTY).as_deref(),
            Some(next_w.as_str())
        );
        assert_eq!(h2.calls_to("zfs inherit").len(), 2);
    }

    #[test]
    fn a_next_recovery_wrap_is_promoted_only_if_this_box_wrote_it_for_the_key() {
        // The current seal (key 6) put in `-next` and an old one (key 5) as current, with a
        // forged recovery wrap as `-next`: the seal is promoted, the forged wrap is not, and the
        // valid current wrap stays.
        let rk = RecoveryKey::from_bytes([1; 32]);
        let mut h = FakeHost::default();
        let (old, _) = made(&mut h, &[5u8; 32], &[7], &rk);
        let (cur, cur_w) = made(&mut h, &[6u8; 32], &[7], &rk);
        // The attacker does not know key 6: their wrap carries a key of theirs, to their own
        // recovery key.
        let theirs = RecoveryKey::from_bytes([9; 32]).public().unwrap();
        let forged = wrap_to(&[7u8; 32], &theirs, None).unwrap();
        let mut h2 = FakeHost {
            sealed: std::mem::take(&mut h.sealed),
            fail: Some("zfs load-key"),
            ..FakeHost::default()
        };
        vault_props(
            &mut h2,
            &[
                (tpm::SEALED_PROPERTY, &old),
                (RECOVERY_PROPERTY, &cur_w),
                (SEALED_NEXT, &cur),
                (RECOVERY_NEXT, &forged),
            ],
        );
        let (v, rec) = ensure(&mut h2, &Policy::builtin(), SecureBoot::On);
        assert_eq!((v, rec), (Vault::Unlocked, Some(RecoveryState::Ok)));
        assert_eq!(
            written(&h2, tpm::SEALED_PROPERTY).as_deref(),
            Some(cur.as_str())
        );
        assert!(
            h2.calls_to("zfs set").iter().all(|c| !c.contains(&forged)),
            "{:?}",
            h2.calls
        );
    }

    #[test]
    fn rotating_writes_next_first_then_changes_the_key_then_switches() {
        let mut h = FakeHost::default();
        let rk = RecoveryKey::from_bytes([1; 32]);
        rotate(
            &mut h,
            "persist/vault",
            42,
            &[7],
            &rk.public().unwrap(),
            None,
            Floors::default(),
        )
        .unwrap();
        let steps: Vec<&str> = h
            .calls
            .iter()
            .map(|c| c.split_whitespace().take(2).collect::<Vec<_>>())
            .map(|w| match w.as_slice() {
                ["zfs", "set"] => "set",
                ["zfs", "change-key"] => "change-key",
                ["zfs", "inherit"] => "inherit",
                _ => "tpm",
            })
            .collect();
        assert_eq!(
            steps,
            ["tpm", "set", "change-key", "set", "inherit", "inherit"]
        );
        assert!(h.calls[1].contains(SEALED_NEXT) && h.calls[1].contains(RECOVERY_NEXT));
        assert!(h.calls[2].ends_with("persist/vault <stdin 32 bytes>"));
        // The new key went to change-key only on stdin; seal and wrap both give it back.
        let key = h.stdin[0].clone();
        let blob = written(&h, tpm::SEALED_PROPERTY).unwrap();
        let data = h.tpm_unseal(&blob).unwrap();
        assert_eq!(open_payload(&data, 2, Some(42)).unwrap()[..], key[..]);
        let w = written(&h, RECOVERY_PROPERTY).unwrap();
        assert_eq!(unwrap(&w, &rk).unwrap()[..], key[..]);
        // change-key fails: the next properties are dropped, the current ones never touched.
        let mut h = FakeHost {
            fail: Some("zfs change-key"),
            ..FakeHost::default()
        };
        assert!(rotate(
            &mut h,
            "persist/vault",
            42,
            &[7],
            &rk.public().unwrap(),
            None,
            Floors::default()
        )
        .is_err());
        assert_eq!(h.calls_to("zfs set").len(), 1);
        assert!(
            h.calls_to("zfs inherit").is_empty(),
            "the next pair is kept"
        );
    }

    #[test]
    fn recovery_opens_only_with_the_right_key_then_rotates_and_seals_to_this_tpm() {
        let rk = RecoveryKey::from_bytes([0x11; 32]);
        let wrapped = wrap_to(&[8u8; 32], &rk.public().unwrap(), None).unwrap();
        let mut h = FakeHost::default();
        vault_props(
            &mut h,
            &[
                (tpm::SEALED_PROPERTY, "v2:7,11,12:Rw==:AAAAAQ==:AA=="),
                (RECOVERY_PROPERTY, &wrapped),
            ],
        );
        let enc = Policy::builtin().encryption;
        let wrong = RecoveryKey::from_bytes([0x12; 32]);
        assert!(matches!(
            recover(
                &mut h,
                &Policy::builtin(),
                &wrong,
                &enc,
                SecureBoot::On,
                true
            ),
            Err(VaultError::WrongRecoveryKey)
        ));
        assert!(h.calls_to("zfs load-key").is_empty() && h.calls_to("tpm").is_empty());
        let r = recover(&mut h, &Policy::builtin(), &rk, &enc, SecureBoot::On, true).unwrap();
        assert!(r.unlocked && r.sealed_to.as_deref() == Some(binding_text(&[7]).as_str()));
        // The operator's recovery also sets the rollback floor (a cleared TPM lost it).
        assert_eq!(h.calls_to("tpm-raise-floor").len(), 1);
        // Loaded with the old key, then rotated: a new key, sealed here for this vault and
        // wrapped for the same recovery key.
        assert_eq!(h.stdin[0], vec![8u8; 32]);
        assert_eq!(h.calls_to("zfs change-key").len(), 1);
        let new = h.stdin[1].clone();
        assert_ne!(new, vec![8u8; 32]);
        let sealed = written(&h, tpm::SEALED_PROPERTY).unwrap();
        let data = h.tpm_unseal(&sealed).unwrap();
        assert_eq!(open_payload(&data, 2, Some(42)).unwrap()[..], new[..]);
        assert_eq!(
            unwrap(&written(&h, RECOVERY_PROPERTY).unwrap(), &rk).unwrap()[..],
            new[..]
        );
        // An earlier release's recovery property works the same way.
        let mut h = FakeHost::default();
        vault_props(
            &mut h,
            &[(RECOVERY_PROPERTY, &wrap(&[8u8; 32], &rk).unwrap())],
        );
        assert!(recover(&mut h, &Policy::builtin(), &rk, &enc, SecureBoot::On, true).is_ok());
        assert!(written(&h, RECOVERY_PROPERTY).unwrap().starts_with("r2:"));
        // An old copy put back (a wrap of a key the vault no longer has): refused.
        let mut h = FakeHost {
            fail: Some("zfs load-key"),
            ..FakeHost::default()
        };
        vault_props(&mut h, &[(RECOVERY_PROPERTY, &wrapped)]);
        assert!(matches!(
            recover(&mut h, &Policy::builtin(), &rk, &enc, SecureBoot::On, true),
            Err(VaultError::WrongRecoveryKey)
        ));
        assert!(h.calls_to("zfs change-key").is_empty());
        // No vault at all: nothing to recover, nothing made.
        let mut h = FakeHost::default();
        h.answer(GET, Err(ABSENT));
        assert!(matches!(
            recover(&mut h, &Policy::builtin(), &rk, &enc, SecureBoot::On, true),
            Err(VaultError::NoRecovery(_))
        ));
        assert_eq!(h.calls.len(), 1);
    }

    #[test]
    fn a_recovery_never_seals_for_a_release_below_the_floors_the_vault_saw() {
        let rk = RecoveryKey::from_bytes([0x11; 32]);
        let key = [8u8; 32];
        let wrapped = wrap_to(&key, &rk.public().unwrap(), None).unwrap();
        let seen = seen_value(&key, 42, &[2, 3, 3]).unwrap();
        let enc = Policy::builtin().encryption;
        let host = |target, seen: Option<&str>| {
            let mut h = FakeHost {
                target: Some(target),
                floor_now: None,
                ..FakeHost::default()
            };
            let mut props = vec![(RECOVERY_PROPERTY, wrapped.as_str())];
            if let Some(v) = seen {
                props.push((SEEN_PROPERTY, v));
            }
            vault_props(&mut h, &props);
            h
        };
        // The TPM's counters deleted (or the TPM cleared) and an older signed release (epoch 1)
        // booted: the recovery unlocks for this boot only; nothing raised, rotated or sealed.
        let mut h = host([1, 3, 3], Some(&seen));
        let r = recover(&mut h, &Policy::builtin(), &rk, &enc, SecureBoot::On, true).unwrap();
        assert!(r.unlocked && r.sealed_to.is_none(), "{r:?}");
        let w = r.warning.unwrap();
        assert!(w.contains("security epoch is 1, below 2"), "{w}");
        assert!(h.calls_to("tpm").is_empty(), "{:?}", h.calls);
        assert!(h.calls_to("zfs change-key").is_empty());
        // A release built before the newest key rotation, the same.
        let mut h = host([2, 3, 2], Some(&seen));
        let r = recover(&mut h, &Policy::builtin(), &rk, &enc, SecureBoot::On, true).unwrap();
        assert!(r
            .warning
            .unwrap()
            .contains("built-in key list is 2, below 3"));
        // At or above them: raised (a floor above the release may be counted again), rotated,
        // and the record carried over to the new key.
        let mut h = host([2, 3, 3], Some(&seen));
        let r = recover(&mut h, &Policy::builtin(), &rk, &enc, SecureBoot::On, true).unwrap();
        assert!(r.sealed_to.is_some() && r.warning.is_none(), "{r:?}");
        assert_eq!(h.calls_to("tpm-raise-floor lower=true").len(), 1);
        let new = h.stdin[1].clone();
        assert_eq!(
            check_seen(written(&h, SEEN_PROPERTY).as_deref(), &new, 42),
            Some([2, 3, 3])
        );
        // No record (deleted, or a box from before it): a floor above the release stays.
        let mut h = host([1, 1, 1], None);
        recover(&mut h, &Policy::builtin(), &rk, &enc, SecureBoot::On, true).unwrap();
        assert_eq!(h.calls_to("tpm-raise-floor lower=false").len(), 1);
        // Only this vault's record, tagged with its key, as written, counts.
        assert_eq!(check_seen(Some(&seen), &key, 42), Some([2, 3, 3]));
        assert_eq!(check_seen(Some(&seen), &[9u8; 32], 42), None);
        assert_eq!(check_seen(Some(&seen), &key, 43), None);
        assert_eq!(
            check_seen(Some(&seen.replacen("s1:2,", "s1:1,", 1)), &key, 42),
            None
        );
        assert_eq!(check_seen(Some("s1:1,1,1"), &key, 42), None);
        assert_eq!(
            max_floors(Some([1, 5, 2]), Some([3, 1, 2])),
            Some([3, 5, 2])
        );
    }

    #[test]
    fn a_new_recovery_key_rotates_the_vault_key_and_the_old_one_opens_nothing() {
        let old = RecoveryKey::from_bytes([0x11; 32]);
        let mut h = FakeHost::default();
        let enc = Policy::builtin().encryption;
        // Locked: refused, nothing made.
        vault_props(&mut h, &[]);
        assert!(matches!(
            new_recovery_key(&mut h, "persist", &enc, SecureBoot::On),
            Err(VaultError::Locked(_))
        ));
        assert!(h.calls_to("tpm").is_empty() && h.shown.is_empty());
        h.answer(
            GET,
            Ok("encryption\taes-256-gcm\nkeystatus\tavailable\nguid\t42\n"),
        );
        let rk = new_recovery_key(&mut h, "persist", &enc, SecureBoot::On).unwrap();
        let key = h.stdin[0].clone();
        assert_eq!(h.calls_to("zfs change-key").len(), 1);
        let w = written(&h, RECOVERY_PROPERTY).unwrap();
        assert_eq!(unwrap(&w, &rk).unwrap()[..], key[..]);
        assert!(matches!(
            unwrap(&w, &old),
            Err(VaultError::WrongRecoveryKey)
        ));
        assert_eq!(h.calls_to("tpm-seal"), ["tpm-seal [7]"]);
    }

    #[test]
    fn a_firmware_dbx_update_is_sealed_for_first_and_its_old_state_opens_nothing_after_it() {
        let t = tempfile::tempdir().unwrap();
        let mut h = FakeHost::under(t.path());
        let enc = Policy::builtin().encryption;
        let rk = RecoveryKey::from_bytes([0x22; 32]);
        let (blob, w) = made(&mut h, &[3u8; 32], &[7], &rk);
        let unlocked = |sealed: &str, recovery: &str| {
            format!("encryption\taes-256-gcm\nkeystatus\tavailable\nguid\t42\n{}\t{sealed}\n{RECOVERY_PROPERTY}\t{recovery}\n", tpm::SEALED_PROPERTY)
        };
        // Boot 1 (PCR 7 is 1): an unlock leaves the checked recovery key's public half for later.
        vault_props(
            &mut h,
            &[(tpm::SEALED_PROPERTY, &blob), (RECOVERY_PROPERTY, &w)],
        );
        assert_eq!(
            ensure(&mut h, &Policy::builtin(), SecureBoot::On).0,
            Vault::Unlocked
        );
        assert!(recovery_note_path(&h.roots).exists());
        assert!(
            h.calls_to("zfs change-key").is_empty(),
            "nothing pending: no rotation"
        );
        // Nothing pending: nothing to prepare.
        h.answer(GET, Ok(&unlocked(&blob, &w)));
        assert_eq!(
            prepare_dbx(&mut h, "persist", &enc, SecureBoot::On).unwrap(),
            DbxReady::Covered
        );
        // The release carries an update; the boot after it measures PCR 7 as 5.
        let tr = tpm::Transition {
            keep: 10,
            appends: vec![vec![1, 2]],
        };
        h.dbx = Some((tr.clone(), 5));
        // Locked: refused, so the firmware is not written.
        vault_props(
            &mut h,
            &[(tpm::SEALED_PROPERTY, &blob), (RECOVERY_PROPERTY, &w)],
        );
        h.calls.clear();
        assert!(matches!(
            prepare_dbx(&mut h, "persist", &enc, SecureBoot::On),
            Err(VaultError::Locked(_))
        ));
        assert!(h.calls_to("tpm").is_empty() && h.calls_to("zfs change-key").is_empty());
        // Unlocked: the key is rotated to a seal that opens in both states.
        h.answer(GET, Ok(&unlocked(&blob, &w)));
        h.stdin.clear();
        assert_eq!(
            prepare_dbx(&mut h, "persist", &enc, SecureBoot::On).unwrap(),
            DbxReady::Rotated
        );
        let v3 = written(&h, tpm::SEALED_PROPERTY).unwrap();
        assert_eq!(tpm::parse_blob(&v3).unwrap().transition, Some(tr.clone()));
        let w2 = written(&h, RECOVERY_PROPERTY).unwrap();
        let key2 = h.stdin.last().unwrap().clone();
        assert_eq!(
            unwrap(&w2, &rk).unwrap()[..],
            key2[..],
            "wrapped for the same recovery key"
        );
        assert_eq!(h.calls_to("zfs change-key").len(), 1);
        // Asked again with that seal in force: nothing to do.
        h.answer(GET, Ok(&unlocked(&v3, &w2)));
        h.calls.clear();
        assert_eq!(
            prepare_dbx(&mut h, "persist", &enc, SecureBoot::On).unwrap(),
            DbxReady::Covered
        );
        assert!(h.calls_to("zfs change-key").is_empty());
        // A power cut before the write: the same state boots, the seal opens and stays.
        vault_props(
            &mut h,
            &[(tpm::SEALED_PROPERTY, &v3), (RECOVERY_PROPERTY, &w2)],
        );
        h.stdin.clear();
        assert_eq!(
            ensure(&mut h, &Policy::builtin(), SecureBoot::On).0,
            Vault::Unlocked
        );
        assert_eq!(h.stdin, std::slice::from_ref(&key2));
        assert!(h.calls_to("zfs change-key").is_empty());
        // Boot 2, after the write: PCR 7 is 5 and nothing is pending. The transition seal opens,
        // and the key is rotated at once to a seal of this state only.
        h.pcr7 = 5;
        h.dbx = None;
        h.stdin.clear();
        h.calls.clear();
        assert_eq!(
            ensure(&mut h, &Policy::builtin(), SecureBoot::On).0,
            Vault::Unlocked
        );
        assert_eq!(
            h.stdin[0], key2,
            "the transition seal opened in the new state"
        );
        assert_eq!(h.calls_to("zfs change-key").len(), 1);
        let plain = written(&h, tpm::SEALED_PROPERTY).unwrap();
        assert!(plain.starts_with("v2:"), "{plain}");
        let key3 = h.stdin.last().unwrap().clone();
        assert_eq!(
            unwrap(&written(&h, RECOVERY_PROPERTY).unwrap(), &rk).unwrap()[..],
            key3[..]
        );
        // The state before the update opens neither the new seal nor (its key rotated away)
        // anything the transition seal holds.
        h.pcr7 = 1;
        h.phase_over = false;
        assert!(h.tpm_unseal(&plain).is_err());
        h.pcr7 = 5;
        assert_eq!(
            open_payload(&h.tpm_unseal(&plain).unwrap(), 2, Some(42)).unwrap()[..],
            key3[..]
        );
    }
}
