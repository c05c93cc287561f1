//! The [`Host`] that is the box itself: GPTs written with the gpt crate, partx, blockdev,
//! udevadm, zpool and zfs by absolute path, the TPM through tss-esapi (seals, the rollback floor,
//! the firmware `dbx` transition), and the recovery key shown on the console.

use crate::cmd::{run, CmdError, BLOCKDEV, PARTX, UDEVADM};
use crate::error::Error;
use crate::host::Host;
use crate::tpm::{Key, Tpm, TpmError};
use crate::vault::{self, VaultError};
use platform::Roots;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long a partition's udev link may take to appear.
const LINK_WAIT: Duration = Duration::from_secs(30);

/// The box itself.
#[derive(Debug, Clone)]
pub struct RealHost {
    pub roots: Roots,
    tpm: Tpm,
    /// The running release's built-in key list, when this boot was judged good and may raise the
    /// key-list counter to it (`storage-init raise-floor` sets it from its raise, holding the
    /// floor lock).
    pub builtin_floor: Option<u32>,
    /// The floor lock, held from a seal replacement's first step to its last when no caller
    /// holds it (`storagectl vault recovery-key`).
    migrating: Option<std::sync::Arc<abupdate::system::Lock>>,
}

impl RealHost {
    pub fn new(roots: Roots) -> RealHost {
        let tpm = Tpm::at(&roots);
        RealHost {
            roots,
            tpm,
            builtin_floor: None,
            migrating: None,
        }
    }

    /// This boot's PCR 7 measurements, checked against the TPM.
    fn boot(&self) -> Result<crate::dbx::Boot, String> {
        let pcr7 = crate::tpm::pcr7(&self.tpm).map_err(|e| platform::chain(&e))?;
        crate::dbx::observe(&self.roots, &pcr7)
    }
}

impl Host for RealHost {
    fn add_tail_partition(&mut self, disk: &Path, name: &str) -> Result<(u32, Uuid), Error> {
        Ok(crate::gptops::add_tail_partition(disk, name)?)
    }

    fn partx_add(&mut self, disk: &Path, num: u32) -> Result<(), Error> {
        let args = [
            "--add",
            "--nr",
            &num.to_string(),
            &disk.display().to_string(),
        ]
        .map(String::from);
        run(PARTX, &args, None)?;
        Ok(())
    }

    fn partition_whole(&mut self, dev: &Path, name: &str) -> Result<Uuid, Error> {
        Ok(crate::gptops::partition_whole(dev, name)?)
    }

    fn reread_table(&mut self, dev: &Path) -> Result<(), Error> {
        run(
            BLOCKDEV,
            &["--rereadpt".into(), dev.display().to_string()],
            None,
        )?;
        Ok(())
    }

    fn settle(&mut self) {
        let _ = run(UDEVADM, &["settle".into(), "--timeout=30".into()], None);
    }

    fn wait_for(&mut self, path: &Path, what: &'static str) -> Result<(), Error> {
        let start = Instant::now();
        while !path.exists() {
            if start.elapsed() > LINK_WAIT {
                return Err(Error::Timeout {
                    path: path.into(),
                    what,
                    secs: LINK_WAIT.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn rename_partitions(&mut self, dev: &Path, from: &str, to: &str) -> Result<(), Error> {
        crate::gptops::rename(dev, from, to)?;
        Ok(())
    }

    fn zpool(&mut self, args: &[String]) -> Result<String, CmdError> {
        run(crate::zfs::ZPOOL, args, None)
    }

    fn pool_guid(&mut self, name: &str) -> Result<u64, Error> {
        crate::zfs::list_pools(Some(name))?
            .first()
            .map(|p| p.guid)
            .ok_or_else(|| Error::Parse(format!("pool {name} is not listed")))
    }

    fn zfs(&mut self, args: &[String], stdin: Option<&[u8]>) -> Result<String, CmdError> {
        run(crate::zfs::ZFS, args, stdin)
    }

    fn tpm_present(&self) -> bool {
        self.tpm.present()
    }

    fn tpm_seal(&mut self, data: &[u8], pcrs: &[u8]) -> Result<String, TpmError> {
        crate::tpm::seal(&self.tpm, data, pcrs)
    }

    fn tpm_unseal(&mut self, blob: &str) -> Result<Key, TpmError> {
        crate::tpm::unseal_with(&self.tpm, blob, |t| self.boot()?.states(t))
    }

    fn tpm_seal_transition(
        &mut self,
        data: &[u8],
        pcrs: &[u8],
        origins: Option<&[u64; 3]>,
        t: &crate::tpm::Transition,
    ) -> Result<String, TpmError> {
        let states = self
            .boot()
            .and_then(|b| b.states(t))
            .map_err(TpmError::Transition)?;
        let measured = origins.map(platform::rollback::checked);
        crate::tpm::seal_transition(&self.tpm, data, pcrs, measured.as_deref(), t, &states)
    }

    fn dbx_transition(&mut self) -> Result<Option<crate::tpm::Transition>, String> {
        let append = crate::dbx::carried(&self.roots)?;
        let now = platform::efisig::read_dbx(&self.roots.sys).map_err(|e| platform::chain(&e))?;
        self.boot()?.transition(&now, append.as_deref())
    }

    fn tpm_end_unlock_phase(&mut self) -> Result<(), TpmError> {
        crate::tpm::end_unlock_phase(&self.tpm)
    }

    fn tpm_floor_absent(&mut self) -> bool {
        crate::floor::counters_absent(&self.tpm)
    }

    fn tpm_seal_counted(
        &mut self,
        data: &[u8],
        pcrs: &[u8],
        origins: &[u64; 3],
    ) -> Result<String, TpmError> {
        crate::tpm::seal_counted(&self.tpm, data, pcrs, Some(origins))
    }

    fn tpm_migrate_begin(&mut self) -> Result<[u64; 3], TpmError> {
        if self.builtin_floor.is_none() {
            // Not from a good boot's raise: only once the running slot is good (a fall back to a
            // release from before the origins would find its seal replaced), under the lock.
            let err = |e: abupdate::error::Error| TpmError::Blob(platform::chain(&e));
            let sys = abupdate::system::System::open(self.roots.clone()).map_err(err)?;
            let (_, _, builtin, running, other) = sys.floor_target().map_err(err)?;
            if !crate::floor::may_raise(running, other) {
                return Err(TpmError::Blob(format!(
                    "slot {} is {running:?} and slot {} can be fallen back to: the seal from before the key-list floor is replaced once the running slot is judged good",
                    sys.running(),
                    sys.running().other()
                )));
            }
            self.migrating = Some(std::sync::Arc::new(sys.floor_lock().map_err(err)?));
            self.builtin_floor = Some(builtin);
        }
        crate::floor::migrate_begin(&self.tpm)
    }

    fn tpm_migrate_commit(&mut self, origins: &[u64; 3]) -> Result<(), TpmError> {
        let r = crate::floor::migrate_commit(&self.tpm, origins, self.builtin_floor);
        self.migrating = None;
        r
    }

    fn tpm_floor_without_origins(&mut self) -> bool {
        matches!(
            crate::floor::floor(&self.tpm),
            Ok(platform::rollback::Floor::Present { keys: None, .. })
        )
    }

    fn tpm_floor_now(&mut self) -> Option<[u64; 3]> {
        crate::floor::floor(&self.tpm)
            .ok()
            .and_then(|f| crate::floor::floors_of(&f))
    }

    fn floor_target(&mut self) -> Option<[u32; 3]> {
        let sys = abupdate::system::System::open(self.roots.clone()).ok()?;
        let (e, s, k, _, _) = sys.floor_target().ok()?;
        Some([e, s, k])
    }

    fn tpm_raise_floor(&mut self, lower: bool) -> Result<String, TpmError> {
        use crate::floor::AfterBoot;
        match crate::floor::raise_for_running(&self.roots, &self.tpm, false, lower) {
            Ok(AfterBoot::Raised(r)) => Ok(r.text()),
            Ok(AfterBoot::NotGood(why)) => Ok(why),
            Ok(AfterBoot::NoTpm) => Ok("no TPM".into()),
            Err(e) => Err(TpmError::Blob(e)),
        }
    }

    fn show_recovery(&mut self, vault: &str, shown: &str) {
        crate::vault::show_on_console(&self.roots.dev.join("console"), vault, shown)
    }

    fn roots(&self) -> &Roots {
        &self.roots
    }

    fn pool_mount(&self, pool: &str) -> PathBuf {
        Path::new("/").join(pool)
    }
}

/// [`vault::recover`] on this box: the image's encryption settings, the firmware's Secure Boot state,
/// the policy storage-init last applied on `pool`; the unlocked state is recorded for the other
/// programs. What `storagectl vault recover` and the management API run.
pub fn recover_here(
    pool: &str,
    rk: &vault::RecoveryKey,
    accept_unproven: bool,
) -> Result<vault::Recovered, VaultError> {
    let _lock = vault::lock(&platform::Roots::host())?;
    // What the key is sealed to is the signed image's to say (never CONFIG's).
    let enc = crate::config::image_encryption();
    let mut host = RealHost::new(platform::Roots::host());
    let sb = vault::secure_boot(&host.roots.sys);
    // Where the vault's datasets mount: the policy storage-init last applied here.
    let mut policy =
        crate::config::last_good_policy(pool).unwrap_or_else(crate::policy::Policy::builtin);
    policy.pool.name = pool.to_string();
    let r = vault::recover(&mut host, &policy, rk, &enc, sb, accept_unproven)?;
    if r.unlocked {
        crate::config::record_vault_state(
            &platform::Roots::host(),
            pool,
            "unlocked",
            r.sealed_to.as_deref(),
        );
    }
    Ok(r)
}

/// [`vault::new_recovery_key`] on this box.
pub fn new_recovery_key_here(pool: &str) -> Result<vault::RecoveryKey, VaultError> {
    let _lock = vault::lock(&platform::Roots::host())?;
    let mut host = RealHost::new(platform::Roots::host());
    let sb = vault::secure_boot(&host.roots.sys);
    let enc = crate::config::image_encryption();
    vault::new_recovery_key(&mut host, pool, &enc, sb)
}
