//! The A/B slot state machine, pure: load it from GRUB's environment variables, change it in memory,
//! write it back once. `grub_pick` mirrors the selection the GRUB script does at power-on, so unit
//! tests can play whole update stories (install, boot, crash, fall back) without a VM.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Boot attempts a new slot gets before GRUB gives up on it.
pub const DEFAULT_TRIES: u8 = 1;
pub const MAX_TRIES: u8 = 3;
pub const FORMAT: &str = "1";
const MAX_VERSION: usize = 32;
const MAX_DETAIL: usize = 60;
/// The failure recorded while a slot is being written: if the box restarts, it reads as interrupted.
pub const INSTALLING: &str = "install: in progress";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
    pub fn parse(s: &str) -> Option<Slot> {
        match s {
            "A" => Some(Slot::A),
            "B" => Some(Slot::B),
            _ => None,
        }
    }
    /// The GPT partition name holding this slot's image.
    pub fn partition_name(self) -> &'static str {
        match self {
            Slot::A => platform::layout::IMGA,
            Slot::B => platform::layout::IMGB,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Slot::A => "A",
            Slot::B => "B",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Nothing bootable (never written, or a write started and did not finish).
    Empty,
    /// Written and verified; GRUB boots it while tries remain, until it is marked good.
    Trial,
    /// Proved healthy; GRUB boots it without counting.
    Good,
    /// Failed or was cancelled; GRUB boots it only when no slot is good or on trial.
    Bad,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Empty => "empty",
            State::Trial => "trial",
            State::Good => "good",
            State::Bad => "bad",
        }
    }
    fn parse(s: &str) -> Option<State> {
        Some(match s {
            "empty" => State::Empty,
            "trial" => State::Trial,
            "good" => State::Good,
            "bad" => State::Bad,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotInfo {
    pub state: State,
    pub tries: u8,
    pub version: String,
    /// Why the slot last failed (`boot: ...`, `health: ...`, `install: ...`, `cancelled`).
    pub failure: String,
}

impl SlotInfo {
    fn empty() -> SlotInfo {
        SlotInfo {
            state: State::Empty,
            tries: 0,
            version: String::new(),
            failure: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Slots {
    /// Boot preference, first = tried first.
    pub order: [Slot; 2],
    pub a: SlotInfo,
    pub b: SlotInfo,
    /// Serial of the newest update-key list this box accepted (`EVE_KEYS`; 0 = none recorded).
    /// The key floor of a box without a TPM (one with a TPM keeps it in the TPM and ignores this),
    /// so losing the chain file is seen, not taken as "no rotation". A value that does not parse
    /// reads as 0: whoever can write garbage here can write 0, and garbage must not stop the whole
    /// slot state from loading.
    pub keys: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("boot state variable {0}: {1}")]
    Invalid(String, String),
    #[error("{0}")]
    Refused(String),
}

/// Whether an operation changed anything (so callers write only when needed).
pub type Changed = bool;

fn refused<T>(msg: String) -> Result<T, StateError> {
    Err(StateError::Refused(msg))
}

/// Versions appear in GRUB's environment and on consoles: a short, plain token.
pub fn validate_version(v: &str) -> Result<(), String> {
    if v.is_empty() || v.len() > MAX_VERSION {
        return Err(format!(
            "must be 1-{MAX_VERSION} characters, got {}",
            v.len()
        ));
    }
    if let Some(c) = v
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-')))
    {
        return Err(format!(
            "character {c:?} is not allowed (use A-Z a-z 0-9 . _ + -)"
        ));
    }
    Ok(())
}

/// Failure details go into the environment block, which must stay within one sector.
fn detail(s: &str) -> String {
    s.chars()
        .map(|c| {
            if (' '..='~').contains(&c) && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_DETAIL)
        .collect()
}

impl Slots {
    /// The state a freshly built disk starts with: `version` in A, proven by the build; B empty.
    pub fn factory(version: &str) -> Slots {
        Slots {
            order: [Slot::A, Slot::B],
            a: SlotInfo {
                state: State::Good,
                version: version.into(),
                ..SlotInfo::empty()
            },
            b: SlotInfo::empty(),
            keys: 0,
        }
    }

    pub fn get(&self, s: Slot) -> &SlotInfo {
        match s {
            Slot::A => &self.a,
            Slot::B => &self.b,
        }
    }
    fn get_mut(&mut self, s: Slot) -> &mut SlotInfo {
        match s {
            Slot::A => &mut self.a,
            Slot::B => &mut self.b,
        }
    }
    fn prefer(&mut self, s: Slot) {
        self.order = [s, s.other()];
    }

    pub fn from_env(env: &BTreeMap<String, String>) -> Result<Slots, StateError> {
        let get = |k: &str| -> Result<&str, StateError> {
            env.get(k)
                .map(String::as_str)
                .ok_or_else(|| StateError::Invalid(k.into(), "missing".into()))
        };
        let fmt_ = get("EVE_FMT")?;
        if fmt_ != FORMAT {
            return Err(StateError::Invalid(
                "EVE_FMT".into(),
                format!("format {fmt_:?}, this tool reads {FORMAT:?}"),
            ));
        }
        let order = get("EVE_ORDER")?;
        let order = match order {
            "A B" => [Slot::A, Slot::B],
            "B A" => [Slot::B, Slot::A],
            o => return Err(StateError::Invalid("EVE_ORDER".into(), format!("{o:?}"))),
        };
        let slot = |p: &str| -> Result<SlotInfo, StateError> {
            let st = get(&format!("{p}_STATE"))?;
            let state = State::parse(st)
                .ok_or_else(|| StateError::Invalid(format!("{p}_STATE"), format!("{st:?}")))?;
            let tr = get(&format!("{p}_TRIES"))?;
            let tries = tr
                .parse::<u8>()
                .ok()
                .filter(|t| *t <= MAX_TRIES)
                .ok_or_else(|| StateError::Invalid(format!("{p}_TRIES"), format!("{tr:?}")))?;
            Ok(SlotInfo {
                state,
                tries,
                version: get(&format!("{p}_VER"))?.into(),
                failure: get(&format!("{p}_FAIL"))?.into(),
            })
        };
        let keys = env
            .get("EVE_KEYS")
            .and_then(|k| k.parse::<u32>().ok())
            .unwrap_or(0);
        Ok(Slots {
            order,
            a: slot("A")?,
            b: slot("B")?,
            keys,
        })
    }

    pub fn to_env(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert("EVE_FMT".into(), FORMAT.into());
        m.insert(
            "EVE_ORDER".into(),
            format!("{} {}", self.order[0], self.order[1]),
        );
        for (p, i) in [("A", &self.a), ("B", &self.b)] {
            m.insert(format!("{p}_STATE"), i.state.as_str().into());
            m.insert(format!("{p}_TRIES"), i.tries.to_string());
            m.insert(format!("{p}_VER"), i.version.clone());
            m.insert(format!("{p}_FAIL"), i.failure.clone());
        }
        // Only once a rotation happened, so blocks from before it stay byte-identical.
        if self.keys > 0 {
            m.insert("EVE_KEYS".into(), self.keys.to_string());
        }
        m
    }

    /// An install into the slot we are not running from begins: from here until
    /// `install_complete`, that slot is not bootable.
    pub fn install_started(&mut self, running: Slot) -> Result<Changed, StateError> {
        let cur = self.get(running);
        if cur.state == State::Trial {
            return refused(format!(
                "slot {running} is still on trial; it must be marked good (or rolled back) before \
                 the other slot, its fallback, is overwritten"
            ));
        }
        let target = running.other();
        *self.get_mut(target) = SlotInfo {
            failure: INSTALLING.into(),
            ..SlotInfo::empty()
        };
        self.prefer(running);
        Ok(true)
    }

    /// The image was written and read back correctly: try it on the next boot.
    pub fn install_complete(
        &mut self,
        running: Slot,
        version: &str,
        tries: u8,
    ) -> Result<Changed, StateError> {
        validate_version(version).map_err(|e| StateError::Invalid("version".into(), e))?;
        if tries == 0 || tries > MAX_TRIES {
            return refused(format!("tries must be 1-{MAX_TRIES}, got {tries}"));
        }
        let target = running.other();
        if self.get(target).state != State::Empty {
            return refused(format!(
                "slot {target} is {}, not being installed",
                self.get(target).state.as_str()
            ));
        }
        *self.get_mut(target) = SlotInfo {
            state: State::Trial,
            tries,
            version: version.into(),
            failure: String::new(),
        };
        self.prefer(target);
        Ok(true)
    }

    /// The write failed: the slot stays unbootable and says why.
    pub fn install_failed(&mut self, running: Slot, why: &str) -> Changed {
        let t = self.get_mut(running.other());
        t.state = State::Empty;
        t.tries = 0;
        t.failure = detail(&format!("install: {why}"));
        self.prefer(running);
        true
    }

    /// Withdraw an installed (or half-installed) slot that has not been booted into yet.
    pub fn cancel(&mut self, running: Slot) -> Result<Changed, StateError> {
        let target = running.other();
        let t = self.get_mut(target);
        match t.state {
            State::Trial | State::Empty => {
                if t.state == State::Trial {
                    t.state = State::Bad;
                }
                t.tries = 0;
                t.failure = "cancelled".into();
                self.prefer(running);
                Ok(true)
            }
            s => refused(format!(
                "slot {target} is {}: nothing to cancel",
                s.as_str()
            )),
        }
    }

    /// What the running system learns at boot: a trial slot that is not running and has no tries
    /// left was booted and never marked good, so GRUB fell back; an empty slot without a reason
    /// was being written when the power went.
    pub fn boot_observed(&mut self, running: Slot) -> Changed {
        let other = running.other();
        let mut changed = false;
        let o = self.get_mut(other);
        if o.state == State::Trial && o.tries == 0 {
            o.state = State::Bad;
            o.failure = "boot: did not reach mark-good; fell back".into();
            changed = true;
        }
        if o.state == State::Empty && o.failure == INSTALLING {
            o.failure = "install: interrupted".into();
            changed = true;
        }
        changed
    }

    /// `slot`'s image failed verification at boot (GRUB refused its signed files, or stage 1
    /// found it does not match its signed root hash): it cannot be booted, whatever it was, so it
    /// is marked bad even if it was the only good slot, and the other slot is preferred.
    pub fn image_refused(&mut self, slot: Slot, why: &str) -> Changed {
        let before = self.clone();
        let s = self.get_mut(slot);
        if s.state != State::Empty {
            s.state = State::Bad;
        }
        s.tries = 0;
        s.failure = detail(why);
        self.prefer(slot.other());
        *self != before
    }

    /// The running slot proved healthy.
    pub fn mark_good(&mut self, running: Slot) -> Changed {
        let before = self.clone();
        let r = self.get_mut(running);
        r.state = State::Good;
        r.tries = 0;
        r.failure.clear();
        self.prefer(running);
        *self != before
    }

    /// `slot` failed (`why`); prefer the other one. Marking the only good slot bad is refused,
    /// since it would leave nothing the bootloader trusts.
    pub fn mark_bad(&mut self, slot: Slot, why: &str) -> Result<Changed, StateError> {
        let other = self.get(slot.other()).state;
        if self.get(slot).state == State::Good && other != State::Good {
            return refused(format!(
                "slot {slot} is the only good slot (slot {} is {}); refusing to mark it bad",
                slot.other(),
                other.as_str()
            ));
        }
        let s = self.get_mut(slot);
        s.state = State::Bad;
        s.tries = 0;
        s.failure = detail(why);
        self.prefer(slot.other());
        Ok(true)
    }

    /// Boot the other slot next time, if it holds a good image. A running slot still on trial is
    /// recorded as rolled back.
    pub fn rollback(&mut self, running: Slot) -> Result<Changed, StateError> {
        let other = running.other();
        let o = self.get(other);
        if o.state != State::Good {
            let why = if o.failure.is_empty() {
                String::new()
            } else {
                format!(" ({})", o.failure)
            };
            return refused(format!(
                "slot {other} holds no good image: it is {}{why}",
                o.state.as_str()
            ));
        }
        if self.get(running).state == State::Trial {
            let r = self.get_mut(running);
            r.state = State::Bad;
            r.tries = 0;
            r.failure = "rolled back".into();
        }
        let changed = self.order[0] != other;
        self.prefer(other);
        Ok(changed || self.get(running).state == State::Bad)
    }
}

/// What the GRUB script does at power-on (keep the two in step; `imgbuild::build::grub_cfg`):
/// the first slot in order that is good, or on trial with tries left (one is used up); otherwise
/// the first one that is not empty, as a last resort; otherwise A.
pub fn grub_pick(s: &mut Slots) -> Slot {
    for slot in s.order {
        let i = s.get_mut(slot);
        match i.state {
            State::Good => return slot,
            State::Trial if i.tries > 0 => {
                i.tries -= 1;
                return slot;
            }
            _ => {}
        }
    }
    s.order
        .into_iter()
        .find(|sl| s.get(*sl).state != State::Empty)
        .unwrap_or(Slot::A)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1() -> Slots {
        Slots::factory("v1")
    }

    #[test]
    fn the_key_serial_round_trips_and_is_absent_until_a_rotation() {
        let mut s = v1();
        assert!(!s.to_env().contains_key("EVE_KEYS"));
        assert_eq!(Slots::from_env(&s.to_env()).unwrap().keys, 0);
        s.keys = 2;
        let env = s.to_env();
        assert_eq!(env["EVE_KEYS"], "2");
        assert_eq!(Slots::from_env(&env).unwrap(), s);
        let mut bad = env.clone();
        bad.insert("EVE_KEYS".into(), "two".into());
        assert_eq!(
            Slots::from_env(&bad).unwrap().keys,
            0,
            "garbage is no record"
        );
        // The largest serial still fits the one-sector block with every other field at its longest.
        s.keys = u32::MAX;
        s.a.version = "v".repeat(MAX_VERSION);
        s.b.version = "v".repeat(MAX_VERSION);
        s.a.failure = "f".repeat(MAX_DETAIL);
        s.b.failure = "f".repeat(MAX_DETAIL);
        crate::grubenv::serialize(&s.to_env()).unwrap();
    }

    /// Install `ver` from `running` and power-cycle: returns the slot GRUB boots.
    fn install_and_boot(s: &mut Slots, running: Slot, ver: &str) -> Slot {
        assert!(s.install_started(running).unwrap());
        assert!(s.install_complete(running, ver, DEFAULT_TRIES).unwrap());
        grub_pick(s)
    }

    #[test]
    fn env_round_trip_and_validation() {
        let mut s = v1();
        s.install_started(Slot::A).unwrap();
        s.install_complete(Slot::A, "2.0-rc1", 2).unwrap();
        let env = s.to_env();
        assert_eq!(env["EVE_ORDER"], "B A");
        assert_eq!(env["B_STATE"], "trial");
        assert_eq!(env["B_TRIES"], "2");
        assert_eq!(Slots::from_env(&env).unwrap(), s);
        let fits = crate::grubenv::serialize(&env).unwrap();
        assert_eq!(fits.len(), 1024);
        for (k, bad) in [
            ("EVE_ORDER", "A A"),
            ("A_STATE", "fine"),
            ("B_TRIES", "x"),
            ("B_TRIES", "9"),
            ("EVE_FMT", "2"),
        ] {
            let mut e = env.clone();
            e.insert(k.into(), bad.into());
            let err = Slots::from_env(&e).unwrap_err().to_string();
            assert!(err.contains(k), "{err}");
        }
        let mut e = env.clone();
        e.remove("A_VER");
        assert!(Slots::from_env(&e)
            .unwrap_err()
            .to_string()
            .contains("A_VER"));
    }

    #[test]
    fn the_largest_state_fits_in_one_sector() {
        let mut s = v1();
        let long = "v".repeat(MAX_VERSION);
        for sl in [Slot::A, Slot::B] {
            let i = s.get_mut(sl);
            i.version = long.clone();
            i.failure = detail(&"x".repeat(500));
            i.state = State::Trial;
        }
        assert!(crate::grubenv::serialize(&s.to_env()).is_ok());
    }

    #[test]
    fn versions_are_plain_tokens() {
        assert!(validate_version("2026.11.24-abc+1_x").is_ok());
        for bad in ["", "a b", "../x", "v\n", &"9".repeat(33)] {
            assert!(validate_version(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_refused_image_is_bad_even_when_it_was_the_only_good_slot() {
        // v1 in A (good), v2 in B on trial: GRUB refuses A's files (tampered) and boots B.
        let mut s = v1();
        s.install_started(Slot::A).unwrap();
        s.install_complete(Slot::A, "v2", 1).unwrap();
        assert!(
            s.mark_bad(Slot::A, "x").is_err(),
            "mark_bad keeps the only good slot"
        );
        assert!(s.image_refused(Slot::A, "boot: GRUB refused slot A (signature)"));
        assert_eq!(s.a.state, State::Bad);
        assert_eq!(s.order[0], Slot::B);
        assert!(!s.image_refused(Slot::A, "boot: GRUB refused slot A (signature)"));
        // With nothing else bootable GRUB's last resort still picks the refused slot, where the
        // verification stops the boot again (it is never trusted by being the only one).
        let mut only = v1();
        only.image_refused(Slot::A, "boot: verity");
        assert_eq!(grub_pick(&mut only), Slot::A);
        // An empty slot stays empty.
        let mut e = v1();
        e.image_refused(Slot::B, "boot: x");
        assert_eq!(e.b.state, State::Empty);
    }

    #[test]
    fn install_try_mark_good() {
        let mut s = v1();
        assert_eq!(grub_pick(&mut s.clone()), Slot::A);
        s.install_started(Slot::A).unwrap();
        assert_eq!(s.b.state, State::Empty);
        // A half-written slot is never booted.
        assert_eq!(grub_pick(&mut s.clone()), Slot::A);
        s.install_complete(Slot::A, "v2", 1).unwrap();
        assert_eq!(grub_pick(&mut s), Slot::B);
        assert_eq!(s.b.tries, 0);
        assert!(
            !s.boot_observed(Slot::B),
            "running the trial slot is not a failure"
        );
        assert!(s.mark_good(Slot::B));
        assert_eq!((s.b.state, s.order), (State::Good, [Slot::B, Slot::A]));
        assert!(!s.mark_good(Slot::B), "idempotent");
        assert_eq!(s.a.state, State::Good, "the old slot stays a fallback");
        assert_eq!(grub_pick(&mut s), Slot::B);
    }

    #[test]
    fn a_crashing_image_is_tried_once_then_recorded() {
        let mut s = v1();
        assert_eq!(install_and_boot(&mut s, Slot::A, "v3"), Slot::B);
        // It crashed before mark-good: next power-on falls back.
        assert_eq!(grub_pick(&mut s), Slot::A);
        assert!(s.boot_observed(Slot::A));
        assert_eq!(s.b.state, State::Bad);
        assert!(s.b.failure.starts_with("boot:"));
        assert_eq!(s.b.version, "v3");
        // And never again, however many times the box restarts.
        for _ in 0..5 {
            assert_eq!(grub_pick(&mut s), Slot::A);
            assert!(!s.boot_observed(Slot::A));
        }
    }

    #[test]
    fn more_tries_are_counted_down() {
        let mut s = v1();
        s.install_started(Slot::A).unwrap();
        s.install_complete(Slot::A, "v2", 3).unwrap();
        for left in [2, 1, 0] {
            assert_eq!(grub_pick(&mut s), Slot::B);
            assert_eq!(s.b.tries, left);
        }
        assert_eq!(grub_pick(&mut s), Slot::A);
    }

    #[test]
    fn health_failure_marks_bad_and_prefers_the_other() {
        let mut s = v1();
        assert_eq!(install_and_boot(&mut s, Slot::A, "v3"), Slot::B);
        assert!(s.mark_bad(Slot::B, "health: service x restarting").unwrap());
        assert_eq!(s.order, [Slot::A, Slot::B]);
        assert_eq!(grub_pick(&mut s), Slot::A);
        assert!(s.b.failure.starts_with("health:"));
    }

    #[test]
    fn the_only_good_slot_cannot_be_marked_bad() {
        let mut s = v1();
        let e = s.mark_bad(Slot::A, "manual").unwrap_err().to_string();
        assert!(e.contains("only good slot"), "{e}");
        assert_eq!(s, v1());
    }

    #[test]
    fn repeated_failures_then_a_good_update() {
        let mut s = v1();
        for ver in ["v3", "v4"] {
            assert_eq!(install_and_boot(&mut s, Slot::A, ver), Slot::B);
            assert_eq!(grub_pick(&mut s), Slot::A);
            s.boot_observed(Slot::A);
            assert_eq!((s.b.state, s.b.version.as_str()), (State::Bad, ver));
        }
        assert_eq!(install_and_boot(&mut s, Slot::A, "v5"), Slot::B);
        assert!(s.mark_good(Slot::B));
        assert_eq!(s.b.failure, "", "a good slot carries no failure");
    }

    #[test]
    fn cancel_then_install_again() {
        let mut s = v1();
        s.install_started(Slot::A).unwrap();
        s.install_complete(Slot::A, "v2", 1).unwrap();
        assert!(s.cancel(Slot::A).unwrap());
        assert_eq!((s.b.state, s.order[0]), (State::Bad, Slot::A));
        assert_eq!(grub_pick(&mut s.clone()), Slot::A);
        assert_eq!(install_and_boot(&mut s, Slot::A, "v2b"), Slot::B);
        assert_eq!(s.b.version, "v2b");
        // Cancelling the running or a good slot is refused.
        let mut g = v1();
        assert!(g
            .cancel(Slot::B)
            .unwrap_err()
            .to_string()
            .contains("slot A is good"));
    }

    #[test]
    fn an_interrupted_install_is_reported_and_can_be_repeated() {
        let mut s = v1();
        s.install_started(Slot::A).unwrap();
        // Power cut mid-write.
        assert_eq!(grub_pick(&mut s), Slot::A);
        assert!(s.boot_observed(Slot::A));
        assert_eq!(s.b.failure, "install: interrupted");
        assert!(!s.boot_observed(Slot::A));
        assert_eq!(install_and_boot(&mut s, Slot::A, "v2"), Slot::B);
        assert_eq!(s.b.failure, "");
    }

    #[test]
    fn no_install_while_on_trial() {
        let mut s = v1();
        assert_eq!(install_and_boot(&mut s, Slot::A, "v2"), Slot::B);
        let before = s.clone();
        let e = s.install_started(Slot::B).unwrap_err().to_string();
        assert!(e.contains("on trial"), "{e}");
        assert_eq!(s, before);
    }

    #[test]
    fn rollback_needs_a_good_other_slot() {
        let mut s = v1();
        assert_eq!(install_and_boot(&mut s, Slot::A, "v2"), Slot::B);
        s.mark_good(Slot::B);
        assert!(s.rollback(Slot::B).unwrap());
        assert_eq!(grub_pick(&mut s), Slot::A);
        assert_eq!(
            s.b.state,
            State::Good,
            "rolling back from a good slot keeps it good"
        );
        // From A, B is good again: rolling forward is also a rollback.
        assert!(s.rollback(Slot::A).unwrap());
        assert!(!s.rollback(Slot::A).unwrap(), "already preferred");
        // Rolling back from a trial slot records it.
        let mut t = v1();
        assert_eq!(install_and_boot(&mut t, Slot::A, "v3"), Slot::B);
        assert!(t.rollback(Slot::B).unwrap());
        assert_eq!(
            (t.b.state, t.b.failure.as_str()),
            (State::Bad, "rolled back")
        );
        assert_eq!(grub_pick(&mut t), Slot::A);
        // Nothing to roll back to.
        let mut f = v1();
        let e = f.rollback(Slot::A).unwrap_err().to_string();
        assert!(e.contains("slot B holds no good image: it is empty"), "{e}");
    }

    #[test]
    fn when_nothing_is_good_grub_still_boots_something() {
        let mut s = v1();
        s.a.state = State::Bad;
        s.b.state = State::Bad;
        s.order = [Slot::B, Slot::A];
        assert_eq!(grub_pick(&mut s), Slot::B);
        s.a.state = State::Empty;
        s.b.state = State::Empty;
        assert_eq!(grub_pick(&mut s), Slot::A);
    }
}
