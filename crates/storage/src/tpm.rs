//! The vault key, sealed to the TPM. The TPM seals it as a keyed-hash object whose policy binds it
//! to PCRs: the boot-state PCRs the policy asks for (PCR 7 under Secure Boot) and always the
//! boot-phase PCR, which storage-init extends once it has unsealed, so no later process of the same
//! boot can unseal again. When boot-state PCRs are bound, the parent key itself may only be used
//! in that boot state: nothing booted otherwise (a live USB, Secure Boot off) can create or load a
//! sealed object under it, so a seal the vault presents cannot have been forged off the box.
//! Every seal is also bound to the rollback PCR holding the value stage 1 extends only when the
//! booted slot meets the rollback floor ([`platform::rollback`]): an older initramfs, which knows
//! nothing of the floor, never gets the key.
//! Every command that carries the key travels over a salted session with parameter encryption.
//! Only the sealed blobs are stored (as properties of the vault dataset).

pub(crate) use crate::tpmerr::tss;
pub use crate::tpmerr::TpmError;
use base64::Engine;
use platform::rollback;
use platform::Roots;
use sha2::Digest as _;
use std::path::PathBuf;
use tss_esapi::attributes::{ObjectAttributesBuilder, SessionAttributesBuilder};
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{KeyHandle, ObjectHandle, PcrHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Digest, DigestList, DigestValues, KeyedHashScheme, PcrSelectionList, PcrSelectionListBuilder,
    PcrSlot, Private, Public, PublicBuilder, PublicKeyRsa, PublicKeyedHashParameters,
    PublicRsaParametersBuilder, RsaExponent, SensitiveData, SymmetricDefinition,
    SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::{DeviceConfig, TctiNameConf};
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::Context;

/// The TPM's resource-manager device, under the dev root.
pub const DEVICE: &str = "tpmrm0";
/// The vault dataset property holding the sealed key.
pub const SEALED_PROPERTY: &str = "org.lfedge.eve:sealed-key";
pub const KEY_LEN: usize = 32;
/// The boot-phase PCR (as Talos uses PCR 11): zero until storage-init has unsealed the vault key,
/// then extended, so the seal, bound to its zero value, no longer opens in this boot.
pub const PHASE_PCR: u8 = 11;
/// What storage-init extends the phase PCR with.
pub const PHASE_UNLOCKED: &[u8] = b"org.lfedge.eve: vault unlock phase over";

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

    pub(crate) fn context(&self) -> Result<Context, TpmError> {
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

/// Which template a seal's parent was made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parent {
    /// Every seal made now. An ungated parent (no boot-state gate: authorized by its empty
    /// authValue) is exempt from dictionary-attack protection (`noDA`); a gated one is used only
    /// through its PCR policy, which DA never counts, and keeps the template earlier releases
    /// know, so a fallback to one of them still opens its seals.
    Current,
    /// The ungated parent before `noDA`: its authValue made each boot a DA-protected use, so the
    /// TPM counted every power cut as a failed authorization at the next startup, and after a
    /// few (swtpm: 3) refused to load the parent at all until its lockout ran out: a vault
    /// locked by power cuts alone. Seals made under it are still opened.
    Legacy,
}

/// A storage primary key; the same template always yields the same key on the same TPM. With a
/// `gate` policy digest, the key can only be used (to create or load a child) by a session that
/// satisfies that policy: anyone may re-derive it, nobody outside the gated boot state can use it.
/// No PIN protects it (its authValue is empty), so dictionary-attack protection would guard
/// nothing and only count power cuts: the current ungated template is exempt (`noDA`), as the
/// usual storage root key template is (fixedTPM, fixedParent, sensitiveDataOrigin,
/// userWithAuth, noDA, restricted, decrypt).
fn primary(ctx: &mut Context, gate: Option<&Digest>, kind: Parent) -> Result<KeyHandle, TpmError> {
    let public = primary_template(gate, kind)?;
    ctx.execute_with_nullauth_session(|c| {
        c.create_primary(Hierarchy::Owner, public, None, None, None, None)
    })
    .map(|r| r.key_handle)
    .map_err(tss("create primary"))
}

fn primary_template(gate: Option<&Digest>, kind: Parent) -> Result<Public, TpmError> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_no_da(kind == Parent::Current && gate.is_none())
        .with_user_with_auth(gate.is_none())
        .with_decrypt(true)
        .with_restricted(true)
        .build()
        .map_err(tss("primary attributes"))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Rsa)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_auth_policy(gate.cloned().unwrap_or_default())
        .with_rsa_parameters(
            PublicRsaParametersBuilder::new_restricted_decryption_key(
                SymmetricDefinitionObject::AES_128_CFB,
                RsaKeyBits::Rsa2048,
                RsaExponent::default(),
            )
            .build()
            .map_err(tss("primary parameters"))?,
        )
        .with_rsa_unique_identifier(PublicKeyRsa::default())
        .build()
        .map_err(tss("primary template"))
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

/// The current SHA-256 values of `pcrs`, in ascending order.
fn read_pcrs(ctx: &mut Context, pcrs: &[u8]) -> Result<Vec<Vec<u8>>, TpmError> {
    let mut sorted = pcrs.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = Vec::new();
    // PCR_Read returns at most 8 values per call.
    for chunk in sorted.chunks(8) {
        let (_, _, vals) = ctx.pcr_read(selection(chunk)?).map_err(tss("PCR read"))?;
        if vals.len() != chunk.len() {
            return Err(TpmError::Blob(format!(
                "the TPM returned {} of PCRs {chunk:?}",
                vals.len()
            )));
        }
        out.extend(vals.value().iter().map(|d| d.value().to_vec()));
    }
    Ok(out)
}

/// Pure: the `pcrDigest` of TPM2_PolicyPCR over `values` (in ascending PCR order).
pub fn pcr_digest(values: &[Vec<u8>]) -> Vec<u8> {
    let mut h = sha2::Sha256::new();
    for v in values {
        h.update(v);
    }
    h.finalize().to_vec()
}

/// The values a seal to `pcrs` is bound to: the current ones, zero for the phase PCR (the value
/// it has until storage-init ends the unlock phase), so a seal made later in the boot, by
/// `storagectl`, still opens at the next boot; and for the rollback PCR the value stage 1 gives
/// it when the floor the TPM holds now is met, counted from its origins (or after it extends
/// `measured`: a seal replacement's, for the origins it is about to record). Never the older
/// value, nor one for no floor, unless asked by `measured`.
fn expected(
    ctx: &mut Context,
    pcrs: &[u8],
    measured: Option<&[u8]>,
) -> Result<Vec<Vec<u8>>, TpmError> {
    let mut sorted = pcrs.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let current = read_pcrs(ctx, &sorted)?;
    let checked = match (sorted.contains(&rollback::PCR), measured) {
        (false, _) => Vec::new(),
        (true, Some(m)) => rollback::pcr_after(m).to_vec(),
        (true, None) => match crate::nv::floor_in(ctx)? {
            rollback::Floor::Present { keys: Some(k), .. } => {
                rollback::pcr_after(&rollback::checked(&k.origins)).to_vec()
            }
            rollback::Floor::Present { keys: None, .. } => {
                return Err(TpmError::NoFloor(
                    "the counters' origins are not recorded yet".into(),
                ))
            }
            rollback::Floor::Absent(why) => return Err(TpmError::NoFloor(why)),
            rollback::Floor::NoTpm => return Err(TpmError::NoFloor("no TPM".into())),
        },
    };
    Ok(sorted
        .iter()
        .zip(current)
        .map(|(&n, v)| match n {
            PHASE_PCR => vec![0u8; 32],
            n if n == rollback::PCR => checked.clone(),
            _ => v,
        })
        .collect())
}

/// PCR 7's value now.
pub fn pcr7(tpm: &Tpm) -> Result<Vec<u8>, TpmError> {
    let mut ctx = tpm.context()?;
    Ok(read_pcrs(&mut ctx, &[7])?.remove(0))
}

/// The rollback PCR's value now.
pub fn rollback_pcr(tpm: &Tpm) -> Result<Vec<u8>, TpmError> {
    let mut ctx = tpm.context()?;
    Ok(read_pcrs(&mut ctx, &[rollback::PCR])?.remove(0))
}

/// Starts a session salted with `salt` (so its session key never crosses the bus), optionally
/// flagged for command (`decrypt`) or response (`encrypt`) parameter encryption.
fn session(
    ctx: &mut Context,
    salt: KeyHandle,
    kind: SessionType,
    decrypt: bool,
    encrypt: bool,
) -> Result<AuthSession, TpmError> {
    let s = ctx
        .start_auth_session(
            Some(salt),
            None,
            None,
            kind,
            SymmetricDefinition::AES_128_CFB,
            HashingAlgorithm::Sha256,
        )
        .map_err(tss("start session"))?
        .ok_or_else(|| TpmError::Blob("no session handle".into()))?;
    let (attrs, mask) = SessionAttributesBuilder::new()
        .with_continue_session(true)
        .with_decrypt(decrypt)
        .with_encrypt(encrypt)
        .build();
    ctx.tr_sess_set_attributes(s, attrs, mask)
        .map_err(tss("session attributes"))?;
    Ok(s)
}

/// A policy session that has run PolicyPCR over the current values of `pcrs`.
fn pcr_session(
    ctx: &mut Context,
    salt: KeyHandle,
    pcrs: &[u8],
    decrypt: bool,
    encrypt: bool,
) -> Result<AuthSession, TpmError> {
    let s = session(ctx, salt, SessionType::Policy, decrypt, encrypt)?;
    let ps = PolicySession::try_from(s).map_err(tss("policy session"))?;
    ctx.policy_pcr(ps, Digest::default(), selection(pcrs)?)
        .map_err(tss("PolicyPCR"))?;
    Ok(s)
}

/// The policy digest of PolicyPCR over `pcrs` holding `values`, from a trial session.
fn trial_digest(ctx: &mut Context, pcrs: &[u8], values: &[Vec<u8>]) -> Result<Digest, TpmError> {
    let s = ctx
        .start_auth_session(
            None,
            None,
            None,
            SessionType::Trial,
            SymmetricDefinition::AES_128_CFB,
            HashingAlgorithm::Sha256,
        )
        .map_err(tss("start trial session"))?
        .ok_or_else(|| TpmError::Blob("no session handle".into()))?;
    let ps = PolicySession::try_from(s).map_err(tss("policy session"))?;
    let want = Digest::try_from(pcr_digest(values)).map_err(tss("PCR digest"))?;
    let r = ctx
        .policy_pcr(ps, want, selection(pcrs)?)
        .map_err(tss("PolicyPCR"))
        .and_then(|()| ctx.policy_get_digest(ps).map_err(tss("policy digest")));
    flush_session(ctx, s);
    r
}

fn digest_list(branches: &[Digest]) -> Result<DigestList, TpmError> {
    let mut l = DigestList::new();
    for d in branches {
        l.add(d.clone()).map_err(tss("PolicyOR branches"))?;
    }
    Ok(l)
}

/// Runs PolicyOR over `branches` in policy session `s` (nothing without branches).
fn or_step(ctx: &mut Context, s: AuthSession, branches: Option<&[Digest]>) -> Result<(), TpmError> {
    let Some(b) = branches else { return Ok(()) };
    let ps = PolicySession::try_from(s).map_err(tss("policy session"))?;
    let r = ctx.policy_or(ps, digest_list(b)?).map_err(tss("PolicyOR"));
    if r.is_err() {
        flush_session(ctx, s);
    }
    r
}

/// The policy digest of PolicyOR over `branches`, from a trial session.
fn or_digest(ctx: &mut Context, branches: &[Digest]) -> Result<Digest, TpmError> {
    let s = ctx
        .start_auth_session(
            None,
            None,
            None,
            SessionType::Trial,
            SymmetricDefinition::AES_128_CFB,
            HashingAlgorithm::Sha256,
        )
        .map_err(tss("start trial session"))?
        .ok_or_else(|| TpmError::Blob("no session handle".into()))?;
    let ps = PolicySession::try_from(s).map_err(tss("policy session"))?;
    let r = digest_list(branches)
        .and_then(|l| ctx.policy_or(ps, l).map_err(tss("PolicyOR")))
        .and_then(|()| ctx.policy_get_digest(ps).map_err(tss("policy digest")));
    flush_session(ctx, s);
    r
}

/// The object and gate branches of a transition seal: PolicyPCR over `all` holding `values` with
/// PCR 7 at each of `pcr7`, and over the gate's PCRs (the boot-state ones) the same way.
fn transition_branches(
    ctx: &mut Context,
    all: &[u8],
    values: &[Vec<u8>],
    pcr7: &[[u8; 32]],
) -> Result<(Vec<Digest>, Vec<Digest>), TpmError> {
    if !(2..=MAX_APPENDS + 1).contains(&pcr7.len()) {
        return Err(TpmError::Transition(format!(
            "{} boot states; a transition has 2 to {}",
            pcr7.len(),
            MAX_APPENDS + 1
        )));
    }
    let at7 = all
        .iter()
        .position(|&p| p == 7)
        .ok_or_else(|| TpmError::Blob("a transition seal binds PCR 7".into()))?;
    let gate_pcrs = gate_pcrs(all);
    let mut object = Vec::new();
    let mut gate = Vec::new();
    for b in pcr7 {
        let mut v = values.to_vec();
        v[at7] = b.to_vec();
        object.push(trial_digest(ctx, all, &v)?);
        let gv: Vec<Vec<u8>> = all
            .iter()
            .zip(&v)
            .filter(|(p, _)| gate_pcrs.contains(p))
            .map(|(_, v)| v.clone())
            .collect();
        gate.push(trial_digest(ctx, &gate_pcrs, &gv)?);
    }
    Ok((object, gate))
}

fn flush_session(ctx: &mut Context, s: AuthSession) {
    let _ = ctx.flush_context(ObjectHandle::from(SessionHandle::from(s)));
}

/// The boot-state PCRs of a seal: the parent is gated on them (the phase and rollback PCRs are
/// not among them, so the parent stays usable for sealing after the unlock phase and on a first
/// boot).
fn gate_pcrs(pcrs: &[u8]) -> Vec<u8> {
    pcrs.iter()
        .copied()
        .filter(|&p| p != PHASE_PCR && p != rollback::PCR)
        .collect()
}

/// Runs `f` with the parent of a seal bound to `pcrs` loaded, and a session authorising its use:
/// a PolicyPCR session over the gate when there is one (then PolicyOR over `branches`, for a
/// transition seal's parent), else a salted HMAC session.
fn with_parent_or<T>(
    ctx: &mut Context,
    gate_digest: Option<&Digest>,
    gate: &[u8],
    branches: Option<&[Digest]>,
    decrypt: bool,
    f: impl FnOnce(&mut Context, KeyHandle, AuthSession) -> Result<T, TpmError>,
) -> Result<T, TpmError> {
    let parent = primary(ctx, gate_digest, Parent::Current)?;
    let s = match gate_digest {
        Some(_) => pcr_session(ctx, parent, gate, decrypt, false)
            .and_then(|s| or_step(ctx, s, branches).map(|()| s)),
        None => session(ctx, parent, SessionType::Hmac, decrypt, false),
    };
    let r = s.and_then(|s| {
        let r = f(ctx, parent, s);
        flush_session(ctx, s);
        r
    });
    let _ = ctx.flush_context(parent.into());
    r
}

/// A fresh vault key from the kernel RNG.
pub fn generate() -> Result<Key, TpmError> {
    let mut key = Key::new(vec![0u8; KEY_LEN]);
    getrandom::fill(&mut key[..]).map_err(|e| TpmError::Random(e.to_string()))?;
    Ok(key)
}

/// Seals `data` under this TPM, bound to `pcrs` (the boot-state PCRs at their current values; the
/// phase PCR, always added, at zero; the rollback PCR, always added, at its checked value);
/// returns the blob to store. The parent is gated on the
/// boot-state PCRs.
pub fn seal(tpm: &Tpm, data: &[u8], pcrs: &[u8]) -> Result<String, TpmError> {
    seal_counted(tpm, data, pcrs, None)
}

/// [`seal`], with the rollback PCR's value for `origins` (a seal replacement, before it records
/// them) instead of the floor the TPM holds now.
pub fn seal_counted(
    tpm: &Tpm,
    data: &[u8],
    pcrs: &[u8],
    origins: Option<&[u64; 3]>,
) -> Result<String, TpmError> {
    seal_measured(tpm, data, pcrs, origins.map(rollback::checked).as_deref())
}

/// [`seal`], with the rollback PCR at its value after stage 1 extends `measured` (`None`: the
/// floor the TPM holds now, counted from its origins).
pub fn seal_measured(
    tpm: &Tpm,
    data: &[u8],
    pcrs: &[u8],
    measured: Option<&[u8]>,
) -> Result<String, TpmError> {
    let mut all = pcrs.to_vec();
    all.push(PHASE_PCR);
    all.push(rollback::PCR);
    all.sort_unstable();
    all.dedup();
    let gate = gate_pcrs(&all);
    let mut ctx = tpm.context()?;
    let values = expected(&mut ctx, &all, measured)?;
    let policy = trial_digest(&mut ctx, &all, &values)?;
    let gate_digest = if gate.is_empty() {
        None
    } else {
        let v = read_pcrs(&mut ctx, &gate)?;
        Some(trial_digest(&mut ctx, &gate, &v)?)
    };
    let (public, private) =
        create_sealed(&mut ctx, data, policy, gate_digest.as_ref(), &gate, None)?;
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(format!(
        "v2:{}:{}:{}:{}",
        pcr_list(&all),
        gate_digest
            .map(|d| b64.encode(d.value()))
            .unwrap_or_default(),
        b64.encode(public),
        b64.encode(private)
    ))
}

fn pcr_list(pcrs: &[u8]) -> String {
    pcrs.iter().map(u8::to_string).collect::<Vec<_>>().join(",")
}

/// Creates the sealed object holding `data` with authorisation policy `policy` under the parent
/// gated by `gate_digest` (over `branches` when the gate is a PolicyOR); its public and private
/// parts, marshalled.
fn create_sealed(
    ctx: &mut Context,
    data: &[u8],
    policy: Digest,
    gate_digest: Option<&Digest>,
    gate: &[u8],
    branches: Option<&[Digest]>,
) -> Result<(Vec<u8>, Vec<u8>), TpmError> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_no_da(true)
        .with_user_with_auth(false)
        .build()
        .map_err(tss("attributes"))?;
    let public = PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::KeyedHash)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_auth_policy(policy)
        .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
        .with_keyed_hash_unique_identifier(Digest::default())
        .build()
        .map_err(tss("sealed object template"))?;
    let data = SensitiveData::try_from(data.to_vec()).map_err(tss("sensitive data"))?;
    let created = with_parent_or(ctx, gate_digest, gate, branches, true, |c, parent, s| {
        c.execute_with_session(Some(s), |c| {
            c.create(parent, public, None, Some(data), None, None)
        })
        .map_err(tss("seal"))
    })?;
    let pub_bytes = created
        .out_public
        .marshall()
        .map_err(tss("marshal public"))?;
    Ok((pub_bytes, created.out_private.value().to_vec()))
}

/// What a transition seal needs beyond a plain one: the firmware's `dbx` in the boot state it is
/// made in is the first `keep` bytes of the `dbx` a later boot measured, and in each state it is
/// also made for, those bytes followed by one of `appends` (what a signed append may leave, by
/// firmware that drops entries already held and by firmware that does not). The states are
/// derived again from the event log of the boot that opens it, never read from the disk, so a
/// seal someone made elsewhere cannot name a state of theirs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub keep: usize,
    pub appends: Vec<Vec<u8>>,
}

/// PolicyOR takes at most eight branches.
pub const MAX_APPENDS: usize = 7;

/// [`seal_measured`], bound by PolicyOR to two boot states that differ only in PCR 7 (the
/// `dbx` before and after a firmware update, `pcr7`), the parent gated the same way. This boot
/// must be in one of them. Made just before the firmware's `dbx` is written and replaced by a
/// plain seal at the first unlock after it, so the older state opens nothing for long.
pub fn seal_transition(
    tpm: &Tpm,
    data: &[u8],
    pcrs: &[u8],
    measured: Option<&[u8]>,
    t: &Transition,
    pcr7: &[[u8; 32]],
) -> Result<String, TpmError> {
    let mut all = pcrs.to_vec();
    all.push(PHASE_PCR);
    all.push(rollback::PCR);
    all.sort_unstable();
    all.dedup();
    if !gate_pcrs(&all).contains(&7) {
        return Err(TpmError::Blob(format!(
            "a transition seal binds PCR 7, not only {}",
            pcr_list(&gate_pcrs(&all))
        )));
    }
    let mut ctx = tpm.context()?;
    let now = read_pcrs(&mut ctx, &[7])?.remove(0);
    if !pcr7.iter().any(|b| b[..] == now[..]) {
        return Err(TpmError::Blob(
            "neither state of the transition is this boot's PCR 7".into(),
        ));
    }
    let values = expected(&mut ctx, &all, measured)?;
    let (object, gate) = transition_branches(&mut ctx, &all, &values, pcr7)?;
    let policy = or_digest(&mut ctx, &object)?;
    let gate_digest = or_digest(&mut ctx, &gate)?;
    let (public, private) = create_sealed(
        &mut ctx,
        data,
        policy,
        Some(&gate_digest),
        &gate_pcrs(&all),
        Some(&gate),
    )?;
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(format!(
        "v3:{}:{}:{}:{}:{}",
        pcr_list(&all),
        t.keep,
        t.appends
            .iter()
            .map(|a| b64.encode(a))
            .collect::<Vec<_>>()
            .join(","),
        b64.encode(public),
        b64.encode(private)
    ))
}

/// The parts of a stored sealed key.
#[derive(Debug, PartialEq)]
pub struct Sealed {
    /// 1: an earlier release's seal (under the ungated parent, holding the bare key); 2: this one.
    pub version: u8,
    pub pcrs: Vec<u8>,
    /// The parent's gate policy digest (empty: ungated).
    pub gate: Vec<u8>,
    pub public: Vec<u8>,
    pub private: Vec<u8>,
    /// 3: a transition seal, open in two boot states around a firmware `dbx` update.
    pub transition: Option<Transition>,
}

impl Sealed {
    /// The boot-state PCRs the sealed object is bound to (the phase PCR left out).
    pub fn boot_pcrs(&self) -> Vec<u8> {
        gate_pcrs(&self.pcrs)
    }

    /// The boot-state PCRs the parent is gated on (none for an ungated parent).
    pub fn gated_on(&self) -> Vec<u8> {
        if self.gate.is_empty() && self.transition.is_none() {
            Vec::new()
        } else {
            gate_pcrs(&self.pcrs)
        }
    }
}

pub fn parse_blob(blob: &str) -> Result<Sealed, TpmError> {
    let parts: Vec<&str> = blob.trim().split(':').collect();
    let mut transition = None;
    let (version, pcrs, gate, public, private) = match parts.as_slice() {
        ["v1", pcrs, public, private] => (1, *pcrs, "", *public, *private),
        ["v2", pcrs, gate, public, private] => (2, *pcrs, *gate, *public, *private),
        ["v3", pcrs, keep, append, public, private] => {
            let keep = keep
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| keep.parse::<usize>().ok())
                .flatten()
                .ok_or_else(|| TpmError::Blob(format!("bad dbx length `{keep}`")))?;
            let appends = append
                .split(',')
                .map(|a| {
                    base64::engine::general_purpose::STANDARD
                        .decode(a)
                        .map_err(|e| TpmError::Blob(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if appends.is_empty() || appends.len() > MAX_APPENDS {
                return Err(TpmError::Blob(format!("{} dbx appends", appends.len())));
            }
            transition = Some(Transition { keep, appends });
            (3, *pcrs, "", *public, *private)
        }
        [ver, ..] if !["v1", "v2", "v3"].contains(ver) => {
            return Err(TpmError::Blob(format!("unknown version `{ver}`")))
        }
        _ => {
            return Err(TpmError::Blob(format!(
                "expected v1 (4 fields), v2 (5 fields) or v3 (6 fields), found {} fields",
                parts.len()
            )))
        }
    };
    let pcrs = pcrs
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| match s.parse::<u8>() {
            Ok(n) if n <= 23 => Ok(n),
            _ => Err(TpmError::Blob(format!("bad PCR `{s}`"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let dec = |s: &str| b64.decode(s).map_err(|e| TpmError::Blob(e.to_string()));
    let gate = dec(gate)?;
    if version >= 2 && !pcrs.contains(&PHASE_PCR) {
        return Err(TpmError::Blob(format!(
            "a v{version} seal is always bound to PCR {PHASE_PCR}"
        )));
    }
    if version == 3 && !pcrs.contains(&7) {
        return Err(TpmError::Blob("a v3 seal binds PCR 7".into()));
    }
    if pcrs.windows(2).any(|w| w[0] >= w[1]) {
        return Err(TpmError::Blob(format!(
            "its PCRs are not in ascending order: {}",
            pcr_list(&pcrs)
        )));
    }
    if version == 2 && gate.is_empty() != gate_pcrs(&pcrs).is_empty() {
        return Err(TpmError::Blob(
            "its parent's gate does not match its PCRs".into(),
        ));
    }
    Ok(Sealed {
        version,
        pcrs,
        gate,
        public: dec(public)?,
        private: dec(private)?,
        transition,
    })
}

/// Raw key material: wiped from memory when dropped.
pub type Key = zeroize::Zeroizing<Vec<u8>>;

/// Unseals the data of a stored blob with this box's TPM. A transition seal (v3) needs the two
/// boot states it was made for: [`unseal_with`].
pub fn unseal(tpm: &Tpm, blob: &str) -> Result<Key, TpmError> {
    unseal_with(tpm, blob, |_| {
        Err("only a caller that reads the boot's event log opens it".into())
    })
}

/// [`unseal`]; `states` gives a transition seal's two PCR 7 values, derived from this boot.
pub fn unseal_with(
    tpm: &Tpm,
    blob: &str,
    states: impl FnOnce(&Transition) -> Result<Vec<[u8; 32]>, String>,
) -> Result<Key, TpmError> {
    let sealed = parse_blob(blob)?;
    let public = Public::unmarshall(&sealed.public).map_err(|e| TpmError::Blob(e.to_string()))?;
    let private =
        Private::try_from(sealed.private.clone()).map_err(|e| TpmError::Blob(e.to_string()))?;
    let mut ctx = tpm.context()?;
    let (gate_digest, gate_branches, object_branches) = match &sealed.transition {
        None if sealed.gate.is_empty() => (None, None, None),
        None => (
            Some(Digest::try_from(sealed.gate.clone()).map_err(|e| TpmError::Blob(e.to_string()))?),
            None,
            None,
        ),
        Some(t) => {
            let pcr7 = states(t).map_err(TpmError::Transition)?;
            let values = read_pcrs(&mut ctx, &sealed.pcrs)?;
            let (object, gate) = transition_branches(&mut ctx, &sealed.pcrs, &values, &pcr7)?;
            let g = or_digest(&mut ctx, &gate)?;
            (Some(g), Some(gate), Some(object))
        }
    };
    // An ungated seal made before its parent was exempt from DA protection loads only under the
    // legacy parent: the current one answers that the private part is not its own (an
    // integrity failure), and only that sends the load to the legacy parent; any other error
    // is the current attempt's to report.
    match open_under(
        &mut ctx,
        &sealed,
        public.clone(),
        private.clone(),
        gate_digest.as_ref(),
        gate_branches.as_deref(),
        object_branches.as_deref(),
        Parent::Current,
    ) {
        Err(TpmError::WrongTpm(e)) if gate_digest.is_none() && not_its_parent(&e) => open_under(
            &mut ctx,
            &sealed,
            public,
            private,
            gate_digest.as_ref(),
            gate_branches.as_deref(),
            object_branches.as_deref(),
            Parent::Legacy,
        ),
        r => r,
    }
}

/// Whether a load failed because the private part was not made under this parent.
fn not_its_parent(e: &tss_esapi::Error) -> bool {
    matches!(e, tss_esapi::Error::Tss2Error(rc)
        if rc.kind() == Some(tss_esapi::constants::response_code::Tss2ResponseCodeKind::Integrity))
}

/// Loads the sealed object under the parent of `kind` and unseals it.
#[allow(clippy::too_many_arguments)]
fn open_under(
    ctx: &mut Context,
    sealed: &Sealed,
    public: Public,
    private: Private,
    gate_digest: Option<&Digest>,
    gate_branches: Option<&[Digest]>,
    object_branches: Option<&[Digest]>,
    kind: Parent,
) -> Result<Key, TpmError> {
    let gate = sealed.gated_on();
    // The parent stays loaded for the unseal: it salts the session that carries the key back.
    let parent = primary(ctx, gate_digest, kind)?;
    let auth = match gate_digest {
        Some(_) => pcr_session(ctx, parent, &gate, true, false)
            .and_then(|s| or_step(ctx, s, gate_branches).map(|()| s))
            .map_err(|e| match e {
                TpmError::Tss { source, .. } => TpmError::Policy(source),
                e => e,
            }),
        None => session(ctx, parent, SessionType::Hmac, true, false),
    };
    let loaded = auth.and_then(|s| {
        let r = ctx
            .execute_with_session(Some(s), |c| c.load(parent, private, public))
            .map_err(|e| match e {
                tss_esapi::Error::Tss2Error(rc)
                    if rc.kind()
                        == Some(
                            tss_esapi::constants::response_code::Tss2ResponseCodeKind::Lockout,
                        ) =>
                {
                    TpmError::Lockout(e)
                }
                e => TpmError::WrongTpm(e),
            });
        flush_session(ctx, s);
        r
    });
    let r = loaded.and_then(|obj| {
        let r = unseal_object(ctx, parent, obj, sealed, object_branches);
        let _ = ctx.flush_context(obj.into());
        r
    });
    let _ = ctx.flush_context(parent.into());
    r
}

fn unseal_object(
    ctx: &mut Context,
    parent: KeyHandle,
    obj: KeyHandle,
    sealed: &Sealed,
    branches: Option<&[Digest]>,
) -> Result<Key, TpmError> {
    let s = if sealed.pcrs.is_empty() {
        session(ctx, parent, SessionType::Hmac, false, true)?
    } else {
        pcr_session(ctx, parent, &sealed.pcrs, false, true)?
    };
    let r = or_step(ctx, s, branches)
        .map_err(|e| match e {
            TpmError::Tss { source, .. } => TpmError::Policy(source),
            e => e,
        })
        .and_then(|()| {
            let r = ctx
                .execute_with_session(Some(s), |c| c.unseal(obj.into()))
                .map_err(TpmError::Policy);
            flush_session(ctx, s);
            r
        });
    if r.is_err() && sealed.pcrs.contains(&rollback::PCR) {
        let checked = crate::nv::floor_in(ctx).map(|f| crate::nv::confirmed_value(&f));
        if let (Ok(checked), Ok(v)) = (checked, read_pcrs(ctx, &[rollback::PCR])) {
            if checked.is_none_or(|c| v[0][..] != c[..]) {
                return Err(TpmError::FloorUnchecked);
            }
        }
    }
    Ok(Key::new(r?.value().to_vec()))
}

/// The phase PCR's current value (all zero until the unlock phase of this boot is over).
pub fn phase_value(tpm: &Tpm) -> Result<Vec<u8>, TpmError> {
    let mut ctx = tpm.context()?;
    Ok(read_pcrs(&mut ctx, &[PHASE_PCR])?.remove(0))
}

/// Ends the unlock phase of this boot: extends the phase PCR, so no seal opens again until reboot.
pub fn end_unlock_phase(tpm: &Tpm) -> Result<(), TpmError> {
    let mut ctx = tpm.context()?;
    let mut vals = DigestValues::new();
    let d = Digest::try_from(sha2::Sha256::digest(PHASE_UNLOCKED).to_vec())
        .map_err(tss("phase digest"))?;
    vals.set(HashingAlgorithm::Sha256, d);
    ctx.execute_with_nullauth_session(|c| c.pcr_extend(PcrHandle::Pcr11, vals))
        .map_err(tss("PCR extend"))
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_ungated_seal_parent_is_exempt_from_dictionary_attack_lockout_and_the_gated_one_unchanged(
    ) {
        // Exempt, a power cut never counts as a failed authorization; the legacy template is
        // kept unchanged so seals made under it still load.
        let now = primary_template(None, Parent::Current).unwrap();
        let old = primary_template(None, Parent::Legacy).unwrap();
        assert!(now.object_attributes().no_da());
        assert!(!old.object_attributes().no_da());
        assert!(
            now.object_attributes().user_with_auth() && old.object_attributes().user_with_auth()
        );
        // A gated parent is used only through its PCR policy, which DA never counts: its
        // template stays the one earlier releases derive, so they still open its seals.
        let gate = Digest::try_from(vec![7u8; 32]).unwrap();
        let now = primary_template(Some(&gate), Parent::Current).unwrap();
        let old = primary_template(Some(&gate), Parent::Legacy).unwrap();
        assert_eq!(now, old);
        assert!(!now.object_attributes().no_da() && !now.object_attributes().user_with_auth());
        // The legacy template is the one every earlier release made (the RSA restricted
        // decryption key with these attributes and no others).
        let a = old.object_attributes();
        assert!(a.fixed_tpm() && a.fixed_parent() && a.sensitive_data_origin());
        assert!(a.decrypt() && a.restricted() && !a.sign_encrypt() && !a.admin_with_policy());
    }
    use super::*;

    #[test]
    fn blob_format_round_trips_and_rejects_garbage() {
        let s = parse_blob("v1:7,11:AAE=:AgM=").unwrap();
        assert_eq!(
            s,
            Sealed {
                version: 1,
                pcrs: vec![7, 11],
                gate: vec![],
                public: vec![0, 1],
                private: vec![2, 3],
                transition: None,
            }
        );
        assert!(parse_blob("v1::AAE=:AgM=").unwrap().pcrs.is_empty());
        let v2 = parse_blob("v2:7,11:BAU=:AAE=:AgM=").unwrap();
        assert_eq!((v2.version, v2.gate.clone()), (2, vec![4, 5]));
        assert_eq!(v2.gated_on(), vec![7]);
        assert!(parse_blob("v2:11::AAE=:AgM=")
            .unwrap()
            .gated_on()
            .is_empty());
        // A v2 seal without the phase PCR, or whose gate does not match its PCRs, is not ours.
        assert!(parse_blob("v2:7:BAU=:AAE=:AgM=").is_err());
        assert!(parse_blob("v2:7,11::AAE=:AgM=").is_err());
        assert!(parse_blob("v2:11:BAU=:AAE=:AgM=").is_err());
        assert!(matches!(parse_blob("v3::a:b"), Err(TpmError::Blob(m)) if m.contains("v3")));
        let v3 = parse_blob("v3:7,11,12:96:BAU=:AAE=:AgM=").unwrap();
        assert_eq!(
            v3.transition,
            Some(Transition {
                keep: 96,
                appends: vec![vec![4, 5]]
            })
        );
        assert_eq!((v3.version, v3.gated_on()), (3, vec![7]));
        // A transition binds PCR 7, always with the phase PCR, and names a length.
        assert_eq!(
            parse_blob("v3:0,7,11,12:96:BAU=:AAE=:AgM=")
                .unwrap()
                .gated_on(),
            vec![0, 7]
        );
        assert!(parse_blob("v3:7,12,11:96:BAU=:AAE=:AgM=").is_err());
        assert!(parse_blob("v2:7,7,11:BAU=:AAE=:AgM=").is_err());
        assert!(parse_blob("v3:11,12:96:BAU=:AAE=:AgM=").is_err());
        assert!(parse_blob("v3:7,12:96:BAU=:AAE=:AgM=").is_err());
        assert!(parse_blob("v3:7,11,12:-1:BAU=:AAE=:AgM=").is_err());
        let two = parse_blob("v3:7,11,12:0:BAU=,BgY=:AAE=:AgM=").unwrap();
        assert_eq!(
            two.transition.unwrap().appends,
            vec![vec![4, 5], vec![6, 6]]
        );
        assert!(
            parse_blob("v3:7,11,12:0:AA==,AA==,AA==,AA==,AA==,AA==,AA==,AA==:AAE=:AgM=").is_err()
        );
        assert!(parse_blob("v4:7:1:2:3:4")
            .unwrap_err()
            .to_string()
            .contains("v4"));
        assert!(parse_blob("v1:x:AA==:AA==").is_err());
        assert!(parse_blob("v1:24:AA==:AA==").is_err());
        assert!(parse_blob("v1:7:***:AA==").is_err());
        assert!(parse_blob("nonsense").is_err());
        assert!(matches!(selection(&[24]), Err(TpmError::Pcr(24))));
    }

    #[test]
    fn the_pcr_digest_is_sha256_over_the_values_in_order() {
        let z = vec![0u8; 32];
        let one = vec![1u8; 32];
        let mut h = sha2::Sha256::new();
        h.update(&one);
        h.update(&z);
        assert_eq!(pcr_digest(&[one.clone(), z.clone()]), h.finalize().to_vec());
        assert_ne!(
            pcr_digest(&[z, one.clone()]),
            pcr_digest(&[one.clone(), one])
        );
    }
}
