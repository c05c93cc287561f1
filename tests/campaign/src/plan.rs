//! What a run does: the scenarios drawn from a seed, each an operation, a fault and the instant
//! the fault strikes. Pure: the same seed gives the same list on any machine.

use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::fmt;

/// An operation a box performs while a fault may strike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    Create,
    Write,
    Delete,
    Snapshot,
    Rollback,
    Clone,
    /// A raw or qcow2 image imported into a new volume.
    Import,
    /// A signed update installed, then the reboot into it.
    Update,
    /// A member replaced by a blank drive, and the resilver.
    Replace,
    Scrub,
    /// The storage policy on CONFIG changed, and the boot that applies it.
    Policy,
    /// Blank drives added to the pool while it runs.
    AddDrives,
}

impl Op {
    pub const ALL: [Op; 12] = [
        Op::Create,
        Op::Write,
        Op::Delete,
        Op::Snapshot,
        Op::Rollback,
        Op::Clone,
        Op::Import,
        Op::Update,
        Op::Replace,
        Op::Scrub,
        Op::Policy,
        Op::AddDrives,
    ];

    /// The window its fault's instant is drawn from, ms: 1.25 times the operation's median
    /// duration measured under TCG on 2 cores (seed 7, 26 scenarios without faults, each kind
    /// twice: write 0.2 s, snapshot and rollback 0.5, scrub 0.6, delete 0.8, create 1.2,
    /// add-drives 1.9, clone 2.0, import 2.8, replace 3.8, update's install 15.7, policy's
    /// CONFIG write 0.08). So about four faults in five strike while the command runs and one in
    /// five in the moments after it returned, where a missing flush would show. An update's or a
    /// policy change's boot is a window of its own (see the run's `BOOT_WINDOW_MS`).
    pub fn span_ms(self) -> u64 {
        match self {
            Op::Write => 300,
            Op::Policy => 100,
            Op::Snapshot | Op::Rollback => 650,
            Op::Scrub => 750,
            Op::Delete => 1_000,
            Op::Create => 1_500,
            Op::Clone | Op::AddDrives => 2_500,
            Op::Import => 3_500,
            Op::Replace => 4_700,
            Op::Update => 19_600,
        }
    }

    /// Whether the operation itself ends in a reboot.
    pub fn reboots(self) -> bool {
        matches!(self, Op::Update | Op::Policy)
    }
}

/// A failure injected while an operation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// qemu killed: every write not yet on the disk files is gone.
    PowerCut,
    /// volumed, storaged or mgmtd killed with SIGKILL.
    KillDaemon,
    /// Every I/O to one member fails for a while (zinject).
    IoErrors,
    /// Random sectors of one member overwritten from outside (what bit rot looks like).
    Corruption,
    /// A member pulled out while the box runs (QMP device_del), later put back.
    Unplug,
    /// The box booted with another TPM, then with its own again.
    TpmSwap,
    /// A /persist service's dataset filled to its quota.
    QuotaFill,
    /// The clock jumped by days to years, forward or back.
    ClockJump,
}

impl Fault {
    pub const ALL: [Fault; 8] = [
        Fault::PowerCut,
        Fault::KillDaemon,
        Fault::IoErrors,
        Fault::Corruption,
        Fault::Unplug,
        Fault::TpmSwap,
        Fault::QuotaFill,
        Fault::ClockJump,
    ];

    /// Whether recovery from it takes a boot.
    pub fn reboots(self) -> bool {
        matches!(self, Fault::PowerCut | Fault::TpmSwap)
    }
}

/// The kebab-case name serde gives a kind (what the results file says).
fn name(kind: &impl Serialize) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_else(|| "?".into())
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&name(self))
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&name(self))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scenario {
    pub index: usize,
    pub op: Op,
    pub fault: Fault,
    /// When the fault strikes, in ms after the operation starts.
    pub instant_ms: u64,
    /// The seed of this scenario's own choices (which volume, which block, which member).
    pub seed: u64,
}

/// `n` scenarios from `seed`. Every operation and every fault appears `n / kinds` times or more
/// (so a run of 100 has each operation 8 times and each fault 12), the rest drawn at random,
/// and the order shuffled.
pub fn scenarios(seed: u64, n: usize) -> Vec<Scenario> {
    let mut r = Rng::derive(seed, 0x5ce0);
    let ops = deck(&mut r, &Op::ALL, n);
    let faults = deck(&mut r, &Fault::ALL, n);
    ops.into_iter()
        .zip(faults)
        .enumerate()
        .map(|(index, (op, fault))| Scenario {
            index,
            op,
            fault,
            instant_ms: r.below(op.span_ms() + 1),
            seed: r.next_u64(),
        })
        .collect()
}

fn deck<T: Copy>(r: &mut Rng, kinds: &[T], n: usize) -> Vec<T> {
    let mut d: Vec<T> = kinds
        .iter()
        .copied()
        .cycle()
        .take(n / kinds.len() * kinds.len())
        .collect();
    while d.len() < n {
        d.push(*r.pick(kinds).expect("kinds"));
    }
    r.shuffle(&mut d);
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_seed_gives_the_same_run_and_another_seed_another() {
        assert_eq!(scenarios(42, 100), scenarios(42, 100));
        assert_ne!(scenarios(42, 100), scenarios(43, 100));
    }

    #[test]
    fn a_run_of_100_has_every_operation_and_fault_at_least_five_times() {
        let s = scenarios(1, 100);
        let mut ops = BTreeMap::new();
        let mut faults = BTreeMap::new();
        for x in &s {
            *ops.entry(x.op).or_insert(0) += 1;
            *faults.entry(x.fault).or_insert(0) += 1;
            assert!(x.instant_ms <= x.op.span_ms());
        }
        assert_eq!(ops.len(), Op::ALL.len());
        assert_eq!(faults.len(), Fault::ALL.len());
        assert!(ops.values().all(|&c| c >= 5), "{ops:?}");
        assert!(faults.values().all(|&c| c >= 5), "{faults:?}");
        assert_eq!(
            s.iter().map(|x| x.index).collect::<Vec<_>>(),
            (0..100).collect::<Vec<_>>()
        );
    }

    #[test]
    fn names_are_the_ones_the_results_file_uses() {
        assert_eq!(Op::AddDrives.to_string(), "add-drives");
        assert_eq!(Fault::PowerCut.to_string(), "power-cut");
        assert_eq!(
            serde_json::to_string(&Fault::TpmSwap).unwrap(),
            "\"tpm-swap\""
        );
    }
}
