//! The rollback floor's counters ([`platform::rollback`]) as the running system keeps them:
//! defined when the vault is made or recovered (the only moments an operator's authority or a
//! brand-new box stands behind the box's state), and raised to the running release's security
//! epoch and update-key serial once its boot was judged good (`storage-init raise-floor`, after
//! `abupdate health`). Stage 1 reads them; nothing ever lowers them.

use crate::tpm::{tss, Tpm, TpmError};
use abupdate::state::State;
use platform::rollback;
use serde::Serialize;
use tss_esapi::attributes::NvIndexAttributesBuilder;
use tss_esapi::constants::NvIndexType;
use tss_esapi::handles::{NvIndexHandle, NvIndexTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::resource_handles::{NvAuth, Provision};
use tss_esapi::structures::NvPublicBuilder;
use tss_esapi::Context;

/// Increments one run may make per counter: epochs and serials move by ones; more means a
/// counter that started high (a TPM that held other counters) and is not worth wearing out.
const MAX_STEPS: u32 = 64;

/// What a raise did: each counter's floor before (`None`: absent) and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Raised {
    pub epoch: (Option<u64>, u64),
    pub serial: (Option<u64>, u64),
    /// The running release's (epoch, serial) it was raised for.
    pub target: (u32, u32),
}

impl Raised {
    pub fn changed(&self) -> bool {
        self.epoch.0 != Some(self.epoch.1) || self.serial.0 != Some(self.serial.1)
    }
    pub fn text(&self) -> String {
        let one = |(b, a): (Option<u64>, u64)| match b {
            Some(b) if b == a => format!("{a}"),
            Some(b) => format!("{b} -> {a}"),
            None => format!("(none) -> {a}"),
        };
        let mut t = format!(
            "security epoch {}, key serial {}",
            one(self.epoch),
            one(self.serial)
        );
        if self.serial.1 > u64::from(self.target.1) {
            t.push_str(&format!(
                "; WARNING: the TPM's counters restarted above the update keys' serial {}: the vault needs the recovery key at every boot until keys of serial {} or later are in force",
                self.target.1, self.serial.1
            ));
        }
        if self.epoch.1 > u64::from(self.target.0) {
            // Counters restart above every value the TPM ever held (after a TPM clear).
            t.push_str(&format!(
                "; WARNING: the TPM's counters restarted above this release's epoch {}: until a release of epoch {} or later runs here, the vault needs the recovery key at every boot",
                self.target.0, self.epoch.1
            ));
        }
        t
    }
}

fn handle(ctx: &mut Context, index: u32) -> Result<Option<NvIndexHandle>, TpmError> {
    let h = NvIndexTpmHandle::new(index).map_err(tss("NV index handle"))?;
    Ok(ctx
        .tr_from_tpm_public(TpmHandle::NvIndex(h))
        .ok()
        .map(NvIndexHandle::from))
}

/// The counter at `index`, made if absent; refused if something else holds the index.
fn ours(ctx: &mut Context, index: u32) -> Result<(NvIndexHandle, bool), TpmError> {
    if let Some(h) = handle(ctx, index)? {
        let (public, _) = ctx.nv_read_public(h).map_err(tss("NV_ReadPublic"))?;
        let attrs: u32 = tss_esapi::tss2_esys::TPMA_NV::try_from(public.attributes())
            .map_err(tss("NV attributes"))?;
        let alg: u16 = tss_esapi::tss2_esys::TPM2_ALG_ID::from(public.name_algorithm());
        match rollback::check_public(
            index,
            u32::from(public.nv_index()),
            alg,
            attrs,
            public.authorization_policy().value().len(),
            public.data_size(),
        ) {
            Ok(written) => return Ok((h, written)),
            // Something else at the box's index (put there to pass for a low floor): removed
            // with the owner's auth, and the counter made again, which starts above every value
            // this TPM's counters ever held.
            Err(why) => {
                crate::bringup::log(format!("rollback floor: {why}; replacing it"));
                ctx.execute_with_nullauth_session(|c| c.nv_undefine_space(Provision::Owner, h))
                    .map_err(tss("NV_UndefineSpace"))?;
            }
        }
    }
    let attrs = NvIndexAttributesBuilder::new()
        .with_nv_index_type(NvIndexType::Counter)
        .with_auth_write(true)
        .with_auth_read(true)
        .with_no_da(true)
        .build()
        .map_err(tss("NV attributes"))?;
    let public = NvPublicBuilder::new()
        .with_nv_index(NvIndexTpmHandle::new(index).map_err(tss("NV index handle"))?)
        .with_index_name_algorithm(HashingAlgorithm::Sha256)
        .with_index_attributes(attrs)
        .with_data_area_size(8)
        .build()
        .map_err(tss("NV public"))?;
    let h = ctx
        .execute_with_nullauth_session(|c| c.nv_define_space(Provision::Owner, None, public))
        .map_err(tss("NV_DefineSpace"))?;
    Ok((h, false))
}

fn value(ctx: &mut Context, h: NvIndexHandle) -> Result<u64, TpmError> {
    let data = ctx
        .execute_with_nullauth_session(|c| c.nv_read(NvAuth::NvIndex(h), h, 8, 0))
        .map_err(tss("NV_Read"))?;
    let b: [u8; 8] = data
        .value()
        .try_into()
        .map_err(|_| TpmError::Blob("NV counter: not 8 bytes".into()))?;
    Ok(u64::from_be_bytes(b))
}

/// Raises one counter to stand for at least `target`; its floor before and after.
fn raise_one(ctx: &mut Context, index: u32, target: u32) -> Result<(Option<u64>, u64), TpmError> {
    let (h, written) = ours(ctx, index)?;
    let mut current = if written { Some(value(ctx, h)?) } else { None };
    let before = current.map(rollback::floor_of);
    let mut steps = 0;
    while rollback::needs_increment(current, target) {
        if steps == MAX_STEPS {
            return Err(TpmError::Blob(format!(
                "TPM NV counter {index:#010x}: still below {target} after {MAX_STEPS} increments"
            )));
        }
        ctx.execute_with_nullauth_session(|c| c.nv_increment(NvAuth::NvIndex(h), h))
            .map_err(tss("NV_Increment"))?;
        current = Some(value(ctx, h)?);
        steps += 1;
    }
    Ok((before, current.map(rollback::floor_of).unwrap_or(0)))
}

/// Raises the floor to (`epoch`, `serial`), defining the counters if they are absent. Never
/// lowers anything (counters cannot go down).
pub fn raise(tpm: &Tpm, epoch: u32, serial: u32) -> Result<Raised, TpmError> {
    let mut ctx = tpm.context()?;
    Ok(Raised {
        epoch: raise_one(&mut ctx, rollback::EPOCH_INDEX, epoch)?,
        serial: raise_one(&mut ctx, rollback::SERIAL_INDEX, serial)?,
        target: (epoch, serial),
    })
}

/// The floor as stage 1 would read it (`None` per counter: absent or never incremented).
pub fn read(tpm: &Tpm) -> Result<(Option<u64>, Option<u64>), TpmError> {
    let mut ctx = tpm.context()?;
    let mut one = |index| -> Result<Option<u64>, TpmError> {
        match handle(&mut ctx, index)? {
            None => Ok(None),
            Some(h) => Ok(value(&mut ctx, h).ok().map(rollback::floor_of)),
        }
    };
    Ok((one(rollback::EPOCH_INDEX)?, one(rollback::SERIAL_INDEX)?))
}

/// Pure: whether a boot may raise the floor to its own release: only once its slot is good, or
/// when the other slot holds nothing to fall back to (a factory first boot). A slot on trial
/// never raises it, so a failed update can always fall back to the release before it.
pub fn may_raise(running: State, other: State) -> bool {
    running == State::Good || other == State::Empty
}

/// Raises the floor to the running release if [`may_raise`]; what happened, for the log.
pub fn raise_for_running(roots: &platform::Roots, tpm: &Tpm) -> Result<AfterBoot, String> {
    if !tpm.present() {
        return Ok(AfterBoot::NoTpm);
    }
    let sys = abupdate::system::System::open(roots.clone()).map_err(|e| platform::chain(&e))?;
    let (epoch, serial, running, other) = sys.floor_target().map_err(|e| platform::chain(&e))?;
    if !may_raise(running, other) {
        return Ok(AfterBoot::NotGood(format!(
            "slot {} is {running:?}, not good, and slot {} can be fallen back to: the rollback floor stays (it rises once the slot is good)",
            sys.running(),
            sys.running().other()
        )));
    }
    // Held while the counters are read and raised (and nothing else: abupdate's install takes
    // the slot-state lock before this one): two raises at once would each increment, and a
    // counter never comes back.
    let _floor = sys.floor_lock().map_err(|e| platform::chain(&e))?;
    raise(tpm, epoch, serial)
        .map(AfterBoot::Raised)
        .map_err(|e| platform::chain(&e))
}

/// What `storage-init raise-floor` found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterBoot {
    NoTpm,
    /// The running slot is not good yet (or any more): the floor stays.
    NotGood(String),
    Raised(Raised),
}

/// After a boot judged good (`storage-init raise-floor`, run after `abupdate health`).
pub fn raise_after_good_boot(roots: &platform::Roots) -> Result<AfterBoot, String> {
    raise_for_running(roots, &Tpm::at(roots))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_good_slot_or_one_with_nothing_behind_it_raises_the_floor() {
        use State::*;
        assert!(may_raise(Good, Good));
        assert!(may_raise(Good, Bad));
        assert!(may_raise(Trial, Empty), "a factory first boot");
        assert!(
            !may_raise(Trial, Good),
            "an update on trial: the old release stays bootable"
        );
        assert!(!may_raise(Bad, Good));
        assert!(!may_raise(Trial, Bad));
    }

    #[test]
    fn a_raise_says_what_moved() {
        let r = Raised {
            epoch: (Some(0), 1),
            serial: (Some(1), 1),
            target: (1, 1),
        };
        assert!(r.changed());
        assert_eq!(r.text(), "security epoch 0 -> 1, key serial 1");
        let r = Raised {
            epoch: (None, 0),
            serial: (None, 1),
            target: (0, 1),
        };
        assert_eq!(
            r.text(),
            "security epoch (none) -> 0, key serial (none) -> 1"
        );
        // A cleared TPM's counters restart high.
        let r = Raised {
            epoch: (None, 2),
            serial: (None, 3),
            target: (0, 1),
        };
        assert!(
            r.text().contains("restarted above this release's epoch 0"),
            "{}",
            r.text()
        );
        assert!(!Raised {
            epoch: (Some(2), 2),
            serial: (Some(1), 1),
            target: (2, 1),
        }
        .changed());
    }
}
