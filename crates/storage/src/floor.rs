//! The rollback floor's counters ([`platform::rollback`]) as the running system keeps them:
//! defined when the vault is made or recovered (the only moments an operator's authority or a
//! brand-new box stands behind the box's state), and raised to the running release's security
//! epoch and update-key serial once its boot was judged good (`storage-init raise-floor`, after
//! `abupdate health`). Stage 1 reads them; nothing ever lowers them.

use crate::nv::{
    confirmed_value, floor_in, increment, ours, raw_in, record, value, write_origins, Record,
};
use crate::tpm::Tpm;
use crate::tpmerr::TpmError;
use abupdate::state::State;
use platform::rollback;
use serde::Serialize;
use tss_esapi::handles::NvIndexHandle;
use tss_esapi::Context;

/// Increments one run may make per counter: epochs and serials move by ones; more means a
/// counter someone else raised (anyone may), which is not worth wearing out further.
const MAX_STEPS: u32 = 64;

/// What a raise did: each counter's floor before (`None`: absent, or not standing) and after,
/// counted from its origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Raised {
    pub epoch: (Option<u64>, u64),
    pub serial: (Option<u64>, u64),
    /// `None`: a box from before the origins, whose key-list floor is set when its vault's seal
    /// is replaced.
    pub builtin: Option<(Option<u64>, u64)>,
    /// The origins, when this raise recorded them anew.
    pub recorded: Option<[u64; 3]>,
    /// The running release's (epoch, serial, built-in list serial) it was raised for.
    pub target: (u32, u32, u32),
}

impl Raised {
    pub fn changed(&self) -> bool {
        self.recorded.is_some()
            || [Some(self.epoch), Some(self.serial), self.builtin]
                .iter()
                .flatten()
                .any(|(b, a)| *b != Some(*a))
    }
    pub fn text(&self) -> String {
        let one = |(b, a): (Option<u64>, u64)| match b {
            Some(b) if b == a => format!("{a}"),
            Some(b) => format!("{b} -> {a}"),
            None => format!("(none) -> {a}"),
        };
        let mut t = format!(
            "security epoch {}, key serial {}, built-in key list {}",
            one(self.epoch),
            one(self.serial),
            self.builtin
                .map_or("(set when the vault's seal is replaced)".into(), one)
        );
        if let Some(o) = self.recorded {
            t.push_str(&format!("; counters counted from {o:?}"));
        }
        let lowered = [Some(self.epoch), Some(self.serial), self.builtin]
            .iter()
            .flatten()
            .any(|(b, a)| b.is_some_and(|b| b > *a));
        if lowered {
            t.push_str("; WARNING: lowered to the running release (counted again from the counters as they are, on the operator's recovery): make sure it is the release you mean to keep");
        }
        // Anyone may increment a counter (a denial of service, like a cleared TPM): say so.
        if self.epoch.1 > u64::from(self.target.0) {
            t.push_str(&format!(
                "; WARNING: the epoch floor {} is above this release's epoch {} (the counter was raised by something else): stage 1 refuses this release; `storagectl vault recover` counts the counters again from their values now",
                self.epoch.1, self.target.0
            ));
        }
        t
    }
}

/// Increments the counter `h` (value `v`, counted from `origin`) until it stands for `target`.
fn raise_to(
    ctx: &mut Context,
    (index, h): (u32, NvIndexHandle),
    v: &mut u64,
    origin: u64,
    target: u32,
) -> Result<(), TpmError> {
    let mut steps = 0;
    while rollback::needs_increment(Some(*v), origin, target) {
        if steps == MAX_STEPS {
            return Err(TpmError::Blob(format!(
                "TPM NV counter {index:#010x}: still below {target} after {MAX_STEPS} increments"
            )));
        }
        *v = increment(ctx, h)?;
        steps += 1;
    }
    Ok(())
}

/// Who stands behind a raise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authority {
    /// A boot judged good, whose floor stage 1 confirmed: raises only. A box from before the
    /// origins keeps counting from 1 and records them only when its vault's seal is replaced
    /// ([`migrate_begin`]), so its seal keeps opening until then.
    GoodBoot,
    /// A new vault, or the operator's recovery key: the state of the TPM is taken as it is. A
    /// counter that cannot stand (absent, its origin above it or pending, or a floor above the
    /// running release: a counter raised by something else, a record left from before the
    /// counters were made again) is counted again from its value now; a floor above the running
    /// release only with `lower` (the vault's own record of the floors it saw confirmed says the
    /// running release is not below them). `raise: false` (the running slot is on trial, the
    /// other may be fallen back to): nothing is raised past that, so the floor may stand at 0
    /// until the slot is judged good.
    Operator { raise: bool, lower: bool },
}

/// Raises the floor to `target` (epoch, serial, built-in key list). Never lowers a counter.
/// Power-cut safe: a counter made now is recorded as pending before its first increment, and
/// goes past its first value only once its origin is recorded; a cut in between leaves a pending
/// entry, which stage 1 takes as no floor and the next [`Authority::Operator`] raise completes.
pub fn raise(tpm: &Tpm, target: [u32; 3], who: Authority) -> Result<Raised, TpmError> {
    let mut ctx = tpm.context()?;
    let indexes = [
        rollback::EPOCH_INDEX,
        rollback::SERIAL_INDEX,
        rollback::BUILTIN_INDEX,
    ];
    let mut hs = Vec::new();
    let mut vals = [None; 3];
    for (i, index) in indexes.iter().enumerate() {
        let (h, written) = ours(&mut ctx, *index)?;
        if written {
            vals[i] = Some(value(&mut ctx, h)?);
        }
        hs.push(h);
    }
    let rec = record(&mut ctx)?;
    let legacy = rec == Record::Absent && vals[0].is_some() && vals[1].is_some();
    let from_record = match &rec {
        Record::Ours(o) => *o,
        Record::Absent if legacy || vals[0].is_some() || vals[1].is_some() => [1, 1, 0],
        _ => [0; 3],
    };
    let before: [Option<u64>; 3] = std::array::from_fn(|i| match (vals[i], from_record[i]) {
        (Some(v), o) if o != 0 && o <= v => Some(rollback::floor_from(v, o)),
        _ => None,
    });
    if legacy && who == Authority::GoodBoot {
        let mut after = [0u64; 2];
        for i in 0..2 {
            let mut v = vals[i].unwrap_or(0);
            raise_to(&mut ctx, (indexes[i], hs[i]), &mut v, 1, target[i])?;
            after[i] = rollback::floor_of(v);
        }
        return Ok(Raised {
            epoch: (before[0], after[0]),
            serial: (before[1], after[1]),
            builtin: None,
            recorded: None,
            target: (target[0], target[1], target[2]),
        });
    }
    let mut o = from_record;
    for i in 0..3 {
        let stands = match vals[i] {
            None => false,
            Some(v) => {
                o[i] != 0
                    && o[i] <= v
                    && (!matches!(who, Authority::Operator { lower: true, .. })
                        || rollback::floor_from(v, o[i]) <= u64::from(target[i]))
            }
        };
        if !stands {
            o[i] = 0;
        }
    }
    let replace = matches!(rec, Record::Foreign(_));
    let mut written = match rec {
        Record::Ours(r) => Some(r),
        _ => None,
    };
    if written != Some(o) {
        write_origins(&mut ctx, &o, replace)?;
        written = Some(o);
    }
    for i in 0..3 {
        if vals[i].is_none() {
            vals[i] = Some(increment(&mut ctx, hs[i])?);
        }
        if o[i] == 0 {
            o[i] = vals[i].unwrap_or(0);
        }
    }
    let recorded = if written != Some(o) {
        write_origins(&mut ctx, &o, false)?;
        Some(o)
    } else {
        None
    };
    let raise = !matches!(who, Authority::Operator { raise: false, .. });
    let mut after = [0u64; 3];
    for i in 0..3 {
        let mut v = vals[i].unwrap_or(0);
        if raise {
            raise_to(&mut ctx, (indexes[i], hs[i]), &mut v, o[i], target[i])?;
        }
        after[i] = rollback::floor_from(v, o[i]);
    }
    Ok(Raised {
        epoch: (before[0], after[0]),
        serial: (before[1], after[1]),
        builtin: Some((before[2], after[2])),
        recorded,
        target: (target[0], target[1], target[2]),
    })
}

/// The first step of replacing the seal of a box from before the origins: the key-list counter
/// made (its first increment) and the origins it will be counted from, returned, not yet
/// recorded: stage 1 keeps measuring the older value (which the seal in force is bound to) until
/// [`migrate_commit`] records them, after the vault's key was sealed to [`rollback::checked`] of
/// them. Its first value is its origin: it is never incremented again before the record.
pub fn migrate_begin(tpm: &Tpm) -> Result<[u64; 3], TpmError> {
    let mut ctx = tpm.context()?;
    if record(&mut ctx)? != Record::Absent {
        return Err(TpmError::Blob(
            "the TPM already holds the counters' origins: nothing to replace".into(),
        ));
    }
    let (h, written) = ours(&mut ctx, rollback::BUILTIN_INDEX)?;
    // Never incremented past its first value before the record holds it: its value is its origin.
    let v = if written {
        value(&mut ctx, h)?
    } else {
        increment(&mut ctx, h)?
    };
    Ok([1, 1, v])
}

/// Records the origins [`migrate_begin`] returned and, when `builtin` says so, raises the key-list
/// counter to it (a boot judged good).
pub fn migrate_commit(tpm: &Tpm, o: &[u64; 3], builtin: Option<u32>) -> Result<(), TpmError> {
    let mut ctx = tpm.context()?;
    let rec = record(&mut ctx)?;
    write_origins(&mut ctx, o, matches!(rec, Record::Foreign(_)))?;
    if let Some(target) = builtin {
        let (h, _) = ours(&mut ctx, rollback::BUILTIN_INDEX)?;
        let mut v = value(&mut ctx, h)?;
        raise_to(&mut ctx, (rollback::BUILTIN_INDEX, h), &mut v, o[2], target)?;
    }
    Ok(())
}

/// The floor as stage 1 reads it.
pub fn floor(tpm: &Tpm) -> Result<rollback::Floor, TpmError> {
    let mut ctx = tpm.context()?;
    floor_in(&mut ctx)
}

/// The epoch and serial floors as stage 1 reads them (`None`: no floor).
pub fn read(tpm: &Tpm) -> Result<(Option<u64>, Option<u64>), TpmError> {
    Ok(match floor(tpm)? {
        rollback::Floor::Present { epoch, serial, .. } => (Some(epoch), Some(serial)),
        _ => (None, None),
    })
}

/// Whether the epoch and serial counters are both absent or never incremented (a TPM that holds
/// no floor at all). Anything unreadable counts as present.
pub fn counters_absent(tpm: &Tpm) -> bool {
    let Ok(mut ctx) = tpm.context() else {
        return false;
    };
    matches!(raw_in(&mut ctx), Ok(([Err(_), Err(_), _], _)))
}

/// Pure: whether a boot may raise the floor to its own release: only once its slot is good, or
/// when the other slot holds nothing to fall back to (a factory first boot). A slot on trial
/// never raises it, so a failed update can always fall back to the release before it.
pub fn may_raise(running: State, other: State) -> bool {
    running == State::Good || other == State::Empty
}

/// Raises the floor to the running release if [`may_raise`]; what happened, for the log.
/// `confirmed_only`: only when stage 1 confirmed the floor the TPM holds now this boot (its PCR
/// holds [`confirmed_value`]): a boot whose counters or origins were changed under it (deleted
/// or forged on a live USB) must not build on them. Vault creation and recovery pass `false`:
/// a new box, or the operator's recovery key, stands behind the state then.
/// `lower` (an operator's raise only): a floor above the running release may be counted again.
pub fn raise_for_running(
    roots: &platform::Roots,
    tpm: &Tpm,
    confirmed_only: bool,
    lower: bool,
) -> Result<AfterBoot, String> {
    if !tpm.present() {
        return Ok(AfterBoot::NoTpm);
    }
    let sys = abupdate::system::System::open(roots.clone()).map_err(|e| platform::chain(&e))?;
    let (epoch, serial, builtin, running, other) =
        sys.floor_target().map_err(|e| platform::chain(&e))?;
    let may = may_raise(running, other);
    if !may && confirmed_only {
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
    let mut who = if confirmed_only {
        Authority::GoodBoot
    } else {
        Authority::Operator { raise: may, lower }
    };
    if confirmed_only {
        let now = floor(tpm).map_err(|e| platform::chain(&e))?;
        let pcr = crate::tpm::rollback_pcr(tpm).map_err(|e| platform::chain(&e))?;
        // A box from before the floor, whose vault this boot's storage-init unlocked with its
        // seal from then (and noted for replacement): the floor is made now, as on a new box.
        let before_the_floor = counters_absent(tpm) && roots.vault_floor_migration().exists();
        if before_the_floor {
            who = Authority::Operator {
                raise: true,
                lower: false,
            };
        } else if confirmed_value(&now).is_none_or(|v| pcr[..] != v[..]) {
            return Ok(AfterBoot::NotGood(format!(
                "stage 1 did not confirm the rollback floor the TPM holds now this boot (PCR {}): the floor stays as it is; see stage 1's console lines",
                rollback::PCR
            )));
        }
    }
    raise(tpm, [epoch, serial, builtin], who)
        .map(AfterBoot::Raised)
        .map_err(|e| platform::chain(&e))
}

/// What `storage-init raise-floor` found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterBoot {
    NoTpm,
    /// The running slot is not good yet (or any more), or stage 1 did not confirm the floor this
    /// boot: the floor stays.
    NotGood(String),
    Raised(Raised),
}

/// After a boot judged good (`storage-init raise-floor`, run after `abupdate health`).
pub fn raise_after_good_boot(roots: &platform::Roots) -> Result<AfterBoot, String> {
    raise_for_running(roots, &Tpm::at(roots), true, false)
}

/// Pure: the floors `floor` stands for, per counter (epoch, serial, built-in list; 0 for the list
/// on a box from before the origins), or `None` without one.
pub fn floors_of(floor: &rollback::Floor) -> Option<[u64; 3]> {
    match floor {
        rollback::Floor::Present {
            epoch,
            serial,
            keys,
        } => Some([*epoch, *serial, keys.as_ref().map_or(0, |k| k.builtin)]),
        _ => None,
    }
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
            builtin: Some((Some(1), 1)),
            recorded: None,
            target: (1, 1, 1),
        };
        assert!(r.changed());
        assert_eq!(
            r.text(),
            "security epoch 0 -> 1, key serial 1, built-in key list 1"
        );
        let r = Raised {
            epoch: (None, 0),
            serial: (None, 1),
            builtin: Some((None, 1)),
            recorded: Some([40, 40, 41]),
            target: (0, 1, 1),
        };
        assert_eq!(
            r.text(),
            "security epoch (none) -> 0, key serial (none) -> 1, built-in key list (none) -> 1; counters counted from [40, 40, 41]"
        );
        // A box from before the origins: its key-list floor waits for the seal's replacement.
        let r = Raised {
            epoch: (Some(1), 1),
            serial: (Some(1), 1),
            builtin: None,
            recorded: None,
            target: (1, 1, 1),
        };
        assert!(!r.changed());
        assert!(r.text().contains("set when the vault's seal is replaced"));
        // A counter someone else raised.
        let r = Raised {
            epoch: (Some(3), 3),
            serial: (Some(1), 1),
            builtin: Some((Some(1), 1)),
            recorded: None,
            target: (0, 1, 1),
        };
        assert!(
            r.text().contains("above this release's epoch 0"),
            "{}",
            r.text()
        );
        assert!(!Raised {
            epoch: (Some(2), 2),
            serial: (Some(1), 1),
            builtin: Some((Some(1), 1)),
            recorded: None,
            target: (2, 1, 1),
        }
        .changed());
    }

    #[test]
    fn a_boot_confirms_only_the_floor_stage_1_measured() {
        use rollback::{Floor, KeysFloor};
        let f = |o| Floor::Present {
            epoch: 1,
            serial: 1,
            keys: Some(KeysFloor {
                builtin: 1,
                origins: o,
            }),
        };
        assert_eq!(
            confirmed_value(&f([1, 1, 1])),
            Some(rollback::pcr_after(&rollback::checked(&[1, 1, 1])))
        );
        assert_eq!(confirmed_value(&Floor::Absent("gone".into())), None);
        assert_ne!(
            confirmed_value(&f([1, 1, 1])),
            confirmed_value(&f([1, 1, 9]))
        );
        let legacy = Floor::Present {
            epoch: 1,
            serial: 1,
            keys: None,
        };
        assert_eq!(
            confirmed_value(&legacy),
            Some(rollback::pcr_after(rollback::CHECKED))
        );
    }
}
