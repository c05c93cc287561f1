//! The vault and its key: create or unlock `<pool>/vault`, bind the sealed key to the boot state
//! (PCR 7, Secure Boot's state and keys, whenever Secure Boot is on), re-seal a key sealed to a
//! weaker policy once the box boots where the stronger one is possible, and the recovery key:
//! 32 random bytes shown once on the console when the vault is made, which unwrap a copy of the
//! vault key kept on the vault itself, for a box whose TPM or board was replaced.
//!
//! The decisions (what to bind to, whether to re-seal, what the vault's properties say) are pure
//! and unit-tested; `ensure` and `recover` act through the [`Host`] seam (zfs and the TPM), so
//! they are unit-tested against its fake too.

use crate::bringup::log;
use crate::cmd::CmdError;
use crate::host::Host;
use crate::policy::{Encryption, Policy, WithoutTpm};
use crate::tpm::{self, Key};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
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
    #[error("recovery property is malformed: {0}")]
    Blob(String),
    #[error("no randomness: {0}")]
    Random(String),
    #[error(transparent)]
    Tpm(#[from] tpm::TpmError),
    #[error(transparent)]
    Cmd(#[from] CmdError),
}

/// The firmware's Secure Boot state, from efivarfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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

/// Whether a key sealed to `sealed` should be re-sealed to `wanted`: only to add a binding,
/// never to drop one (a weaker seal is an operator's decision, not something a boot infers).
pub fn should_reseal(sealed: &[u8], wanted: &[u8]) -> bool {
    wanted.iter().any(|p| !sealed.contains(p))
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

/// The vault key wrapped by `rk` (AES-256-GCM under a key derived by HKDF-SHA256 with a random
/// salt): `r1:<salt>:<nonce>:<ciphertext>`, base64 fields.
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

pub fn unwrap(blob: &str, rk: &RecoveryKey) -> Result<Key, VaultError> {
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

/// What became of the vault this boot.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Vault {
    Unlocked,
    /// Created unencrypted because the policy allows it without a TPM.
    Unencrypted,
    /// Exists but stays locked; nothing under it is touched.
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

/// The vault's properties, as `zfs get` gave them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub encryption: String,
    pub keystatus: String,
    pub sealed: Option<String>,
    pub recovery: Option<String>,
}

pub const PROPS: [&str; 4] = [
    "encryption",
    "keystatus",
    tpm::SEALED_PROPERTY,
    RECOVERY_PROPERTY,
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
        sealed: set(tpm::SEALED_PROPERTY),
        recovery: set(RECOVERY_PROPERTY),
    }
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

fn set_property(host: &mut dyn Host, name: &str, prop: &str, value: &str) -> Result<(), CmdError> {
    host.zfs(
        &["set".into(), format!("{prop}={value}"), name.into()],
        None,
    )
    .map(|_| ())
}

/// Writes the recovery banner to the console device `console` (`/dev/console` on the box), so it
/// is seen once and never lands in a log file (init copies every service's output to /run/log
/// and /persist/log).
pub fn show_on_console(console: &Path, vault: &str, key: &RecoveryKey) {
    let text = recovery_banner(vault, key);
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

pub fn recovery_banner(vault: &str, key: &RecoveryKey) -> String {
    format!(
        "\r\n======================== VAULT RECOVERY KEY ========================\r\n\
         {vault} can be unlocked without this box's TPM (a replaced board or TPM) with:\r\n\r\n    \
         {}\r\n\r\n\
         Write it down now and keep it away from the box: it is shown only this once and the\r\n\
         box does not keep it. To use it: `storagectl vault recover` (reads it on stdin).\r\n\
         ====================================================================\r\n",
        key.display()
    )
}

/// After the vault was unlocked with `key` (sealed as `obs` says): re-seal to `wanted` when that
/// adds a binding, and make a recovery key if the vault has none. Failures are logged; the vault
/// stays unlocked and the old seal stays in place.
fn maintain(host: &mut dyn Host, name: &str, key: &Key, obs: &Observed, wanted: &[u8]) {
    if let Some(blob) = &obs.sealed {
        match tpm::parse_blob(blob) {
            Ok(s) if should_reseal(&s.pcrs, wanted) => match reseal(host, name, key, wanted) {
                Ok(()) => log(format!(
                    "{name}: key re-sealed from {} to {}",
                    binding_text(&s.pcrs),
                    binding_text(wanted)
                )),
                Err(e) => log(format!(
                    "{name}: re-sealing to {} failed ({}); the key stays sealed to {}",
                    binding_text(wanted),
                    platform::chain(&e),
                    binding_text(&s.pcrs)
                )),
            },
            Ok(_) => {}
            Err(e) => log(format!("{name}: sealed key: {e}")),
        }
    }
    if obs.recovery.is_none() {
        let made = RecoveryKey::generate()
            .and_then(|rk| wrap(key, &rk).map(|w| (rk, w)))
            .and_then(|(rk, w)| {
                set_property(host, name, RECOVERY_PROPERTY, &w)?;
                Ok(rk)
            });
        match made {
            Ok(rk) => host.show_recovery(name, &rk),
            Err(e) => log(format!(
                "{name}: no recovery key made: {}",
                platform::chain(&e)
            )),
        }
    }
}

/// Seals `key` to `pcrs`, checks the new seal opens, then replaces the stored one (one property
/// write: a power cut leaves the old seal or the new one, both valid).
pub fn reseal(host: &mut dyn Host, name: &str, key: &Key, pcrs: &[u8]) -> Result<(), VaultError> {
    let blob = host.tpm_seal(key, pcrs)?;
    let back = host.tpm_unseal(&blob)?;
    if back[..] != key[..] {
        return Err(VaultError::Blob(
            "the new seal does not give the key back".into(),
        ));
    }
    set_property(host, name, tpm::SEALED_PROPERTY, &blob)?;
    Ok(())
}

fn load_key(host: &mut dyn Host, name: &str, key: &Key) -> Result<(), CmdError> {
    let args = ["load-key", "-L", "prompt", name].map(String::from);
    host.zfs(&args, Some(key)).map(|_| ())
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
    /// Locked: unseal its key with the TPM, load it, then keep the seal current.
    Unseal { blob: String },
    /// Locked, not sealed: load the key from the development keyfile.
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

/// Pure: the decision from the vault's observed properties (`Err`: `zfs get` failed for a reason
/// other than absence), whether the box has a TPM, and the policy.
pub fn decide(
    name: &str,
    obs: Result<Option<&Observed>, String>,
    tpm_present: bool,
    policy: &Policy,
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
    if obs.encryption == "off" {
        return Decision::Unencrypted;
    }
    if obs.keystatus == "available" {
        return Decision::Unlocked;
    }
    match &obs.sealed {
        Some(blob) => Decision::Unseal { blob: blob.clone() },
        None => Decision::Keyfile,
    }
}

/// Creates or unlocks `<pool>/vault` as [`decide`] says. Never destroys or recreates an existing
/// vault, and never creates one whose existence it could not establish.
pub fn ensure(host: &mut dyn Host, policy: &Policy, sb: SecureBoot) -> Vault {
    let name = format!("{}/vault", policy.pool.name);
    let wanted = wanted_pcrs(&policy.encryption, sb);
    let observed = observe(host, &name).map_err(|e| e.to_string());
    let obs = observed.as_ref().ok().and_then(Option::as_ref);
    let decision = decide(
        &name,
        observed.as_ref().map(Option::as_ref).map_err(Clone::clone),
        host.tpm_present(),
        policy,
    );
    let key = match decision {
        Decision::Unreadable { reason } => {
            log(format!("VAULT UNAVAILABLE: {reason}"));
            return Vault::Absent { reason };
        }
        Decision::CannotCreate { reason } => {
            log(format!("vault not created: {reason}"));
            return Vault::Absent { reason };
        }
        Decision::Create(how) => return create(host, policy, &name, how, &wanted),
        Decision::Unencrypted => {
            log(format!(
                "WARNING: {name} is NOT encrypted (created without a TPM under allow-unencrypted)"
            ));
            return Vault::Unencrypted;
        }
        Decision::Unlocked => return Vault::Unlocked,
        Decision::Keyfile => keyfile(policy),
        Decision::Unseal { blob } => host.tpm_unseal(&blob).map_err(|e| {
            let bound = tpm::parse_blob(&blob)
                .map(|s| format!(" (sealed to {})", binding_text(&s.pcrs)))
                .unwrap_or_default();
            format!(
                "{}{bound}; Secure Boot is {}",
                platform::chain(&e),
                sb.describe()
            )
        }),
    };
    let key = match key {
        Ok(k) => k,
        Err(reason) => {
            log(format!(
                "VAULT LOCKED: {name}: {reason}; its data is kept, nothing under it is changed{}",
                if obs.is_some_and(|o| o.recovery.is_some()) {
                    "; `storagectl vault recover` unlocks it with the recovery key"
                } else {
                    ""
                }
            ));
            return Vault::Locked { reason };
        }
    };
    if let Err(e) = load_key(host, &name, &key) {
        log(format!("VAULT LOCKED: {name}: {e}"));
        return Vault::Locked {
            reason: e.to_string(),
        };
    }
    log(format!("{name}: unlocked"));
    if let Some(o) = obs.filter(|o| o.sealed.is_some()) {
        maintain(host, &name, &key, o, &wanted);
    }
    Vault::Unlocked
}

/// A new key and what is stored beside it: (key, sealed blob, recovery key and its wrapped copy).
type Made = (Key, Option<String>, Option<(RecoveryKey, String)>);

/// The key for a new vault made `how`; `Err`: why none could be had.
fn new_key(
    host: &mut dyn Host,
    policy: &Policy,
    name: &str,
    how: NewKey,
    wanted: &[u8],
) -> Result<Made, String> {
    match how {
        NewKey::Tpm => {
            let sealed = tpm::generate()
                .and_then(|k| host.tpm_seal(&k, wanted).map(|b| (k, b)))
                .map_err(|e| format!("sealing the key failed: {}", platform::chain(&e)))?;
            let (k, b) = sealed;
            let rec = RecoveryKey::generate().and_then(|rk| wrap(&k, &rk).map(|w| (rk, w)));
            match rec {
                Ok(r) => Ok((k, Some(b), Some(r))),
                Err(e) => {
                    log(format!("{name}: no recovery key: {}", platform::chain(&e)));
                    Ok((k, Some(b), None))
                }
            }
        }
        NewKey::Keyfile => {
            let k = keyfile(policy)?;
            log("WARNING: no TPM: vault key from the development keyfile");
            Ok((k, None, None))
        }
        NewKey::Unencrypted => Err("no key for an unencrypted vault".into()),
    }
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
    let (key, sealed, recovery) = match new_key(host, policy, name, how, wanted) {
        Ok(m) => m,
        Err(reason) => {
            log(format!("vault not created: {reason}"));
            return Vault::Absent { reason };
        }
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
    if let Some(b) = &sealed {
        args.extend(["-o".into(), format!("{}={b}", tpm::SEALED_PROPERTY)]);
    }
    if let Some((_, w)) = &recovery {
        args.extend(["-o".into(), format!("{RECOVERY_PROPERTY}={w}")]);
    }
    args.push(name.into());
    if let Err(e) = host.zfs(&args, Some(&key)) {
        log(format!("vault not created: {}", platform::chain(&e)));
        return Vault::Absent {
            reason: e.to_string(),
        };
    }
    match &sealed {
        Some(_) => log(format!(
            "{name}: created, aes-256-gcm, key sealed to {}",
            binding_text(wanted)
        )),
        None => log(format!(
            "{name}: created, aes-256-gcm, key from the keyfile"
        )),
    }
    if let Some((rk, _)) = recovery {
        host.show_recovery(name, &rk);
    }
    Vault::Unlocked
}

/// What `<pool>/vault`'s key is sealed to now, in words (`None`: no vault, or not TPM-sealed).
pub fn binding_of(host: &mut dyn Host, pool: &str) -> Option<String> {
    let obs = observe(host, &format!("{pool}/vault")).ok()??;
    tpm::parse_blob(obs.sealed.as_deref()?)
        .ok()
        .map(|s| binding_text(&s.pcrs))
}

/// The vault's boot binding as `storagectl status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Binding {
    pub secure_boot: SecureBoot,
    /// What the key is sealed to (`None`: not sealed to a TPM).
    pub sealed_to: Option<String>,
    pub pcrs: Option<Vec<u8>>,
    pub recovery_key: bool,
}

/// Pure: the binding from the vault's properties and the Secure Boot state.
pub fn binding(obs: Option<&Observed>, sb: SecureBoot) -> Binding {
    let pcrs = obs
        .and_then(|o| o.sealed.as_deref())
        .and_then(|b| tpm::parse_blob(b).ok())
        .map(|s| s.pcrs);
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
    /// What the key is sealed to now, on this box's TPM (`None`: no TPM here, not re-sealed).
    pub sealed_to: Option<String>,
}

/// Unlocks `<pool>/vault` with the recovery key and seals its key to this box's TPM (under the
/// current Secure Boot state), so the next boot unlocks by itself.
pub fn recover(
    host: &mut dyn Host,
    pool: &str,
    rk: &RecoveryKey,
    enc: &Encryption,
    sb: SecureBoot,
) -> Result<Recovered, VaultError> {
    let name = format!("{pool}/vault");
    let obs =
        observe(host, &name)?.ok_or_else(|| VaultError::NoRecovery(format!("{name} (absent)")))?;
    if obs.keystatus == "available" {
        return Ok(Recovered {
            vault: name,
            unlocked: false,
            sealed_to: None,
        });
    }
    let blob = obs
        .recovery
        .as_deref()
        .ok_or_else(|| VaultError::NoRecovery(name.clone()))?;
    let key = unwrap(blob, rk)?;
    load_key(host, &name, &key)?;
    if let Err(e) = host.zfs(&["mount".into(), "-a".into()], None) {
        log(format!("zfs mount -a: {e}"));
    }
    let wanted = wanted_pcrs(enc, sb);
    let sealed_to = if host.tpm_present() {
        reseal(host, &name, &key, &wanted)?;
        Some(binding_text(&wanted))
    } else {
        None
    };
    Ok(Recovered {
        vault: name,
        unlocked: true,
        sealed_to,
    })
}

/// Makes a new recovery key for an unlocked vault (its key unsealed from this TPM), replacing the
/// old one; the caller shows it.
pub fn new_recovery_key(host: &mut dyn Host, pool: &str) -> Result<RecoveryKey, VaultError> {
    let name = format!("{pool}/vault");
    let obs =
        observe(host, &name)?.ok_or_else(|| VaultError::NoRecovery(format!("{name} (absent)")))?;
    let blob = obs.sealed.as_deref().ok_or_else(|| {
        VaultError::NoRecovery(format!("{name} (its key is not sealed to a TPM)"))
    })?;
    let key = host.tpm_unseal(blob)?;
    let rk = RecoveryKey::generate()?;
    set_property(host, &name, RECOVERY_PROPERTY, &wrap(&key, &rk)?)?;
    Ok(rk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vault_that_cannot_be_read_is_never_created_and_an_existing_one_never_remade() {
        let mut p = Policy::builtin();
        let d = |obs: Result<Option<&Observed>, String>, tpm: bool, p: &Policy| {
            decide("persist/vault", obs, tpm, p)
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
        // Present: unlocked as it was made; a locked one whose TPM is gone is still unsealed
        // (and stays locked when that fails), never recreated.
        let sealed = Observed {
            encryption: "aes-256-gcm".into(),
            keystatus: "unavailable".into(),
            sealed: Some("v1:blob".into()),
            recovery: None,
        };
        for tpm in [true, false] {
            assert_eq!(
                d(Ok(Some(&sealed)), tpm, &p),
                Decision::Unseal {
                    blob: "v1:blob".into()
                }
            );
        }
        let plain = Observed {
            sealed: None,
            ..sealed.clone()
        };
        assert_eq!(d(Ok(Some(&plain)), false, &p), Decision::Keyfile);
        let open = Observed {
            keystatus: "available".into(),
            ..sealed.clone()
        };
        assert_eq!(d(Ok(Some(&open)), true, &p), Decision::Unlocked);
        let off = Observed {
            encryption: "off".into(),
            keystatus: "-".into(),
            ..Observed::default()
        };
        assert_eq!(d(Ok(Some(&off)), true, &p), Decision::Unencrypted);
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
    fn the_seal_binds_pcr7_under_secure_boot_and_only_ever_gets_stronger() {
        assert_eq!(wanted_pcrs(&enc(&[]), SecureBoot::On), vec![7]);
        assert_eq!(wanted_pcrs(&enc(&[11, 7]), SecureBoot::On), vec![7, 11]);
        assert!(wanted_pcrs(&enc(&[]), SecureBoot::Off).is_empty());
        assert!(wanted_pcrs(&enc(&[]), SecureBoot::SetupMode).is_empty());
        let mut opt_out = enc(&[]);
        opt_out.bind_secure_boot = false;
        assert!(wanted_pcrs(&opt_out, SecureBoot::On).is_empty());
        // Sealed the old way (no PCRs), booted with Secure Boot on: re-seal.
        assert!(should_reseal(&[], &[7]));
        assert!(!should_reseal(&[7], &[7]));
        // Never weaker: a PCR-7 seal is kept even where 7 is not wanted.
        assert!(!should_reseal(&[7], &[]));
        assert!(should_reseal(&[7], &[7, 11]));
        assert!(binding_text(&[7]).contains("Secure Boot"));
        assert!(binding_text(&[]).contains("no PCRs"));
        assert!(binding_text(&[7, 11]).contains("7, 11"));
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
        let w = wrap(&vault_key, &rk).unwrap();
        assert!(w.starts_with("r1:"));
        assert_eq!(unwrap(&w, &again).unwrap()[..], vault_key[..]);
        assert_ne!(w, wrap(&vault_key, &rk).unwrap(), "fresh salt and nonce");
        let other = RecoveryKey::from_bytes([0x5b; 32]);
        assert!(matches!(
            unwrap(&w, &other),
            Err(VaultError::WrongRecoveryKey)
        ));
        // A flipped byte of the wrapped key is caught by the tag.
        let mut bad = w.clone().into_bytes();
        let n = bad.len() - 3;
        bad[n] = if bad[n] == b'A' { b'B' } else { b'A' };
        assert!(unwrap(&String::from_utf8(bad).unwrap(), &rk).is_err());
        assert!(matches!(
            RecoveryKey::parse("cbdefghi"),
            Err(VaultError::BadRecoveryKey(_))
        ));
        assert!(RecoveryKey::parse(&shown.replace('c', "a")).is_err() || !shown.contains('c'));
        assert!(unwrap("r2:a:b:c", &rk).is_err());
        assert!(recovery_banner("persist/vault", &rk).contains(&shown));
    }

    #[test]
    fn vault_properties_and_only_a_missing_dataset_counts_as_missing() {
        let o = parse_props(
            "encryption\taes-256-gcm\nkeystatus\tunavailable\norg.lfedge.eve:sealed-key\tv1:7:AA==:AA==\norg.lfedge.eve:recovery\t-\n",
        );
        assert_eq!(o.keystatus, "unavailable");
        assert_eq!(o.sealed.as_deref(), Some("v1:7:AA==:AA=="));
        assert_eq!(o.recovery, None);
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
    const ABSENT: &str = "cannot open 'persist/vault': dataset does not exist";

    /// `zfs get` of the vault as a locked, sealed one with these properties.
    fn vault_props(h: &mut FakeHost, sealed: &str, recovery: Option<&str>) {
        let out = format!(
            "encryption\taes-256-gcm\nkeystatus\tunavailable\n{}\t{sealed}\n{RECOVERY_PROPERTY}\t{}\n",
            tpm::SEALED_PROPERTY,
            recovery.unwrap_or("-")
        );
        h.answer(GET, Ok(&out));
    }

    /// The value `zfs create`/`zfs set` gave `prop` in the recorded calls (the last one).
    fn written(h: &FakeHost, prop: &str) -> Option<String> {
        h.calls.iter().rev().find_map(|c| {
            c.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{prop}=")).map(String::from))
        })
    }

    #[test]
    fn a_new_vault_gets_a_tpm_sealed_key_on_stdin_and_a_recovery_key_shown_once() {
        let mut h = FakeHost::default();
        h.answer(GET, Err(ABSENT));
        let v = ensure(&mut h, &Policy::builtin(), SecureBoot::On);
        assert_eq!(v, Vault::Unlocked);
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
        // The key went on stdin only; the recovery key shown once opens the wrapped copy.
        let key = h.stdin[0].clone();
        assert!(!h.calls.iter().any(|c| c.contains(&B64.encode(&key))));
        assert_eq!(h.shown.len(), 1);
        let rk = RecoveryKey::parse(&h.shown[0]).unwrap();
        let wrapped = written(&h, RECOVERY_PROPERTY).unwrap();
        assert_eq!(unwrap(&wrapped, &rk).unwrap()[..], key[..]);
        // What is stored is a seal this TPM opens to the same key.
        let blob = written(&h, tpm::SEALED_PROPERTY).unwrap();
        assert_eq!(h.tpm_unseal(&blob).unwrap()[..], key[..]);
    }

    #[test]
    fn an_unreadable_or_uncreatable_vault_is_left_exactly_as_it_is() {
        for (answer, tpm, reason) in [
            (Err("pool I/O is currently suspended"), true, "suspended"),
            (Err(ABSENT), false, "requires one"),
        ] {
            let mut h = FakeHost {
                tpm,
                ..FakeHost::default()
            };
            h.answer(GET, answer);
            let v = ensure(&mut h, &Policy::builtin(), SecureBoot::On);
            assert!(
                matches!(&v, Vault::Absent { reason: r } if r.contains(reason)),
                "{v:?}"
            );
            assert_eq!(h.calls.len(), 1, "only the read: {:?}", h.calls);
        }
    }

    #[test]
    fn a_vault_whose_seal_no_longer_opens_stays_locked_and_untouched() {
        let mut h = FakeHost::default();
        let blob = h.tpm_seal(&[3u8; 32], &[7]).unwrap();
        vault_props(&mut h, &blob, Some("r1:a:b:c"));
        h.calls.clear();
        // Secure Boot turned off (PCR 7 moved), then a cleared TPM: locked each time, never
        // loaded, re-sealed, re-keyed or recreated.
        for change in [
            |h: &mut FakeHost| h.pcr7 = 2,
            |h: &mut FakeHost| h.sealed.clear(),
        ] {
            change(&mut h);
            let v = ensure(&mut h, &Policy::builtin(), SecureBoot::Off);
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
    fn unlocking_loads_the_unsealed_key_and_only_strengthens_the_seal() {
        // Sealed to no PCRs and no recovery key yet; this boot has Secure Boot on.
        let mut h = FakeHost::default();
        let blob = h.tpm_seal(&[5u8; 32], &[]).unwrap();
        vault_props(&mut h, &blob, None);
        h.calls.clear();
        assert_eq!(
            ensure(&mut h, &Policy::builtin(), SecureBoot::On),
            Vault::Unlocked
        );
        assert_eq!(h.stdin, [vec![5u8; 32]], "load-key got the unsealed key");
        assert_eq!(
            h.calls_to("zfs load-key"),
            ["zfs load-key -L prompt persist/vault <stdin 32 bytes>"]
        );
        // Re-sealed to PCR 7 (checked to open before it replaced the old seal), and a recovery
        // key made and shown.
        let new = written(&h, tpm::SEALED_PROPERTY).unwrap();
        assert!(new.starts_with("v1:7:"), "{new}");
        assert_eq!(h.tpm_unseal(&new).unwrap()[..], [5u8; 32]);
        assert_eq!(h.shown.len(), 1);

        // Sealed to PCR 7, booted with Secure Boot off: no weaker re-seal, no new recovery key.
        let mut h = FakeHost::default();
        let blob = h.tpm_seal(&[5u8; 32], &[7]).unwrap();
        vault_props(&mut h, &blob, Some("r1:a:b:c"));
        h.calls.clear();
        assert_eq!(
            ensure(&mut h, &Policy::builtin(), SecureBoot::Off),
            Vault::Unlocked
        );
        assert!(h.calls_to("tpm-seal").is_empty() && h.calls_to("zfs set").is_empty());
        assert!(h.shown.is_empty());
    }

    #[test]
    fn a_failed_load_or_reseal_never_loses_the_working_seal() {
        let mut h = FakeHost::default();
        let blob = h.tpm_seal(&[5u8; 32], &[]).unwrap();
        vault_props(&mut h, &blob, Some("r1:a:b:c"));
        h.fail = Some("zfs load-key");
        assert!(matches!(
            ensure(&mut h, &Policy::builtin(), SecureBoot::On),
            Vault::Locked { .. }
        ));
        assert!(h.calls_to("tpm-seal").len() == 1 && h.calls_to("zfs set").is_empty());
        // The re-seal's seal fails: unlocked all the same, the old seal kept.
        h.calls.clear();
        h.fail = Some("tpm-seal");
        assert_eq!(
            ensure(&mut h, &Policy::builtin(), SecureBoot::On),
            Vault::Unlocked
        );
        assert!(h.calls_to("zfs set").is_empty(), "{:?}", h.calls);
    }

    #[test]
    fn recovery_opens_only_with_the_right_key_then_seals_to_this_tpm() {
        let rk = RecoveryKey::from_bytes([0x11; 32]);
        let wrapped = wrap(&[8u8; 32], &rk).unwrap();
        let mut h = FakeHost::default();
        vault_props(&mut h, "v1:7:AAAAAQ==:AA==", Some(&wrapped));
        let enc = Policy::builtin().encryption;
        let wrong = RecoveryKey::from_bytes([0x12; 32]);
        assert!(matches!(
            recover(&mut h, "persist", &wrong, &enc, SecureBoot::On),
            Err(VaultError::WrongRecoveryKey)
        ));
        assert!(h.calls_to("zfs load-key").is_empty() && h.calls_to("tpm").is_empty());
        let r = recover(&mut h, "persist", &rk, &enc, SecureBoot::On).unwrap();
        assert!(r.unlocked && r.sealed_to.as_deref() == Some(binding_text(&[7]).as_str()));
        assert_eq!(h.stdin, [vec![8u8; 32]]);
        let sealed = written(&h, tpm::SEALED_PROPERTY).unwrap();
        assert_eq!(h.tpm_unseal(&sealed).unwrap()[..], [8u8; 32]);
        // No vault at all: nothing to recover, nothing made.
        let mut h = FakeHost::default();
        h.answer(GET, Err(ABSENT));
        assert!(matches!(
            recover(&mut h, "persist", &rk, &enc, SecureBoot::On),
            Err(VaultError::NoRecovery(_))
        ));
        assert_eq!(h.calls.len(), 1);
    }
}
