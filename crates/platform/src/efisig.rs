//! UEFI signature databases (`db`, `dbx`): the `EFI_SIGNATURE_LIST` format, the signed append a
//! vendor's KEK authorises (`EFI_VARIABLE_AUTHENTICATION_2` followed by lists), and what the
//! firmware's variable store holds after such an append. The firmware drops every entry of an
//! appended list that the variable already holds and appends the rest (edk2's
//! `FilterSignatureList`), so the result can be computed before the write: the vault's seal to
//! PCR 7, which measures `dbx`, is prepared for it first.

use sha2::{Digest, Sha256};

/// `EFI_IMAGE_SECURITY_DATABASE_GUID`, the vendor GUID of `db` and `dbx`, as bytes in memory.
pub const SECURITY_DATABASE_GUID: [u8; 16] = guid(
    0xd719_b2cb,
    0x3d3a,
    0x4596,
    [0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f],
);
/// `EFI_CERT_SHA256_GUID`: lists of Authenticode SHA-256 image hashes.
pub const CERT_SHA256_GUID: [u8; 16] = guid(
    0xc1c4_1626,
    0x504c,
    0x4092,
    [0xac, 0xa9, 0x41, 0xf9, 0x36, 0x93, 0x43, 0x28],
);
/// `WIN_CERT_TYPE_EFI_GUID`'s certificate type for PKCS#7 signed data (`EFI_CERT_TYPE_PKCS7_GUID`).
const CERT_TYPE_PKCS7_GUID: [u8; 16] = guid(
    0x4aaf_d29d,
    0x68df,
    0x49ee,
    [0x8a, 0xa9, 0x34, 0x7d, 0x37, 0x56, 0x65, 0xa7],
);
/// The name of the forbidden-signatures variable, and its file name under efivarfs.
pub const DBX: &str = "dbx";
pub const DBX_EFIVAR: &str = "dbx-d719b2cb-3d3a-4596-a3bc-dad00e67656f";
/// Non-volatile, boot and runtime access, time-based authenticated, append: how a signed append
/// to `dbx` is written (the attributes precede the data in a write to efivarfs).
pub const APPEND_ATTRIBUTES: u32 = 0x1 | 0x2 | 0x4 | 0x20 | 0x40;

/// Where a slot's image carries the signed `dbx` append its release wants in the firmware (under
/// `/usr`, inside the verified image).
pub const CARRIED: &str = "lib/eve/efi/dbx-append.auth";
/// The firmware's variables, under the sys root.
pub const EFIVARS: &str = "firmware/efi/efivars";

/// The data of `dbx` as the firmware holds it now (efivarfs puts the 4 attribute bytes first);
/// empty when the variable does not exist.
pub fn read_dbx(sys: &std::path::Path) -> Result<Vec<u8>, crate::IoError> {
    let p = sys.join(EFIVARS).join(DBX_EFIVAR);
    match std::fs::read(&p) {
        Ok(b) => Ok(b.get(4..).unwrap_or_default().to_vec()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(crate::IoError {
            op: "read",
            path: p,
            source,
        }),
    }
}

const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

/// One `EFI_SIGNATURE_LIST`: entries of one type and size (each an owner GUID and the data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigList {
    pub kind: [u8; 16],
    pub header: Vec<u8>,
    /// Each entry whole (owner GUID then data), `entry_size` bytes.
    pub entries: Vec<Vec<u8>>,
    pub entry_size: usize,
}

impl SigList {
    /// The SHA-256 image hashes of a `EFI_CERT_SHA256_GUID` list (none for other kinds).
    pub fn sha256s(&self) -> Vec<[u8; 32]> {
        if self.kind != CERT_SHA256_GUID || self.entry_size != 48 {
            return Vec::new();
        }
        self.entries
            .iter()
            .filter_map(|e| e[16..].try_into().ok())
            .collect()
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let size = 28 + self.header.len() + self.entries.len() * self.entry_size;
        out.extend_from_slice(&self.kind);
        out.extend_from_slice(&(size as u32).to_le_bytes());
        out.extend_from_slice(&(self.header.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.entry_size as u32).to_le_bytes());
        out.extend_from_slice(&self.header);
        for e in &self.entries {
            out.extend_from_slice(e);
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Parses the lists that make up a signature database's data.
pub fn parse_lists(mut b: &[u8]) -> Result<Vec<SigList>, String> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let at = out.len();
        let bad = |what: &str| format!("signature list {at}: {what}");
        if b.len() < 28 {
            return Err(bad("shorter than its 28-byte header"));
        }
        let kind: [u8; 16] = b[..16].try_into().map_err(|_| bad("type"))?;
        let size = u32_at(b, 16).ok_or_else(|| bad("size"))? as usize;
        let header = u32_at(b, 20).ok_or_else(|| bad("header size"))? as usize;
        let entry = u32_at(b, 24).ok_or_else(|| bad("entry size"))? as usize;
        if size > b.len() || size < 28 + header {
            return Err(bad(&format!(
                "size {size} does not fit the {} bytes left",
                b.len()
            )));
        }
        let body = size - 28 - header;
        if entry < 16 || body % entry != 0 {
            return Err(bad(&format!(
                "entry size {entry} does not divide its {body} bytes of entries"
            )));
        }
        out.push(SigList {
            kind,
            header: b[28..28 + header].to_vec(),
            entries: b[28 + header..size]
                .chunks(entry)
                .map(<[u8]>::to_vec)
                .collect(),
            entry_size: entry,
        });
        b = &b[size..];
    }
    Ok(out)
}

pub fn encode_lists(lists: &[SigList]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lists {
        l.encode(&mut out);
    }
    out
}

/// The lists a signed write carries: what follows its `EFI_VARIABLE_AUTHENTICATION_2` header (a
/// 16-byte time, then a `WIN_CERTIFICATE_UEFI_GUID` of PKCS#7 type). The signature itself is the
/// firmware's to check; this only finds where the data starts.
pub fn auth2_payload(auth: &[u8]) -> Result<&[u8], String> {
    let len = u32_at(auth, 16).ok_or("shorter than an authentication header")? as usize;
    let kind = auth.get(16 + 8..16 + 24);
    if len < 24 || 16 + len > auth.len() {
        return Err(format!(
            "authentication header length {len} does not fit its {} bytes",
            auth.len()
        ));
    }
    if auth.get(20..22) != Some(&[0x00, 0x02]) || auth.get(22..24) != Some(&[0xf1, 0x0e]) {
        return Err("not a WIN_CERTIFICATE_UEFI_GUID (revision 2.0, type 0x0EF1)".into());
    }
    if kind != Some(&CERT_TYPE_PKCS7_GUID[..]) {
        return Err("its certificate is not of the PKCS#7 type".into());
    }
    Ok(&auth[16 + len..])
}

/// The variable's data after the firmware applies an append of `new` lists to `current` data:
/// entries already held are dropped (whole entries compared, owner included), emptied lists go,
/// and the rest is appended.
pub fn after_append(current: &[u8], new: &[u8]) -> Result<Vec<u8>, String> {
    let held = parse_lists(current).map_err(|e| format!("the variable now: {e}"))?;
    let adding = parse_lists(new).map_err(|e| format!("the append: {e}"))?;
    let mut out = current.to_vec();
    for mut l in adding {
        l.entries.retain(|e| {
            !held
                .iter()
                .any(|h| h.kind == l.kind && h.entry_size == l.entry_size && h.entries.contains(e))
        });
        if !l.entries.is_empty() {
            l.encode(&mut out);
        }
    }
    Ok(out)
}

/// Every SHA-256 image hash the lists in `data` forbid.
pub fn sha256s(data: &[u8]) -> Result<Vec<[u8; 32]>, String> {
    Ok(parse_lists(data)?
        .iter()
        .flat_map(SigList::sha256s)
        .collect())
}

/// A short name for a hash in messages.
pub fn short(h: &[u8; 32]) -> String {
    h[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The `UEFI_VARIABLE_DATA` the firmware measures for a Secure Boot variable (into PCR 7, as an
/// `EV_EFI_VARIABLE_DRIVER_CONFIG` event whose digest is this structure's hash).
pub fn variable_data(vendor: &[u8; 16], name: &str, data: &[u8]) -> Vec<u8> {
    let name: Vec<u16> = name.encode_utf16().collect();
    let mut out = Vec::with_capacity(32 + name.len() * 2 + data.len());
    out.extend_from_slice(vendor);
    out.extend_from_slice(&(name.len() as u64).to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    for c in name {
        out.extend_from_slice(&c.to_le_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// The parts of a measured `UEFI_VARIABLE_DATA`: vendor GUID, name, data.
pub fn parse_variable_data(b: &[u8]) -> Option<([u8; 16], String, &[u8])> {
    let vendor: [u8; 16] = b.get(..16)?.try_into().ok()?;
    let n = usize::try_from(u64::from_le_bytes(b.get(16..24)?.try_into().ok()?)).ok()?;
    let d = usize::try_from(u64::from_le_bytes(b.get(24..32)?.try_into().ok()?)).ok()?;
    let name_end = 32usize.checked_add(n.checked_mul(2)?)?;
    let units: Vec<u16> = b
        .get(32..name_end)?
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let data = b.get(name_end..name_end.checked_add(d)?)?;
    Some((vendor, String::from_utf16(&units).ok()?, data))
}

/// SHA-256 of `b`.
pub fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(hashes: &[[u8; 32]], owner: u8) -> SigList {
        SigList {
            kind: CERT_SHA256_GUID,
            header: Vec::new(),
            entries: hashes
                .iter()
                .map(|h| {
                    let mut e = vec![owner; 16];
                    e.extend_from_slice(h);
                    e
                })
                .collect(),
            entry_size: 48,
        }
    }

    #[test]
    fn guids_are_laid_out_as_the_firmware_stores_them() {
        assert_eq!(
            SECURITY_DATABASE_GUID[..4],
            [0xcb, 0xb2, 0x19, 0xd7],
            "the first field is little-endian"
        );
        assert_eq!(
            SECURITY_DATABASE_GUID[8..],
            [0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f]
        );
    }

    #[test]
    fn lists_round_trip_and_bad_sizes_are_named() {
        let l = vec![list(&[[1; 32], [2; 32]], 9), list(&[[3; 32]], 9)];
        let b = encode_lists(&l);
        assert_eq!(b.len(), 2 * 28 + 3 * 48);
        assert_eq!(parse_lists(&b).unwrap(), l);
        assert_eq!(sha256s(&b).unwrap(), vec![[1; 32], [2; 32], [3; 32]]);
        let e = parse_lists(&b[..b.len() - 1]).unwrap_err();
        assert!(
            e.contains("signature list 1") && e.contains("does not fit"),
            "{e}"
        );
        let mut odd = b.clone();
        odd[24] = 47;
        assert!(parse_lists(&odd).unwrap_err().contains("entry size 47"));
        assert!(parse_lists(&b[..10])
            .unwrap_err()
            .contains("28-byte header"));
    }

    #[test]
    fn an_append_drops_what_is_held_and_keeps_the_rest_in_order() {
        let now = encode_lists(&[list(&[[1; 32], [2; 32]], 9)]);
        // One entry new, one held (same owner), one with the same hash but another owner.
        let add = encode_lists(&[list(&[[2; 32], [4; 32]], 9), list(&[[1; 32]], 7)]);
        let after = after_append(&now, &add).unwrap();
        assert_eq!(&after[..now.len()], &now[..]);
        let lists = parse_lists(&after).unwrap();
        assert_eq!(lists.len(), 3);
        assert_eq!(lists[1], list(&[[4; 32]], 9));
        assert_eq!(lists[2], list(&[[1; 32]], 7));
        // All held: nothing changes.
        let again = after_append(&after, &add).unwrap();
        assert_eq!(again, after);
        // An empty variable takes the append whole.
        assert_eq!(after_append(&[], &add).unwrap(), add);
        assert!(after_append(&[1, 2], &add)
            .unwrap_err()
            .contains("the variable now"));
    }

    #[test]
    fn the_payload_of_a_signed_append_is_found_behind_its_header() {
        let body = encode_lists(&[list(&[[5; 32]], 1)]);
        let cert = vec![0x30u8; 40];
        let mut auth = vec![0u8; 16];
        auth.extend_from_slice(&((24 + cert.len()) as u32).to_le_bytes());
        auth.extend_from_slice(&[0x00, 0x02, 0xf1, 0x0e]);
        auth.extend_from_slice(&CERT_TYPE_PKCS7_GUID);
        auth.extend_from_slice(&cert);
        auth.extend_from_slice(&body);
        assert_eq!(auth2_payload(&auth).unwrap(), &body[..]);
        let mut other = auth.clone();
        other[24] ^= 1;
        assert!(auth2_payload(&other).unwrap_err().contains("PKCS#7"));
        assert!(auth2_payload(&auth[..30])
            .unwrap_err()
            .contains("does not fit"));
        assert!(auth2_payload(&body).is_err());
    }

    #[test]
    fn measured_variable_data_round_trips() {
        let v = variable_data(&SECURITY_DATABASE_GUID, DBX, &[1, 2, 3]);
        assert_eq!(v.len(), 32 + 6 + 3);
        let (g, n, d) = parse_variable_data(&v).unwrap();
        assert_eq!(
            (g, n.as_str(), d),
            (SECURITY_DATABASE_GUID, "dbx", &[1u8, 2, 3][..])
        );
        assert!(parse_variable_data(&v[..40]).is_none());
    }
}
