//! What must hold before a pass may read the spool or touch the state: both directories sit on a
//! mounted dataset of the vault (`<pool>/vault` or below) whose key is loaded. A directory that
//! merely exists proves nothing: with the vault locked, /persist/config is a plain directory on
//! the clear pool dataset, and an empty spool read there must never look like "no volumes".
//!
//! The spool's own identity (`.eve-spool`, kept also in the state) tells whether the directory
//! read is the one this box has been reconciling from: a lost, recreated or restored-from-backup
//! spool is not trusted to mean deletions, so a single fault cannot turn into mass destruction.

use crate::cmd::{Tools, ZFS};
use crate::error::{Error, Result};
use platform::IoContext;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One line of /proc/self/mountinfo that matters here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub point: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo; malformed lines are skipped (the kernel writes it, but a fixture may not).
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let point = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            let fstype = r.next()?;
            let source = r.next()?;
            Some(Mount {
                point: PathBuf::from(unescape(point)),
                fstype: fstype.into(),
                source: unescape(source),
            })
        })
        .collect()
}

/// The mount that holds `path`: the longest mount point that is a prefix of it, the one mounted
/// last when several share it (it is the one on top).
pub fn mount_of<'a>(mounts: &'a [Mount], path: &Path) -> Option<&'a Mount> {
    let mut best: Option<&Mount> = None;
    for m in mounts {
        if path.starts_with(&m.point)
            && best.is_none_or(|b| m.point.components().count() >= b.point.components().count())
        {
            best = Some(m);
        }
    }
    best
}

/// The vault dataset `path` is on, or why it is not on the vault.
pub fn vault_dataset(mounts: &[Mount], path: &Path, pool: &str) -> Result<String, String> {
    let vault = format!("{pool}/vault");
    let Some(m) = mount_of(mounts, path) else {
        return Err(format!("{} is on no mounted filesystem", path.display()));
    };
    if m.fstype != "zfs" {
        return Err(format!(
            "{} is on {} ({} at {}), not on {vault}",
            path.display(),
            m.fstype,
            m.source,
            m.point.display()
        ));
    }
    if m.source == vault || m.source.starts_with(&format!("{vault}/")) {
        return Ok(m.source.clone());
    }
    Err(format!(
        "{} is on {} (mounted at {}), not on {vault}: the vault is not mounted there",
        path.display(),
        m.source,
        m.point.display()
    ))
}

/// `zfs get keystatus`: `available`, `unavailable`, or `-` for a vault made unencrypted on a box
/// the policy lets run without a TPM.
pub fn key_usable(keystatus: &str) -> bool {
    matches!(keystatus.trim(), "available" | "-")
}

/// Refuses, with the reason, unless the spool and the state are on the unlocked vault.
pub fn vault_ready(
    t: &dyn Tools,
    mountinfo: &Path,
    spool: &Path,
    state: &Path,
    pool: &str,
) -> Result<()> {
    let text = std::fs::read_to_string(mountinfo).at("read", mountinfo)?;
    let mounts = parse_mountinfo(&text);
    let mut datasets = Vec::new();
    for p in [spool, state] {
        let ds = vault_dataset(&mounts, p, pool).map_err(Error::VaultLocked)?;
        if !datasets.contains(&ds) {
            datasets.push(ds);
        }
    }
    for ds in datasets {
        let out = t.run(
            ZFS,
            &["get", "-H", "-o", "value", "keystatus", &ds].map(String::from),
            None,
        )?;
        if !key_usable(&out) {
            return Err(Error::VaultLocked(format!(
                "{ds} has keystatus {}",
                out.trim()
            )));
        }
    }
    Ok(())
}

/// The spool's identity: a random id fixed when the spool is made, and a generation raised
/// whenever the set of volumes changes. A copy lives in the state directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolId {
    pub id: u128,
    pub generation: u64,
}

pub const SPOOL_MARKER: &str = ".eve-spool";
pub const STATE_MARKER: &str = "spool.json";

/// Whether the spool read may be trusted to mean deletions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The spool is the one the state knows, at its generation or newer.
    Trusted(SpoolId),
    /// Neither marker exists: a new box (or a state with nothing in it).
    Fresh,
    /// Nothing is removed on the spool's word; the reason is logged every pass.
    Untrusted(String),
}

/// Pure: compares the spool's marker with the state's copy. `seen` is how many volumes the state
/// knows and `all_present` whether the spool has a spec for each: a spool and state from before
/// markers existed (an upgrade) are adopted only when that deletes nothing.
pub fn judge(
    spool: Option<SpoolId>,
    state: Option<SpoolId>,
    seen: usize,
    all_present: bool,
) -> Trust {
    match (spool, state) {
        (None, None) if seen == 0 || all_present => Trust::Fresh,
        (None, None) => Trust::Untrusted(format!(
            "the spool has no {SPOOL_MARKER} and the state has no {STATE_MARKER}, yet the state knows {seen} volume(s)"
        )),
        (Some(s), None) => Trust::Trusted(s),
        (None, Some(st)) => Trust::Untrusted(format!(
            "the spool has no {SPOOL_MARKER}: it was lost, recreated or is not the one this box used (spool {:032x}, generation {})",
            st.id, st.generation
        )),
        (Some(s), Some(st)) if s.id != st.id => Trust::Untrusted(format!(
            "the spool is {:032x} but this box's state knows spool {:032x}",
            s.id, st.id
        )),
        (Some(s), Some(st)) if s.generation < st.generation => Trust::Untrusted(format!(
            "the spool is at generation {} but the state saw generation {}: an older copy (restored backup?)",
            s.generation, st.generation
        )),
        (Some(s), Some(_)) => Trust::Trusted(s),
    }
}

fn read_marker(path: &Path) -> Result<Option<SpoolId>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::State {
                path: path.into(),
                msg: format!("unreadable spool marker: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io(platform::io("read", path)(source))),
    }
}

/// Where the two copies of the spool identity live.
#[derive(Debug, Clone)]
pub struct Markers {
    pub spool: PathBuf,
    pub state: PathBuf,
}

impl Markers {
    pub fn new(spool_dir: &Path, state_dir: &Path) -> Markers {
        Markers {
            spool: spool_dir.join(SPOOL_MARKER),
            state: state_dir.join(STATE_MARKER),
        }
    }

    pub fn read(&self) -> Result<(Option<SpoolId>, Option<SpoolId>)> {
        Ok((read_marker(&self.spool)?, read_marker(&self.state)?))
    }

    /// Writes the spool's copy first: a cut between the two leaves the spool one generation
    /// ahead, which [`judge`] accepts.
    pub fn write(&self, s: SpoolId) -> Result<()> {
        let b = serde_json::to_vec(&s).map_err(|e| Error::State {
            path: self.spool.clone(),
            msg: e.to_string(),
        })?;
        crate::ids::write_private(&self.spool, &b)?;
        crate::ids::write_private(&self.state, &b)
    }

    /// A new spool identity (first use of an empty spool and state).
    pub fn create(&self) -> Result<SpoolId> {
        let s = SpoolId {
            id: u128::from_le_bytes(crate::ids::random_bytes::<16>()),
            generation: 0,
        };
        self.write(s)?;
        Ok(s)
    }

    /// An operator's word that the spool as it is now is the truth (after a restore or a move).
    pub fn adopt(&self) -> Result<SpoolId> {
        let (_, state) = self.read()?;
        let s = match state {
            Some(st) => SpoolId {
                id: st.id,
                generation: st.generation + 1,
            },
            None => SpoolId {
                id: u128::from_le_bytes(crate::ids::random_bytes::<16>()),
                generation: 0,
            },
        };
        self.write(s)?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: &str = "\
22 1 259:2 / / ro,relatime - squashfs /dev/nvme0n1p2 ro
30 22 0:40 / /persist rw,noatime shared:9 - zfs persist rw,xattr
31 30 0:41 / /persist/config rw,noatime shared:10 - zfs persist/vault/config rw,xattr
32 30 0:42 / /persist/my\\040dir rw - tmpfs none rw
";

    #[test]
    fn the_spool_must_be_on_the_vault_dataset_not_a_directory_beside_it() {
        let m = parse_mountinfo(MI);
        assert_eq!(m.len(), 4);
        assert_eq!(m[3].point, Path::new("/persist/my dir"));
        let p = Path::new("/persist/config/volumes/specs");
        assert_eq!(
            vault_dataset(&m, p, "persist").unwrap(),
            "persist/vault/config"
        );
        // Locked vault: /persist/config is not mounted, the path is on the clear pool dataset.
        let locked = parse_mountinfo(
            &MI.lines()
                .filter(|l| !l.contains("vault"))
                .collect::<Vec<_>>()
                .join("\n"),
        );
        let e = vault_dataset(&locked, p, "persist").unwrap_err();
        assert!(
            e.contains("persist (mounted at /persist)") && e.contains("not on persist/vault"),
            "{e}"
        );
        let e = vault_dataset(&m, Path::new("/persist/my dir/x"), "persist").unwrap_err();
        assert!(e.contains("tmpfs"), "{e}");
        let e = vault_dataset(&m, Path::new("/etc/x"), "persist").unwrap_err();
        assert!(e.contains("squashfs"), "{e}");
        assert!(vault_dataset(&[], p, "persist").is_err());
        // A name that merely starts like the vault is not the vault.
        let odd = parse_mountinfo("30 1 0:40 / /persist/config rw - zfs persist/vaultx rw\n");
        assert!(vault_dataset(&odd, p, "persist").is_err());
    }

    #[test]
    fn the_mount_on_top_wins() {
        let m = parse_mountinfo(
            "31 30 0:41 / /persist/config rw - zfs persist/vault/config rw\n\
             40 31 0:50 / /persist/config rw - tmpfs none rw\n",
        );
        assert!(vault_dataset(&m, Path::new("/persist/config/volumes"), "persist").is_err());
        assert!(key_usable("available\n") && key_usable("-") && !key_usable("unavailable"));
    }

    #[test]
    fn only_the_known_spool_at_its_generation_or_newer_is_trusted() {
        let a = SpoolId {
            id: 1,
            generation: 5,
        };
        assert_eq!(judge(None, None, 0, false), Trust::Fresh);
        assert!(matches!(judge(None, None, 3, false), Trust::Untrusted(_)));
        assert_eq!(
            judge(None, None, 3, true),
            Trust::Fresh,
            "an upgrade that deletes nothing"
        );
        assert!(matches!(judge(None, Some(a), 3, true), Trust::Untrusted(m) if m.contains("lost")));
        let other = SpoolId {
            id: 2,
            generation: 9,
        };
        assert!(matches!(
            judge(Some(other), Some(a), 3, true),
            Trust::Untrusted(_)
        ));
        let old = SpoolId {
            id: 1,
            generation: 4,
        };
        assert!(
            matches!(judge(Some(old), Some(a), 3, true), Trust::Untrusted(m) if m.contains("older"))
        );
        assert_eq!(judge(Some(a), Some(a), 3, false), Trust::Trusted(a));
        let ahead = SpoolId {
            id: 1,
            generation: 6,
        };
        assert_eq!(judge(Some(ahead), Some(a), 3, false), Trust::Trusted(ahead));
        assert_eq!(judge(Some(a), None, 0, false), Trust::Trusted(a));
    }

    #[test]
    fn markers_are_made_once_and_adopted_on_request() {
        let d = tempfile::tempdir().unwrap();
        let m = Markers::new(&d.path().join("spool"), &d.path().join("state"));
        std::fs::create_dir_all(d.path().join("spool")).unwrap();
        let s = m.create().unwrap();
        assert_eq!(m.read().unwrap(), (Some(s), Some(s)));
        std::fs::remove_file(&m.spool).unwrap();
        let (sp, st) = m.read().unwrap();
        assert!(matches!(judge(sp, st, 1, false), Trust::Untrusted(_)));
        let n = m.adopt().unwrap();
        assert_eq!((n.id, n.generation), (s.id, 1));
        let (sp, st) = m.read().unwrap();
        assert_eq!(judge(sp, st, 1, false), Trust::Trusted(n));
        std::fs::write(&m.state, "{").unwrap();
        assert!(
            m.read().is_err(),
            "a corrupt marker is an error, not an absence"
        );
    }
}
