//! The box's rollback floor: the lowest security epoch, update-key serial and built-in key list it
//! boots with the vault, kept in three TPM NV counters, which only go up. A counter's first
//! increment starts above every counter this TPM ever held (TPM 2.0 part 1, NV counters; swtpm
//! checked: undefining, redefining and even `TPM2_Clear` never bring one back), so the floor cannot
//! be lowered from the disk, a live USB or a shell. Because a counter made after a clear starts
//! high, each counter is counted from its *origin* (its value when first incremented), kept in a
//! fourth, ordinary index; a forged origin changes what stage 1 measures, so it can move the
//! floor only for boots that never get the vault.
//!
//! Stage 1 (in the verified initramfs) reads the floor, refuses a slot below the epoch floor, and
//! extends [`PCR`] with [`checked`] (naming the origins) only when the slot meets every floor; the
//! vault's seal is bound to that value, so an initramfs that predates the floor, or one that
//! predates the key-list floor (and measures the older [`CHECKED`]), never gets the vault key.
//! Pure: constants and the arithmetic both sides share.

use sha2::Digest;

/// NV index of the security-epoch counter (owner range).
pub const EPOCH_INDEX: u32 = 0x0180_0E70;
/// NV index of the update-key serial counter.
pub const SERIAL_INDEX: u32 = 0x0180_0E71;
/// NV index of the built-in key list counter: the serial of the key list built into the
/// initramfs of the newest release that booted good here. An initramfs built before a key
/// rotation still trusts the retired key (and any list that key signs), so it must not reach the
/// vault once a release built after the rotation has run.
pub const BUILTIN_INDEX: u32 = 0x0180_0E72;
/// NV index of the counters' origins: an ordinary index of three big-endian u64 (epoch, serial,
/// built-in list), each the counter's value standing for floor 0, or 0 while not yet known (the
/// counter's value then, since a counter is incremented past its first value only once its
/// origin is recorded).
pub const ORIGIN_INDEX: u32 = 0x0180_0E73;
/// TPMA_NV of the origin index: ordinary, read and written with its empty auth, no lockout.
pub const ORIGIN_ATTRIBUTES: u32 = AUTHWRITE | AUTHREAD | NO_DA;
/// Bytes in the origin index.
pub const ORIGIN_SIZE: usize = 24;
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
/// Measured by stage 1 when the slot meets the epoch and serial floors and the TPM holds no
/// origins yet (a box from before the key-list floor): seals from those releases are bound to
/// it, and they are replaced by a seal bound to [`checked`] at the first good boot that records
/// the origins. Never sealed to afresh.
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

/// What stage 1 measures when the slot meets every floor counted from `origins`: the value the
/// vault's seal is bound to. The origins are part of it, so origins written on a live USB (to
/// lower the floor) give a value no seal accepts.
pub fn checked(origins: &[u64; 3]) -> Vec<u8> {
    format!(
        "org.lfedge.eve: rollback floor and built-in key list checked; counters counted from {},{},{}",
        origins[0], origins[1], origins[2]
    )
    .into_bytes()
}

/// The floor a counter value stands for, counted from `origin`.
pub fn floor_from(counter: u64, origin: u64) -> u64 {
    counter.saturating_sub(origin)
}

/// The floor a counter value stands for on a box that recorded no origins: its counters were
/// made on a TPM that never held one, where the first increment reads 1.
pub fn floor_of(counter: u64) -> u64 {
    floor_from(counter, 1)
}

/// Pure: the origin record's bytes.
pub fn encode_origins(o: &[u64; 3]) -> [u8; ORIGIN_SIZE] {
    let mut b = [0u8; ORIGIN_SIZE];
    for (i, v) in o.iter().enumerate() {
        b[i * 8..i * 8 + 8].copy_from_slice(&v.to_be_bytes());
    }
    b
}

/// Pure: the origin record from its bytes (`None`: not 24 bytes).
pub fn decode_origins(b: &[u8]) -> Option<[u64; 3]> {
    if b.len() != ORIGIN_SIZE {
        return None;
    }
    Some(std::array::from_fn(|i| {
        u64::from_be_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]))
    }))
}

/// Pure: whether the origin index's public area is the one this box defines, written.
pub fn origin_public_ok(
    public_index: u32,
    name_alg: u16,
    attributes: u32,
    policy_len: usize,
    data_size: usize,
) -> bool {
    public_index == ORIGIN_INDEX
        && name_alg == ALG_SHA256
        && attributes & !WRITTEN == ORIGIN_ATTRIBUTES
        && attributes & WRITTEN != 0
        && policy_len == 0
        && data_size == ORIGIN_SIZE
}

/// Pure: the floor from what the TPM holds: each counter's value or why it cannot count, and the
/// origin record (`Ok(None)`: no index there; `Err`: an index that is not the box's record, or
/// cannot be read). Without a record it is a box from before the origins (counting from 1, the
/// older measurement, which only a seal from before them opens); anything else that does not add
/// up (a record without the key-list counter, a pending entry, an origin above its counter, a
/// record that cannot be read) is no floor: the vault stays locked and a recovery sets the floor
/// again.
pub fn resolve(
    epoch: Result<u64, String>,
    serial: Result<u64, String>,
    builtin: Result<u64, String>,
    record: Result<Option<[u64; 3]>, String>,
) -> Floor {
    let (e, s) = match (epoch, serial) {
        (Ok(e), Ok(s)) => (e, s),
        (Err(why), _) | (_, Err(why)) => return Floor::Absent(why),
    };
    let rec = match (record, builtin) {
        (Err(why), _) => return Floor::Absent(format!("the counters' origins: {why}")),
        // (The key-list counter may already be there: a seal replacement makes it before it
        // records the origins, and until then the seal in force is the one bound to the older
        // value; once replaced, that value opens nothing.)
        (Ok(None), _) => {
            return Floor::Present {
                epoch: floor_of(e),
                serial: floor_of(s),
                keys: None,
            }
        }
        (Ok(Some(_)), Err(why)) => return Floor::Absent(why),
        (Ok(Some(o)), Ok(k)) => (o, k),
    };
    let (o, k) = rec;
    let values = [e, s, k];
    if let Some(i) = (0..3).find(|&i| o[i] == 0 || o[i] > values[i]) {
        return Floor::Absent(format!(
            "the counters' origins {o:?} do not fit their values {values:?} (entry {i}: a raise cut short, or written by something else)"
        ));
    }
    Floor::Present {
        epoch: floor_from(e, o[0]),
        serial: floor_from(s, o[1]),
        keys: Some(KeysFloor {
            builtin: floor_from(k, o[2]),
            origins: o,
        }),
    }
}

/// What stage 1 extends when the slot meets `floor`: [`checked`] with the origins, or [`CHECKED`]
/// on a box that records none yet; `None` with no floor (stage 1 then measures [`UNCHECKED`]).
pub fn measurement_if_met(floor: &Floor) -> Option<Vec<u8>> {
    match floor {
        Floor::Present { keys: Some(k), .. } => Some(checked(&k.origins)),
        Floor::Present { keys: None, .. } => Some(CHECKED.to_vec()),
        _ => None,
    }
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
        /// The built-in key list floor and the origins; `None` on a box that records no origins
        /// yet (its first good boot of this release records them).
        keys: Option<KeysFloor>,
    },
}

/// The built-in key list floor, and every counter's origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysFloor {
    pub builtin: u64,
    pub origins: [u64; 3],
}

/// Stage 1's verdict on a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Below the floor: never booted.
    Refuse(String),
    /// Meets the floor: extend this ([`checked`], or [`CHECKED`] on a box without origins).
    Checked(Vec<u8>),
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

/// What stage 1 knows of the slot it boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// The security epoch its signed descriptor says.
    pub epoch: u32,
    /// The serial of the update keys it was opened under (the built-in list and the ESP's chain).
    pub serial: u32,
    /// The serial of the key list built into this initramfs.
    pub builtin: u32,
    /// The epoch the boot loader that started it was built for.
    pub loader: u32,
}

/// Pure: the verdict on a slot. An epoch below the floor is an old, fixed-hole release: refused.
/// A key serial below the floor means the key rotations on the ESP were lost or rolled back, so
/// a retired key may have signed this slot; a built-in key list below the floor is an initramfs
/// from before a rotation, which still trusts the retired key (and lists it signs); a loader
/// below the floor is an older GRUB put back on the ESP: these boot (the ESP must not be able to
/// brick the box) without the vault.
pub fn decide(floor: &Floor, slot: Slot) -> Verdict {
    let Slot {
        epoch,
        serial,
        builtin,
        loader,
    } = slot;
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
        Floor::Present {
            keys: Some(k), ..
        } if u64::from(builtin) < k.builtin => Verdict::Unchecked(format!(
            "the key list built into this initramfs has serial {builtin}, below this box's floor {} (an image from before a key rotation, which still trusts retired keys): the vault stays locked; boot a release built after the rotation",
            k.builtin
        )),
        Floor::Present { .. } => {
            Verdict::Checked(measurement_if_met(floor).unwrap_or_else(|| UNCHECKED.to_vec()))
        }
    }
}

/// Pure: whether a counter holding `counter` (`None`: never incremented), counted from `origin`,
/// needs another increment to stand for a floor of at least `target`.
pub fn needs_increment(counter: Option<u64>, origin: u64, target: u32) -> bool {
    match counter {
        None => true,
        Some(c) => floor_from(c, origin) < u64::from(target),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(epoch: u32, serial: u32, builtin: u32, loader: u32) -> Slot {
        Slot {
            epoch,
            serial,
            builtin,
            loader,
        }
    }

    #[test]
    fn the_floor_refuses_old_epochs_and_locks_the_vault_when_absent_or_keys_are_stale() {
        let o = [5, 7, 9];
        let f = Floor::Present {
            epoch: 2,
            serial: 3,
            keys: Some(KeysFloor {
                builtin: 3,
                origins: o,
            }),
        };
        assert_eq!(decide(&f, slot(2, 3, 3, 2)), Verdict::Checked(checked(&o)));
        assert_eq!(decide(&f, slot(5, 9, 4, 5)), Verdict::Checked(checked(&o)));
        match decide(&f, slot(1, 3, 3, 2)) {
            Verdict::Refuse(why) => assert!(why.contains("epoch 1 is below this box's floor 2")),
            v => panic!("{v:?}"),
        }
        // Epoch first: an old release is refused whatever its keys.
        assert!(matches!(decide(&f, slot(1, 1, 1, 2)), Verdict::Refuse(_)));
        match decide(&f, slot(2, 2, 3, 2)) {
            Verdict::Unchecked(why) => assert!(why.contains("serial 2, below"), "{why}"),
            v => panic!("{v:?}"),
        }
        // A fork by a retired key: the chain the ESP gives says serial 99, but this initramfs was
        // built before the rotation to list 3.
        match decide(&f, slot(2, 99, 2, 2)) {
            Verdict::Unchecked(why) => assert!(
                why.contains("built into this initramfs has serial 2, below this box's floor 3"),
                "{why}"
            ),
            v => panic!("{v:?}"),
        }
        match decide(
            &Floor::Absent("0x01800e70: handle not found".into()),
            slot(0, 1, 1, 0),
        ) {
            Verdict::Unchecked(why) => assert!(why.contains("0x01800e70")),
            v => panic!("{v:?}"),
        }
        assert_eq!(decide(&Floor::NoTpm, slot(0, 0, 0, 0)), Verdict::NoTpm);
        // An older GRUB put back: the slot boots, the vault stays locked.
        match decide(&f, slot(2, 3, 3, 1)) {
            Verdict::Unchecked(why) => assert!(why.contains("epoch 1, below this box's floor 2")),
            v => panic!("{v:?}"),
        }
        assert_eq!(
            decide(&f, slot(2, 3, 3, 7)),
            Verdict::Checked(checked(&o)),
            "a newer loader"
        );
        // A box from before the origins: the built-in list is not checked yet, and what is
        // measured is the older value its seal is bound to.
        let legacy = Floor::Present {
            epoch: 2,
            serial: 3,
            keys: None,
        };
        assert_eq!(
            decide(&legacy, slot(2, 3, 1, 2)),
            Verdict::Checked(CHECKED.to_vec())
        );
    }

    #[test]
    fn counters_count_from_their_recorded_origins() {
        let ok = |v| Ok::<u64, String>(v);
        let gone = || Err::<u64, String>("absent".into());
        // No record: a box from before them; counting from 1, with or without the key-list
        // counter (a seal replacement makes it before it records the origins).
        for k in [gone(), ok(7)] {
            assert_eq!(
                resolve(ok(2), ok(3), k, Ok(None)),
                Floor::Present {
                    epoch: 1,
                    serial: 2,
                    keys: None
                }
            );
        }
        // After a TPM clear the counters restart high; their origins keep the floors right.
        let f = resolve(ok(9), ok(11), ok(12), Ok(Some([8, 9, 10])));
        assert_eq!(
            f,
            Floor::Present {
                epoch: 1,
                serial: 2,
                keys: Some(KeysFloor {
                    builtin: 2,
                    origins: [8, 9, 10]
                })
            }
        );
        assert_eq!(measurement_if_met(&f), Some(checked(&[8, 9, 10])));
        // What does not add up is no floor: a pending entry (a raise cut short), an origin above
        // its counter (written to lower the floor), a record without the key-list counter, a
        // record that cannot be read.
        for (k, rec, why) in [
            (ok(12), Ok(Some([0, 9, 10])), "entry 0"),
            (ok(12), Ok(Some([8, 9, 100])), "entry 2"),
            (ok(12), Ok(Some([u64::MAX; 3])), "entry 0"),
            (gone(), Ok(Some([8, 9, 10])), "absent"),
            (
                ok(12),
                Err("authorization failed".into()),
                "authorization failed",
            ),
        ] {
            match resolve(ok(9), ok(11), k, rec) {
                Floor::Absent(w) => assert!(w.contains(why), "{w}"),
                f => panic!("{f:?}"),
            }
        }
        assert_eq!(measurement_if_met(&Floor::Absent("x".into())), None);
        assert_eq!(measurement_if_met(&Floor::NoTpm), None);
        match resolve(Err("0x01800e70: gone".into()), ok(1), ok(1), Ok(None)) {
            Floor::Absent(why) => assert!(why.contains("0x01800e70")),
            f => panic!("{f:?}"),
        }
        let b = encode_origins(&[1, u64::MAX, 3]);
        assert_eq!(decode_origins(&b), Some([1, u64::MAX, 3]));
        assert_eq!(decode_origins(&b[..23]), None);
        assert_ne!(checked(&[1, 1, 1]), checked(&[1, 1, 2]));
        assert_ne!(checked(&[1, 1, 1]), CHECKED.to_vec());
    }

    #[test]
    fn only_the_origin_index_this_box_defines_counts() {
        let w = ORIGIN_ATTRIBUTES | WRITTEN;
        assert!(origin_public_ok(ORIGIN_INDEX, ALG_SHA256, w, 0, 24));
        assert!(!origin_public_ok(
            ORIGIN_INDEX,
            ALG_SHA256,
            ORIGIN_ATTRIBUTES,
            0,
            24
        ));
        assert!(!origin_public_ok(
            ORIGIN_INDEX,
            ALG_SHA256,
            w | NT_COUNTER,
            0,
            24
        ));
        assert!(!origin_public_ok(ORIGIN_INDEX, ALG_SHA256, w, 32, 24));
        assert!(!origin_public_ok(ORIGIN_INDEX, ALG_SHA256, w, 0, 8));
        assert!(!origin_public_ok(EPOCH_INDEX, ALG_SHA256, w, 0, 24));
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
        assert!(needs_increment(None, 1, 0));
        assert!(!needs_increment(Some(1), 1, 0));
        assert!(needs_increment(Some(1), 1, 1));
        assert!(!needs_increment(Some(2), 1, 1));
        assert!(!needs_increment(Some(9), 1, 1), "never lowered");
        assert!(needs_increment(Some(9), 9, 1), "counted from its origin");
        assert!(!needs_increment(Some(10), 9, 1));
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
