//! The update artifact `make image` produces and `abupdate install` consumes:
//!
//! ```text
//! EVE-UPDATE 1 <sha256 of the manifest line>\n
//! <manifest JSON, one line>\n
//! zero padding up to PAYLOAD_OFFSET
//! <slot payload: the squashfs written verbatim to IMGA/IMGB>
//! ```
//! The header is checked (magic, its own hash, format, architecture, sizes) before the payload is
//! read, and the payload's sha256 before anything is written.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const MAGIC: &str = "EVE-UPDATE";
pub const FORMAT: u32 = 1;
pub const PAYLOAD_OFFSET: u64 = 4096;
pub const SQUASHFS_MAGIC: &[u8; 4] = b"hsqs";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    /// Only `squashfs` today.
    pub kind: String,
    pub offset: u64,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub version: String,
    /// As Rust names it (`x86_64`, `aarch64`).
    pub arch: String,
    pub payload: Payload,
    /// Build facts for people (kernel, zfs, git revision); not acted on.
    #[serde(default)]
    pub build: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArtifactError {
    #[error("not an EVE update (no `{MAGIC}` header)")]
    NotAnUpdate,
    #[error("update header is corrupt: {0}")]
    Corrupt(String),
    #[error("update is for {0}; this machine is {1}")]
    WrongArch(String, String),
    #[error("update format {0} is not supported (this tool reads {FORMAT})")]
    Format(u32),
    #[error("update is truncated: {0}")]
    Truncated(String),
    #[error("payload sha256 is {actual}, the manifest says {expected}: the update is corrupt")]
    Checksum { expected: String, actual: String },
    #[error("payload of {size} bytes does not fit slot partition {dev} ({capacity} bytes)")]
    TooBig {
        size: u64,
        capacity: u64,
        dev: String,
    },
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The header block for `m`, exactly PAYLOAD_OFFSET bytes.
pub fn header(m: &Manifest) -> Result<Vec<u8>, ArtifactError> {
    let json = serde_json::to_string(m).map_err(|e| ArtifactError::Corrupt(e.to_string()))?;
    let mut h = format!("{MAGIC} {FORMAT} {}\n{json}\n", sha256_hex(json.as_bytes())).into_bytes();
    if h.len() as u64 > PAYLOAD_OFFSET {
        return Err(ArtifactError::Corrupt(format!(
            "manifest is {} bytes; at most {PAYLOAD_OFFSET} fit",
            h.len()
        )));
    }
    h.resize(PAYLOAD_OFFSET as usize, 0);
    Ok(h)
}

/// Parses and checks the header block. `arch` is the machine's; `total_len` the artifact's length
/// when known (a file), so truncation is caught before the payload is read.
pub fn parse_header(
    block: &[u8],
    arch: &str,
    total_len: Option<u64>,
) -> Result<Manifest, ArtifactError> {
    if !block.starts_with(MAGIC.as_bytes()) {
        return Err(ArtifactError::NotAnUpdate);
    }
    if (block.len() as u64) < PAYLOAD_OFFSET {
        return Err(ArtifactError::Truncated(format!(
            "{} bytes, shorter than the {PAYLOAD_OFFSET}-byte header",
            block.len()
        )));
    }
    let text = &block[..PAYLOAD_OFFSET as usize];
    let mut lines = text.splitn(3, |b| *b == b'\n');
    let (Some(first), Some(json)) = (lines.next(), lines.next()) else {
        return Err(ArtifactError::Corrupt("header lines missing".into()));
    };
    let first = String::from_utf8_lossy(first);
    let parts: Vec<&str> = first.split(' ').collect();
    let [_, fmt_, sum] = parts.as_slice() else {
        return Err(ArtifactError::Corrupt(format!("first line {first:?}")));
    };
    let fmt_: u32 = fmt_
        .parse()
        .map_err(|_| ArtifactError::Corrupt(format!("format {fmt_:?}")))?;
    if fmt_ != FORMAT {
        return Err(ArtifactError::Format(fmt_));
    }
    if sha256_hex(json) != *sum {
        return Err(ArtifactError::Corrupt(
            "manifest does not match its checksum".into(),
        ));
    }
    let m: Manifest =
        serde_json::from_slice(json).map_err(|e| ArtifactError::Corrupt(e.to_string()))?;
    if m.format != FORMAT {
        return Err(ArtifactError::Format(m.format));
    }
    if m.arch != arch {
        return Err(ArtifactError::WrongArch(m.arch.clone(), arch.into()));
    }
    crate::state::validate_version(&m.version)
        .map_err(|e| ArtifactError::Corrupt(format!("version {:?}: {e}", m.version)))?;
    if m.payload.kind != "squashfs" {
        return Err(ArtifactError::Corrupt(format!(
            "payload kind {:?} (expected squashfs)",
            m.payload.kind
        )));
    }
    if m.payload.offset != PAYLOAD_OFFSET || m.payload.size == 0 {
        return Err(ArtifactError::Corrupt(format!(
            "payload at {} of {} bytes",
            m.payload.offset, m.payload.size
        )));
    }
    if m.payload.sha256.len() != 64 || !m.payload.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ArtifactError::Corrupt(
            "payload sha256 is not 64 hex digits".into(),
        ));
    }
    if let Some(len) = total_len {
        let want = m
            .payload
            .offset
            .checked_add(m.payload.size)
            .ok_or_else(|| {
                ArtifactError::Corrupt(format!(
                    "payload at {} of {} bytes overflows",
                    m.payload.offset, m.payload.size
                ))
            })?;
        if len < want {
            return Err(ArtifactError::Truncated(format!(
                "{len} bytes, the manifest needs {want}"
            )));
        }
        if len > want {
            return Err(ArtifactError::Corrupt(format!(
                "{} unexpected bytes after the payload",
                len - want
            )));
        }
    }
    Ok(m)
}

/// A manifest for `payload` (the whole squashfs in memory is fine: the builder hashes it once).
pub fn manifest_for(
    version: &str,
    arch: &str,
    payload: &[u8],
    build: std::collections::BTreeMap<String, String>,
) -> Result<Manifest, ArtifactError> {
    crate::state::validate_version(version)
        .map_err(|e| ArtifactError::Corrupt(format!("version {version:?}: {e}")))?;
    if !payload.starts_with(SQUASHFS_MAGIC) {
        return Err(ArtifactError::Corrupt("payload is not a squashfs".into()));
    }
    Ok(Manifest {
        format: FORMAT,
        version: version.into(),
        arch: arch.into(),
        payload: Payload {
            kind: "squashfs".into(),
            offset: PAYLOAD_OFFSET,
            size: payload.len() as u64,
            sha256: sha256_hex(payload),
        },
        build,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Vec<u8>, Manifest) {
        let mut payload = SQUASHFS_MAGIC.to_vec();
        payload.extend_from_slice(&[7u8; 10_000]);
        let m = manifest_for("v2", "x86_64", &payload, Default::default()).unwrap();
        let mut a = header(&m).unwrap();
        a.extend_from_slice(&payload);
        (a, m)
    }

    #[test]
    fn header_round_trip() {
        let (a, m) = sample();
        assert_eq!(
            parse_header(&a[..4096], "x86_64", Some(a.len() as u64)).unwrap(),
            m
        );
        assert_eq!(m.payload.size, 10_004);
    }

    #[test]
    fn refuses_bad_headers_with_the_reason() {
        let (a, _) = sample();
        let len = Some(a.len() as u64);
        assert_eq!(
            parse_header(&a[..4096], "aarch64", len),
            Err(ArtifactError::WrongArch("x86_64".into(), "aarch64".into()))
        );
        assert!(matches!(
            parse_header(&a[..4096], "x86_64", Some(a.len() as u64 - 1)),
            Err(ArtifactError::Truncated(_))
        ));
        assert!(matches!(
            parse_header(&a[..4096], "x86_64", Some(a.len() as u64 + 5)),
            Err(ArtifactError::Corrupt(_))
        ));
        assert!(matches!(
            parse_header(&a[..100], "x86_64", None),
            Err(ArtifactError::Truncated(_))
        ));
        assert_eq!(
            parse_header(&[0u8; 4096], "x86_64", None),
            Err(ArtifactError::NotAnUpdate)
        );
        // One flipped byte in the manifest (the version) is caught by the header checksum.
        let mut c = a.clone();
        let at = c.windows(4).position(|w| w == b"\"v2\"").unwrap();
        c[at + 2] = b'3';
        let e = parse_header(&c[..4096], "x86_64", len).unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
        let mut f = a.clone();
        f[11] = b'7';
        assert_eq!(
            parse_header(&f[..4096], "x86_64", len),
            Err(ArtifactError::Format(7))
        );
        // A crafted size that overflows offset + size is an error, not a panic.
        let mut m = manifest_for("v2", "x86_64", &a[4096..], Default::default()).unwrap();
        m.payload.size = u64::MAX - 10;
        let h = header(&m).unwrap();
        let e = parse_header(&h, "x86_64", Some(u64::MAX)).unwrap_err();
        assert!(e.to_string().contains("overflows"), "{e}");
    }

    #[test]
    fn payload_must_be_squashfs_and_version_plain() {
        assert!(manifest_for("v2", "x86_64", b"ext4....", Default::default()).is_err());
        assert!(manifest_for("v 2", "x86_64", b"hsqs", Default::default()).is_err());
    }
}
