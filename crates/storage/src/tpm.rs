//! The vault key, sealed to the TPM. The key is 32 bytes from the kernel RNG; the TPM seals it as a
//! keyed-hash object under a primary key it re-derives from its owner seed, optionally bound to
//! PCRs. Only the sealed blobs are stored (as a property of the vault dataset); the raw key exists
//! only in memory and on the pipe to `zfs`.

use base64::Engine;
use platform::Roots;
use std::path::PathBuf;
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{KeyHandle, ObjectHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Digest, KeyedHashScheme, PcrSelectionList, PcrSelectionListBuilder, PcrSlot, Private, Public,
    PublicBuilder, PublicKeyedHashParameters, RsaExponent, SensitiveData, SymmetricDefinition,
    SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::{DeviceConfig, TctiNameConf};
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::Context;

/// The TPM's resource-manager device, under the dev root.
pub const DEVICE: &str = "tpmrm0";
/// The vault dataset property holding the sealed key (base64 of public and private blobs).
pub const SEALED_PROPERTY: &str = "org.lfedge.eve:sealed-key";
pub const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum TpmError {
    #[error("no TPM at {0}")]
    Absent(String),
    #[error("TPM: {op}")]
    Tss {
        op: &'static str,
        #[source]
        source: tss_esapi::Error,
    },
    #[error("the sealed key could not be loaded by this TPM (a different or cleared TPM?)")]
    WrongTpm(#[source] tss_esapi::Error),
    #[error("the TPM refused to unseal the key (PCR values changed?)")]
    Policy(#[source] tss_esapi::Error),
    #[error("sealed key property is malformed: {0}")]
    Blob(String),
    #[error("PCR {0} does not exist")]
    Pcr(u8),
    #[error("no randomness from the kernel: {0}")]
    Random(String),
}

fn tss(op: &'static str) -> impl FnOnce(tss_esapi::Error) -> TpmError {
    move |source| TpmError::Tss { op, source }
}

/// The box's TPM, reached through its resource manager (`/dev/tpmrm0` on the box).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tpm {
    pub device: PathBuf,
}

impl Tpm {
    pub fn at(roots: &Roots) -> Tpm {
        Tpm {
            device: roots.dev.join(DEVICE),
        }
    }

    pub fn present(&self) -> bool {
        self.device.exists()
    }

    fn context(&self) -> Result<Context, TpmError> {
        if !self.present() {
            return Err(TpmError::Absent(self.device.display().to_string()));
        }
        let dev: DeviceConfig = self
            .device
            .to_str()
            .unwrap_or_default()
            .parse()
            .map_err(tss("device name"))?;
        Context::new(TctiNameConf::Device(dev)).map_err(tss("open"))
    }
}

/// The storage primary key; the same template always yields the same key on the same TPM.
fn primary(ctx: &mut Context) -> Result<KeyHandle, TpmError> {
    let public = tss_esapi::utils::create_restricted_decryption_rsa_public(
        SymmetricDefinitionObject::AES_128_CFB,
        RsaKeyBits::Rsa2048,
        RsaExponent::default(),
    )
    .map_err(tss("primary template"))?;
    ctx.execute_with_nullauth_session(|c| {
        c.create_primary(Hierarchy::Owner, public, None, None, None, None)
    })
    .map(|r| r.key_handle)
    .map_err(tss("create primary"))
}

fn selection(pcrs: &[u8]) -> Result<PcrSelectionList, TpmError> {
    let slots = pcrs
        .iter()
        .map(|&n| {
            if n > 23 {
                Err(TpmError::Pcr(n))
            } else {
                PcrSlot::try_from(1u32 << n).map_err(|_| TpmError::Pcr(n))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    PcrSelectionListBuilder::new()
        .with_selection(HashingAlgorithm::Sha256, &slots)
        .build()
        .map_err(tss("PCR selection"))
}

/// A policy session (or trial session) that has run PolicyPCR over the current values.
fn pcr_session(
    ctx: &mut Context,
    pcrs: &[u8],
    kind: SessionType,
) -> Result<PolicySession, TpmError> {
    let s = ctx
        .start_auth_session(
            None,
            None,
            None,
            kind,
            SymmetricDefinition::AES_128_CFB,
            HashingAlgorithm::Sha256,
        )
        .map_err(tss("start session"))?
        .ok_or_else(|| TpmError::Blob("no session handle".into()))?;
    let ps = PolicySession::try_from(s).map_err(tss("policy session"))?;
    ctx.policy_pcr(ps, Digest::default(), selection(pcrs)?)
        .map_err(tss("PolicyPCR"))?;
    Ok(ps)
}

/// A fresh vault key from the kernel RNG.
pub fn generate() -> Result<Key, TpmError> {
    let mut key = Key::new(vec![0u8; KEY_LEN]);
    getrandom::fill(&mut key[..]).map_err(|e| TpmError::Random(e.to_string()))?;
    Ok(key)
}

/// Seals `key` under this TPM's storage key, bound to the current values of `pcrs`; returns the
/// blob to store.
pub fn seal(tpm: &Tpm, key: &[u8], pcrs: &[u8]) -> Result<String, TpmError> {
    let mut ctx = tpm.context()?;
    let parent = primary(&mut ctx)?;
    let auth_policy = if pcrs.is_empty() {
        Digest::default()
    } else {
        let ps = pcr_session(&mut ctx, pcrs, SessionType::Trial)?;
        let d = ctx.policy_get_digest(ps).map_err(tss("policy digest"))?;
        ctx.flush_context(ObjectHandle::from(tss_esapi::handles::SessionHandle::from(
            ps,
        )))
        .map_err(tss("flush session"))?;
        d
    };
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_no_da(true)
        .with_user_with_auth(pcrs.is_empty())
        .build()
        .map_err(tss("attributes"))?;
    let public = PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::KeyedHash)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_auth_policy(auth_policy)
        .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
        .with_keyed_hash_unique_identifier(Digest::default())
        .build()
        .map_err(tss("sealed object template"))?;
    let data = SensitiveData::try_from(key.to_vec()).map_err(tss("sensitive data"))?;
    let created = ctx
        .execute_with_nullauth_session(|c| c.create(parent, public, None, Some(data), None, None))
        .map_err(tss("seal"))?;
    let _ = ctx.flush_context(parent.into());
    let pub_bytes = created
        .out_public
        .marshall()
        .map_err(tss("marshal public"))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(format!(
        "v1:{}:{}:{}",
        pcrs.iter().map(u8::to_string).collect::<Vec<_>>().join(","),
        b64.encode(pub_bytes),
        b64.encode(created.out_private.value())
    ))
}

/// The parts of a stored sealed key.
#[derive(Debug, PartialEq)]
pub struct Sealed {
    pub pcrs: Vec<u8>,
    pub public: Vec<u8>,
    pub private: Vec<u8>,
}

pub fn parse_blob(blob: &str) -> Result<Sealed, TpmError> {
    let parts: Vec<&str> = blob.trim().split(':').collect();
    let [ver, pcrs, public, private] = parts.as_slice() else {
        return Err(TpmError::Blob(format!(
            "expected 4 fields, found {}",
            parts.len()
        )));
    };
    if *ver != "v1" {
        return Err(TpmError::Blob(format!("unknown version `{ver}`")));
    }
    let pcrs = pcrs
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u8>()
                .map_err(|_| TpmError::Blob(format!("bad PCR `{s}`")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let dec = |s: &str| b64.decode(s).map_err(|e| TpmError::Blob(e.to_string()));
    Ok(Sealed {
        pcrs,
        public: dec(public)?,
        private: dec(private)?,
    })
}

/// A raw vault key: wiped from memory when dropped.
pub type Key = zeroize::Zeroizing<Vec<u8>>;

/// Unseals the key from a stored blob with this box's TPM.
pub fn unseal(tpm: &Tpm, blob: &str) -> Result<Key, TpmError> {
    let Sealed {
        pcrs,
        public,
        private,
    } = parse_blob(blob)?;
    let public = Public::unmarshall(&public).map_err(|e| TpmError::Blob(e.to_string()))?;
    let private = Private::try_from(private).map_err(|e| TpmError::Blob(e.to_string()))?;
    let mut ctx = tpm.context()?;
    let parent = primary(&mut ctx)?;
    let obj = ctx
        .execute_with_nullauth_session(|c| c.load(parent, private, public))
        .map_err(TpmError::WrongTpm)?;
    let _ = ctx.flush_context(parent.into());
    let data = if pcrs.is_empty() {
        ctx.execute_with_nullauth_session(|c| c.unseal(obj.into()))
            .map_err(TpmError::Policy)?
    } else {
        let ps = pcr_session(&mut ctx, &pcrs, SessionType::Policy)?;
        let r = ctx
            .execute_with_session(Some(AuthSession::from(ps)), |c| c.unseal(obj.into()))
            .map_err(TpmError::Policy);
        let _ = ctx.flush_context(ObjectHandle::from(tss_esapi::handles::SessionHandle::from(
            ps,
        )));
        r?
    };
    let _ = ctx.flush_context(obj.into());
    Ok(Key::new(data.value().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_format_round_trips_and_rejects_garbage() {
        let s = parse_blob("v1:7,11:AAE=:AgM=").unwrap();
        assert_eq!(
            s,
            Sealed {
                pcrs: vec![7, 11],
                public: vec![0, 1],
                private: vec![2, 3]
            }
        );
        assert!(parse_blob("v1::AAE=:AgM=").unwrap().pcrs.is_empty());
        assert!(matches!(parse_blob("v2::a:b"), Err(TpmError::Blob(m)) if m.contains("v2")));
        assert!(parse_blob("v1:x:AA==:AA==").is_err());
        assert!(parse_blob("v1:7:***:AA==").is_err());
        assert!(parse_blob("nonsense").is_err());
        assert!(matches!(selection(&[24]), Err(TpmError::Pcr(24))));
    }
}
