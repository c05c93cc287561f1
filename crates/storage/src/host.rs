//! What bring-up does to the box, behind one trait: [`crate::realhost::RealHost`] writes GPTs, runs partx,
//! blockdev, udevadm, zpool and zfs, and talks to the TPM; a fake in the unit tests records each
//! call, answers zfs as a test scripts it, seals with a stand-in TPM and can fail any call, so
//! pool creation, import, finishing an interrupted first boot, growing a stripe, the vault's key
//! handling and a whole bring-up pass are tested as decisions, without a VM.

use crate::cmd::CmdError;
use crate::error::Error;
use crate::tpm::{Key, TpmError};
use platform::Roots;
use std::path::{Path, PathBuf};
use uuid::Uuid;

pub trait Host {
    /// Adds a partition named `name` in the free tail of `disk`: (number, unique GUID).
    fn add_tail_partition(&mut self, disk: &Path, name: &str) -> Result<(u32, Uuid), Error>;
    /// Tells the kernel of one new partition on a busy disk (the root is on it).
    fn partx_add(&mut self, disk: &Path, num: u32) -> Result<(), Error>;
    /// A new GPT on `dev` with one partition named `name` over the whole disk.
    fn partition_whole(&mut self, dev: &Path, name: &str) -> Result<Uuid, Error>;
    /// Has the kernel re-read `dev`'s partition table.
    fn reread_table(&mut self, dev: &Path) -> Result<(), Error>;
    /// Lets udev finish what it was given (best effort: a slow udev is waited for per link).
    fn settle(&mut self);
    /// Waits for a device link to appear.
    fn wait_for(&mut self, path: &Path, what: &'static str) -> Result<(), Error>;
    /// Renames `dev`'s partitions named `from` to `to`.
    fn rename_partitions(&mut self, dev: &Path, from: &str, to: &str) -> Result<(), Error>;
    /// Runs zpool with `args`; its stdout.
    fn zpool(&mut self, args: &[String]) -> Result<String, CmdError>;
    /// The GUID of the imported pool `name`.
    fn pool_guid(&mut self, name: &str) -> Result<u64, Error>;
    /// Runs zfs with `args` (key material only ever on `stdin`); its stdout.
    fn zfs(&mut self, args: &[String], stdin: Option<&[u8]>) -> Result<String, CmdError>;
    /// Whether the box has a TPM.
    fn tpm_present(&self) -> bool;
    /// Seals `data` to this TPM, bound to the current values of `pcrs` and to this boot's unlock
    /// phase: the blob to store.
    fn tpm_seal(&mut self, data: &[u8], pcrs: &[u8]) -> Result<String, TpmError>;
    /// Unseals a stored blob with this TPM.
    fn tpm_unseal(&mut self, blob: &str) -> Result<Key, TpmError>;
    /// Ends this boot's unlock phase: no seal opens again until the next boot.
    fn tpm_end_unlock_phase(&mut self) -> Result<(), TpmError>;
    /// Raises the TPM's rollback floor to the running release's security epoch and update-key
    /// serial, defining its counters if absent (an operator's or a new box's raise); `lower`: a
    /// floor above the running release may be counted again. What moved, for the log.
    fn tpm_raise_floor(&mut self, lower: bool) -> Result<String, TpmError>;
    /// The floors the TPM holds as stage 1 reads them (epoch, serial, built-in list), if any.
    fn tpm_floor_now(&mut self) -> Option<[u64; 3]>;
    /// What the running release would raise the floor to (epoch, serial, built-in list).
    fn floor_target(&mut self) -> Option<[u32; 3]>;
    /// Whether the TPM holds no rollback floor yet (both counters absent or never incremented).
    /// Anything unreadable counts as present: a seal from before the floor is then refused.
    fn tpm_floor_absent(&mut self) -> bool;
    /// Whether the TPM's floor records no origins yet (a box from before the built-in key-list
    /// floor): stage 1 then measures the older "floor checked", which seals from those releases
    /// are bound to, and such a seal is replaced once the floor records them.
    fn tpm_floor_without_origins(&mut self) -> bool;
    /// Seals as [`Host::tpm_seal`], bound to stage 1's value for the counters counted from
    /// `origins` (which a seal replacement records right after).
    fn tpm_seal_counted(
        &mut self,
        data: &[u8],
        pcrs: &[u8],
        origins: &[u64; 3],
    ) -> Result<String, TpmError>;
    /// A box from before the origins: makes the key-list counter and returns the origins the
    /// floor will be counted from, not yet recorded ([`crate::floor::migrate_begin`]).
    fn tpm_migrate_begin(&mut self) -> Result<[u64; 3], TpmError>;
    /// Records them, and on a boot judged good raises the key-list counter to the running
    /// release's list ([`crate::floor::migrate_commit`]).
    fn tpm_migrate_commit(&mut self, origins: &[u64; 3]) -> Result<(), TpmError>;
    /// Seals as [`Host::tpm_seal`], open in both boot states of a firmware `dbx` update
    /// ([`crate::dbx`]).
    fn tpm_seal_transition(
        &mut self,
        data: &[u8],
        pcrs: &[u8],
        origins: Option<&[u64; 3]>,
        t: &crate::tpm::Transition,
    ) -> Result<String, TpmError>;
    /// The transition a seal made now needs for the firmware's `dbx` (written this boot, or about
    /// to be by the running release's signed append): `None` when this boot measured it as it
    /// will be.
    fn dbx_transition(&mut self) -> Result<Option<crate::tpm::Transition>, String>;
    /// Shows a new recovery key (`shown`, as [`crate::vault::RecoveryKey::display`] writes it)
    /// once where a person sees it and no log keeps it (the console).
    fn show_recovery(&mut self, vault: &str, shown: &str);
    /// The trees the box's own files are read and written under.
    fn roots(&self) -> &Roots;
    /// Where the pool `pool`'s root dataset is mounted (`/<pool>` on the box).
    fn pool_mount(&self, pool: &str) -> PathBuf;
    /// Where the partitions' stable links are (`/dev/disk/by-partuuid`): the names ZFS records.
    /// Where the box's absolute path `p` is (the fake host keeps the box's tree under a temp dir).
    fn host_path(&self, p: &str) -> PathBuf {
        PathBuf::from(p)
    }
    fn partuuid_dir(&self) -> PathBuf {
        self.roots().dev.join("disk/by-partuuid")
    }
    /// The stable path of the partition with this GUID.
    fn by_partuuid(&self, guid: &str) -> PathBuf {
        self.partuuid_dir().join(guid.to_lowercase())
    }
}

/// A host that records every call as one line and fails the first call starting with `fail`.
/// zpool and zfs answer from `answers` (the first whose prefix the call's line starts with; no
/// match: empty output). Its stand-in TPM keeps what it sealed and the PCR 7 value it was sealed
/// under; changing `pcr7` (Secure Boot turned off, other keys) or clearing `sealed` (a cleared or
/// swapped TPM) makes unsealing fail as the real one would.
#[cfg(test)]
pub mod fake {
    use super::*;
    use base64::Engine;

    #[derive(Debug)]
    pub struct FakeHost {
        pub calls: Vec<String>,
        pub fail: Option<&'static str>,
        /// What `pool_guid` answers.
        pub guid: u64,
        pub next: u128,
        /// `(prefix of "zfs <args>" or "zpool <args>", Ok(stdout) or Err(stderr))`.
        pub answers: Vec<(String, Result<String, String>)>,
        /// What was given on stdin, in call order (key material).
        pub stdin: Vec<Vec<u8>>,
        pub tpm: bool,
        /// The stand-in TPM's sealed objects: (key, PCRs, PCR 7 when sealed).
        pub sealed: Vec<(Vec<u8>, Vec<u8>, u8)>,
        /// The current value of PCR 7.
        pub pcr7: u8,
        /// Sealed objects (by index) that also open with PCR 7 at another value (transitions).
        pub also_opens: Vec<(usize, u8)>,
        /// What the running release's `dbx` append needs, and PCR 7 of the boot after it.
        pub dbx: Option<(crate::tpm::Transition, u8)>,
        /// Whether this boot's unlock phase is over (the phase PCR extended).
        pub phase_over: bool,
        /// Whether stage 1 confirmed the rollback floor this boot (false: no floor yet, as on a
        /// first boot; seals bound to it do not open).
        pub floor_checked: bool,
        /// Whether the TPM holds no rollback floor at all (a box before the floor).
        pub floor_absent: bool,
        /// Whether the TPM's floor records no origins (a box before the key-list floor).
        pub floor_without_origins: bool,
        /// The floors the TPM holds (as stage 1 reads them).
        pub floor_now: Option<[u64; 3]>,
        /// The running release's floor target.
        pub target: Option<[u32; 3]>,
        /// The recovery keys shown, as shown.
        pub shown: Vec<String>,
        /// The box's trees and pool mounts are under it.
        pub base: PathBuf,
        pub roots: Roots,
    }

    impl Default for FakeHost {
        fn default() -> FakeHost {
            FakeHost {
                calls: Vec::new(),
                fail: None,
                guid: 0,
                next: 0,
                answers: Vec::new(),
                stdin: Vec::new(),
                tpm: true,
                sealed: Vec::new(),
                pcr7: 1,
                also_opens: Vec::new(),
                dbx: None,
                phase_over: false,
                floor_checked: true,
                floor_absent: false,
                floor_without_origins: false,
                floor_now: Some([0, 1, 1]),
                target: Some([0, 1, 1]),
                shown: Vec::new(),
                base: PathBuf::from("/nonexistent/fake-host"),
                roots: Roots::under(Path::new("/nonexistent/fake-host")),
            }
        }
    }

    impl FakeHost {
        /// A fake whose trees and pool mounts are under `base` (a test's temporary directory).
        pub fn under(base: &Path) -> FakeHost {
            FakeHost {
                base: base.into(),
                roots: Roots::under(base),
                ..FakeHost::default()
            }
        }

        fn call(&mut self, line: String) -> Result<(), Error> {
            let failing = self.fail.is_some_and(|f| line.starts_with(f));
            self.calls.push(line.clone());
            if failing {
                self.fail = None;
                return Err(Error::Refused(format!("injected failure: {line}")));
            }
            Ok(())
        }

        fn uuid(&mut self) -> Uuid {
            self.next += 1;
            Uuid::from_u128(self.next)
        }

        /// Scripts calls whose line starts with `prefix` (`zfs get ...`, `zpool status ...`) to
        /// answer `answer` (`Err`: fail with that stderr); a later script wins over an earlier.
        pub fn answer(&mut self, prefix: &str, answer: Result<&str, &str>) {
            self.answers.insert(
                0,
                (
                    prefix.to_string(),
                    answer.map(String::from).map_err(String::from),
                ),
            );
        }

        fn answered(&self, line: &str) -> Option<Result<String, String>> {
            self.answers
                .iter()
                .find(|(p, _)| line.starts_with(p.as_str()))
                .map(|(_, a)| a.clone())
        }

        /// The recorded calls that start with `prefix`.
        pub fn calls_to(&self, prefix: &str) -> Vec<&str> {
            self.calls
                .iter()
                .filter(|c| c.starts_with(prefix))
                .map(String::as_str)
                .collect()
        }
    }

    fn tpm_err(e: Error) -> TpmError {
        TpmError::Blob(e.to_string())
    }

    impl Host for FakeHost {
        fn add_tail_partition(&mut self, disk: &Path, name: &str) -> Result<(u32, Uuid), Error> {
            self.call(format!("add-tail {} {name}", disk.display()))?;
            Ok((3, self.uuid()))
        }
        fn partx_add(&mut self, disk: &Path, num: u32) -> Result<(), Error> {
            self.call(format!("partx-add {} {num}", disk.display()))
        }
        fn partition_whole(&mut self, dev: &Path, name: &str) -> Result<Uuid, Error> {
            self.call(format!("partition {} {name}", dev.display()))?;
            Ok(self.uuid())
        }
        fn reread_table(&mut self, dev: &Path) -> Result<(), Error> {
            self.call(format!("reread {}", dev.display()))
        }
        fn settle(&mut self) {
            let _ = self.call("settle".into());
        }
        fn wait_for(&mut self, path: &Path, _what: &'static str) -> Result<(), Error> {
            self.call(format!("wait {}", path.display()))
        }
        fn rename_partitions(&mut self, dev: &Path, from: &str, to: &str) -> Result<(), Error> {
            self.call(format!("rename {} {from} {to}", dev.display()))
        }
        fn zpool(&mut self, args: &[String]) -> Result<String, CmdError> {
            let line = format!("zpool {}", args.join(" "));
            let failed = |stderr: String| CmdError::Failed {
                argv: line.clone(),
                status: "exit status: 1".into(),
                stderr,
            };
            self.call(line.clone()).map_err(|e| failed(e.to_string()))?;
            match self.answered(&line) {
                Some(Ok(out)) => Ok(out),
                Some(Err(stderr)) => Err(failed(stderr)),
                None => Ok(String::new()),
            }
        }
        fn pool_guid(&mut self, name: &str) -> Result<u64, Error> {
            self.call(format!("guid {name}"))?;
            Ok(self.guid)
        }
        fn zfs(&mut self, args: &[String], stdin: Option<&[u8]>) -> Result<String, CmdError> {
            let line = format!("zfs {}", args.join(" "));
            let failed = |stderr: String| CmdError::Failed {
                argv: line.clone(),
                status: "exit status: 1".into(),
                stderr,
            };
            let shown = match stdin {
                Some(k) => {
                    self.stdin.push(k.to_vec());
                    format!("{line} <stdin {} bytes>", k.len())
                }
                None => line.clone(),
            };
            self.call(shown).map_err(|e| failed(e.to_string()))?;
            match self.answered(&line) {
                Some(Ok(out)) => Ok(out),
                Some(Err(stderr)) => Err(failed(stderr)),
                None => Ok(String::new()),
            }
        }
        fn tpm_present(&self) -> bool {
            self.tpm
        }
        fn tpm_seal(&mut self, data: &[u8], pcrs: &[u8]) -> Result<String, TpmError> {
            let p = pcrs.iter().map(u8::to_string).collect::<Vec<_>>().join(",");
            self.call(format!("tpm-seal [{p}]")).map_err(tpm_err)?;
            self.sealed.push((data.to_vec(), pcrs.to_vec(), self.pcr7));
            let b64 = base64::engine::general_purpose::STANDARD;
            let handle = (self.sealed.len() as u32).to_be_bytes();
            // As the real one: the phase and rollback PCRs always bound, the parent gated on the
            // others.
            let mut all = pcrs.to_vec();
            all.push(crate::tpm::PHASE_PCR);
            all.push(platform::rollback::PCR);
            all.sort_unstable();
            all.dedup();
            let gate = if pcrs.is_empty() { "" } else { "Rw==" };
            let all = all.iter().map(u8::to_string).collect::<Vec<_>>().join(",");
            Ok(format!("v2:{all}:{gate}:{}:AA==", b64.encode(handle)))
        }
        fn tpm_unseal(&mut self, blob: &str) -> Result<Key, TpmError> {
            self.call("tpm-unseal".into()).map_err(tpm_err)?;
            let s = crate::tpm::parse_blob(blob)?;
            let handle = <[u8; 4]>::try_from(s.public.as_slice())
                .map(|b| u32::from_be_bytes(b) as usize)
                .map_err(|_| TpmError::Blob("not one of this TPM's".into()))?;
            let Some((data, pcrs, at)) = handle.checked_sub(1).and_then(|i| self.sealed.get(i))
            else {
                return Err(TpmError::Blob(
                    "the sealed key could not be loaded by this TPM (stand-in)".into(),
                ));
            };
            let also = self.also_opens.contains(&(handle - 1, self.pcr7));
            if pcrs.contains(&7) && *at != self.pcr7 && !also {
                return Err(TpmError::Blob(
                    "the TPM refused to unseal the key (PCR 7 changed; stand-in)".into(),
                ));
            }
            if s.pcrs.contains(&platform::rollback::PCR) && !self.floor_checked {
                return Err(TpmError::FloorUnchecked);
            }
            if s.version >= 2 && self.phase_over {
                return Err(TpmError::Blob(
                    "the TPM refused to unseal the key (unlock phase over; stand-in)".into(),
                ));
            }
            Ok(Key::new(data.clone()))
        }
        fn tpm_seal_transition(
            &mut self,
            data: &[u8],
            pcrs: &[u8],
            _origins: Option<&[u64; 3]>,
            t: &crate::tpm::Transition,
        ) -> Result<String, TpmError> {
            self.call(format!("tpm-seal-transition keep={}", t.keep))
                .map_err(tpm_err)?;
            let next = match &self.dbx {
                Some((want, next)) if want == t => *next,
                _ => return Err(TpmError::Transition("not this boot's (stand-in)".into())),
            };
            let plain = self.tpm_seal(data, pcrs)?;
            let handle = self.sealed.len() - 1;
            self.also_opens.push((handle, next));
            let f: Vec<&str> = plain.split(':').collect();
            let b64 = base64::engine::general_purpose::STANDARD;
            Ok(format!(
                "v3:{}:{}:{}:{}:{}",
                f[1],
                t.keep,
                t.appends
                    .iter()
                    .map(|a| b64.encode(a))
                    .collect::<Vec<_>>()
                    .join(","),
                f[3],
                f[4]
            ))
        }
        fn dbx_transition(&mut self) -> Result<Option<crate::tpm::Transition>, String> {
            Ok(self.dbx.as_ref().map(|(t, _)| t.clone()))
        }
        fn host_path(&self, p: &str) -> PathBuf {
            self.base.join(p.trim_start_matches('/'))
        }
        fn tpm_floor_absent(&mut self) -> bool {
            self.floor_absent
        }
        fn tpm_floor_without_origins(&mut self) -> bool {
            self.floor_without_origins
        }
        fn tpm_seal_counted(
            &mut self,
            data: &[u8],
            pcrs: &[u8],
            origins: &[u64; 3],
        ) -> Result<String, TpmError> {
            self.call(format!("tpm-seal-counted {origins:?}"))
                .map_err(tpm_err)?;
            self.tpm_seal(data, pcrs)
        }
        fn tpm_migrate_begin(&mut self) -> Result<[u64; 3], TpmError> {
            self.call("tpm-migrate-begin".into()).map_err(tpm_err)?;
            Ok([1, 1, 5])
        }
        fn tpm_migrate_commit(&mut self, origins: &[u64; 3]) -> Result<(), TpmError> {
            self.call(format!("tpm-migrate-commit {origins:?}"))
                .map_err(tpm_err)?;
            self.floor_without_origins = false;
            Ok(())
        }
        fn tpm_floor_now(&mut self) -> Option<[u64; 3]> {
            self.floor_now
        }
        fn floor_target(&mut self) -> Option<[u32; 3]> {
            self.target
        }
        fn tpm_raise_floor(&mut self, lower: bool) -> Result<String, TpmError> {
            self.call(format!("tpm-raise-floor lower={lower}"))
                .map_err(tpm_err)?;
            if let Some(t) = self.target {
                self.floor_now = Some(t.map(u64::from));
            }
            Ok("security epoch (none) -> 0, key serial (none) -> 1".into())
        }
        fn tpm_end_unlock_phase(&mut self) -> Result<(), TpmError> {
            self.call("tpm-end-unlock-phase".into()).map_err(tpm_err)?;
            self.phase_over = true;
            Ok(())
        }
        fn show_recovery(&mut self, vault: &str, shown: &str) {
            let _ = self.call(format!("show-recovery {vault}"));
            self.shown.push(shown.to_string());
        }
        fn roots(&self) -> &Roots {
            &self.roots
        }
        fn pool_mount(&self, pool: &str) -> PathBuf {
            self.base.join(pool)
        }
        fn partuuid_dir(&self) -> PathBuf {
            PathBuf::from("/l")
        }
    }
}
