//! The box's rollback floor: the lowest security epoch and update-key serial it boots, kept in two
//! TPM NV counters, which only go up. A counter's first increment starts above every counter this
//! TPM ever held (TPM 2.0 part 1, NV counters; swtpm checked: undefining, redefining and even
//! `TPM2_Clear` never bring one back), so the floor cannot be lowered from the disk, a live USB or
//! a shell. Stage 1 (in the verified initramfs) reads the floor, refuses a slot below it, and
//! extends [`PCR`] with [`CHECKED`] only when the slot meets it; the vault's seal is bound to that
//! value, so an initramfs that predates the floor (and extends nothing) never gets the vault key.
//! Pure: constants and the arithmetic both sides share.

use sha2::Digest;

/// NV index of the security-epoch counter (owner range).
pub const EPOCH_INDEX: u32 = 0x0180_0E70;
/// NV index of the update-key serial counter.
pub const SERIAL_INDEX: u32 = 0x0180_0E71;
/// TPMA_NV of both counters, without TPMA_NV_WRITTEN: a counter (TPM_NT_COUNTER), read and
/// incremented with its empty auth value, no dictionary-attack lockout. Anyone may raise it (at
/// worst a denial of service, as a cleared TPM is); nobody can lower it.
pub const ATTRIBUTES: u32 = AUTHWRITE | NT_COUNTER | AUTHREAD | NO_DA;
pub const AUTHWRITE: u32 = 0x0000_0004;
pub const NT_COUNTER: u32 = 0x0000_0010;
pub const AUTHREAD: u32 = 0x0004_0000;
pub const NO_DA: u32 = 0x0200_0000;
/// Set once the counter was first incremented.
pub const WRITTEN: u32 = 0x2000_0000;
/// The PCR stage 1 extends with its verdict (12: unused by firmware, shim and GRUB).
pub const PCR: u8 = 12;
/// Measured when the slot meets the floor: the only value the vault's seal accepts.
pub const CHECKED: &[u8] = b"org.lfedge.eve: rollback floor checked";
/// Measured when the floor is absent (first boot, a cleared TPM) or the key serial is not met:
/// the boot goes on, the vault stays locked.
pub const UNCHECKED: &[u8] = b"org.lfedge.eve: rollback floor absent or not met";

/// SHA-256's TPM algorithm id: the counters' name algorithm.
pub const ALG_SHA256: u16 = 0x000B;

/// Pure: whether the public area read at `index` is the counter this box defines there, and
/// whether it was ever incremented; `Err` says why it is not ours. Stage 1 and the running system
/// use this one check, so they never disagree on what counts.
pub fn check_public(
    index: u32,
    public_index: u32,
    name_alg: u16,
    attributes: u32,
    policy_len: usize,
    data_size: usize,
) -> Result<bool, String> {
    if public_index != index
        || name_alg != ALG_SHA256
        || attributes & !WRITTEN != ATTRIBUTES
        || policy_len != 0
        || data_size != 8
    {
        return Err(format!(
            "{index:#010x} is not the box's counter (name algorithm {name_alg:#06x}, attributes {attributes:#x}, policy {policy_len} bytes, {data_size} bytes of data)"
        ));
    }
    Ok(attributes & WRITTEN != 0)
}

/// The floor a counter value stands for: the first increment reads 1 on a TPM that never held a
/// counter, and means "nothing refused yet".
pub fn floor_of(counter: u64) -> u64 {
    counter.saturating_sub(1)
}

/// SHA-256 of `what`: the digest stage 1 extends the PCR with.
pub fn measure(what: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(what).into()
}

/// The PCR's value after one extend with `what` from zero (its value at every boot).
pub fn pcr_after(what: &[u8]) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    h.update([0u8; 32]);
    h.update(measure(what));
    h.finalize().into()
}

/// What the TPM holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Floor {
    /// No TPM on this box: nothing is sealed, nothing to check.
    NoTpm,
    /// A counter is missing, never incremented, or not the counter this box defines (its
    /// attributes differ): why, for the log.
    Absent(String),
    Present {
        epoch: u64,
        serial: u64,
    },
}

/// Stage 1's verdict on a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Below the floor: never booted.
    Refuse(String),
    /// Meets the floor: extend [`CHECKED`].
    Checked,
    /// Boots, but extend [`UNCHECKED`]: the vault stays locked this boot. Why, for the console.
    Unchecked(String),
    /// No TPM: extend nothing.
    NoTpm,
}

/// The kernel argument by which our GRUB says which security epoch it was built for (its embedded,
/// signed config writes it; it is also the SBAT generation of our GRUB component, minus one).
pub const LOADER_ARG: &str = "eve.bootepoch=";

/// Pure: the boot loader's epoch from the kernel command line. Absent (a GRUB from before boot
/// loaders carried their epoch), repeated or garbage: 0, the oldest.
pub fn loader_epoch_of_cmdline(cmdline: &str) -> u32 {
    let mut found = cmdline
        .split_ascii_whitespace()
        .filter_map(|w| w.strip_prefix(LOADER_ARG));
    match (found.next(), found.next()) {
        (Some(v), None) => v.parse().unwrap_or(0),
        _ => 0,
    }
}

/// Pure: the epoch a GRUB binary of ours was built for, from the text of its embedded config
/// (`None`: not one of ours, from before boot loaders carried their epoch, or naming it more than
/// once).
pub fn loader_epoch_in(binary: &[u8]) -> Option<u32> {
    let arg = LOADER_ARG.as_bytes();
    let mut hits = binary
        .windows(arg.len())
        .enumerate()
        .filter(|(_, w)| *w == arg)
        .map(|(i, _)| i);
    let at = hits.next()? + arg.len();
    if hits.next().is_some() {
        return None;
    }
    let digits: Vec<u8> = binary[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .take(10)
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// Pure: the verdict on a slot whose signed descriptor says `epoch`, opened under update keys of
/// serial `serial`, started by a boot loader built for epoch `loader`. An epoch below the floor is
/// an old, fixed-hole release: refused. A key serial below the floor means the key rotations on
/// the ESP were lost or rolled back, so a retired key may have signed this slot; a loader below
/// the floor is an older GRUB put back on the ESP: both boot (the ESP must not be able to brick
/// the box) without the vault.
pub fn decide(floor: &Floor, epoch: u32, serial: u32, loader: u32) -> Verdict {
    match floor {
        Floor::NoTpm => Verdict::NoTpm,
        Floor::Absent(why) => Verdict::Unchecked(format!(
            "no rollback floor in the TPM ({why}): first boot, or the TPM was cleared; the vault stays locked until it is made or recovered"
        )),
        Floor::Present { epoch: fe, .. } if u64::from(epoch) < *fe => Verdict::Refuse(format!(
            "security epoch {epoch} is below this box's floor {fe} (an older release with fixed security holes)"
        )),
        Floor::Present { serial: fs, .. } if u64::from(serial) < *fs => Verdict::Unchecked(format!(
            "the update keys in force have serial {serial}, below this box's floor {fs} (key rotations on the ESP lost or rolled back): the vault stays locked; a signed update repairs it"
        )),
        Floor::Present { epoch: fe, .. } if u64::from(loader) < *fe => Verdict::Unchecked(format!(
            "the boot loader on the ESP was built for security epoch {loader}, below this box's floor {fe} (an older GRUB was put back): the vault stays locked; the running release puts its own boot loader back once its boot is judged good"
        )),
        Floor::Present { .. } => Verdict::Checked,
    }
}

/// Pure: whether a counter holding `counter` (`None`: never incremented) needs another increment
/// to stand for a floor of at least `target`.
pub fn needs_increment(counter: Option<u64>, target: u32) -> bool {
    match counter {
        None => true,
        Some(c) => floor_of(c) < u64::from(target),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_refuses_old_epochs_and_locks_the_vault_when_absent_or_keys_are_stale() {
        let f = Floor::Present {
            epoch: 2,
            serial: 3,
        };
        assert_eq!(decide(&f, 2, 3, 2), Verdict::Checked);
        assert_eq!(decide(&f, 5, 9, 5), Verdict::Checked);
        match decide(&f, 1, 3, 2) {
            Verdict::Refuse(why) => assert!(why.contains("epoch 1 is below this box's floor 2")),
            v => panic!("{v:?}"),
        }
        // Epoch first: an old release is refused whatever its keys.
        assert!(matches!(decide(&f, 1, 1, 2), Verdict::Refuse(_)));
        match decide(&f, 2, 2, 2) {
            Verdict::Unchecked(why) => assert!(why.contains("serial 2, below"), "{why}"),
            v => panic!("{v:?}"),
        }
        match decide(
            &Floor::Absent("0x01800e70: handle not found".into()),
            0,
            1,
            0,
        ) {
            Verdict::Unchecked(why) => assert!(why.contains("0x01800e70")),
            v => panic!("{v:?}"),
        }
        assert_eq!(decide(&Floor::NoTpm, 0, 0, 0), Verdict::NoTpm);
        // An older GRUB put back: the slot boots, the vault stays locked.
        match decide(&f, 2, 3, 1) {
            Verdict::Unchecked(why) => assert!(why.contains("epoch 1, below this box's floor 2")),
            v => panic!("{v:?}"),
        }
        assert_eq!(decide(&f, 2, 3, 7), Verdict::Checked, "a newer loader");
    }

    #[test]
    fn the_loader_says_its_epoch_once_or_counts_as_the_oldest() {
        assert_eq!(
            loader_epoch_of_cmdline("root=x eve.slot=A eve.bootepoch=3 quiet"),
            3
        );
        assert_eq!(loader_epoch_of_cmdline("root=x eve.slot=A"), 0);
        assert_eq!(
            loader_epoch_of_cmdline("eve.bootepoch=3 eve.bootepoch=9"),
            0
        );
        assert_eq!(loader_epoch_of_cmdline("eve.bootepoch=x"), 0);
        assert_eq!(loader_epoch_of_cmdline("xeve.bootepoch=5"), 0);
        let grub = b"\0\0linux /boot/vmlinuz root=PARTUUID=$partuuid eve.slot=$1 eve.bootepoch=12 $eve_extra";
        assert_eq!(loader_epoch_in(grub), Some(12));
        assert_eq!(loader_epoch_in(b"MZ... eve.slot=$1 $eve_extra"), None);
        assert_eq!(loader_epoch_in(b"eve.bootepoch="), None);
        assert_eq!(loader_epoch_in(b"eve.bootepoch=1 eve.bootepoch=9"), None);
    }

    #[test]
    fn only_the_counter_this_box_defines_counts() {
        let ours = |attrs, alg, policy, size| {
            check_public(EPOCH_INDEX, EPOCH_INDEX, alg, attrs, policy, size)
        };
        assert_eq!(ours(ATTRIBUTES | WRITTEN, ALG_SHA256, 0, 8), Ok(true));
        assert_eq!(ours(ATTRIBUTES, ALG_SHA256, 0, 8), Ok(false));
        for (attrs, alg, policy, size) in [
            // An ordinary index anyone could write any value to.
            ((ATTRIBUTES & !NT_COUNTER) | WRITTEN, ALG_SHA256, 0, 8),
            (ATTRIBUTES | WRITTEN, 0x0004, 0, 8),
            (ATTRIBUTES | WRITTEN, ALG_SHA256, 32, 8),
            (ATTRIBUTES | WRITTEN, ALG_SHA256, 0, 4),
        ] {
            let e = ours(attrs, alg, policy, size).unwrap_err();
            assert!(e.contains("not the box's counter"), "{e}");
        }
        assert!(check_public(EPOCH_INDEX, SERIAL_INDEX, ALG_SHA256, ATTRIBUTES, 0, 8).is_err());
    }

    #[test]
    fn counters_start_at_one_and_stand_for_one_less() {
        assert_eq!(floor_of(0), 0);
        assert_eq!(floor_of(1), 0);
        assert_eq!(floor_of(4), 3);
        assert!(needs_increment(None, 0));
        assert!(!needs_increment(Some(1), 0));
        assert!(needs_increment(Some(1), 1));
        assert!(!needs_increment(Some(2), 1));
        assert!(!needs_increment(Some(9), 1), "never lowered");
    }

    #[test]
    fn the_pcr_value_is_one_extend_from_zero() {
        let v = pcr_after(CHECKED);
        let mut h = sha2::Sha256::new();
        h.update([0u8; 32]);
        h.update(sha2::Sha256::digest(CHECKED));
        assert_eq!(v.to_vec(), h.finalize().to_vec());
        assert_ne!(pcr_after(CHECKED), pcr_after(UNCHECKED));
    }
}
