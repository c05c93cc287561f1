//! What can go wrong with the TPM, said for the operator: one error for the seals
//! ([`crate::tpm`]) and the rollback floor's NV indexes ([`crate::nv`], [`crate::floor`]) alike.

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
    #[error("the sealed key could not be loaded by this TPM (a different or cleared TPM, another boot state, or a seal this box did not make)")]
    WrongTpm(#[source] tss_esapi::Error),
    #[error("the TPM is in dictionary-attack lockout and refuses the seal's parent (not this TPM's seal, or a seal without a boot-state gate made before this release, whose parent counted each power cut as a failed authorization); the recovery key unlocks now, or reboot cleanly once the TPM's lockout recovery time has passed")]
    Lockout(#[source] tss_esapi::Error),
    #[error("the TPM refused to unseal the key (PCR values changed, or the unlock phase of this boot is over)")]
    Policy(#[source] tss_esapi::Error),
    #[error("stage 1 did not confirm the rollback floor this boot (PCR {}; see its console lines): the key stays sealed", platform::rollback::PCR)]
    FloorUnchecked,
    #[error("the TPM holds no whole rollback floor to seal to ({0}); a recovery (`storagectl vault recover`) sets it")]
    NoFloor(String),
    #[error("the seal made for a firmware dbx update cannot be checked against this boot: {0}")]
    Transition(String),
    #[error("sealed key property is malformed: {0}")]
    Blob(String),
    #[error("PCR {0} does not exist")]
    Pcr(u8),
    #[error("no randomness from the kernel: {0}")]
    Random(String),
}

pub(crate) fn tss(op: &'static str) -> impl FnOnce(tss_esapi::Error) -> TpmError {
    move |source| TpmError::Tss { op, source }
}
