//! Four TPM 2.0 commands spoken directly to the kernel's TPM device: read the rollback floor's NV
//! counters and their origins (`TPM2_NV_ReadPublic`, `TPM2_NV_Read`), raise the serial counter
//! (`TPM2_NV_Increment`) and extend the rollback PCR (`TPM2_PCR_Extend`). Stage 1 (a static PID 1
//! without the TSS libraries) and abupdate use them; these commands have fixed layouts (TPM 2.0 part 3), so they are
//! marshalled here, and everything else that talks to the TPM uses tss-esapi. Commands and
//! replies are pure byte functions, tested below.

use crate::rollback::{self, Floor};
use std::io::{Read, Write};
use std::path::Path;

const ST_NO_SESSIONS: u16 = 0x8001;
const ST_SESSIONS: u16 = 0x8002;
const CC_NV_READ: u32 = 0x0000_014E;
const CC_NV_INCREMENT: u32 = 0x0000_0134;
const CC_NV_READ_PUBLIC: u32 = 0x0000_0169;
const CC_PCR_EXTEND: u32 = 0x0000_0182;
const RS_PW: u32 = 0x4000_0009;
const ALG_SHA256: u16 = rollback::ALG_SHA256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TpmError {
    #[error("{0}")]
    Io(String),
    #[error("{command}: TPM response code {code:#x}")]
    Code { command: &'static str, code: u32 },
    #[error("{command}: malformed response: {why}")]
    Malformed {
        command: &'static str,
        why: &'static str,
    },
}

/// The empty-password authorisation area (TPM_RS_PW, no nonce, no attributes, empty HMAC).
fn password_area(out: &mut Vec<u8>) {
    out.extend_from_slice(&9u32.to_be_bytes());
    out.extend_from_slice(&RS_PW.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.push(0);
    out.extend_from_slice(&0u16.to_be_bytes());
}

fn frame(tag: u16, cc: u32, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(10 + body.len());
    v.extend_from_slice(&tag.to_be_bytes());
    v.extend_from_slice(&((10 + body.len()) as u32).to_be_bytes());
    v.extend_from_slice(&cc.to_be_bytes());
    v.extend_from_slice(body);
    v
}

pub fn nv_read_public_cmd(index: u32) -> Vec<u8> {
    frame(ST_NO_SESSIONS, CC_NV_READ_PUBLIC, &index.to_be_bytes())
}

/// Reads `size` bytes at offset 0, authorised by the index's own (empty) auth value.
pub fn nv_read_cmd(index: u32, size: u16) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&index.to_be_bytes());
    b.extend_from_slice(&index.to_be_bytes());
    password_area(&mut b);
    b.extend_from_slice(&size.to_be_bytes());
    b.extend_from_slice(&0u16.to_be_bytes());
    frame(ST_SESSIONS, CC_NV_READ, &b)
}

/// Increments a counter index, authorised by its own (empty) auth value.
pub fn nv_increment_cmd(index: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&index.to_be_bytes());
    b.extend_from_slice(&index.to_be_bytes());
    password_area(&mut b);
    frame(ST_SESSIONS, CC_NV_INCREMENT, &b)
}

/// Extends the SHA-256 bank of `pcr` with `digest`.
pub fn pcr_extend_cmd(pcr: u8, digest: &[u8; 32]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&u32::from(pcr).to_be_bytes());
    password_area(&mut b);
    b.extend_from_slice(&1u32.to_be_bytes());
    b.extend_from_slice(&ALG_SHA256.to_be_bytes());
    b.extend_from_slice(digest);
    frame(ST_SESSIONS, CC_PCR_EXTEND, &b)
}

/// A reply cursor.
struct Reader<'a> {
    b: &'a [u8],
    command: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TpmError> {
        if self.b.len() < n {
            return Err(TpmError::Malformed {
                command: self.command,
                why: "short",
            });
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u16(&mut self) -> Result<u16, TpmError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, TpmError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Checks the header of `reply` and returns a reader past it.
fn header<'a>(reply: &'a [u8], command: &'static str) -> Result<Reader<'a>, TpmError> {
    let mut r = Reader { b: reply, command };
    let _tag = r.u16()?;
    let size = r.u32()? as usize;
    let code = r.u32()?;
    if code != 0 {
        return Err(TpmError::Code { command, code });
    }
    if size != reply.len() {
        return Err(TpmError::Malformed {
            command,
            why: "size field does not match",
        });
    }
    Ok(r)
}

/// The public area of an NV index: (attributes, authPolicy length, dataSize).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NvPublic {
    pub index: u32,
    pub name_alg: u16,
    pub attributes: u32,
    pub policy_len: u16,
    pub data_size: u16,
}

pub fn parse_nv_read_public(reply: &[u8]) -> Result<NvPublic, TpmError> {
    let mut r = header(reply, "TPM2_NV_ReadPublic")?;
    let _size = r.u16()?;
    let index = r.u32()?;
    let name_alg = r.u16()?;
    let attributes = r.u32()?;
    let policy_len = r.u16()?;
    r.take(usize::from(policy_len))?;
    let data_size = r.u16()?;
    Ok(NvPublic {
        index,
        name_alg,
        attributes,
        policy_len,
        data_size,
    })
}

pub fn parse_nv_read(reply: &[u8]) -> Result<Vec<u8>, TpmError> {
    let mut r = header(reply, "TPM2_NV_Read")?;
    let _param_size = r.u32()?;
    let n = r.u16()?;
    Ok(r.take(usize::from(n))?.to_vec())
}

pub fn parse_pcr_extend(reply: &[u8]) -> Result<(), TpmError> {
    header(reply, "TPM2_PCR_Extend").map(|_| ())
}

pub fn parse_nv_increment(reply: &[u8]) -> Result<(), TpmError> {
    header(reply, "TPM2_NV_Increment").map(|_| ())
}

/// Why a public area is not the counter this box defines, if it is not
/// ([`rollback::check_public`]), or was never incremented.
pub fn foreign(p: &NvPublic, index: u32) -> Option<String> {
    match rollback::check_public(
        index,
        p.index,
        p.name_alg,
        p.attributes,
        usize::from(p.policy_len),
        usize::from(p.data_size),
    ) {
        Err(why) => Some(why),
        Ok(false) => Some(format!("{index:#010x} was never incremented")),
        Ok(true) => None,
    }
}

/// One command, one reply, over the device.
pub trait Transport {
    fn call(&mut self, cmd: &[u8]) -> Result<Vec<u8>, TpmError>;
}

/// The kernel's TPM character device.
#[derive(Debug)]
pub struct Device(std::fs::File);

impl Device {
    pub fn open(path: &Path) -> Result<Device, TpmError> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map(Device)
            .map_err(|e| TpmError::Io(format!("{}: {e}", path.display())))
    }
}

impl Transport for Device {
    fn call(&mut self, cmd: &[u8]) -> Result<Vec<u8>, TpmError> {
        self.0
            .write_all(cmd)
            .map_err(|e| TpmError::Io(format!("TPM write: {e}")))?;
        let mut buf = vec![0u8; 4096];
        let n = self
            .0
            .read(&mut buf)
            .map_err(|e| TpmError::Io(format!("TPM read: {e}")))?;
        buf.truncate(n);
        Ok(buf)
    }
}

/// One counter's value, or why it cannot stand for the floor (absent, never incremented, not
/// ours, or the TPM could not be asked).
fn counter(t: &mut dyn Transport, index: u32) -> Result<u64, String> {
    let p = t
        .call(&nv_read_public_cmd(index))
        .map_err(|e| e.to_string())
        .and_then(|r| parse_nv_read_public(&r).map_err(|e| e.to_string()))?;
    if let Some(why) = foreign(&p, index) {
        return Err(why);
    }
    let data = t
        .call(&nv_read_cmd(index, 8))
        .map_err(|e| e.to_string())
        .and_then(|r| parse_nv_read(&r).map_err(|e| e.to_string()))?;
    let b: [u8; 8] = data
        .as_slice()
        .try_into()
        .map_err(|_| format!("{index:#010x}: {} bytes read, not 8", data.len()))?;
    Ok(u64::from_be_bytes(b))
}

/// Whether a reply code is TPM_RC_HANDLE (the index is not defined), for any handle number.
fn handle_missing(e: &TpmError) -> bool {
    matches!(e, TpmError::Code { code, .. } if code & 0x0BF == 0x08B)
}

/// The origin record ([`rollback::ORIGIN_INDEX`]): `Ok(None)` when no index is there; `Err` when
/// one is there that is not the box's record, was never written, or cannot be read with the
/// empty auth (one defined with a secret auth value).
pub fn read_origins(t: &mut dyn Transport) -> Result<Option<[u64; 3]>, String> {
    let index = rollback::ORIGIN_INDEX;
    let p = match t
        .call(&nv_read_public_cmd(index))
        .and_then(|r| parse_nv_read_public(&r))
    {
        Ok(p) => p,
        Err(e) if handle_missing(&e) => return Ok(None),
        Err(e) => return Err(format!("{index:#010x}: {e}")),
    };
    if !rollback::origin_public_ok(
        p.index,
        p.name_alg,
        p.attributes,
        usize::from(p.policy_len),
        usize::from(p.data_size),
    ) {
        return Err(format!(
            "{index:#010x} is not the box's origin record (attributes {:#x}, {} bytes)",
            p.attributes, p.data_size
        ));
    }
    let data = t
        .call(&nv_read_cmd(index, rollback::ORIGIN_SIZE as u16))
        .and_then(|r| parse_nv_read(&r))
        .map_err(|e| format!("{index:#010x}: {e}"))?;
    rollback::decode_origins(&data)
        .map(Some)
        .ok_or_else(|| format!("{index:#010x}: {} bytes read", data.len()))
}

/// The floor the TPM holds.
pub fn read_floor(t: &mut dyn Transport) -> Floor {
    let epoch = counter(t, rollback::EPOCH_INDEX);
    let serial = counter(t, rollback::SERIAL_INDEX);
    let builtin = counter(t, rollback::BUILTIN_INDEX);
    rollback::resolve(epoch, serial, builtin, read_origins(t))
}

/// The key-serial floor alone (the update path checks no epoch), as stage 1 reads it.
pub fn read_serial_floor(t: &mut dyn Transport) -> Result<u64, String> {
    match read_floor(t) {
        Floor::Present { serial, .. } => Ok(serial),
        Floor::Absent(why) => Err(why),
        Floor::NoTpm => Err("no TPM".into()),
    }
}

/// Raises the key-serial counter to stand for at least `serial`, when the TPM holds a whole floor
/// (the first boot and a recovery set it; an absent or inconsistent one is left to storage-init).
/// Returns the floor after, or why nothing was done.
pub fn raise_serial(t: &mut dyn Transport, serial: u32) -> Result<u64, String> {
    let index = rollback::SERIAL_INDEX;
    let floor = read_serial_floor(t)?;
    let mut current = counter(t, index)?;
    // The origin the floor was counted from: it stays as recorded while the counter rises.
    let origin = current.saturating_sub(floor);
    let mut steps = 0;
    while rollback::needs_increment(Some(current), origin, serial) {
        if steps == 64 {
            return Err(format!(
                "{index:#010x}: still below {serial} after {steps} increments"
            ));
        }
        t.call(&nv_increment_cmd(index))
            .and_then(|r| parse_nv_increment(&r))
            .map_err(|e| e.to_string())?;
        current = counter(t, index)?;
        steps += 1;
    }
    Ok(rollback::floor_from(current, origin))
}

pub fn extend(t: &mut dyn Transport, what: &[u8]) -> Result<(), TpmError> {
    let r = t.call(&pcr_extend_cmd(rollback::PCR, &rollback::measure(what)))?;
    parse_pcr_extend(&r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&0x8001u16.to_be_bytes());
        v.extend_from_slice(&((10 + body.len()) as u32).to_be_bytes());
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn error(code: u32) -> Vec<u8> {
        let mut v = vec![0x80, 0x01, 0, 0, 0, 10];
        v.extend_from_slice(&code.to_be_bytes());
        v
    }

    /// The public area tpm2-tools shows for `tpm2_nvdefine -s 8 -a
    /// "nt=counter|authread|authwrite|no_da"`, incremented once.
    fn public_reply(index: u32, attrs: u32) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&index.to_be_bytes());
        p.extend_from_slice(&0x000Bu16.to_be_bytes());
        p.extend_from_slice(&attrs.to_be_bytes());
        p.extend_from_slice(&0u16.to_be_bytes());
        p.extend_from_slice(&8u16.to_be_bytes());
        let mut b = (p.len() as u16).to_be_bytes().to_vec();
        b.extend_from_slice(&p);
        b.extend_from_slice(&34u16.to_be_bytes());
        b.extend_from_slice(&[0u8; 34]);
        reply(&b)
    }

    fn read_reply(v: u64) -> Vec<u8> {
        let mut b = 20u32.to_be_bytes().to_vec();
        b.extend_from_slice(&8u16.to_be_bytes());
        b.extend_from_slice(&v.to_be_bytes());
        b.extend_from_slice(&[0, 0, 1, 0, 0]);
        reply(&b)
    }

    #[test]
    fn commands_have_the_layouts_of_part_3() {
        assert_eq!(
            nv_read_public_cmd(0x0180_0E70),
            [0x80, 0x01, 0, 0, 0, 14, 0, 0, 1, 0x69, 0x01, 0x80, 0x0E, 0x70]
        );
        let r = nv_read_cmd(0x0180_0E70, 8);
        assert_eq!(r.len(), 35);
        assert_eq!(&r[..10], [0x80, 0x02, 0, 0, 0, 35, 0, 0, 1, 0x4E]);
        assert_eq!(&r[18..22], [0, 0, 0, 9], "authorization size");
        assert_eq!(&r[22..26], [0x40, 0, 0, 9], "TPM_RS_PW");
        assert_eq!(&r[31..], [0, 8, 0, 0], "size 8 at offset 0");
        let e = pcr_extend_cmd(12, &[7u8; 32]);
        assert_eq!(e.len(), 10 + 4 + 13 + 4 + 2 + 32);
        assert_eq!(&e[10..14], [0, 0, 0, 12]);
        assert_eq!(&e[27..33], [0, 0, 0, 1, 0, 0x0B]);
        assert_eq!(&e[33..], [7u8; 32]);
    }

    struct Fake(Vec<(Vec<u8>, Vec<u8>)>);
    impl Transport for Fake {
        fn call(&mut self, cmd: &[u8]) -> Result<Vec<u8>, TpmError> {
            self.0
                .iter()
                .find(|(c, _)| c == cmd)
                .map(|(_, r)| r.clone())
                .ok_or_else(|| TpmError::Io("unexpected command".into()))
        }
    }

    fn counters(epoch: Vec<u8>, serial: Vec<u8>, e: u64, s: u64) -> Fake {
        Fake(vec![
            (nv_read_public_cmd(rollback::EPOCH_INDEX), epoch),
            (nv_read_public_cmd(rollback::SERIAL_INDEX), serial),
            (nv_read_cmd(rollback::EPOCH_INDEX, 8), read_reply(e)),
            (nv_read_cmd(rollback::SERIAL_INDEX, 8), read_reply(s)),
            (nv_read_public_cmd(rollback::BUILTIN_INDEX), error(0x18B)),
            (nv_read_public_cmd(rollback::ORIGIN_INDEX), error(0x18B)),
        ])
    }

    /// The origin index's public area as storage-init defines it, written.
    fn origin_public() -> Vec<u8> {
        let mut r = public_reply(
            rollback::ORIGIN_INDEX,
            rollback::ORIGIN_ATTRIBUTES | rollback::WRITTEN,
        );
        // dataSize: header 10, size 2, index 4, alg 2, attributes 4, policy length 2.
        r[24..26].copy_from_slice(&24u16.to_be_bytes());
        r
    }

    fn origin_reply(o: [u64; 3]) -> Vec<u8> {
        let mut b = 36u32.to_be_bytes().to_vec();
        b.extend_from_slice(&24u16.to_be_bytes());
        b.extend_from_slice(&rollback::encode_origins(&o));
        b.extend_from_slice(&[0, 0, 1, 0, 0]);
        reply(&b)
    }

    /// A TPM holding the serial counter at `value` (and origins, if any), counting increments.
    struct Counter {
        value: u64,
        increments: u32,
        attrs: u32,
        origins: Option<[u64; 3]>,
    }
    impl Transport for Counter {
        fn call(&mut self, cmd: &[u8]) -> Result<Vec<u8>, TpmError> {
            let i = rollback::SERIAL_INDEX;
            if self.origins.is_some() && cmd == nv_read_public_cmd(rollback::ORIGIN_INDEX) {
                Ok(origin_public())
            } else if let (Some(o), true) =
                (self.origins, cmd == nv_read_cmd(rollback::ORIGIN_INDEX, 24))
            {
                Ok(origin_reply(o))
            } else if cmd == nv_read_public_cmd(rollback::ORIGIN_INDEX) {
                Ok(error(0x18B))
            } else if cmd == nv_read_public_cmd(rollback::EPOCH_INDEX) {
                Ok(public_reply(rollback::EPOCH_INDEX, self.attrs))
            } else if cmd == nv_read_cmd(rollback::EPOCH_INDEX, 8) {
                Ok(read_reply(self.origins.map_or(1, |o| o[0])))
            } else if self.origins.is_some() && cmd == nv_read_public_cmd(rollback::BUILTIN_INDEX) {
                Ok(public_reply(rollback::BUILTIN_INDEX, self.attrs))
            } else if let (Some(o), true) =
                (self.origins, cmd == nv_read_cmd(rollback::BUILTIN_INDEX, 8))
            {
                Ok(read_reply(o[2]))
            } else if cmd == nv_read_public_cmd(rollback::BUILTIN_INDEX) {
                Ok(error(0x18B))
            } else if cmd == nv_read_public_cmd(i) {
                Ok(public_reply(i, self.attrs))
            } else if cmd == nv_read_cmd(i, 8) {
                Ok(read_reply(self.value))
            } else if cmd == nv_increment_cmd(i) {
                self.value += 1;
                self.increments += 1;
                Ok(reply(&[0, 0, 0, 0, 0, 0, 1, 0, 0]))
            } else {
                Err(TpmError::Io("unexpected command".into()))
            }
        }
    }

    #[test]
    fn the_serial_counter_is_raised_only_when_it_is_ours_and_below() {
        let inc = nv_increment_cmd(rollback::SERIAL_INDEX);
        assert_eq!(inc.len(), 10 + 8 + 4 + 9);
        assert_eq!(&inc[6..10], [0, 0, 1, 0x34]);
        assert_eq!(&inc[10..18], [1, 0x80, 0x0E, 0x71, 1, 0x80, 0x0E, 0x71]);
        let ours = rollback::ATTRIBUTES | rollback::WRITTEN;
        // Counter 2 stands for serial 1: two increments reach serial 3.
        let mut t = Counter {
            value: 2,
            increments: 0,
            attrs: ours,
            origins: None,
        };
        assert_eq!(raise_serial(&mut t, 3), Ok(3));
        assert_eq!(t.increments, 2);
        assert_eq!(raise_serial(&mut t, 2), Ok(3), "never lowered");
        assert_eq!(t.increments, 2);
        // Counted from its origin: a counter remade after a TPM clear at 40 stands for 0.
        let mut t = Counter {
            value: 41,
            increments: 0,
            attrs: ours,
            origins: Some([39, 40, 40]),
        };
        assert_eq!(read_serial_floor(&mut t), Ok(1));
        assert_eq!(raise_serial(&mut t, 2), Ok(2));
        assert_eq!(t.increments, 1);
        // An index that is not the box's counter is left alone.
        let mut t = Counter {
            value: 2,
            increments: 0,
            attrs: ours & !rollback::NT_COUNTER,
            origins: None,
        };
        assert!(raise_serial(&mut t, 3).is_err());
        assert_eq!(t.increments, 0);
    }

    #[test]
    fn the_floor_is_read_only_from_the_counters_this_box_defines() {
        let ours = rollback::ATTRIBUTES | rollback::WRITTEN;
        let mut t = counters(
            public_reply(rollback::EPOCH_INDEX, ours),
            public_reply(rollback::SERIAL_INDEX, ours),
            3,
            2,
        );
        assert_eq!(
            read_floor(&mut t),
            Floor::Present {
                epoch: 2,
                serial: 1,
                keys: None
            }
        );
        // With the built-in list counter and the origins.
        t.0.retain(|(c, _)| {
            *c != nv_read_public_cmd(rollback::BUILTIN_INDEX)
                && *c != nv_read_public_cmd(rollback::ORIGIN_INDEX)
        });
        t.0.extend([
            (
                nv_read_public_cmd(rollback::BUILTIN_INDEX),
                public_reply(rollback::BUILTIN_INDEX, ours),
            ),
            (nv_read_cmd(rollback::BUILTIN_INDEX, 8), read_reply(9)),
            (nv_read_public_cmd(rollback::ORIGIN_INDEX), origin_public()),
            (
                nv_read_cmd(rollback::ORIGIN_INDEX, 24),
                origin_reply([1, 1, 7]),
            ),
        ]);
        assert_eq!(
            read_floor(&mut t),
            Floor::Present {
                epoch: 2,
                serial: 1,
                keys: Some(rollback::KeysFloor {
                    builtin: 2,
                    origins: [1, 1, 7]
                })
            }
        );
        // The record's index with the right shape that cannot be read with the empty auth (one
        // defined with a secret auth value): no floor, not the older one.
        t.0.retain(|(c, _)| *c != nv_read_cmd(rollback::ORIGIN_INDEX, 24));
        t.0.push((nv_read_cmd(rollback::ORIGIN_INDEX, 24), error(0x98E)));
        match read_floor(&mut t) {
            Floor::Absent(w) => assert!(w.contains("0x01800e73"), "{w}"),
            f => panic!("{f:?}"),
        }
        // Missing (TPM_RC_HANDLE), never incremented, or an ordinary index anyone could write.
        for (epoch, why) in [
            (error(0x18B), "0x18b"),
            (
                public_reply(rollback::EPOCH_INDEX, rollback::ATTRIBUTES),
                "never incremented",
            ),
            (
                public_reply(
                    rollback::EPOCH_INDEX,
                    (rollback::ATTRIBUTES & !rollback::NT_COUNTER) | rollback::WRITTEN,
                ),
                "not the box's counter",
            ),
        ] {
            let mut t = counters(epoch, public_reply(rollback::SERIAL_INDEX, ours), 0, 2);
            match read_floor(&mut t) {
                Floor::Absent(w) => assert!(w.contains(why), "{w}"),
                f => panic!("{f:?}"),
            }
        }
    }

    #[test]
    fn a_counter_with_another_name_algorithm_or_a_policy_is_not_ours() {
        let ours = rollback::ATTRIBUTES | rollback::WRITTEN;
        let mut reply = public_reply(rollback::EPOCH_INDEX, ours);
        let p = parse_nv_read_public(&reply).unwrap();
        assert_eq!(foreign(&p, rollback::EPOCH_INDEX), None);
        // nameAlg SHA-1 (bytes 16..18 of the reply: header 10, size 2, index 4).
        reply[16..18].copy_from_slice(&0x0004u16.to_be_bytes());
        let p = parse_nv_read_public(&reply).unwrap();
        assert!(foreign(&p, rollback::EPOCH_INDEX).is_some());
        assert!(foreign(
            &NvPublic {
                policy_len: 32,
                ..parse_nv_read_public(&public_reply(rollback::EPOCH_INDEX, ours)).unwrap()
            },
            rollback::EPOCH_INDEX
        )
        .is_some());
    }

    #[test]
    fn replies_are_checked() {
        assert_eq!(
            parse_pcr_extend(&error(0x9A2)),
            Err(TpmError::Code {
                command: "TPM2_PCR_Extend",
                code: 0x9A2
            })
        );
        assert!(parse_pcr_extend(&reply(&[0, 0, 0, 0, 0, 0, 1, 0, 0])).is_ok());
        assert!(
            parse_nv_read(&reply(&[0, 0, 0, 10, 0, 8, 1])).is_err(),
            "short"
        );
        let mut bad = read_reply(1);
        bad[5] += 1;
        assert!(parse_nv_read(&bad).is_err(), "size mismatch");
    }
}
