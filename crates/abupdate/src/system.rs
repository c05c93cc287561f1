//! The running box: which slot booted, where its partitions are, and the slot state, changed under
//! a lock with one load and one store per operation.

use crate::artifact::{Checked, Expect};
use crate::cmd;
use crate::device::{self, BootDisk};
use crate::error::{Error, IoContext, Result};
use crate::esp::{self, Mounted};
use crate::health::{self, Observation, Rules, Uptimes, Verdict};
use crate::install::{self, Source};
use crate::release::{self, Release};
use crate::state::{Changed, Slot, SlotInfo, Slots, StateError};
use platform::Roots;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

/// What decides which updates this box takes, read together.
#[derive(Debug)]
struct Trusted {
    release: Release,
    /// The stored rotations that verified (empty when the ESP's copy is lost or broken).
    chain: Vec<crate::trust::SignedKeyList>,
    /// Why the stored rotations were not used, when they were not.
    chain_problem: Option<String>,
    trust: crate::trust::Trust,
    key_floor: crate::artifact::KeyFloor,
    slots: Slots,
}

#[derive(Debug)]
pub struct System {
    pub roots: Roots,
    pub disk: BootDisk,
    refused: Option<Slot>,
    /// Told of an install's progress besides the log lines.
    observer: Option<install::Observer>,
}

/// An exclusive flock held until dropped.
#[derive(Debug)]
pub struct Lock(#[allow(dead_code)] nix::fcntl::Flock<File>);

fn lock(path: &Path, wait: bool) -> Result<Option<Lock>> {
    let f = File::create(path).at("create", path)?;
    let how = if wait {
        nix::fcntl::FlockArg::LockExclusive
    } else {
        nix::fcntl::FlockArg::LockExclusiveNonblock
    };
    match nix::fcntl::Flock::lock(f, how) {
        Ok(l) => Ok(Some(Lock(l))),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) if !wait => Ok(None),
        Err((_, e)) => Err(platform::io("lock", path)(e.into()).into()),
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SlotReport {
    pub slot: Slot,
    pub device: String,
    #[serde(flatten)]
    pub info: SlotInfo,
}

/// How this system decides which updates it takes.
#[derive(Debug, Serialize, Deserialize)]
pub struct UpdatePolicy {
    pub profile: String,
    /// `release`, or `dev` for an image signed with a builder's development key.
    pub signing: String,
    pub security_epoch: u32,
    pub key_serial: u32,
    pub trusted_keys: Vec<String>,
    /// The key-list serial this box is known to have accepted, and the record that says so.
    pub key_floor: u32,
    pub key_floor_source: String,
    /// Why the rotations stored on the ESP were not used (they are a cache).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_keys_problem: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub running: Slot,
    /// The slot GRUB tries first on the next boot.
    pub next: Slot,
    pub slots: Vec<SlotReport>,
    /// Missing when the image's release facts or the stored key rotations cannot be read (then
    /// installs are refused, and `error` says why).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updates: Option<UpdatePolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updates_error: Option<String>,
    /// Secure Boot and the vault's binding, as storage-init found them this boot.
    pub boot: BootReport,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BootReport {
    pub secure_boot: String,
    pub vault: String,
    pub vault_state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vault_bound_to: Option<String>,
}

impl Report {
    pub fn text(&self) -> String {
        let mut s = String::new();
        // A report read from another box (`--remote`) is not trusted to list both slots.
        if let Some(run) = self.slots.iter().find(|r| r.slot == self.running) {
            s.push_str(&format!(
                "running slot {} ({}, version {})\n",
                self.running,
                state_word(&run.info),
                or_dash(&run.info.version)
            ));
        }
        s.push_str(&format!("next boot: slot {}\n", self.next));
        s.push_str(&format!(
            "secure boot: {}; {} {}{}\n",
            self.boot.secure_boot,
            self.boot.vault,
            self.boot.vault_state,
            self.boot
                .vault_bound_to
                .as_deref()
                .map(|b| format!(", key sealed to {b}"))
                .unwrap_or_default()
        ));
        match (&self.updates, &self.updates_error) {
            (Some(u), _) => {
                s.push_str(&format!(
                    "image: {} profile, {}-signed, security epoch {}; updates must be signed by key {} (key list {}; this box has accepted list {}, by {})\n",
                    u.profile,
                    u.signing,
                    u.security_epoch,
                    u.trusted_keys.join(" or "),
                    u.key_serial,
                    u.key_floor,
                    u.key_floor_source
                ));
                if let Some(p) = &u.stored_keys_problem {
                    s.push_str(&format!(
                        "stored key rotations not used (the next update rewrites them): {p}\n"
                    ));
                }
            }
            (None, Some(e)) => s.push_str(&format!("updates refused: {e}\n")),
            (None, None) => {}
        }
        for r in &self.slots {
            s.push_str(&format!(
                "slot {}  {:<6} version {:<20} tries left {}  {}{}\n",
                r.slot,
                state_word(&r.info),
                or_dash(&r.info.version),
                r.info.tries,
                r.device,
                if r.info.failure.is_empty() {
                    String::new()
                } else {
                    format!("  last failure: {}", r.info.failure)
                }
            ));
        }
        s
    }
}

fn or_dash(v: &str) -> &str {
    if v.is_empty() {
        "-"
    } else {
        v
    }
}

fn state_word(i: &SlotInfo) -> String {
    serde_json::to_value(i.state)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

use platform::log;

/// Pure: why rolling back to `other`, whose signed descriptor is `d`, is refused on a box running a
/// good release of epoch `running_epoch` (its rollback floor); `None` when it is not.
pub fn rollback_refusal(
    other: Slot,
    d: &crate::verity::Descriptor,
    running_epoch: u32,
) -> Option<String> {
    (d.security_epoch < running_epoch).then(|| {
        format!(
            "slot {other} holds version {} of security epoch {}, below this box's rollback floor {running_epoch}: stage 1 would refuse it at boot (an older release with fixed security holes); nothing changed",
            d.version, d.security_epoch
        )
    })
}

impl System {
    pub fn open(roots: Roots) -> Result<System> {
        let cl = roots.proc.join("cmdline");
        let text = std::fs::read_to_string(&cl).at("read", &cl)?;
        let (running, root) = device::parse_cmdline(&text)?;
        let disk = device::find(&roots, running, root)?;
        let refused = device::refused_slot(&text).filter(|s| *s != running);
        Ok(System {
            roots,
            disk,
            refused,
            observer: None,
        })
    }

    /// Reports install progress to `o` too (the management API shows it to callers).
    pub fn set_observer(&mut self, o: install::Observer) {
        self.observer = Some(o);
    }

    /// Serialises state reads and changes (short); installs have their own lock, so `status`
    /// answers while an install is writing.
    fn state_lock(&self) -> Result<Lock> {
        let p = self.roots.run.join("abupdate.lock");
        lock(&p, true)?.ok_or_else(|| Error::Device(format!("{}: not locked", p.display())))
    }

    pub fn running(&self) -> Slot {
        self.disk.running
    }

    /// Serialises every change of the TPM's rollback-floor counters (`storage-init raise-floor`,
    /// a vault made or recovered, a rotation taken at install): a counter read and then
    /// incremented by two processes at once would move twice, and a counter never comes back.
    pub fn floor_lock(&self) -> Result<Lock> {
        let p = self.roots.run.join("eve-rollback-floor.lock");
        lock(&p, true)?.ok_or_else(|| Error::Device(format!("{}: not locked", p.display())))
    }

    /// The other slot, when GRUB refused its image (a signature that did not verify) on the way to
    /// this boot.
    pub fn refused(&self) -> Option<Slot> {
        self.refused
    }

    fn mount(&self) -> Result<Mounted> {
        Mounted::new(&self.disk.esp.dev, &self.roots.run.join("abupdate/esp"))
    }

    /// For reads only (under the state lock, like every mount).
    fn mount_ro(&self) -> Result<Mounted> {
        Mounted::read_only(&self.disk.esp.dev, &self.roots.run.join("abupdate/esp"))
    }

    pub fn read(&self) -> Result<Slots> {
        let _l = self.state_lock()?;
        let m = self.mount_ro()?;
        esp::load(&m.dir)
    }

    /// Load, change in memory, write once (only when something changed).
    pub fn change(
        &self,
        f: impl FnOnce(&mut Slots) -> std::result::Result<Changed, StateError>,
    ) -> Result<(Slots, Changed)> {
        let _l = self.state_lock()?;
        let m = self.mount()?;
        let mut s = esp::load(&m.dir)?;
        let changed = f(&mut s)?;
        if changed {
            esp::store(&m.dir, &s)?;
        }
        Ok((s, changed))
    }

    /// The release facts, the stored rotations, the trust they give, the key floor and the slot
    /// state, from one mount of the ESP.
    fn trusted(&self) -> Result<Trusted> {
        let _l = self.state_lock()?;
        let m = self.mount_ro()?;
        let release = Release::load(&self.roots.etc)?;
        let (trust, chain, chain_problem) = release::trust(&release, release::load_chain(&m.dir))?;
        let slots = esp::load(&m.dir)?;
        let key_floor = crate::artifact::KeyFloor::decide(self.tpm_serial_floor(), slots.keys);
        Ok(Trusted {
            release,
            chain,
            chain_problem,
            trust,
            key_floor,
            slots,
        })
    }

    /// Raises the TPM's key-serial counter to `serial`, when the box has a TPM holding the
    /// counter (the first boot defines it). A TPM that is there but cannot be raised fails the
    /// install: until the counter follows, lost rotations on the ESP would bring the retired keys
    /// back.
    fn raise_key_floor(&self, serial: u32) -> Result<()> {
        let dev = self.roots.dev.join("tpmrm0");
        let mut d = match platform::tpmcmd::Device::open(&dev) {
            Ok(d) => d,
            Err(_) if !dev.exists() => return Ok(()),
            Err(e) => return Err(Error::Device(format!("the TPM's key floor: {e}"))),
        };
        let _floor = self.floor_lock()?;
        if let Err(why) = platform::tpmcmd::read_serial_floor(&mut d) {
            log(format!(
                "the TPM holds no key floor yet ({why}); the next good boot defines it"
            ));
            return Ok(());
        }
        let f = platform::tpmcmd::raise_serial(&mut d, serial).map_err(|e| {
            Error::Device(format!(
                "the TPM's key floor could not be raised to list {serial}: {e}"
            ))
        })?;
        log(format!("the TPM's key floor is list {f}"));
        Ok(())
    }

    /// The TPM's key-serial floor (`None`: no TPM).
    fn tpm_serial_floor(&self) -> Option<std::result::Result<u64, String>> {
        let dev = self.roots.dev.join("tpmrm0");
        match platform::tpmcmd::Device::open(&dev) {
            Ok(mut d) => Some(platform::tpmcmd::read_serial_floor(&mut d)),
            Err(_) if !dev.exists() => None,
            Err(e) => Some(Err(e.to_string())),
        }
    }

    /// Refuses a rollback stage 1 would refuse at boot: from a good slot (whose release set the
    /// TPM's rollback floor to its security epoch) to a slot of a lower epoch.
    pub fn check_rollback(&self) -> Result<()> {
        let t = self.trusted()?;
        let running = self.running();
        let other = running.other();
        // Only a good slot can be rolled back to; the state machine says why for the rest.
        if t.slots.get(running).state != crate::state::State::Good
            || t.slots.get(other).state != crate::state::State::Good
        {
            return Ok(());
        }
        let d = crate::verity::read_descriptor(&self.disk.slot(other).dev, &t.trust)
            .map_err(|e| Error::Device(format!("slot {other}: {e}")))?;
        match rollback_refusal(other, &d, t.release.security_epoch) {
            Some(why) => Err(Error::Device(why)),
            None => Ok(()),
        }
    }

    /// What this boot may raise the TPM's rollback floor to: the running release's security
    /// epoch and the update-key serial in force, with the running and the other slot's states
    /// (the floor rises only once the running slot is good, or when there is nothing to fall
    /// back to).
    pub fn floor_target(
        &self,
    ) -> Result<(u32, u32, u32, crate::state::State, crate::state::State)> {
        let t = self.trusted()?;
        // Not capped at the ESP loader's epoch: a loader that could not be put in place must not
        // hold the floor down (an older release would then pass at boot); stage 1 keeps the vault
        // locked under a loader below the floor instead, and says why.
        // The image's own key list is the one its initramfs was built with (one build input).
        Ok((
            t.release.security_epoch,
            t.trust.serial,
            t.release.update_keys.serial,
            t.slots.get(self.running()).state,
            t.slots.get(self.running().other()).state,
        ))
    }

    fn update_policy(&self) -> Result<UpdatePolicy> {
        let t = self.trusted()?;
        if t.trust.serial < t.key_floor.serial {
            return Err(Error::Device(format!(
                "{}{}",
                crate::artifact::ArtifactError::KeysBelowFloor {
                    have: t.trust.serial,
                    floor: t.key_floor.serial,
                    record: t.key_floor.source.clone(),
                },
                t.chain_problem
                    .map(|p| format!(" ({p})"))
                    .unwrap_or_default()
            )));
        }
        Ok(UpdatePolicy {
            key_floor: t.key_floor.serial,
            key_floor_source: t.key_floor.source,
            stored_keys_problem: t.chain_problem,
            profile: t.release.profile,
            signing: t.release.signing,
            security_epoch: t.release.security_epoch,
            key_serial: t.trust.serial,
            trusted_keys: t.trust.ids(),
        })
    }

    /// Every check of an artifact against this box, before anything is written.
    fn check(&self, src: &mut Source, t: &Trusted, allow_downgrade: bool) -> Result<Checked> {
        install::check(
            src,
            &Expect {
                arch: std::env::consts::ARCH,
                trust: &t.trust,
                key_floor: t.key_floor.clone(),
                running: &t.release.running(),
                allow_downgrade,
            },
            self.observer.as_ref(),
        )
    }

    /// The header of an artifact that arrives as a stream (`head`: its first
    /// [`crate::artifact::PAYLOAD_OFFSET`] bytes), checked as `install` checks it (signature,
    /// architecture, profile, epoch, version, key floor) and against the slot state, so a refused
    /// one is refused before a byte of it is stored anywhere. `name` names it in errors.
    pub fn precheck(
        &self,
        head: &[u8],
        name: &str,
        allow_downgrade: bool,
    ) -> Result<crate::artifact::Manifest> {
        let t = self.trusted()?;
        t.slots.clone().install_started(self.running())?;
        let want = Expect {
            arch: std::env::consts::ARCH,
            trust: &t.trust,
            key_floor: t.key_floor.clone(),
            running: &t.release.running(),
            allow_downgrade,
        };
        crate::artifact::parse_header(head, &want, None)
            .map(|c| c.manifest)
            .map_err(|source| Error::Artifact {
                path: name.into(),
                source,
            })
    }

    /// The install lock: one install at a time; a second is refused at once.
    pub fn install_lock(&self) -> Result<Lock> {
        let lp = self.roots.run.join("abupdate-install.lock");
        lock(&lp, false)?.ok_or_else(|| {
            Error::Busy(format!(
                "another install is running (it holds {}); wait for it or stop it",
                lp.display()
            ))
        })
    }

    /// Puts the running image's boot loader on the ESP when the running slot is good and the ESP
    /// holds an older or different one (never a newer release's); with `dry_run`, only says what
    /// it would do. Returns the action and whether anything was written.
    pub fn install_loader(&self, dry_run: bool) -> Result<(crate::loader::Action, Changed)> {
        use crate::loader::{self, Action};
        let _l = self.state_lock()?;
        let m = self.mount()?;
        let state = esp::load(&m.dir)?.get(self.running()).state;
        if state != crate::state::State::Good {
            let state = serde_json::to_value(state)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            return Ok((Action::NotGood { state }, false));
        }
        let ours = loader::read_ours(&self.roots.usr)?;
        let label = loader::read_esp_label(&self.roots.usr)?;
        let marker = loader::read_marker(&self.roots.usr)?;
        let current = loader::read_esp(&m.dir);
        let cl = self.roots.proc.join("cmdline");
        let booted = platform::rollback::loader_epoch_of_cmdline(
            &std::fs::read_to_string(&cl).at("read", &cl)?,
        );
        let mut action = loader::decide(&current, &ours, booted).map_err(Error::Device)?;
        if matches!(action, Action::Install { .. }) {
            // An unreadable dbx is taken as empty: firmware without one forbids nothing.
            let forbidden = platform::efisig::read_dbx(&self.roots.sys)
                .ok()
                .and_then(|d| platform::efisig::sha256s(&d).ok())
                .unwrap_or_default();
            if let Some(file) = loader::revoked_file(&ours, &forbidden) {
                action = Action::Revoked { file };
            }
        }
        if dry_run || !matches!(action, Action::Install { .. }) {
            return Ok((action, false));
        }
        // The marker first: a box whose ESP volume id came from an older build finds its ESP
        // through it once the new GRUB is in place.
        loader::write_marker(&m.dir, &label, &marker)?;
        loader::write(&m.dir, &current, &ours)?;
        log(action.text(true));
        Ok((action, true))
    }

    /// What a firmware `dbx` update must know of the ESP first: whether the running slot is
    /// good and the ESP holds its boot loader ([`Self::install_loader`]'s dry run), and every
    /// EFI program on the ESP with its image hash.
    pub fn esp_programs(&self) -> Result<EspPrograms> {
        let (loader, _) = self.install_loader(true)?;
        let _l = self.state_lock()?;
        let m = self.mount()?;
        Ok(EspPrograms {
            loader,
            programs: crate::loader::esp_programs(&m.dir),
        })
    }

    /// Checks an artifact as `install` would, without writing anything.
    pub fn verify(&self, arg: &str, allow_downgrade: bool) -> Result<Checked> {
        let t = self.trusted()?;
        self.check(&mut Source::open(arg)?, &t, allow_downgrade)
    }

    pub fn report(&self, s: &Slots) -> Report {
        let (updates, updates_error) = match self.update_policy() {
            Ok(u) => (Some(u), None),
            Err(e) => (None, Some(platform::chain(&e))),
        };
        let o = self.storage_outcome();
        let boot = BootReport {
            secure_boot: o
                .as_ref()
                .and_then(|o| o.secure_boot_text.clone().or_else(|| o.secure_boot.clone()))
                .unwrap_or_else(|| "unknown".into()),
            vault: o
                .as_ref()
                .map(|o| o.vault.clone())
                .unwrap_or_else(|| "vault".into()),
            vault_state: o
                .as_ref()
                .map(|o| o.vault_state.clone())
                .unwrap_or_else(|| "unknown (storage-init reported nothing)".into()),
            vault_bound_to: o.and_then(|o| o.vault_bound_to),
        };
        Report {
            boot,
            updates,
            updates_error,
            running: self.running(),
            next: crate::state::grub_pick(&mut s.clone()),
            slots: [Slot::A, Slot::B]
                .into_iter()
                .map(|sl| SlotReport {
                    slot: sl,
                    device: self.disk.slot(sl).dev.display().to_string(),
                    info: s.get(sl).clone(),
                })
                .collect(),
        }
    }

    pub fn install(&self, arg: &str, tries: u8, allow_downgrade: bool) -> Result<String> {
        let held = self.install_lock()?;
        // Refuse early (before reading a large file) when the state does not allow an install.
        self.trusted()?
            .slots
            .clone()
            .install_started(self.running())?;
        self.install_from(&held, Source::open(arg)?, tries, allow_downgrade)
    }

    /// `install` from `src`, with the install lock already held (`_held`, from
    /// [`Self::install_lock`]).
    pub fn install_from(
        &self,
        _held: &Lock,
        mut src: Source,
        tries: u8,
        allow_downgrade: bool,
    ) -> Result<String> {
        let running = self.running();
        let target = running.other();
        let t = self.trusted()?;
        t.slots.clone().install_started(running)?;
        let checked = self.check(&mut src, &t, allow_downgrade)?;
        let m = checked.manifest;
        let part = self.disk.slot(target).clone();
        log(format!(
            "installing version {} ({} MiB) from {} into slot {target} ({})",
            m.version,
            m.payload.size >> 20,
            src.name(),
            part.dev.display()
        ));
        self.change(|s| s.install_started(running))?;
        match install::write(&mut src, &m, &part.dev, part.bytes, self.observer.as_ref()) {
            Ok(()) => {
                if !checked.new_rotations.is_empty() || t.chain_problem.is_some() {
                    // The payload is verified and written: only now does the box take the new
                    // keys (and rewrite a damaged cache). A cut after this and before the state
                    // change leaves the slot empty and the rotations (which trusted keys signed)
                    // in place.
                    let _l = self.state_lock()?;
                    let mnt = self.mount()?;
                    let mut c = t.chain.clone();
                    c.extend(checked.new_rotations.iter().cloned());
                    release::store_chain(&mnt.dir, &c)?;
                    if let Some(p) = &t.chain_problem {
                        log(format!(
                            "stored key rotations repaired ({} rotations): they were not usable: {p}",
                            c.len()
                        ));
                    }
                    if let (Some(new), Some(last)) =
                        (&checked.rotated, checked.new_rotations.last())
                    {
                        log(format!(
                            "update keys rotated to list {} (keys {}), signed by key {}",
                            new.serial,
                            new.ids().join(", "),
                            last.key
                        ));
                        // The rotation is stored on the ESP, so every slot's stage 1 now counts
                        // list `new.serial`: the TPM's record follows at once, and losing the
                        // ESP's copy before the next good boot cannot bring the old keys back.
                        self.raise_key_floor(new.serial)?;
                    }
                }
                let serial = checked
                    .rotated
                    .as_ref()
                    .map_or(t.trust.serial, |t| t.serial);
                let tpm_record = t.key_floor.tpm;
                self.change(|s| {
                    // With a TPM the slot state's copy follows the keys in force (an absurd
                    // value written there is cleared); without one it only goes up.
                    s.keys = if tpm_record {
                        serial
                    } else {
                        s.keys.max(serial)
                    };
                    s.install_complete(running, &m.version, tries)
                })?;
                log(format!(
                    "slot {target} holds version {}, verified; it is tried on the next boot",
                    m.version
                ));
                Ok(m.version)
            }
            Err(e) => {
                let why = platform::chain(&e);
                if let Err(e2) = self.change(|s| Ok(s.install_failed(running, &why))) {
                    log(format!(
                        "could not record the failure: {}",
                        platform::chain(&e2)
                    ));
                }
                Err(e)
            }
        }
    }

    /// One observation for the health check.
    fn observe(
        &self,
        status_path: &Path,
        rules: &Rules,
        up: &mut Uptimes,
        t: Duration,
    ) -> Observation {
        let init: health::InitStatus = std::fs::read(status_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let up_for = up.observe(&init, t);
        let err = |e: platform::CmdError| platform::chain(&e);
        Observation {
            pool_health: cmd::run(cmd::ZPOOL, &["list", "-H", "-o", "health", &rules.pool])
                .map_err(err),
            vault_key: cmd::run(
                cmd::ZFS,
                &["get", "-H", "-o", "value", "keystatus", &rules.vault],
            )
            .map_err(err),
            init,
            up_for,
        }
    }

    /// storage-init's outcome of this boot, if it wrote one.
    pub fn storage_outcome(&self) -> Option<health::StorageOutcome> {
        let p = self.roots.storage_outcome();
        let b = std::fs::read(&p).ok()?;
        match serde_json::from_slice(&b) {
            Ok(o) => Some(o),
            Err(e) => {
                eprintln!(
                    "abupdate: {}: {e}; using the default pool and vault names",
                    p.display()
                );
                None
            }
        }
    }

    /// Waits until the system is healthy, fails, or `timeout` passes.
    /// One look by the health check's rules, neither waiting nor acting on the verdict (the
    /// management API shows it): services need only be running, not settled.
    pub fn health_now(&self) -> Verdict {
        let rules = Rules {
            settle: Duration::ZERO,
            ..Rules::default()
        }
        .for_storage(self.storage_outcome().as_ref());
        let o = self.observe(
            &platform::status::path(&self.roots.run),
            &rules,
            &mut Uptimes::default(),
            Duration::ZERO,
        );
        health::evaluate(&rules, &o)
    }

    pub fn check_health(&self, rules: &Rules, timeout: Duration) -> Verdict {
        let status_path = platform::status::path(&self.roots.run);
        let start = Instant::now();
        let mut up = Uptimes::default();
        let mut last = String::new();
        loop {
            let o = self.observe(&status_path, rules, &mut up, start.elapsed());
            match health::evaluate(rules, &o) {
                Verdict::Waiting(w) => {
                    if start.elapsed() > timeout {
                        return Verdict::Failed(format!("timed out after {timeout:?}: {w}"));
                    }
                    if w != last {
                        log(format!("health: waiting for {w}"));
                        last = w;
                    }
                    std::thread::sleep(Duration::from_secs(2));
                }
                v => return v,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rollback_below_the_running_epoch_is_refused_before_anything_changes() {
        let d = |epoch| crate::verity::Descriptor {
            profile: "prod".into(),
            version: "v1".into(),
            security_epoch: epoch,
            data_size: 8192,
            hash_offset: 12288,
            hash_size: 4096,
            algorithm: "sha256".into(),
            block_size: crate::verity::BLOCK,
            salt: "ab".repeat(32),
            root_hash: "cd".repeat(32),
        };
        let why = rollback_refusal(Slot::A, &d(0), 1).unwrap();
        assert!(
            why.contains("security epoch 0, below this box's rollback floor 1"),
            "{why}"
        );
        assert_eq!(rollback_refusal(Slot::A, &d(1), 1), None);
        assert_eq!(rollback_refusal(Slot::A, &d(2), 1), None);
    }
}

/// See [`System::esp_programs`].
#[derive(Debug)]
pub struct EspPrograms {
    pub loader: crate::loader::Action,
    pub programs: Vec<(String, std::result::Result<[u8; 32], String>)>,
}
