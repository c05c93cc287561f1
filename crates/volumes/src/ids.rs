//! Identities that must never change once a guest has seen them (serial, NGUID, UUID, WWPN per
//! volume) and per-VM host identities with their DH-HMAC-CHAP secrets. Kept as JSON files in the
//! state directory on the encrypted vault, written atomically.

use crate::error::Error;
use crate::memo::Memo;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const NQN_BASE: &str = "nqn.2026-11.org.lfedge.eve";
/// LIO's IEEE OUI with one nibble of ours, so our vhost targets are recognisable.
pub const WWPN_PREFIX: &str = "naa.5001405e";

pub fn subsystem_nqn(volume: &str) -> String {
    format!("{NQN_BASE}:vol:{volume}")
}
pub fn host_nqn(vm: &str) -> String {
    format!("{NQN_BASE}:vm:{vm}")
}
/// The kernel refuses two host NQNs with one host ID, so each VM gets its own, derived from its
/// NQN (stable without storing it).
pub fn host_id(vm: &str) -> String {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, host_nqn(vm).as_bytes())
        .hyphenated()
        .to_string()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeIds {
    /// NVMe serial (at most 20 ASCII) and the SCSI unit serial.
    pub serial: String,
    pub uuid: String,
    pub nguid: String,
    pub wwpn: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostIds {
    pub nqn: String,
    /// The host's secret (the guest proves itself with it).
    pub key: String,
    /// The controller's secret (the target proves itself with it): bidirectional CHAP.
    pub ctrl_key: String,
}

impl VolumeIds {
    /// Stored identities are input like any other: a hand-edited or damaged file is an error
    /// that names it, never a panic or a malformed configfs write.
    pub fn check(&self) -> Result<(), String> {
        if self.serial.is_empty()
            || self.serial.len() > 20
            || !self.serial.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(format!(
                "serial `{}` is not 1-20 letters and digits",
                self.serial
            ));
        }
        for (k, v) in [("uuid", &self.uuid), ("nguid", &self.nguid)] {
            if uuid::Uuid::parse_str(v).is_err() {
                return Err(format!("{k} `{v}` is not a UUID"));
            }
        }
        let tail = self.wwpn.strip_prefix(WWPN_PREFIX).unwrap_or("");
        if tail.len() != 8 || !tail.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "wwpn `{}` is not {WWPN_PREFIX} and 8 hex digits",
                self.wwpn
            ));
        }
        Ok(())
    }
}

impl HostIds {
    pub fn check(&self, vm: &str) -> Result<(), String> {
        if self.nqn != host_nqn(vm) {
            return Err(format!("nqn `{}` is not {}", self.nqn, host_nqn(vm)));
        }
        for (k, v) in [("key", &self.key), ("ctrl_key", &self.ctrl_key)] {
            let ok = v
                .strip_prefix("DHHC-1:00:")
                .and_then(|r| r.strip_suffix(':'))
                .is_some_and(|b| {
                    !b.is_empty()
                        && b.bytes()
                            .all(|c| c.is_ascii_alphanumeric() || b"+/=".contains(&c))
                });
            if !ok {
                return Err(format!("{k} is not a DHHC-1 secret"));
            }
        }
        Ok(())
    }
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    let mut got = 0;
    while got < N {
        // SAFETY: the pointer and length describe the unfilled tail of `b`.
        let r = unsafe { libc::getrandom(b[got..].as_mut_ptr().cast(), N - got, 0) };
        if r > 0 {
            got += r as usize;
        }
    }
    b
}

/// A DH-HMAC-CHAP secret in the NVMe representation: `DHHC-1:00:` base64(key || crc32 LE) `:`,
/// with "00" meaning the key is used as is.
pub fn dhchap_secret(key: &[u8; 32]) -> String {
    let mut buf = key.to_vec();
    buf.extend_from_slice(&crc32fast::hash(key).to_le_bytes());
    format!(
        "DHHC-1:00:{}:",
        base64::engine::general_purpose::STANDARD.encode(buf)
    )
}

pub fn new_volume_ids() -> VolumeIds {
    let u = uuid::Uuid::from_bytes(random_bytes::<16>());
    let n = uuid::Uuid::from_bytes(random_bytes::<16>());
    let r = random_bytes::<8>();
    let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
    VolumeIds {
        // Printable, unique, stable: "EVE" plus 16 hex digits fits NVMe's 20 bytes.
        serial: format!("EVE{}", &hex[..16]).to_uppercase(),
        uuid: u.hyphenated().to_string(),
        nguid: n.hyphenated().to_string(),
        wwpn: format!("{WWPN_PREFIX}{}", &hex[..8]),
    }
}

pub fn new_host_ids(vm: &str) -> HostIds {
    HostIds {
        nqn: host_nqn(vm),
        key: dhchap_secret(&random_bytes::<32>()),
        ctrl_key: dhchap_secret(&random_bytes::<32>()),
    }
}

/// The identity files parsed already, by path, while each is the same file.
#[derive(Debug, Default)]
pub struct Memos {
    pub volumes: Memo<VolumeIds>,
    pub hosts: Memo<HostIds>,
}

/// The state directory: `volumes/<name>.json` and `hosts/<vm>.json`.
#[derive(Debug, Clone)]
pub struct Store {
    pub dir: PathBuf,
    /// The daemon's memory of files already parsed (see [`crate::cache`]); `None` reads each time.
    pub memo: Option<std::sync::Arc<Memos>>,
}

/// Writes `data` to `path` so that a crash leaves either the old or the new file, owner-only
/// (0600, directories it makes 0700), never through a symlink
/// ([`platform::fsx::write_atomic`]).
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), Error> {
    Ok(platform::fsx::write_atomic(path, data, Some(0o600))?)
}

/// A JSON state file, `None` when it does not exist; a damaged one is an error naming it.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, Error> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::State {
                path: path.into(),
                msg: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(platform::io("read", path)(e).into()),
    }
}

impl Store {
    fn vol_path(&self, name: &str) -> PathBuf {
        self.dir.join("volumes").join(format!("{name}.json"))
    }
    fn host_path(&self, vm: &str) -> PathBuf {
        self.dir.join("hosts").join(format!("{vm}.json"))
    }
    /// Reads and checks `path` through `memo` when there is one: a file whose inode, size and
    /// times are as last seen is not read again.
    fn get_checked<T: Clone + for<'de> Deserialize<'de>>(
        &self,
        path: &Path,
        memo: Option<&Memo<T>>,
        check: impl Fn(&T) -> Result<(), String>,
    ) -> Result<Option<T>, Error> {
        use crate::memo::Found;
        let key = match memo.map(|m| m.get(path)) {
            Some(Ok(Found::Cached(v))) => return Ok(Some(v)),
            Some(Ok(Found::Missing)) => return Ok(None),
            Some(Ok(Found::Changed(k))) => Some(k),
            Some(Err(e)) => return Err(platform::io("stat", path)(e).into()),
            None => None,
        };
        let v: Option<T> = read_json(path)?;
        if let Some(v) = &v {
            check(v).map_err(|msg| Error::State {
                path: path.into(),
                msg,
            })?;
            if let (Some(m), Some(k)) = (memo, key) {
                m.put(path, k, v.clone());
            }
        }
        Ok(v)
    }
    pub fn volume(&self, name: &str) -> Result<Option<VolumeIds>, Error> {
        let memo = self.memo.as_deref().map(|c| &c.volumes);
        self.get_checked(&self.vol_path(name), memo, VolumeIds::check)
    }
    pub fn host(&self, vm: &str) -> Result<Option<HostIds>, Error> {
        let memo = self.memo.as_deref().map(|c| &c.hosts);
        self.get_checked(&self.host_path(vm), memo, |h: &HostIds| h.check(vm))
    }
    /// The volume's identity, made and persisted on first use.
    pub fn volume_or_new(&self, name: &str) -> Result<VolumeIds, Error> {
        if let Some(v) = self.volume(name)? {
            return Ok(v);
        }
        let v = new_volume_ids();
        let p = self.vol_path(name);
        write_private(&p, &serde_json::to_vec_pretty(&v).unwrap_or_default())?;
        Ok(v)
    }
    pub fn host_or_new(&self, vm: &str) -> Result<HostIds, Error> {
        if let Some(h) = self.host(vm)? {
            return Ok(h);
        }
        let h = new_host_ids(vm);
        let p = self.host_path(vm);
        write_private(&p, &serde_json::to_vec_pretty(&h).unwrap_or_default())?;
        Ok(h)
    }
    pub fn forget_volume(&self, name: &str) -> Result<(), Error> {
        let p = self.vol_path(name);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(platform::io("remove", &p)(e).into())
            }
            _ => Ok(()),
        }
    }
    fn tombstone_path(&self, name: &str) -> PathBuf {
        self.dir.join("deleted").join(format!("{name}.json"))
    }
    /// Records an explicit deletion; only this (or a spec removed from a trusted spool) lets a
    /// pass destroy a volume.
    pub fn tombstone(&self, name: &str) -> Result<(), Error> {
        let p = self.tombstone_path(name);
        write_private(&p, b"{}")
    }
    pub fn clear_tombstone(&self, name: &str) -> Result<(), Error> {
        let p = self.tombstone_path(name);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(platform::io("remove", &p)(e).into())
            }
            _ => Ok(()),
        }
    }
    pub fn forget_host(&self, vm: &str) -> Result<(), Error> {
        let p = self.host_path(vm);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(platform::io("remove", &p)(e).into())
            }
            _ => Ok(()),
        }
    }
    /// Where a VM's secrets are, for `volume show` (the secret itself is never printed).
    pub fn host_ref(&self, vm: &str) -> PathBuf {
        self.host_path(vm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_carry_a_crc_the_kernel_checks() {
        let k = [7u8; 32];
        let s = dhchap_secret(&k);
        assert!(s.starts_with("DHHC-1:00:") && s.ends_with(':'));
        let b64 = s.trim_start_matches("DHHC-1:00:").trim_end_matches(':');
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(raw.len(), 36);
        assert_eq!(&raw[..32], &k);
        assert_eq!(raw[32..], crc32fast::hash(&k).to_le_bytes());
    }

    #[test]
    fn ids_are_made_once_and_then_stable() {
        let d = tempfile::tempdir().unwrap();
        let s = Store {
            memo: None,
            dir: d.path().into(),
        };
        let a = s.volume_or_new("v").unwrap();
        assert_eq!(s.volume_or_new("v").unwrap(), a);
        assert!(a.serial.len() <= 20 && a.serial.is_ascii());
        assert!(a.wwpn.starts_with(WWPN_PREFIX) && a.wwpn.len() == 20);
        assert_ne!(s.volume_or_new("w").unwrap().uuid, a.uuid);
        let h = s.host_or_new("vm1").unwrap();
        assert_eq!(h.nqn, "nqn.2026-11.org.lfedge.eve:vm:vm1");
        assert_eq!(s.host_or_new("vm1").unwrap(), h);
        assert_ne!(h.key, h.ctrl_key);
        s.forget_volume("v").unwrap();
        assert_ne!(s.volume_or_new("v").unwrap(), a);
    }

    #[test]
    fn damaged_state_files_are_named_errors_and_secrets_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let s = Store {
            memo: None,
            dir: d.path().into(),
        };
        let a = s.volume_or_new("v").unwrap();
        let h = s.host_or_new("vm1").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&s.host_path("vm1")), 0o600);
        assert_eq!(mode(&s.vol_path("v")), 0o600);
        assert_eq!(mode(&d.path().join("hosts")), 0o700);
        for bad in [
            VolumeIds {
                wwpn: "naa.5".into(),
                ..a.clone()
            },
            VolumeIds {
                serial: "".into(),
                ..a.clone()
            },
            VolumeIds {
                serial: "x\ny".into(),
                ..a.clone()
            },
            VolumeIds {
                uuid: "nope".into(),
                ..a.clone()
            },
        ] {
            std::fs::write(s.vol_path("v"), serde_json::to_vec(&bad).unwrap()).unwrap();
            let e = s.volume("v").unwrap_err().to_string();
            assert!(e.contains("v.json"), "{e}");
        }
        std::fs::write(s.vol_path("v"), "[1,2]").unwrap();
        assert!(s.volume("v").is_err());
        let wrong = HostIds {
            nqn: host_nqn("vm2"),
            ..h.clone()
        };
        std::fs::write(s.host_path("vm1"), serde_json::to_vec(&wrong).unwrap()).unwrap();
        assert!(s.host("vm1").is_err());
        let wrong = HostIds {
            key: "DHHC-1:00:".into(),
            ..h
        };
        std::fs::write(s.host_path("vm1"), serde_json::to_vec(&wrong).unwrap()).unwrap();
        assert!(s.host("vm1").is_err());
        // A symlink planted where the temporary goes is replaced, never written through.
        let victim = d.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let p = s.host_path("vm3");
        let tmp = p.with_file_name(format!(".{}.tmp", p.file_name().unwrap().to_string_lossy()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        s.host_or_new("vm3").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    }
}
