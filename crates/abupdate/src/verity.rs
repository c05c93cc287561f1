//! The verified slot: a slot holds its squashfs, then one 4 KiB descriptor block, then the
//! dm-verity hash tree of the squashfs. The descriptor names the tree's root hash and layout and
//! is signed with an update key, so stage 1 (in the GRUB-verified initramfs) can check it with the
//! keys baked in there before it opens the root through dm-verity. Pure: layout arithmetic, the
//! block format, its signature and the dm table line; the I/O is the callers'.
//!
//! ```text
//! 0              squashfs (bytes_used from its superblock), zero padded to 4 KiB = data_size
//! data_size      descriptor block: "EVE-VERITY 1\n" <descriptor JSON>\n <signature JSON>\n 0...
//! hash_offset    hash tree (veritysetup format --no-superblock), hash_size bytes
//! ```
//!
//! The descriptor is found from the squashfs superblock, which is not trusted at that point: a
//! forged `bytes_used` only moves where the descriptor is looked for, and the signed descriptor
//! must then agree with it (`data_size`), and every block read through dm-verity (the superblock
//! included) is checked against the signed root hash.

use crate::trust::{Sig, Signer25519, Trust, TrustError};
use serde::{Deserialize, Serialize};

pub const MAGIC: &[u8] = b"EVE-VERITY 1\n";
pub const BLOCK: u64 = 4096;
/// Signatures over a descriptor start with this, so no other signed text passes as one.
pub const CONTEXT: &[u8] = b"eve-verity descriptor v1\n";
pub const SQUASHFS_MAGIC: &[u8; 4] = b"hsqs";
/// Where a squashfs superblock keeps `bytes_used` (little-endian u64).
const BYTES_USED_AT: usize = 40;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Descriptor {
    /// The OS version of the image (informative; the update manifest is what versions an update).
    pub version: String,
    pub security_epoch: u32,
    /// The build profile, `prod` or `dev`: stage 1 of a production image boots `prod` slots only.
    #[serde(default)]
    pub profile: String,
    /// Bytes of the data area (the padded squashfs): a multiple of 4 KiB.
    pub data_size: u64,
    /// Where the hash tree starts: right after the descriptor block.
    pub hash_offset: u64,
    pub hash_size: u64,
    /// Only `sha256`, 4 KiB data and hash blocks.
    pub algorithm: String,
    pub block_size: u64,
    pub salt: String,
    pub root_hash: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerityError {
    #[error("no squashfs at the start of the slot (magic {0:02x?})")]
    NotSquashfs([u8; 4]),
    #[error("the squashfs superblock says {0} bytes, more than the slot's {1}")]
    TooLarge(u64, u64),
    #[error("no verity descriptor at byte {0} (the slot is not a verified image, or is damaged)")]
    NoDescriptor(u64),
    #[error("verity descriptor: {0}")]
    Malformed(String),
    #[error("verity descriptor signature: {0}")]
    Signature(#[from] TrustError),
    #[error("verity descriptor does not match the slot: {0}")]
    Layout(String),
}

pub fn align(n: u64) -> u64 {
    n.div_ceil(BLOCK) * BLOCK
}

/// Where the descriptor should be, from the first bytes of the slot (its squashfs superblock)
/// and the slot's size.
pub fn descriptor_offset(head: &[u8], slot_bytes: u64) -> Result<u64, VerityError> {
    let mut magic = [0u8; 4];
    if head.len() >= 4 {
        magic.copy_from_slice(&head[..4]);
    }
    if &magic != SQUASHFS_MAGIC || head.len() < BYTES_USED_AT + 8 {
        return Err(VerityError::NotSquashfs(magic));
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&head[BYTES_USED_AT..BYTES_USED_AT + 8]);
    let used = u64::from_le_bytes(b);
    let at = align(used);
    if used == 0 || at.saturating_add(BLOCK) > slot_bytes {
        return Err(VerityError::TooLarge(used, slot_bytes));
    }
    Ok(at)
}

/// The descriptor block the builder writes at `data_size`.
pub fn block(d: &Descriptor, key: &Signer25519) -> Result<Vec<u8>, VerityError> {
    let text = serde_json::to_string(d).map_err(|e| VerityError::Malformed(e.to_string()))?;
    let sig = serde_json::to_string(&key.sign(CONTEXT, text.as_bytes()))
        .map_err(|e| VerityError::Malformed(e.to_string()))?;
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(text.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(sig.as_bytes());
    out.push(b'\n');
    if out.len() as u64 > BLOCK {
        return Err(VerityError::Malformed(format!(
            "{} bytes do not fit one {BLOCK}-byte block",
            out.len()
        )));
    }
    out.resize(BLOCK as usize, 0);
    Ok(out)
}

fn is_hex(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len())
        && s.len() % 2 == 0
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Parses and checks the descriptor block found at `at` in a slot of `slot_bytes`: the signature
/// first (against `trust`), then that its layout is the one this slot has.
pub fn verify(
    raw: &[u8],
    at: u64,
    slot_bytes: u64,
    trust: &Trust,
) -> Result<Descriptor, VerityError> {
    if raw.len() as u64 != BLOCK || !raw.starts_with(MAGIC) {
        return Err(VerityError::NoDescriptor(at));
    }
    let body = &raw[MAGIC.len()..];
    let end = body
        .iter()
        .rposition(|b| *b != 0)
        .map(|i| i + 1)
        .unwrap_or(0);
    let text = std::str::from_utf8(&body[..end])
        .map_err(|_| VerityError::Malformed("not UTF-8".into()))?;
    let lines: Vec<&str> = text.split('\n').collect();
    let [desc, sig, ""] = lines.as_slice() else {
        return Err(VerityError::Malformed(format!(
            "expected a descriptor line and a signature line, found {} lines",
            lines.len().saturating_sub(1)
        )));
    };
    let sig: Sig =
        serde_json::from_str(sig).map_err(|e| VerityError::Malformed(format!("signature: {e}")))?;
    trust.verify(CONTEXT, desc.as_bytes(), &sig)?;
    let d: Descriptor =
        serde_json::from_str(desc).map_err(|e| VerityError::Malformed(e.to_string()))?;
    let bad = |m: String| Err(VerityError::Layout(m));
    if d.algorithm != "sha256" || d.block_size != BLOCK {
        return bad(format!(
            "{} with {}-byte blocks (only sha256 with {BLOCK})",
            d.algorithm, d.block_size
        ));
    }
    if d.data_size != at {
        return bad(format!(
            "it covers {} bytes of squashfs, the superblock says {at}",
            d.data_size
        ));
    }
    if d.hash_offset != at + BLOCK || d.hash_size == 0 || d.hash_size % BLOCK != 0 {
        return bad(format!(
            "hash tree at {} (+{}), expected at {} in whole blocks",
            d.hash_offset,
            d.hash_size,
            at + BLOCK
        ));
    }
    if d.hash_offset.saturating_add(d.hash_size) > slot_bytes {
        return bad(format!(
            "hash tree ends at {}, past the slot's {slot_bytes} bytes",
            d.hash_offset + d.hash_size
        ));
    }
    if !is_hex(&d.root_hash, 64, 64) || !is_hex(&d.salt, 0, 512) {
        return bad("root hash or salt is not lower-case hex of the right length".into());
    }
    Ok(d)
}

/// The device-mapper table line for `dev` (a partition path): data and hash tree on the same
/// device; a block that does not match returns an I/O error.
pub fn table(d: &Descriptor, dev: &str) -> (u64, String) {
    let sectors = d.data_size / 512;
    let blocks = d.data_size / BLOCK;
    let salt = if d.salt.is_empty() { "-" } else { &d.salt };
    (
        sectors,
        format!(
            "1 {dev} {dev} {BLOCK} {BLOCK} {blocks} {} sha256 {} {salt}",
            d.hash_offset / BLOCK,
            d.root_hash
        ),
    )
}

/// Reads and checks the signed descriptor of the slot on `dev` against `trust` (nothing is
/// mapped): stage 1 before it opens a slot, and `abupdate rollback` before it points GRUB at one.
pub fn read_descriptor(dev: &std::path::Path, trust: &Trust) -> Result<Descriptor, String> {
    use std::io::{Seek, SeekFrom};
    use std::os::unix::fs::FileExt;
    let mut f = std::fs::File::open(dev).map_err(|e| format!("open {}: {e}", dev.display()))?;
    let size = f
        .seek(SeekFrom::End(0))
        .map_err(|e| format!("size of {}: {e}", dev.display()))?;
    let mut head = vec![0u8; BLOCK as usize];
    f.read_exact_at(&mut head, 0)
        .map_err(|e| format!("read {}: {e}", dev.display()))?;
    let at = descriptor_offset(&head, size).map_err(|e| e.to_string())?;
    let mut block = vec![0u8; BLOCK as usize];
    f.read_exact_at(&mut block, at)
        .map_err(|e| format!("read the verity descriptor of {}: {e}", dev.display()))?;
    verify(&block, at, size, trust).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::KeyList;

    fn key() -> Signer25519 {
        Signer25519::from_seed(&[7; 32])
    }
    fn trust() -> Trust {
        Trust::from_list(&KeyList::new(1, &[key().public()])).unwrap()
    }
    fn desc() -> Descriptor {
        Descriptor {
            profile: "prod".into(),
            version: "v1".into(),
            security_epoch: 0,
            data_size: 8192,
            hash_offset: 12288,
            hash_size: 4096,
            algorithm: "sha256".into(),
            block_size: BLOCK,
            salt: "ab".repeat(32),
            root_hash: "cd".repeat(32),
        }
    }
    fn head(used: u64) -> Vec<u8> {
        let mut h = vec![0u8; 96];
        h[..4].copy_from_slice(SQUASHFS_MAGIC);
        h[40..48].copy_from_slice(&used.to_le_bytes());
        h
    }

    #[test]
    fn the_descriptor_follows_the_padded_squashfs() {
        assert_eq!(descriptor_offset(&head(5000), 1 << 20).unwrap(), 8192);
        assert_eq!(descriptor_offset(&head(8192), 1 << 20).unwrap(), 8192);
        assert!(matches!(
            descriptor_offset(&head(1 << 20), 1 << 20),
            Err(VerityError::TooLarge(..))
        ));
        assert!(matches!(
            descriptor_offset(&head(0), 1 << 20),
            Err(VerityError::TooLarge(..))
        ));
        assert!(matches!(
            descriptor_offset(b"\x7fELF and more bytes than that", 1 << 20),
            Err(VerityError::NotSquashfs(_))
        ));
        assert!(descriptor_offset(b"hsqs", 1 << 20).is_err());
    }

    #[test]
    fn a_signed_block_verifies_and_gives_the_table() {
        let b = block(&desc(), &key()).unwrap();
        assert_eq!(b.len() as u64, BLOCK);
        let d = verify(&b, 8192, 1 << 20, &trust()).unwrap();
        assert_eq!(d, desc());
        let (sectors, t) = table(&d, "/dev/vda2");
        assert_eq!(sectors, 16);
        assert_eq!(
            t,
            format!(
                "1 /dev/vda2 /dev/vda2 4096 4096 2 3 sha256 {} {}",
                "cd".repeat(32),
                "ab".repeat(32)
            )
        );
    }

    #[test]
    fn a_wrong_key_a_changed_byte_or_a_wrong_place_is_refused() {
        let b = block(&desc(), &key()).unwrap();
        let other = Signer25519::from_seed(&[8; 32]);
        let stranger = block(&desc(), &other).unwrap();
        assert!(matches!(
            verify(&stranger, 8192, 1 << 20, &trust()),
            Err(VerityError::Signature(TrustError::Untrusted(..)))
        ));
        // The root hash edited after signing.
        let mut edited = b.clone();
        let i = edited.windows(4).position(|w| w == b"cdcd").unwrap();
        edited[i] = b'e';
        assert!(matches!(
            verify(&edited, 8192, 1 << 20, &trust()),
            Err(VerityError::Signature(TrustError::Invalid(_)))
        ));
        // A genuine descriptor at a place the superblock was forged to point at.
        assert!(matches!(
            verify(&b, 4096, 1 << 20, &trust()),
            Err(VerityError::Layout(_))
        ));
        // A slot too small for the tree it names.
        assert!(matches!(
            verify(&b, 8192, 12288, &trust()),
            Err(VerityError::Layout(_))
        ));
        assert!(matches!(
            verify(&[0u8; 4096], 8192, 1 << 20, &trust()),
            Err(VerityError::NoDescriptor(8192))
        ));
        let mut trailing = b.clone();
        trailing[4095] = 1;
        assert!(verify(&trailing, 8192, 1 << 20, &trust()).is_err());
    }

    #[test]
    fn signed_but_unusable_layouts_are_refused() {
        for f in [
            (|d: &mut Descriptor| d.algorithm = "sha1".into()) as fn(&mut Descriptor),
            |d| d.block_size = 512,
            |d| d.hash_offset = 8192,
            |d| d.hash_size = 0,
            |d| d.hash_size = 100,
            |d| d.root_hash = "CD".repeat(32),
            |d| d.root_hash = "cd".repeat(31),
            |d| d.salt = "x".into(),
        ] {
            let mut d = desc();
            f(&mut d);
            let b = block(&d, &key()).unwrap();
            assert!(
                matches!(
                    verify(&b, 8192, 1 << 20, &trust()),
                    Err(VerityError::Layout(_))
                ),
                "{d:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn any_change_to_a_signed_block_is_refused(i in 0usize..4096, x in 1u8..=255) {
            let b = block(&desc(), &key()).unwrap();
            let mut m = b.clone();
            m[i] ^= x;
            proptest::prop_assert!(verify(&m, 8192, 1 << 20, &trust()).is_err());
        }
    }
}
