//! The update artifact `make image` produces and `abupdate install` consumes:
//!
//! ```text
//! EVE-UPDATE 2\n
//! <manifest JSON, one line>\n
//! <signature JSON, one line: {"key": <key id>, "sig": <ed25519 signature, base64>}>\n
//! zero padding up to PAYLOAD_OFFSET
//! <slot payload: the squashfs written verbatim to IMGA/IMGB>
//! ```
//! The signature covers `trust::MANIFEST_CONTEXT` + the manifest line's exact bytes; the manifest
//! names the payload's size and sha256, so one signature covers every byte. The header is checked
//! (magic, format, signature, then architecture, version, epoch and sizes) before the payload is
//! read, and the payload's sha256 before anything is written. Format 1 (unsigned) is refused.

use crate::trust::{self, Sig, SignedKeyList, Signer25519, Trust, TrustError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::cmp::Ordering;

pub const MAGIC: &str = "EVE-UPDATE";
pub const FORMAT: u32 = 2;
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
    /// Raised by the vendor when a release fixes a security hole: a box never installs an
    /// artifact with a lower epoch than the one it runs.
    pub security_epoch: u32,
    /// `release`, or `dev` for a build signed with a development key made by the builder.
    pub signing: String,
    /// The build profile, `prod` or `dev` (console shell, test agent): a production box installs
    /// `prod` builds only. Signed with the rest.
    #[serde(default)]
    pub profile: String,
    pub payload: Payload,
    /// A key rotation, signed by a key the box trusts now; the manifest itself is then checked
    /// against the new list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<SignedKeyList>,
    /// The vendor's whole chain of key rotations, oldest first (`pack-update --key-chain`). A box
    /// takes the entries past the keys it trusts, each checked against the list before it, so an
    /// update carrying it repairs a box whose stored rotations (`EFI/eve/keys.json`, a cache) were
    /// lost or damaged. Releases before this field refuse a manifest that has it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_chain: Vec<SignedKeyList>,
    /// Build facts for people (kernel, zfs, git revision); not acted on.
    #[serde(default)]
    pub build: std::collections::BTreeMap<String, String>,
}

/// What the running system is, for the epoch and downgrade rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub version: String,
    pub security_epoch: u32,
    /// `prod` or `dev`.
    pub profile: String,
}

/// The newest key-list serial a box is known to have accepted, and the record that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFloor {
    pub serial: u32,
    pub source: String,
    /// The record is the TPM's (then the slot state's `EVE_KEYS` is only a copy).
    pub tpm: bool,
}

impl KeyFloor {
    /// No record: the keys the box has are all it knows of.
    pub fn none() -> KeyFloor {
        KeyFloor {
            serial: 0,
            source: "no record".into(),
            tpm: false,
        }
    }

    /// Pure: the record that counts. `tpm`: the TPM's key-serial floor (`None`: no TPM; an
    /// error: the counter is absent or not the box's). With the counter, its value (the disk
    /// cannot lower it); without one, the slot state's `EVE_KEYS`, which is all such a box has.
    pub fn decide(tpm: Option<Result<u64, String>>, esp_keys: u32) -> KeyFloor {
        match tpm {
            Some(Ok(serial)) => KeyFloor {
                serial: u32::try_from(serial).unwrap_or(u32::MAX),
                source: "the TPM's rollback floor".into(),
                tpm: true,
            },
            Some(Err(why)) => KeyFloor {
                serial: esp_keys,
                source: format!("EVE_KEYS in the slot state; the TPM holds no floor: {why}"),
                tpm: false,
            },
            None => KeyFloor {
                serial: esp_keys,
                source: "EVE_KEYS in the slot state; no TPM".into(),
                tpm: false,
            },
        }
    }
}

/// Everything an artifact is checked against.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    pub arch: &'a str,
    /// The keys the image and the stored rotations give.
    pub trust: &'a Trust,
    /// The key-list serial this box is known to have accepted, and where that record lives (the
    /// TPM's rollback floor, or the slot state when there is no TPM): an update is checked against
    /// a list at least this new, so lost rotations never bring retired keys back.
    pub key_floor: KeyFloor,
    pub running: &'a Running,
    pub allow_downgrade: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArtifactError {
    #[error("not an EVE update (no `{MAGIC}` header)")]
    NotAnUpdate,
    #[error("update is not signed (no signature in its header); this box installs only updates signed by a key it trusts")]
    Unsigned,
    #[error("update signature refused")]
    Signature(#[source] TrustError),
    #[error("key rotation carried by the update refused")]
    Rotation(#[source] TrustError),
    #[error("update keys: this box accepted key list {floor} ({record}), but the image, the rotations stored on the ESP (EFI/eve/keys.json) and the update give only list {have}: the stored key rotations are missing or were rolled back; refused, so retired keys are not trusted again. An update that carries the vendor's full key chain (pack-update --key-chain) is accepted and repairs them")]
    KeysBelowFloor {
        have: u32,
        floor: u32,
        record: String,
    },
    #[error("update header is corrupt: {0}")]
    Corrupt(String),
    #[error("update is for {0}; this machine is {1}")]
    WrongArch(String, String),
    #[error("update format {0} is not supported (this tool reads {FORMAT})")]
    Format(u32),
    #[error("update {version} has security epoch {epoch}, below the running system's {running}: refused (it would reopen fixed security holes)")]
    Epoch {
        version: String,
        epoch: u32,
        running: u32,
    },
    #[error("update {version} is a {profile} build: a production box installs production builds only (development builds carry a console shell and test agent, and are signed with keys it does not trust)")]
    Profile { version: String, profile: String },
    #[error("update {version} is older than the running {running}; pass --allow-downgrade to install it anyway")]
    Downgrade { version: String, running: String },
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

/// Orders versions the way people read them: runs of digits by value, everything else by byte
/// (`v9` < `v10` < `v10.1`, `1.2-rc1` < `1.2-rc2`).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn parts(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(pb.iter()) {
        let o = match (x, y) {
            ((true, x), (true, y)) => {
                let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                x.len().cmp(&y.len()).then_with(|| x.cmp(y))
            }
            ((_, x), (_, y)) => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    pa.len().cmp(&pb.len())
}

/// The header block for `m`, signed by `key`, exactly PAYLOAD_OFFSET bytes.
pub fn header(m: &Manifest, key: &Signer25519) -> Result<Vec<u8>, ArtifactError> {
    let json = serde_json::to_string(m).map_err(|e| ArtifactError::Corrupt(e.to_string()))?;
    let sig = key.sign(trust::MANIFEST_CONTEXT, json.as_bytes());
    let sig = serde_json::to_string(&sig).map_err(|e| ArtifactError::Corrupt(e.to_string()))?;
    let mut h = format!("{MAGIC} {FORMAT}\n{json}\n{sig}\n").into_bytes();
    if h.len() as u64 > PAYLOAD_OFFSET {
        return Err(ArtifactError::Corrupt(format!(
            "manifest and signature are {} bytes; at most {PAYLOAD_OFFSET} fit",
            h.len()
        )));
    }
    h.resize(PAYLOAD_OFFSET as usize, 0);
    Ok(h)
}

/// A header that passed every check: its manifest, and the trust after any rotation it carries
/// (to be stored once the install succeeds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub manifest: Manifest,
    pub rotated: Option<Trust>,
    /// The rotations the box takes from this update, in order (from `key_chain`, then `keys`):
    /// appended to the stored chain once the install succeeds.
    pub new_rotations: Vec<SignedKeyList>,
}

/// Parses and checks the header block. `total_len` is the artifact's length when known (a
/// file), so truncation is caught before the payload is read.
pub fn parse_header(
    block: &[u8],
    want: &Expect,
    total_len: Option<u64>,
) -> Result<Checked, ArtifactError> {
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
    let mut lines = text.splitn(4, |b| *b == b'\n');
    let first = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let parts: Vec<&str> = first.split(' ').collect();
    if parts.first() != Some(&MAGIC) {
        return Err(ArtifactError::NotAnUpdate);
    }
    let fmt_ = match parts.as_slice() {
        [_, f] | [_, f, _] => f
            .parse::<u32>()
            .map_err(|_| ArtifactError::Corrupt(format!("format {f:?}")))?,
        _ => return Err(ArtifactError::Corrupt(format!("first line {first:?}"))),
    };
    // Format 1 was `EVE-UPDATE 1 <sha256>`, with no signature.
    if fmt_ == 1 {
        return Err(ArtifactError::Unsigned);
    }
    if fmt_ != FORMAT {
        return Err(ArtifactError::Format(fmt_));
    }
    if parts.len() != 2 {
        return Err(ArtifactError::Corrupt(format!("first line {first:?}")));
    }
    let Some(json) = lines.next() else {
        return Err(ArtifactError::Corrupt("header lines missing".into()));
    };
    let sig_line = lines.next().unwrap_or_default();
    if sig_line.iter().all(|b| *b == 0 || b.is_ascii_whitespace()) {
        return Err(ArtifactError::Unsigned);
    }
    if lines.next().is_none_or(|rest| rest.iter().any(|b| *b != 0)) {
        return Err(ArtifactError::Corrupt(
            "bytes after the signature in the header".into(),
        ));
    }
    let sig: Sig = serde_json::from_slice(sig_line)
        .map_err(|e| ArtifactError::Corrupt(format!("signature line: {e}")))?;
    let m: Manifest = serde_json::from_slice(json)
        .map_err(|e| ArtifactError::Corrupt(format!("manifest: {e}")))?;
    // A rotation the box already has (or is past) is ignored: artifacts keep carrying a rotation
    // for boxes that missed the update that brought it, and the signature below must then verify
    // against the keys trusted now.
    let mut rotated: Option<Trust> = None;
    let mut new_rotations = Vec::new();
    for list in m.key_chain.iter().chain(m.keys.as_ref()) {
        match rotated.as_ref().unwrap_or(want.trust).rotate(list) {
            Ok(t) => {
                rotated = Some(t);
                new_rotations.push(list.clone());
            }
            Err(TrustError::Stale(..)) => {}
            Err(e) => return Err(ArtifactError::Rotation(e)),
        }
    }
    let trust = rotated.as_ref().unwrap_or(want.trust);
    if trust.serial < want.key_floor.serial {
        return Err(ArtifactError::KeysBelowFloor {
            have: trust.serial,
            floor: want.key_floor.serial,
            record: want.key_floor.source.clone(),
        });
    }
    trust
        .verify(trust::MANIFEST_CONTEXT, json, &sig)
        .map_err(ArtifactError::Signature)?;
    check_manifest(&m, want)?;
    if let Some(len) = total_len {
        let need = m
            .payload
            .offset
            .checked_add(m.payload.size)
            .ok_or_else(|| {
                ArtifactError::Corrupt(format!(
                    "payload at {} of {} bytes overflows",
                    m.payload.offset, m.payload.size
                ))
            })?;
        if len < need {
            return Err(ArtifactError::Truncated(format!(
                "{len} bytes, the manifest needs {need}"
            )));
        }
        if len > need {
            return Err(ArtifactError::Corrupt(format!(
                "{} unexpected bytes after the payload",
                len - need
            )));
        }
    }
    Ok(Checked {
        manifest: m,
        rotated,
        new_rotations,
    })
}

/// The rules a signed manifest must still meet on this box.
fn check_manifest(m: &Manifest, want: &Expect) -> Result<(), ArtifactError> {
    if m.format != FORMAT {
        return Err(ArtifactError::Format(m.format));
    }
    if m.arch != want.arch {
        return Err(ArtifactError::WrongArch(m.arch.clone(), want.arch.into()));
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
    // Anything but a development box is held to production builds (fail closed).
    if want.running.profile != "dev" && m.profile != "prod" {
        return Err(ArtifactError::Profile {
            version: m.version.clone(),
            profile: if m.profile.is_empty() {
                "unnamed".into()
            } else {
                m.profile.clone()
            },
        });
    }
    if m.security_epoch < want.running.security_epoch {
        return Err(ArtifactError::Epoch {
            version: m.version.clone(),
            epoch: m.security_epoch,
            running: want.running.security_epoch,
        });
    }
    if m.security_epoch == want.running.security_epoch
        && compare_versions(&m.version, &want.running.version) == Ordering::Less
        && !want.allow_downgrade
    {
        return Err(ArtifactError::Downgrade {
            version: m.version.clone(),
            running: want.running.version.clone(),
        });
    }
    Ok(())
}

/// What the builder says about an artifact besides its payload.
#[derive(Debug, Clone, Default)]
pub struct BuildInfo {
    pub security_epoch: u32,
    pub signing: String,
    /// `prod` or `dev`.
    pub profile: String,
    pub keys: Option<SignedKeyList>,
    /// The vendor's full rotation chain ([`Manifest::key_chain`]).
    pub key_chain: Vec<SignedKeyList>,
    pub build: std::collections::BTreeMap<String, String>,
}

/// A manifest for `payload` (the whole squashfs in memory is fine: the builder hashes it once).
pub fn manifest_for(
    version: &str,
    arch: &str,
    payload: &[u8],
    info: BuildInfo,
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
        security_epoch: info.security_epoch,
        signing: info.signing,
        profile: info.profile,
        payload: Payload {
            kind: "squashfs".into(),
            offset: PAYLOAD_OFFSET,
            size: payload.len() as u64,
            sha256: sha256_hex(payload),
        },
        keys: info.keys,
        key_chain: info.key_chain,
        build: info.build,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::KeyList;

    fn key(n: u8) -> Signer25519 {
        Signer25519::from_seed(&[n; 32])
    }

    fn info(epoch: u32) -> BuildInfo {
        BuildInfo {
            security_epoch: epoch,
            signing: "dev".into(),
            profile: "prod".into(),
            ..Default::default()
        }
    }

    fn payload() -> Vec<u8> {
        let mut p = SQUASHFS_MAGIC.to_vec();
        p.extend_from_slice(&[7u8; 10_000]);
        p
    }

    fn sample(version: &str, epoch: u32, k: &Signer25519) -> (Vec<u8>, Manifest) {
        let p = payload();
        let m = manifest_for(version, "x86_64", &p, info(epoch)).unwrap();
        let mut a = header(&m, k).unwrap();
        a.extend_from_slice(&p);
        (a, m)
    }

    struct Box_ {
        trust: Trust,
        running: Running,
    }

    impl Box_ {
        fn new() -> Box_ {
            Box_ {
                trust: Trust::from_list(&KeyList::new(1, &[key(1).public()])).unwrap(),
                running: Running {
                    version: "v2".into(),
                    security_epoch: 3,
                    profile: "prod".into(),
                },
            }
        }
        fn check(&self, a: &[u8], allow_downgrade: bool) -> Result<Checked, ArtifactError> {
            let want = Expect {
                arch: "x86_64",
                trust: &self.trust,
                key_floor: crate::artifact::KeyFloor::none(),
                running: &self.running,
                allow_downgrade,
            };
            parse_header(&a[..a.len().min(4096)], &want, Some(a.len() as u64))
        }
    }

    #[test]
    fn fixed_vector_header() {
        // A fixed key, manifest and payload give these exact header bytes forever: a change to the
        // format shows up here first.
        let (a, m) = sample("v3", 3, &key(1));
        let end = a[..4096].iter().rposition(|b| *b != 0).unwrap() + 1;
        let text = std::str::from_utf8(&a[..end]).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "EVE-UPDATE 2");
        assert_eq!(
            lines[1],
            format!(
                r#"{{"format":2,"version":"v3","arch":"x86_64","security_epoch":3,"signing":"dev","profile":"prod","payload":{{"kind":"squashfs","offset":4096,"size":10004,"sha256":"{}"}},"build":{{}}}}"#,
                m.payload.sha256
            )
        );
        assert_eq!(sha256_hex(&a[..4096]), FIXED_HEADER_SHA256);
        assert_eq!(Box_::new().check(&a, false).unwrap().manifest, m);
    }
    const FIXED_HEADER_SHA256: &str =
        "4fa2be2cd64ff2e347feda3124ae6fa0bf9059578e112d0feee1305a9aa20b74";

    #[test]
    fn a_production_box_installs_production_builds_only() {
        let mut b = Box_::new();
        for profile in ["dev", "", "Prod"] {
            let p = payload();
            let info = BuildInfo {
                profile: profile.into(),
                ..info(3)
            };
            let m = manifest_for("v3", "x86_64", &p, info).unwrap();
            let a = header(&m, &key(1)).unwrap();
            let e = b.check(&a, false).unwrap_err();
            assert!(matches!(e, ArtifactError::Profile { .. }), "{profile}: {e}");
            assert!(e.to_string().contains("production builds only"), "{e}");
        }
        // A box whose profile is anything but `dev` is held to production builds.
        b.running.profile = "unknown".into();
        let info = BuildInfo {
            profile: "dev".into(),
            ..info(3)
        };
        let m = manifest_for("v3", "x86_64", &payload(), info).unwrap();
        assert!(b.check(&header(&m, &key(1)).unwrap(), false).is_err());
        // A development box takes either (its own keys decide what it trusts).
        b.running.profile = "dev".into();
        let (a, _) = sample("v3", 3, &key(1));
        assert!(b.check(&a, false).is_ok());
    }

    #[test]
    fn unsigned_wrongly_signed_and_tampered_headers_are_refused() {
        let b = Box_::new();
        let (good, _) = sample("v3", 3, &key(1));
        // Another key.
        let (other, _) = sample("v3", 3, &key(2));
        assert!(matches!(
            b.check(&other, false),
            Err(ArtifactError::Signature(TrustError::Untrusted(..)))
        ));
        // A manifest byte changed (the payload sha256: a payload swapped with its sum recomputed).
        let mut t = good.clone();
        let at = t.windows(8).position(|w| w == b"\"sha256\"").unwrap() + 10;
        t[at] = if t[at] == b'0' { b'1' } else { b'0' };
        assert!(matches!(
            b.check(&t, false),
            Err(ArtifactError::Signature(TrustError::Invalid(_)))
        ));
        // Format 1, as the unsigned builder wrote it.
        let mut old = b"EVE-UPDATE 1 abc\n{}\n".to_vec();
        old.resize(4096 + 10, 0);
        assert_eq!(b.check(&old, false), Err(ArtifactError::Unsigned));
        // No signature line.
        let mut nosig = good.clone();
        let nl = nosig
            .iter()
            .enumerate()
            .filter(|(_, c)| **c == b'\n')
            .nth(1)
            .unwrap()
            .0;
        for c in &mut nosig[nl + 1..4096] {
            *c = 0;
        }
        assert_eq!(b.check(&nosig, false), Err(ArtifactError::Unsigned));
        // A signature line that is not one.
        let mut junk = good.clone();
        junk[nl + 1] = b'x';
        assert!(matches!(
            b.check(&junk, false),
            Err(ArtifactError::Corrupt(_))
        ));
        // Something smuggled after the signature.
        let mut extra = good.clone();
        extra[4000] = b'x';
        assert!(matches!(
            b.check(&extra, false),
            Err(ArtifactError::Corrupt(_))
        ));
        assert_eq!(
            b.check(&[0u8; 4096], false),
            Err(ArtifactError::NotAnUpdate)
        );
    }

    #[test]
    fn arch_length_epoch_and_downgrade_rules() {
        let b = Box_::new();
        let (a, _) = sample("v3", 3, &key(1));
        let want = Expect {
            arch: "aarch64",
            trust: &b.trust,
            key_floor: crate::artifact::KeyFloor::none(),
            running: &b.running,
            allow_downgrade: false,
        };
        assert_eq!(
            parse_header(&a[..4096], &want, None),
            Err(ArtifactError::WrongArch("x86_64".into(), "aarch64".into()))
        );
        assert!(matches!(
            b.check(&a[..a.len() - 1], false),
            Err(ArtifactError::Truncated(_))
        ));
        let mut long = a.clone();
        long.extend_from_slice(b"12345");
        assert!(matches!(
            b.check(&long, false),
            Err(ArtifactError::Corrupt(_))
        ));
        assert!(matches!(
            b.check(&a[..100], false),
            Err(ArtifactError::Truncated(_))
        ));
        // Lower epoch: refused even with --allow-downgrade.
        let (low, _) = sample("v9", 2, &key(1));
        assert!(matches!(
            b.check(&low, true),
            Err(ArtifactError::Epoch { .. })
        ));
        // Same epoch, lower version: only with --allow-downgrade.
        let (older, _) = sample("v1", 3, &key(1));
        assert!(matches!(
            b.check(&older, false),
            Err(ArtifactError::Downgrade { .. })
        ));
        b.check(&older, true).unwrap();
        // Higher epoch and lower version: a fix release on an old branch is not a downgrade.
        let (fix, _) = sample("v1", 4, &key(1));
        b.check(&fix, false).unwrap();
        // The same version again is a reinstall.
        let (same, _) = sample("v2", 3, &key(1));
        b.check(&same, false).unwrap();
    }

    #[test]
    fn a_rotation_is_checked_and_then_governs_the_signature() {
        let b = Box_::new();
        let (old, new, evil) = (key(1), key(2), key(9));
        let rotation = old.sign_list(&KeyList::new(2, &[new.public()])).unwrap();
        let p = payload();
        let mk = |keys: Option<SignedKeyList>, by: &Signer25519| {
            let mut i = info(3);
            i.keys = keys;
            let m = manifest_for("v3", "x86_64", &p, i).unwrap();
            let mut a = header(&m, by).unwrap();
            a.extend_from_slice(&p);
            a
        };
        let c = b.check(&mk(Some(rotation.clone()), &new), false).unwrap();
        assert_eq!(c.rotated.unwrap().ids(), vec![new.id()]);
        // Signed by the old key while carrying a list that retires it: refused.
        assert!(matches!(
            b.check(&mk(Some(rotation), &old), false),
            Err(ArtifactError::Signature(TrustError::Untrusted(..)))
        ));
        // A box already at list 2 takes an artifact that still carries that rotation (signed by
        // the key it retired) as long as the artifact itself is signed by a key of list 2.
        let at2 = Box_ {
            trust: Trust::from_list(&KeyList::new(2, &[new.public()])).unwrap(),
            running: b.running.clone(),
        };
        let again = old.sign_list(&KeyList::new(2, &[new.public()])).unwrap();
        let c = at2.check(&mk(Some(again.clone()), &new), false).unwrap();
        assert_eq!(c.rotated, None);
        assert!(matches!(
            at2.check(&mk(Some(again), &old), false),
            Err(ArtifactError::Signature(TrustError::Untrusted(..)))
        ));
        // A list signed by a key the box does not trust.
        let forged = evil.sign_list(&KeyList::new(2, &[evil.public()])).unwrap();
        assert!(matches!(
            b.check(&mk(Some(forged), &evil), false),
            Err(ArtifactError::Rotation(TrustError::Untrusted(..)))
        ));
    }

    #[test]
    fn lost_rotations_are_refused_until_an_update_carries_the_full_chain() {
        // The vendor's chain: list 1 (key 1, in the image) -> list 2 (key 2) -> list 3 (key 3).
        let (k1, k2, k3) = (key(1), key(2), key(3));
        let r2 = k1.sign_list(&KeyList::new(2, &[k2.public()])).unwrap();
        let r3 = k2.sign_list(&KeyList::new(3, &[k3.public()])).unwrap();
        let builtin = Trust::from_list(&KeyList::new(1, &[k1.public()])).unwrap();
        let running = Running {
            version: "v1".into(),
            security_epoch: 0,
            profile: "prod".into(),
        };
        let p = payload();
        let mk = |chain: Vec<SignedKeyList>, by: &Signer25519| {
            let mut i = info(0);
            i.key_chain = chain;
            let m = manifest_for("v3", "x86_64", &p, i).unwrap();
            let mut a = header(&m, by).unwrap();
            a.extend_from_slice(&p);
            a
        };
        // The ESP's keys.json lost: the box has only its image's list 1, the TPM says 3.
        let check = |trust: &Trust, floor: u32, a: &[u8]| {
            let want = Expect {
                arch: "x86_64",
                trust,
                key_floor: KeyFloor::decide(
                    Some(Ok(u64::from(floor))),
                    // Whatever the ESP says, the TPM's record counts.
                    if floor == 0 { 0 } else { u32::MAX },
                ),
                running: &running,
                allow_downgrade: false,
            };
            parse_header(&a[..4096], &want, Some(a.len() as u64))
        };
        // The retired key 1 (or 2) signs nothing, with or without a chain stopping short.
        for (chain, by) in [(vec![], &k1), (vec![r2.clone()], &k2), (vec![], &k3)] {
            let e = check(&builtin, 3, &mk(chain, by)).unwrap_err();
            assert!(
                matches!(e, ArtifactError::KeysBelowFloor { floor: 3, .. }),
                "{e}"
            );
            assert!(e.to_string().contains("--key-chain"), "{e}");
        }
        // The full chain, signed by key 3: accepted, and the box takes both rotations.
        let c = check(&builtin, 3, &mk(vec![r2.clone(), r3.clone()], &k3)).unwrap();
        assert_eq!(c.rotated.unwrap().serial, 3);
        assert_eq!(c.new_rotations, vec![r2.clone(), r3.clone()]);
        // A box whose cache is intact skips what it has; a chain with a forged link is refused.
        let at3 =
            Trust::with_chain(&KeyList::new(1, &[k1.public()]), &[r2.clone(), r3.clone()]).unwrap();
        let c = check(&at3, 3, &mk(vec![r2.clone(), r3.clone()], &k3)).unwrap();
        assert_eq!((c.rotated, c.new_rotations), (None, vec![]));
        let forged = key(9)
            .sign_list(&KeyList::new(3, &[key(9).public()]))
            .unwrap();
        assert!(matches!(
            check(&builtin, 3, &mk(vec![r2, forged], &key(9))),
            Err(ArtifactError::Rotation(TrustError::Untrusted(..)))
        ));
        // Signed by a key of the chain's last list only.
        assert!(matches!(
            check(
                &builtin,
                0,
                &mk(
                    vec![k1.sign_list(&KeyList::new(2, &[k2.public()])).unwrap()],
                    &k1
                )
            ),
            Err(ArtifactError::Signature(TrustError::Untrusted(..)))
        ));
        // Without a TPM the slot state's record counts; garbage there already reads as 0.
        assert_eq!(KeyFloor::decide(None, 2).serial, 2);
        let f = KeyFloor::decide(Some(Err("index absent".into())), 2);
        assert!(
            !f.tpm && f.serial == 2 && f.source.contains("index absent"),
            "{f:?}"
        );
    }

    #[test]
    fn versions_order_as_people_read_them() {
        use Ordering::*;
        for (a, b, o) in [
            ("v9", "v10", Less),
            ("v10", "v10.1", Less),
            ("1.2-rc1", "1.2-rc2", Less),
            ("v2", "v2", Equal),
            ("v02", "v2", Equal),
            ("dev", "v1", Less),
            ("2026.12.1", "2026.9.30", Greater),
        ] {
            assert_eq!(compare_versions(a, b), o, "{a} vs {b}");
            assert_eq!(compare_versions(b, a), o.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn payload_must_be_squashfs_and_version_plain() {
        assert!(manifest_for("v2", "x86_64", b"ext4....", info(0)).is_err());
        assert!(manifest_for("v 2", "x86_64", b"hsqs", info(0)).is_err());
    }
}
