//! The firmware's TPM event log (TCG PC Client, crypto-agile format, as the kernel exposes it in
//! `security/tpm0/binary_bios_measurements`): parsed, replayed into PCR values, and replayed with
//! one Secure Boot variable's measurement replaced, which is how the PCR 7 of the next boot is
//! predicted before a `dbx` update (systemd-pcrlock and Ubuntu's FDE predict it the same way).
//! A prediction counts only when the replay of the log as it is gives the PCR's current value.

use crate::efisig;

/// The log under the sys root (securityfs at `/sys/kernel/security`).
pub const IN_SYS: &str = "kernel/security/tpm0/binary_bios_measurements";
pub const EV_NO_ACTION: u32 = 0x3;
pub const EV_EFI_VARIABLE_DRIVER_CONFIG: u32 = 0x8000_0001;
const SHA256: u16 = 0x000b;
const SPEC_ID: &[u8] = b"Spec ID Event03\0";

/// One measurement: the PCR, the event type, its SHA-256 digest, the event data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub pcr: u32,
    pub kind: u32,
    pub sha256: [u8; 32],
    pub data: Vec<u8>,
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or_else(|| format!("byte {}: the log ends inside {what}", self.at))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u16(&mut self, what: &str) -> Result<u16, String> {
        let s = self.take(2, what)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let s = self.take(4, what)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
}

/// Parses a crypto-agile log. Events without a SHA-256 digest are refused: the seal is SHA-256.
pub fn parse(b: &[u8]) -> Result<Vec<Event>, String> {
    let mut r = Reader { b, at: 0 };
    // The first event is in the older SHA-1 layout and describes the digests that follow.
    r.u32("the first event")?;
    let kind = r.u32("the first event")?;
    r.take(20, "the first event")?;
    let size = r.u32("the first event")? as usize;
    let spec = r.take(size, "the Spec ID event")?;
    if kind != EV_NO_ACTION || !spec.starts_with(SPEC_ID) {
        return Err("not a crypto-agile log (no Spec ID Event03 first)".into());
    }
    let mut s = Reader { b: spec, at: 24 };
    let n = s.u32("the Spec ID event")?;
    let mut sizes = Vec::new();
    for _ in 0..n {
        let alg = s.u16("the Spec ID event")?;
        let len = s.u16("the Spec ID event")?;
        sizes.push((alg, usize::from(len)));
    }
    let mut out = Vec::new();
    // Some firmware pads the log's buffer with zeros after the last event.
    while r.at < b.len() && b[r.at..].iter().any(|&x| x != 0) {
        let pcr = r.u32("an event")?;
        let kind = r.u32("an event")?;
        let count = r.u32("an event's digests")?;
        let mut sha = None;
        for _ in 0..count {
            let alg = r.u16("a digest")?;
            let len = sizes
                .iter()
                .find(|(a, _)| *a == alg)
                .map(|(_, l)| *l)
                .ok_or_else(|| {
                    format!(
                        "byte {}: digest algorithm {alg:#06x} is not in the Spec ID event",
                        r.at
                    )
                })?;
            let d = r.take(len, "a digest")?;
            if alg == SHA256 {
                sha = Some(
                    <[u8; 32]>::try_from(d).map_err(|_| "a SHA-256 digest of the wrong size")?,
                );
            }
        }
        let size = r.u32("an event's size")? as usize;
        let data = r.take(size, "an event's data")?.to_vec();
        let sha256 = match sha {
            Some(d) => d,
            None if kind == EV_NO_ACTION => [0; 32],
            None => {
                return Err(format!(
                    "event {} (PCR {pcr}) has no SHA-256 digest",
                    out.len() + 1
                ))
            }
        };
        out.push(Event {
            pcr,
            kind,
            sha256,
            data,
        });
    }
    Ok(out)
}

fn extend(pcr: &mut [u8; 32], d: &[u8; 32]) {
    let mut b = [0u8; 64];
    b[..32].copy_from_slice(pcr);
    b[32..].copy_from_slice(d);
    *pcr = efisig::sha256(&b);
}

/// PCR `pcr`'s SHA-256 value after the events of the log (for PCRs that start at zero).
pub fn replay(events: &[Event], pcr: u32) -> [u8; 32] {
    let mut v = [0u8; 32];
    for e in events
        .iter()
        .filter(|e| e.pcr == pcr && e.kind != EV_NO_ACTION)
    {
        extend(&mut v, &e.sha256);
    }
    v
}

/// The measured data of a Secure Boot variable in PCR 7, and the event's index: exactly one.
pub fn variable(
    events: &[Event],
    vendor: &[u8; 16],
    name: &str,
) -> Result<(usize, Vec<u8>), String> {
    let found: Vec<(usize, Vec<u8>)> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.pcr == 7 && e.kind == EV_EFI_VARIABLE_DRIVER_CONFIG)
        .filter_map(|(i, e)| {
            let (g, n, d) = efisig::parse_variable_data(&e.data)?;
            (g == *vendor && n == name).then(|| (i, d.to_vec()))
        })
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format!(
            "the event log has no measurement of {name} in PCR 7"
        )),
        _ => Err(format!(
            "the event log measures {name} in PCR 7 {} times",
            found.len()
        )),
    }
}

/// PCR 7 as the next boot measures it when the variable `name` holds `data` and nothing else in
/// what PCR 7 measures changed: the log replayed with that one event's digest recomputed.
pub fn pcr7_with(
    events: &[Event],
    vendor: &[u8; 16],
    name: &str,
    data: &[u8],
) -> Result<[u8; 32], String> {
    let (i, _) = variable(events, vendor, name)?;
    let mut changed = events.to_vec();
    let e = &mut changed[i];
    // The firmware hashes the whole UEFI_VARIABLE_DATA; check that reading on this log first.
    if efisig::sha256(&e.data) != e.sha256 {
        return Err(format!(
            "the digest of {name}'s measurement is not the hash of its logged data: the firmware measures it another way"
        ));
    }
    e.data = efisig::variable_data(vendor, name, data);
    e.sha256 = efisig::sha256(&e.data);
    Ok(replay(&changed, 7))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(pcr: u32, kind: u32, data: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&pcr.to_le_bytes());
        b.extend_from_slice(&kind.to_le_bytes());
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&0x0004u16.to_le_bytes());
        b.extend_from_slice(&[0xaa; 20]);
        b.extend_from_slice(&SHA256.to_le_bytes());
        b.extend_from_slice(&efisig::sha256(data));
        b.extend_from_slice(&(data.len() as u32).to_le_bytes());
        b.extend_from_slice(data);
        b
    }

    /// A log of the shape the firmware writes: the Spec ID event, then events with SHA-1 and
    /// SHA-256 digests.
    fn log(events: &[Vec<u8>]) -> Vec<u8> {
        let mut spec = SPEC_ID.to_vec();
        spec.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 2]);
        spec.extend_from_slice(&2u32.to_le_bytes());
        spec.extend_from_slice(&[0x04, 0x00, 20, 0, 0x0b, 0x00, 32, 0, 0]);
        let mut b = Vec::new();
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
        b.extend_from_slice(&[0; 20]);
        b.extend_from_slice(&(spec.len() as u32).to_le_bytes());
        b.extend_from_slice(&spec);
        for e in events {
            b.extend_from_slice(e);
        }
        b
    }

    fn dbx(data: &[u8]) -> Vec<u8> {
        efisig::variable_data(&efisig::SECURITY_DATABASE_GUID, efisig::DBX, data)
    }

    #[test]
    fn a_replay_with_the_new_dbx_equals_the_replay_of_a_log_that_measured_it() {
        let before = log(&[
            event(7, EV_EFI_VARIABLE_DRIVER_CONFIG, b"SecureBoot-ish"),
            event(0, 0x8, b"other pcr"),
            event(7, EV_EFI_VARIABLE_DRIVER_CONFIG, &dbx(b"old")),
            event(7, 0x4, &[0; 4]),
        ]);
        let after = log(&[
            event(7, EV_EFI_VARIABLE_DRIVER_CONFIG, b"SecureBoot-ish"),
            event(0, 0x8, b"other pcr"),
            event(7, EV_EFI_VARIABLE_DRIVER_CONFIG, &dbx(b"old+new")),
            event(7, 0x4, &[0; 4]),
        ]);
        let ev = parse(&before).unwrap();
        assert_eq!(ev.len(), 4);
        let (i, data) = variable(&ev, &efisig::SECURITY_DATABASE_GUID, "dbx").unwrap();
        assert_eq!((i, data.as_slice()), (2, &b"old"[..]));
        let predicted = pcr7_with(&ev, &efisig::SECURITY_DATABASE_GUID, "dbx", b"old+new").unwrap();
        assert_eq!(predicted, replay(&parse(&after).unwrap(), 7));
        assert_ne!(predicted, replay(&ev, 7));
        assert_eq!(
            pcr7_with(&ev, &efisig::SECURITY_DATABASE_GUID, "dbx", b"old").unwrap(),
            replay(&ev, 7)
        );
    }

    /// A log the kernel exposed under OVMF's Secure Boot build with swtpm, booted through the
    /// image's shim and GRUB (its `dbx` variable and PCR 7 read in the same boot).
    #[test]
    fn a_real_log_replays_to_its_pcr7_and_measured_the_dbx_the_firmware_holds() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eventlog");
        let raw = std::fs::read(dir.join("ovmf-secureboot-shim-grub.bin")).unwrap();
        let pcr7 = std::fs::read_to_string(dir.join("pcr7.hex")).unwrap();
        let efivar = std::fs::read(dir.join("dbx-efivar.bin")).unwrap();
        let ev = parse(&raw).unwrap();
        assert!(ev.len() > 20, "{}", ev.len());
        let hex: String = replay(&ev, 7).iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(hex, pcr7.trim());
        let (_, measured) = variable(&ev, &efisig::SECURITY_DATABASE_GUID, efisig::DBX).unwrap();
        assert_eq!(measured, efivar[4..]);
        // The stock shim's vendor certificate is what the image's firmware variables revoke.
        assert!(efisig::parse_lists(&measured).unwrap().len() == 1);
        let same = pcr7_with(&ev, &efisig::SECURITY_DATABASE_GUID, efisig::DBX, &measured).unwrap();
        assert_eq!(same, replay(&ev, 7));
        let mut more = measured.clone();
        more.extend_from_slice(&[0; 76]);
        assert_ne!(
            pcr7_with(&ev, &efisig::SECURITY_DATABASE_GUID, efisig::DBX, &more).unwrap(),
            same
        );
    }

    #[test]
    fn logs_that_cannot_be_replayed_are_refused_with_the_reason() {
        let good = log(&[event(7, EV_EFI_VARIABLE_DRIVER_CONFIG, &dbx(b"x"))]);
        assert!(parse(&good[..good.len() - 1])
            .unwrap_err()
            .contains("ends inside"));
        assert!(parse(&good[..10]).is_err());
        let mut not_agile = good.clone();
        not_agile[32] = b'X';
        assert!(parse(&not_agile).unwrap_err().contains("crypto-agile"));
        let mut padded = good.clone();
        padded.extend_from_slice(&[0; 64]);
        assert_eq!(parse(&padded).unwrap(), parse(&good).unwrap());
        let none = parse(&log(&[])).unwrap();
        assert!(variable(&none, &efisig::SECURITY_DATABASE_GUID, "dbx")
            .unwrap_err()
            .contains("no measurement of dbx"));
        let twice = parse(&log(&[
            event(7, EV_EFI_VARIABLE_DRIVER_CONFIG, &dbx(b"x")),
            event(7, EV_EFI_VARIABLE_DRIVER_CONFIG, &dbx(b"y")),
        ]))
        .unwrap();
        assert!(variable(&twice, &efisig::SECURITY_DATABASE_GUID, "dbx")
            .unwrap_err()
            .contains("2 times"));
        // A digest that is not the hash of the logged structure: the prediction would be a guess.
        let mut ev = parse(&good).unwrap();
        ev[0].sha256[0] ^= 1;
        assert!(pcr7_with(&ev, &efisig::SECURITY_DATABASE_GUID, "dbx", b"z")
            .unwrap_err()
            .contains("another way"));
    }
}
