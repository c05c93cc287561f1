//! The campaign's driver: boots the development image with a disk set drawn from the seed, then
//! for each scenario starts its operation in the guest, strikes its fault at its instant, waits
//! for the box to recover, settles what the operation did and checks every invariant.

use crate::guest::{self, zvol, POOL, VOLS};
use crate::model::{self, Ack, Change, Model, Vol, BLOCK, BLOCKS};
use crate::plan::{Fault, Op, Scenario};
use crate::report::{Run, ScenarioRecord};
use crate::rng::Rng;
use crate::{Error, Result};
use eve_vmtest::{Content, DiskKind, DiskSpec, Machine, MachineSpec};
use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub scenarios: usize,
    /// Replay this scenario alone: the operations before it run without faults, then it.
    pub only: Option<usize>,
    pub image: PathBuf,
    pub update: PathBuf,
    /// OpenZFS's fault injector for the image's ZFS release, copied into the guest.
    pub zinject: PathBuf,
    pub dir: PathBuf,
    pub results: PathBuf,
    pub reliability: PathBuf,
    /// Stop starting scenarios after this many minutes.
    pub minutes: f64,
}

const RUN: &str = "/run/campaign";
const DAEMONS: [&str; 3] = ["volumed", "storaged", "mgmtd"];
/// How far into the boot after an update or a policy change a power cut or TPM swap may strike:
/// about how long a boot takes under TCG, to the agent.
const BOOT_WINDOW_MS: u64 = 35_000;
/// Member drives' size, MiB: room for the image policy's quotas (a fixed 1G among them) to add
/// up to less than the pool.
const MEMBER_SIZES: [u64; 3] = [4096, 5120, 6144];

/// What a fault left to undo once the operation is over.
#[derive(Debug)]
enum Struck {
    Nothing,
    Rebooted,
    Killed(String),
    Injected(Instant),
    Corrupted,
    Unplugged(eve_vmtest::qemu::Disk),
    Filling,
    Jumped,
}

/// An operation ready to start: its guest script, what it changes, and what follows it.
struct Prepared {
    script: String,
    change: Change,
    detail: String,
    after: After,
    /// A member the fault must leave alone (the one being replaced).
    spare: Option<String>,
    timeout: Duration,
}

enum After {
    Nothing,
    /// The update boots; unless a fault cut its one trial boot, the box must run `from`'s other
    /// slot afterwards.
    Update {
        from: String,
    },
    /// The boot that applies the policy; newlog's quota must then be `pct` % of the pool (or
    /// the old policy's, when the change was not acknowledged).
    Policy {
        pct: u64,
    },
    Replaced {
        old: String,
        new: String,
    },
    Added(Vec<String>),
    RemoveFile(String),
}

#[derive(Debug)]
pub struct Campaign {
    m: Machine,
    o: Options,
    model: Model,
    run: Run,
    /// Serials of the pool's member drives, as the campaign made them.
    members: Vec<String>,
    kinds: BTreeMap<String, DiskKind>,
    foreign_hash: String,
    next_disk: u32,
    kills: BTreeMap<String, u32>,
    console_seen: (u32, usize),
    /// The scenario whose operation runs.
    op: usize,
    /// What the running scenario noticed on the way (a reset the box did by itself).
    notes: Vec<String>,
    /// How long the running operation ran, once it returned, and when it ended (guest uptime).
    op_ms: Option<u64>,
    op_end: Option<f64>,
    /// The newlog quota the policy on CONFIG sets, in percent of the pool.
    newlog_pct: u64,
    start: Instant,
    violations_total: usize,
}

impl Campaign {
    /// Makes the box: two member drives (the first SCSI, so it can be pulled live; the second
    /// of any kind) of one size drawn from the seed, a foreign drive holding an ext4 file system
    /// that must never change, and the image's policy with a mirror topology. Boots it.
    pub fn start(o: Options) -> Result<Campaign> {
        let mut r = Rng::derive(o.seed, 1);
        let size = *r.pick(&MEMBER_SIZES).expect("sizes");
        let second = *r
            .pick(&[
                DiskKind::Scsi,
                DiskKind::Nvme,
                DiskKind::Virtio,
                DiskKind::Sata,
            ])
            .expect("kinds");
        let foreign_kind = *r
            .pick(&[DiskKind::Nvme, DiskKind::Virtio, DiskKind::Sata])
            .expect("kinds");
        let mut o = o;
        std::fs::create_dir_all(&o.dir).map_err(|e| Error::Io(o.dir.clone(), e))?;
        // The harness names its files relative to the machine's folder (qemu-img's backing file).
        o.dir = std::fs::canonicalize(&o.dir).map_err(|e| Error::Io(o.dir.clone(), e))?;
        let foreign = o.dir.join("foreign.img");
        make_foreign(&foreign, &mut r)?;
        let foreign_hash =
            model::hash(&std::fs::read(&foreign).map_err(|e| Error::Io(foreign.clone(), e))?);
        let policy = std::fs::read_to_string(image_policy())
            .map_err(|e| Error::Io(image_policy(), e))?
            .replace("topology = \"stripe\"", "topology = \"mirror\"");
        if !policy.contains("topology = \"mirror\"") {
            return Err(Error::Setup(
                "the image's storage.toml has no `topology = \"stripe\"` line to change".into(),
            ));
        }
        let mut spec = MachineSpec::new("campaign", &o.image);
        spec.boot_size_mib = std::fs::metadata(&o.image)
            .map_err(|e| Error::Io(o.image.clone(), e))?
            .len()
            .div_ceil(1 << 20);
        spec.disks = vec![
            DiskSpec::blank(DiskKind::Scsi, size, "MEMBER1"),
            DiskSpec::blank(second, size, "MEMBER2"),
            DiskSpec {
                content: Content::Copy(foreign.clone()),
                ..DiskSpec::blank(foreign_kind, 64, "FOREIGN")
            },
        ];
        spec.config_files = vec![("storage.toml".into(), policy.into_bytes())];
        spec.command_timeout = Duration::from_secs(600);
        let disks = vec![
            format!("MEMBER1 scsi {size} MiB"),
            format!(
                "MEMBER2 {} {size} MiB",
                format!("{second:?}").to_lowercase()
            ),
            format!(
                "FOREIGN {} 64 MiB (ext4, must stay unchanged)",
                format!("{foreign_kind:?}").to_lowercase()
            ),
        ];
        let kinds = [
            ("MEMBER1".to_string(), DiskKind::Scsi),
            ("MEMBER2".to_string(), second),
        ]
        .into();
        let m = Machine::create(spec, &o.dir.join("machine"))?;
        let run = Run {
            seed: o.seed,
            started: utc_now(),
            image: o.image.display().to_string(),
            disks,
            scenarios: Vec::new(),
            secs_booting: 0.0,
            secs_total: 0.0,
            stopped: None,
        };
        let mut c = Campaign {
            m,
            o,
            model: Model::default(),
            run,
            members: vec!["MEMBER1".into(), "MEMBER2".into()],
            kinds,
            foreign_hash,
            next_disk: 0,
            kills: BTreeMap::new(),
            console_seen: (1, 0),
            op: 0,
            notes: Vec::new(),
            op_ms: None,
            op_end: None,
            newlog_pct: 10,
            start: Instant::now(),
            violations_total: 0,
        };
        c.boot(|m| m.boot())?;
        let st = c.sh_ok("zpool status -P persist")?;
        let members = guest::parse_members(&st);
        if members.len() != 2 || !st.contains("mirror-0") {
            return Err(Error::Setup(format!(
                "the first boot did not make a two-way mirror of MEMBER1 and MEMBER2:\n{st}"
            )));
        }
        Ok(c)
    }

    /// Runs `cmd` in the guest. A guest that reset itself meanwhile (qemu runs with -no-reboot:
    /// a trial slot failing its health check reboots the box) is booted again, noted, and the
    /// command run once more.
    fn sh(&mut self, cmd: &str) -> Result<eve_vmtest::Output> {
        match self.m.sh(cmd) {
            Err(eve_vmtest::Error::Agent { .. }) if self.reset_itself()? => Ok(self.m.sh(cmd)?),
            r => Ok(r?),
        }
    }

    fn sh_ok(&mut self, cmd: &str) -> Result<String> {
        match self.m.ok(cmd) {
            Err(eve_vmtest::Error::Agent { .. }) if self.reset_itself()? => Ok(self.m.ok(cmd)?),
            r => Ok(r?),
        }
    }

    /// Whether the guest reset itself (qemu exited within 30 s of a lost agent); if so, boots it.
    fn reset_itself(&mut self) -> Result<bool> {
        if self.m.wait_guest_reset(Duration::from_secs(30)).is_err() {
            return Ok(false);
        }
        let console = std::fs::read_to_string(self.m.console_log()).unwrap_or_default();
        let why = console
            .lines()
            .rev()
            .find(|l| l.contains("abupdate") || l.contains("health"))
            .unwrap_or("no health line on the console")
            .trim()
            .to_string();
        self.notes.push(format!(
            "the box reset itself (boot {}; last health line: {why}); booted again",
            self.m.boots()
        ));
        let t = Instant::now();
        self.m.boot()?;
        self.tools_in()?;
        self.run.secs_booting += t.elapsed().as_secs_f64();
        Ok(true)
    }

    /// Boots with `how`, counts the time, and waits for the box to be ready (the vault open and
    /// the volume daemon up), copying the fault injector in.
    fn boot(&mut self, how: impl FnOnce(&mut Machine) -> eve_vmtest::Result<()>) -> Result<()> {
        let t = Instant::now();
        how(&mut self.m)?;
        self.kills.clear();
        self.tools_in()?;
        self.wait_ready(Duration::from_secs(240))?;
        self.run.secs_booting += t.elapsed().as_secs_f64();
        Ok(())
    }

    /// The campaign's folder on the guest's /run, with the fault injector in it (once a boot).
    fn tools_in(&mut self) -> Result<()> {
        self.m.ok(&format!("mkdir -p {RUN}"))?;
        self.m.copy_in(&self.o.zinject, &format!("{RUN}/zinject"))?;
        self.m.ok(&format!("chmod 755 {RUN}/zinject"))?;
        Ok(())
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let t = Instant::now();
        loop {
            let o = self.sh("[ \"$(zfs get -H -o value keystatus persist/vault 2>/dev/null)\" = available ] && pidof volumed >/dev/null")?;
            if o.status == 0 {
                return Ok(());
            }
            if t.elapsed() > limit {
                return Err(Error::Guest(format!(
                    "the box was not ready (vault open, volumed up) {} s after boot",
                    limit.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Runs the whole campaign and writes its record and RELIABILITY.md section.
    pub fn run(mut self, list: Vec<Scenario>) -> Result<Run> {
        let deadline = Duration::from_secs_f64(self.o.minutes * 60.0);
        for sc in list {
            if self.start.elapsed() > deadline {
                self.run.stopped = Some(format!(
                    "the {} min budget ran out after {} scenarios",
                    self.o.minutes,
                    self.run.scenarios.len()
                ));
                break;
            }
            let fault = match self.o.only {
                Some(n) if sc.index < n => None,
                _ => Some(sc.fault),
            };
            eprintln!(
                "[{:>6.0} s] scenario {} ({}): {} under {}, at {} ms",
                self.start.elapsed().as_secs_f64(),
                sc.index,
                self.run.scenarios.len() + 1,
                sc.op,
                fault
                    .map(|f| f.to_string())
                    .unwrap_or_else(|| "no fault".into()),
                sc.instant_ms
            );
            let rec = match self.scenario(&sc, fault) {
                Ok(r) => r,
                Err(e) => {
                    // The box did not come back, or the harness lost it: a finding, and the end.
                    let rec = ScenarioRecord {
                        index: sc.index,
                        op: sc.op,
                        fault,
                        instant_ms: sc.instant_ms,
                        seed: sc.seed,
                        detail: String::new(),
                        ack: Ack::Unknown,
                        invariants: 0,
                        violations: vec![format!("the box could not be driven on: {e}")],
                        notes: vec![],
                        boots: 0,
                        secs: 0.0,
                        op_ms: None,
                        during: None,
                    };
                    self.run.scenarios.push(rec);
                    self.run.stopped = Some(format!("scenario {}: {e}", sc.index));
                    break;
                }
            };
            for v in &rec.violations {
                eprintln!("  VIOLATION: {v}");
            }
            eprintln!(
                "  {} ({:?}), {} invariants, {:.0} s",
                rec.detail, rec.ack, rec.invariants, rec.secs
            );
            self.violations_total += rec.violations.len();
            self.run.scenarios.push(rec);
            self.run.secs_total = self.start.elapsed().as_secs_f64();
            self.save()?;
            if self.o.only.is_some_and(|n| sc.index >= n) {
                break;
            }
        }
        self.run.secs_total = self.start.elapsed().as_secs_f64();
        self.save()?;
        let _ = self.m.poweroff();
        Ok(self.run)
    }

    fn save(&self) -> Result<()> {
        let dir = &self.o.results;
        std::fs::create_dir_all(dir).map_err(|e| Error::Io(dir.clone(), e))?;
        let p = dir.join(self.run.file_name());
        let text = serde_json::to_string_pretty(&self.run).expect("serializable");
        std::fs::write(&p, text).map_err(|e| Error::Io(p, e))
    }

    fn scenario(&mut self, sc: &Scenario, fault: Option<Fault>) -> Result<ScenarioRecord> {
        let t0 = Instant::now();
        let boots0 = self.m.boots();
        let mut r = Rng::new(sc.seed);
        let prep = self.prepare(sc, &mut r)?;
        self.start_op(&prep.script, sc.index)?;
        let mut violations = Vec::new();
        self.op_ms = None;
        self.op_end = None;
        let (struck, early, during) = match fault {
            None => (Struck::Nothing, None, None),
            Some(f) => self.strike(f, sc, &mut r, &prep, &mut violations)?,
        };
        let ack = match (&struck, early) {
            (Struck::Rebooted, Some(a)) => a,
            (Struck::Rebooted, None) => Ack::Unknown,
            _ => self.finish_op(prep.timeout, &mut violations)?,
        };
        self.heal(struck, &mut violations)?;
        self.after(&prep.after, &ack, fault, boots0, &mut violations)?;
        let (v, n, mut notes) = self.verify(&prep.change, &ack)?;
        violations.extend(v);
        notes.splice(0..0, std::mem::take(&mut self.notes));
        Ok(ScenarioRecord {
            index: sc.index,
            op: sc.op,
            fault,
            instant_ms: sc.instant_ms,
            seed: sc.seed,
            detail: prep.detail,
            ack,
            invariants: n,
            violations,
            notes,
            boots: self.m.boots() - boots0,
            secs: t0.elapsed().as_secs_f64(),
            op_ms: self.op_ms,
            during,
        })
    }

    // ---- operations ----

    fn fresh_name(&self, prefix: &str, sc: &Scenario) -> String {
        format!("{prefix}{}", sc.index)
    }

    /// A volume to work on: one the model holds, or a new one made first (outside the fault).
    fn some_volume(
        &mut self,
        r: &mut Rng,
        sc: &Scenario,
        want: impl Fn(&str, &Vol) -> bool,
    ) -> Result<String> {
        let names: Vec<String> = self
            .model
            .vols
            .iter()
            .filter(|(n, v)| want(n, v))
            .map(|(n, _)| n.clone())
            .collect();
        if let Some(n) = r.pick(&names) {
            return Ok(n.clone());
        }
        let name = format!("p{}", sc.index);
        self.sh_ok(&format!(
            "storagectl volume create {name} --size {BLOCKS}M --vm vm1 --transport nvme-tcp"
        ))?;
        self.model
            .vols
            .insert(name.clone(), Vol::blank("vm1", "nvme-tcp"));
        Ok(name)
    }

    fn snapshot_now(&mut self, name: &str, snap: &str) -> Result<()> {
        self.sh_ok(&format!("storagectl volume snapshot {name} {snap}"))?;
        let v = self.model.vols.get_mut(name).expect("a model volume");
        let b = v.blocks.clone();
        v.snapshots.push((snap.into(), b));
        Ok(())
    }

    fn has_clones(&self, name: &str) -> bool {
        self.model
            .vols
            .values()
            .any(|v| v.origin.as_ref().is_some_and(|(o, _)| o == name))
    }

    fn prepare(&mut self, sc: &Scenario, r: &mut Rng) -> Result<Prepared> {
        let vm = format!("vm{}", 1 + r.below(3));
        let transport = if r.chance(30) {
            "nvme-loop"
        } else {
            "nvme-tcp"
        };
        let quick = Duration::from_secs(300);
        let p = |script: String, change: Change, detail: String| Prepared {
            script,
            change,
            detail,
            after: After::Nothing,
            spare: None,
            timeout: quick,
        };
        Ok(match sc.op {
            Op::Create => {
                let name = self.fresh_name("v", sc);
                p(
                    format!("storagectl volume create {name} --size {BLOCKS}M --vm {vm} --transport {transport}"),
                    Change::Create { name: name.clone(), vol: Vol::blank(&vm, transport) },
                    format!("create {name} ({transport})"),
                )
            }
            Op::Write => {
                let name = self.some_volume(r, sc, |_, _| true)?;
                let block = r.below(BLOCKS as u64) as usize;
                let data = r.bytes(BLOCK);
                let h = model::hash(&data);
                self.m.write_file(&format!("{RUN}/blk"), &data, 0o600)?;
                p(
                    write_block(&name, block),
                    Change::Write { name: name.clone(), block, hash: h.clone() },
                    format!("write {name} block {block} ({})", &h[..12]),
                )
            }
            Op::Delete => {
                let clones: Vec<String> = self.model.vols.keys().filter(|n| self.has_clones(n)).cloned().collect();
                let name = self.some_volume(r, sc, |n, _| !clones.iter().any(|c| c == n))?;
                p(
                    format!("storagectl volume delete {name} --force"),
                    Change::Delete { name: name.clone() },
                    format!("delete {name}"),
                )
            }
            Op::Snapshot => {
                let name = self.some_volume(r, sc, |_, _| true)?;
                let snap = format!("s{}", sc.index);
                p(
                    format!("storagectl volume snapshot {name} {snap}"),
                    Change::Snapshot { name: name.clone(), snap: snap.clone() },
                    format!("snapshot {name}@{snap}"),
                )
            }
            Op::Rollback => {
                let name = self.some_volume(r, sc, |_, _| true)?;
                if self.model.vols[&name].snapshots.is_empty() {
                    self.snapshot_now(&name, &format!("s{}", sc.index))?;
                    // Something for the rollback to undo.
                    let data = r.bytes(BLOCK);
                    let k = r.below(BLOCKS as u64) as usize;
                    self.m.write_file(&format!("{RUN}/blk"), &data, 0o600)?;
                    self.sh_ok(&write_block(&name, k))?;
                    self.model.vols.get_mut(&name).expect("volume").blocks[k] = model::hash(&data);
                }
                let snap = self.model.vols[&name].snapshots.last().expect("a snapshot").0.clone();
                p(
                    format!("storagectl volume rollback {name} {snap} --force"),
                    Change::Rollback { name: name.clone(), snap: snap.clone() },
                    format!("rollback {name} to {snap}"),
                )
            }
            Op::Clone => {
                let from = self.some_volume(r, sc, |_, _| true)?;
                if self.model.vols[&from].snapshots.is_empty() {
                    self.snapshot_now(&from, &format!("s{}", sc.index))?;
                }
                let snaps = self.model.vols[&from].snapshots.clone();
                let (snap, blocks) = r.pick(&snaps).expect("a snapshot").clone();
                let name = self.fresh_name("c", sc);
                // A clone stays with its origin's VM.
                let vm = self.model.vols[&from].vm.clone();
                let vol = Vol {
                    blocks,
                    origin: Some((from.clone(), snap.clone())),
                    ..Vol::blank(&vm, transport)
                };
                p(
                    format!("storagectl volume clone {name} --from {from}@{snap} --vm {vm} --transport {transport}"),
                    Change::Create { name: name.clone(), vol },
                    format!("clone {name} from {from}@{snap}"),
                )
            }
            Op::Import => {
                let name = self.fresh_name("i", sc);
                let qcow2 = r.chance(50);
                // Half the blocks data, the rest zeros.
                let mut img = vec![0u8; BLOCKS * BLOCK];
                let data = r.bytes(BLOCKS / 2 * BLOCK);
                img[..data.len()].copy_from_slice(&data);
                let blocks: Vec<String> = img.chunks(BLOCK).map(model::hash).collect();
                let raw = format!("/persist/import/{name}.raw");
                self.m.write_file(&raw, &img, 0o600)?;
                // The source is on the pool before the operation starts, as an operator's
                // finished upload is (unsynced, a power cut may take it, and the import with it).
                let (file, fmt) = if qcow2 {
                    let q = format!("/persist/import/{name}.qcow2");
                    self.sh_ok(&format!("qemu-img convert -f raw -O qcow2 {raw} {q} && rm {raw}"))?;
                    (q, "qcow2")
                } else {
                    (raw, "raw")
                };
                self.sh_ok("sync")?;
                Prepared {
                    after: After::RemoveFile(file.clone()),
                    ..p(
                        format!(
                            "storagectl volume create {name} --size {BLOCKS}M --vm {vm} --transport {transport} --import {file} --format {fmt}"
                        ),
                        Change::Create { name: name.clone(), vol: Vol { blocks, ..Vol::blank(&vm, transport) } },
                        format!("import {name} from {fmt}"),
                    )
                }
            }
            Op::Update => {
                self.m.copy_in(&self.o.update, &format!("{RUN}/u.update"))?;
                let from = self.running_slot()?;
                Prepared {
                    after: After::Update { from },
                    timeout: Duration::from_secs(900),
                    ..p(
                        format!("abupdate install {RUN}/u.update && rm {RUN}/u.update"),
                        Change::None,
                        "install the update, then boot it".into(),
                    )
                }
            }
            Op::Replace => {
                let old = r.pick(&self.members.clone()).expect("members").clone();
                let new = self.new_member()?;
                let old_dev = self.member_device(&old)?;
                Prepared {
                    after: After::Replaced { old: old.clone(), new: new.clone() },
                    spare: Some(old.clone()),
                    timeout: Duration::from_secs(900),
                    ..p(
                        format!("storagectl disk replace {old_dev} {}", by_id(&new)),
                        Change::None,
                        format!("replace {old} with {new}"),
                    )
                }
            }
            Op::Scrub => p(
                format!("zpool wait -t resilver,scrub {POOL}; storagectl scrub now && zpool wait -t scrub {POOL}"),
                Change::None,
                "scrub".into(),
            ),
            Op::Policy => {
                // Another value than the one in force, so the check can tell them apart.
                let choices: Vec<u64> = (5..=10).filter(|p| *p != self.newlog_pct).collect();
                let pct = *r.pick(&choices).expect("choices");
                let policy = std::fs::read_to_string(image_policy())
                    .map_err(|e| Error::Io(image_policy(), e))?
                    .replace("topology = \"stripe\"", "topology = \"mirror\"")
                    .replace(
                        "[datasets.newlog]\nmountpoint = \"/persist/newlog\"\nquota = \"10%\"",
                        &format!("[datasets.newlog]\nmountpoint = \"/persist/newlog\"\nquota = \"{pct}%\""),
                    );
                if !policy.contains(&format!(
                    "[datasets.newlog]\nmountpoint = \"/persist/newlog\"\nquota = \"{pct}%\""
                )) {
                    return Err(Error::Setup("the image's storage.toml has no newlog quota of 10% to change".into()));
                }
                self.m.write_file(&format!("{RUN}/storage.toml"), policy.as_bytes(), 0o644)?;
                Prepared {
                    after: After::Policy { pct },
                    ..p(
                        format!(
                            "mount -o remount,rw /config && cp {RUN}/storage.toml /config/storage.toml.new && sync && \
                             mv /config/storage.toml.new /config/storage.toml && sync; s=$?; mount -o remount,ro /config; exit $s"
                        ),
                        Change::None,
                        format!("policy: newlog quota {pct}%"),
                    )
                }
            }
            Op::AddDrives => {
                let a = self.new_member()?;
                let b = self.new_member()?;
                Prepared {
                    after: After::Added(vec![a.clone(), b.clone()]),
                    ..p(
                        format!("storagectl disk add {} {}", by_id(&a), by_id(&b)),
                        Change::None,
                        format!("add {a} and {b}"),
                    )
                }
            }
        })
    }

    /// Plugs a blank SCSI drive of the members' size in and waits for its link.
    fn new_member(&mut self) -> Result<String> {
        self.next_disk += 1;
        let serial = format!("NEW{}", self.next_disk);
        let size = self.member_size();
        self.m
            .plug_disk(&DiskSpec::blank(DiskKind::Scsi, size, &serial))?;
        self.kinds.insert(serial.clone(), DiskKind::Scsi);
        self.wait_link(&serial)?;
        Ok(serial)
    }

    fn member_size(&self) -> u64 {
        self.run
            .disks
            .first()
            .and_then(|d| d.split_whitespace().nth(2))
            .and_then(|s| s.parse().ok())
            .unwrap_or(1024)
    }

    fn wait_link(&mut self, serial: &str) -> Result<()> {
        for _ in 0..60 {
            if self.sh(&format!("[ -b {} ]", by_id(serial)))?.status == 0 {
                return Ok(());
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        Err(Error::Guest(format!(
            "{serial}: no {} after 60 s",
            by_id(serial)
        )))
    }

    /// The pool member on drive `serial`, as `zpool status -P` names it (zinject and zpool know
    /// the member by that path), matched through the whole disk its partition is on.
    fn member_device(&mut self, serial: &str) -> Result<String> {
        self.member_on(serial)?
            .ok_or_else(|| Error::Guest(format!("{serial} holds no member of {POOL}")))
    }

    fn member_on(&mut self, serial: &str) -> Result<Option<String>> {
        let kind = self.kinds.get(serial).copied().unwrap_or(DiskKind::Scsi);
        let disk = self.sh_ok(&format!(
            "basename \"$(readlink -f {})\"",
            link(kind, serial)
        ))?;
        let disk = disk.trim().to_string();
        let st = self.sh_ok(&format!(
            "zpool status -P {POOL} | awk '$1 ~ \"^/dev/\" {{print $1}}' | while read p; do echo \"$p $(lsblk -no PKNAME \"$(readlink -f $p)\" | head -1)\"; done"
        ))?;
        Ok(st
            .lines()
            .filter_map(|l| l.split_once(' '))
            .find(|(_, parent)| parent.trim() == disk)
            .map(|(p, _)| p.to_string()))
    }

    /// Starts `script` in the background; its exit status lands in a file of this scenario's
    /// own, so an earlier operation that outlived its timeout never answers for this one.
    fn start_op(&mut self, script: &str, index: usize) -> Result<()> {
        self.op = index;
        self.m
            .write_file(&format!("{RUN}/op{index}.sh"), script.as_bytes(), 0o700)?;
        self.sh_ok(&format!(
            "setsid sh -c 'a=$(cut -d\" \" -f1 /proc/uptime); sh {RUN}/op{index}.sh > {RUN}/out{index} 2>&1; r=$?; \
             echo \"$r $a $(cut -d\" \" -f1 /proc/uptime)\" > {RUN}/rc{index}.tmp; mv {RUN}/rc{index}.tmp {RUN}/rc{index}' \
             < /dev/null > /dev/null 2>&1 &"
        ))?;
        Ok(())
    }

    fn op_rc(&mut self) -> Result<Option<Ack>> {
        let i = self.op;
        let o = self.sh(&format!(
            "cat {RUN}/rc{i} 2>/dev/null && tail -n 3 {RUN}/out{i}"
        ))?;
        if o.status != 0 {
            return Ok(None);
        }
        let mut lines = o.stdout.lines();
        let (status, span) = parse_rc(lines.next().unwrap_or(""));
        self.op_ms = span.map(|(a, b)| ((b - a) * 1000.0).round() as u64);
        self.op_end = span.map(|(_, b)| b);
        let msg = lines.collect::<Vec<_>>().join(" | ");
        Ok(Some(if status == 0 {
            Ack::Acked
        } else {
            Ack::Failed { status, msg }
        }))
    }

    fn finish_op(&mut self, limit: Duration, violations: &mut Vec<String>) -> Result<Ack> {
        let t = Instant::now();
        loop {
            if let Some(a) = self.op_rc()? {
                return Ok(a);
            }
            if t.elapsed() > limit {
                violations.push(format!(
                    "the operation had not returned after {} s",
                    limit.as_secs()
                ));
                return Ok(Ack::Unknown);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    // ---- faults ----

    /// Strikes `f` at the scenario's instant. Returns what is left to undo, the operation's end
    /// when it came first, and whether the fault struck while the operation still ran (None when
    /// there was nothing to strike). Targets are chosen before the wait, so the fault follows
    /// the last look at the operation at once; a fault applied in the guest stamps its own
    /// instant (guest uptime) to compare with the operation's end. An update or a policy
    /// change ends in a boot: a power cut or TPM swap whose instant falls after the command
    /// returned strikes that boot instead, at an offset into it drawn from the scenario's seed.
    fn strike(
        &mut self,
        f: Fault,
        sc: &Scenario,
        r: &mut Rng,
        prep: &Prepared,
        violations: &mut Vec<String>,
    ) -> Result<(Struck, Option<Ack>, Option<bool>)> {
        let others: Vec<String> = self
            .members
            .iter()
            .filter(|s| Some(*s) != prep.spare.as_ref())
            .cloned()
            .collect();
        let target = match f {
            Fault::KillDaemon => Some(r.pick(&DAEMONS).expect("daemons").to_string()),
            Fault::IoErrors => {
                let s = r.pick(&others).expect("a member").clone();
                Some(self.member_device(&s)?)
            }
            Fault::Corruption => Some(r.pick(&others).expect("a member").clone()),
            Fault::Unplug => {
                let scsi: Vec<String> = others
                    .iter()
                    .filter(|s| self.kinds.get(*s) == Some(&DiskKind::Scsi))
                    .cloned()
                    .collect();
                r.pick(&scsi).cloned()
            }
            _ => None,
        };
        let t = Instant::now();
        let instant = Duration::from_millis(sc.instant_ms);
        let mut early = None;
        while t.elapsed() < instant {
            if let Some(a) = self.op_rc()? {
                early = Some(a);
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if early.is_none() {
            early = self.op_rc()?;
        }
        let mut in_boot = false;
        if early == Some(Ack::Acked) && sc.op.reboots() && f.reboots() && t.elapsed() < instant {
            let b = Instant::now();
            self.m.reboot_begin()?;
            let into = Duration::from_millis(r.below(BOOT_WINDOW_MS));
            std::thread::sleep(into);
            self.run.secs_booting += b.elapsed().as_secs_f64();
            self.notes.push(format!(
                "the {f} struck {:.1} s after the boot that follows the {} began",
                into.as_secs_f64(),
                sc.op
            ));
            in_boot = true;
        }
        // Guest uptime when a fault applied in the guest struck.
        let mut stamp = None;
        let struck = match f {
            Fault::PowerCut => {
                self.m.power_cut()?;
                self.boot(|m| m.boot())?;
                Struck::Rebooted
            }
            Fault::TpmSwap => {
                self.m.power_cut()?;
                self.m.stash_tpm("own")?;
                let t = Instant::now();
                self.m.boot()?;
                self.run.secs_booting += t.elapsed().as_secs_f64();
                // Another TPM: the vault stays shut and nothing is lost while it is. Bring-up
                // has decided once its outcome file is there.
                let o = self.sh("for i in $(seq 120); do [ -e /run/eve/storage.json ] && exit 0; sleep 1; done; exit 1")?;
                if o.status != 0 {
                    violations.push(
                        "with another TPM, storage-init wrote no outcome within 120 s".into(),
                    );
                }
                let key = self
                    .sh("zfs get -H -o value keystatus persist/vault")?
                    .stdout;
                if key.trim() == "available" {
                    violations.push("the vault opened with another TPM".into());
                }
                // Every acknowledged volume but the one this operation deletes.
                let listed = self
                    .sh(&format!(
                        "zfs list -H -o name -t volume -r {VOLS} 2>/dev/null"
                    ))?
                    .stdout;
                let going = match &prep.change {
                    Change::Delete { name } => Some(name.as_str()),
                    _ => None,
                };
                let missing: Vec<&String> = self
                    .model
                    .vols
                    .keys()
                    .filter(|n| Some(n.as_str()) != going)
                    .filter(|n| !listed.lines().any(|l| l.trim() == format!("{VOLS}/{n}")))
                    .collect();
                if !missing.is_empty() {
                    violations.push(format!(
                        "with another TPM, acknowledged volumes are gone: {missing:?}"
                    ));
                }
                // The power goes again: as harsh as a clean poweroff is not, and ten seconds
                // less of a run whose hour is mostly boots.
                self.m.power_cut()?;
                self.m.restore_tpm("own")?;
                self.boot(|m| m.boot())?;
                Struck::Rebooted
            }
            Fault::KillDaemon => {
                let d = target.expect("a daemon");
                let o = self.sh(&stamped(&format!("kill -9 $(pidof {d})")))?;
                stamp = parse_stamp(&o.stdout);
                // A daemon that was not running was not killed: its restarts owe nothing to it.
                if o.status == 0 {
                    *self.kills.entry(d.clone()).or_default() += 1;
                }
                Struck::Killed(d)
            }
            Fault::IoErrors => {
                let dev = target.expect("a member");
                let o = self.sh_ok(&stamped(&format!(
                    "{RUN}/zinject -d {dev} -e io -T all -f 100 {POOL}"
                )))?;
                stamp = parse_stamp(&o);
                Struck::Injected(Instant::now())
            }
            Fault::Corruption => {
                let s = target.expect("a member");
                let file = self
                    .m
                    .disk_file_of(&s)
                    .map(Path::to_path_buf)
                    .ok_or_else(|| Error::Setup(format!("no file for drive {s}")))?;
                corrupt(&file, r)?;
                Struck::Corrupted
            }
            Fault::Unplug => match target {
                Some(s) => Struck::Unplugged(self.m.unplug_disk(&s)?),
                None => Struck::Nothing,
            },
            Fault::QuotaFill => {
                let o = self.sh_ok(&stamped(&format!(
                    "rm -f {RUN}/fill.done; setsid sh -c 'head -c 4000M /dev/urandom > /persist/newlog/campaign-fill 2>{RUN}/fill.err; touch {RUN}/fill.done' < /dev/null > /dev/null 2>&1 &"
                )))?;
                stamp = parse_stamp(&o);
                Struck::Filling
            }
            Fault::ClockJump => {
                let days = 1 + r.below(730) as i64;
                let delta = if r.chance(50) { days } else { -days } * 86_400;
                let o = self.sh_ok(&stamped(&format!(
                    "date -u -s @$(( $(date +%s) + {delta} )) >/dev/null"
                )))?;
                stamp = parse_stamp(&o);
                Struck::Jumped
            }
        };
        let during = match (&struck, early.is_some(), stamp) {
            (Struck::Nothing, ..) => None,
            _ if in_boot => Some(true),
            (_, true, _) => Some(false),
            // The operation may have ended between the last look and the stamp.
            (_, false, Some(at)) => {
                self.op_rc()?;
                Some(self.op_end.is_none_or(|end| end > at))
            }
            (_, false, None) => Some(true),
        };
        Ok((struck, early, during))
    }

    fn heal(&mut self, s: Struck, violations: &mut Vec<String>) -> Result<()> {
        match s {
            Struck::Nothing | Struck::Rebooted => {}
            Struck::Killed(d) => {
                let mut up = false;
                for _ in 0..60 {
                    if self.sh(&format!("pidof {d} >/dev/null"))?.status == 0 {
                        up = true;
                        break;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
                if !up {
                    violations.push(format!("{d} was not restarted within 60 s of its SIGKILL"));
                }
            }
            Struck::Injected(at) => {
                if let Some(rest) = Duration::from_secs(3).checked_sub(at.elapsed()) {
                    std::thread::sleep(rest);
                }
                self.sh_ok(&format!("{RUN}/zinject -c all >/dev/null"))?;
                self.repair(true)?;
            }
            Struck::Corrupted => self.repair(true)?,
            Struck::Unplugged(disk) => {
                let serial = disk.serial.clone();
                self.m.replug_disk(disk)?;
                self.wait_link(&serial)?;
                self.repair(false)?;
            }
            Struck::Filling => {
                for _ in 0..180 {
                    if self.sh(&format!("[ -e {RUN}/fill.done ]"))?.status == 0 {
                        break;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
                self.sh_ok("rm -f /persist/newlog/campaign-fill")?;
            }
            Struck::Jumped => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                self.sh_ok(&format!("date -u -s @{now} >/dev/null"))?;
            }
        }
        Ok(())
    }

    /// Brings every member back (reopen, online, clear), optionally scrubs, and waits for the
    /// resilver: what an operator does after a member misbehaved.
    fn repair(&mut self, scrub: bool) -> Result<()> {
        let st = self.sh_ok(&format!("zpool status -P {POOL}"))?;
        for (dev, state) in guest::parse_members(&st) {
            if state != "ONLINE" {
                self.sh(&format!("zpool online {POOL} {dev}"))?;
            }
        }
        self.sh(&format!("zpool reopen {POOL}; zpool clear {POOL}"))?;
        self.sh(&format!("zpool wait -t resilver {POOL}"))?;
        if scrub {
            self.sh(&format!(
                "zpool wait -t scrub {POOL}; zpool scrub -w {POOL}"
            ))?;
            self.sh(&format!("zpool clear {POOL}"))?;
        }
        Ok(())
    }

    fn after(
        &mut self,
        a: &After,
        ack: &Ack,
        fault: Option<Fault>,
        boots0: u32,
        violations: &mut Vec<String>,
    ) -> Result<()> {
        let rebooted = self.m.boots() != boots0;
        match a {
            After::Nothing => {}
            After::Update { from } => {
                if *ack != Ack::Acked {
                    return Ok(());
                }
                if !rebooted {
                    self.boot(|m| m.reboot())?;
                }
                let running = self.running_slot()?;
                if running != *from {
                    return Ok(());
                }
                // One trial boot (abupdate's default). Another TPM fails the trial's health
                // check by design; a power cut after GRUB spent the try ends the trial too. Any
                // other way back to the old slot is a finding.
                let new = if from == "A" { "B" } else { "A" };
                let spent = (boots0 + 1..self.m.boots()).any(|b| {
                    std::fs::read(self.m.dir.join(format!("console-{b}.log")))
                        .map(|c| {
                            String::from_utf8_lossy(&c).contains(&format!("EVE: trying slot {new}"))
                        })
                        .unwrap_or(false)
                });
                match fault {
                    Some(Fault::TpmSwap) => self.notes.push(format!(
                        "the update fell back to slot {from}: its trial boot met another TPM"
                    )),
                    Some(Fault::PowerCut) if spent => self.notes.push(format!(
                        "the update fell back to slot {from}: the power cut ended its one trial boot"
                    )),
                    _ => violations.push(format!(
                        "the acknowledged update did not stay: slot {from} runs, and no fault ended slot {new}'s trial{}",
                        if spent { " (its trial boot ran and failed)" } else { " (GRUB never tried it)" }
                    )),
                }
            }
            After::Policy { pct } => {
                // An unacknowledged change may or may not be on CONFIG: the boot settles which.
                if !rebooted {
                    self.boot(|m| m.reboot())?;
                }
                let seen = match self.newlog_quota_pct() {
                    Ok(x) => x,
                    Err(e) => {
                        violations.push(format!("newlog's quota could not be read: {e}"));
                        return Ok(());
                    }
                };
                let near = |p: u64| (seen - p as f64).abs() <= 0.5;
                let old = self.newlog_pct;
                // CONFIG holds the new policy once the change is acknowledged, whatever shows.
                if near(*pct) || *ack == Ack::Acked {
                    self.newlog_pct = *pct;
                }
                if near(*pct) {
                    return Ok(());
                }
                if *ack == Ack::Acked {
                    violations.push(format!(
                        "the acknowledged policy sets newlog's quota to {pct}% of the pool, but it is {seen:.1}%"
                    ));
                } else if !near(old) {
                    violations.push(format!(
                        "newlog's quota is {seen:.1}% of the pool: neither the old policy's {old}% nor the new {pct}%"
                    ));
                }
            }
            // Only once the import is acknowledged: an interrupted one resumes from its source
            // after the reboot (the campaign once removed it first and blamed the box).
            After::RemoveFile(f) => {
                if *ack == Ack::Acked {
                    self.sh(&format!("rm -f {f}"))?;
                }
            }
            After::Replaced { old, new } => {
                self.sh(&format!("zpool wait -t resilver,replace {POOL}"))?;
                let took = self.member_on(new)?.is_some();
                if *ack == Ack::Acked && !took {
                    violations.push(format!(
                        "the acknowledged replacement left {new} out of the pool"
                    ));
                }
                if took {
                    self.members.retain(|s| s != old);
                    self.members.push(new.clone());
                    if self.kinds.get(old) == Some(&DiskKind::Scsi) {
                        let _ = self.m.unplug_disk(old);
                    }
                }
            }
            After::Added(new) => {
                for s in new {
                    if self.member_on(s)?.is_some() {
                        self.members.push(s.clone());
                    } else if *ack == Ack::Acked {
                        violations.push(format!(
                            "the acknowledged addition left {s} out of the pool"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The slot the box runs, as `abupdate status --json` says.
    fn running_slot(&mut self) -> Result<String> {
        let st: serde_json::Value = serde_json::from_str(&self.sh_ok("abupdate status --json")?)
            .map_err(|e| Error::Guest(format!("abupdate status --json: {e}")))?;
        st["running"].as_str().map(String::from).ok_or_else(|| {
            Error::Guest(format!("abupdate status --json has no running slot: {st}"))
        })
    }

    /// newlog's quota in percent of the pool's size (used + available of its root, what
    /// storage-init takes percentages of).
    fn newlog_quota_pct(&mut self) -> Result<f64> {
        let out = self.sh_ok(&format!(
            "zfs list -Hp -o quota {POOL}/newlog && zfs list -Hp -o used,avail {POOL}"
        ))?;
        let n: Vec<f64> = out
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        match n.as_slice() {
            [q, u, a] if u + a > 0.0 => Ok(q * 100.0 / (u + a)),
            _ => Err(Error::Guest(format!(
                "newlog's quota and the pool's size: {out:?}"
            ))),
        }
    }

    // ---- invariants ----

    fn observe(&mut self, change: &Change) -> Result<model::World> {
        let names: Vec<String> = model::names_to_see(&self.model, change)
            .into_iter()
            .collect();
        let out = self.sh_ok(&guest::observe_script(&names))?;
        Ok(guest::parse_world(&out))
    }

    fn verify(&mut self, change: &Change, ack: &Ack) -> Result<(Vec<String>, u32, Vec<String>)> {
        let mut bad = Vec::new();
        let mut n = 0u32;
        self.sh(&format!("zpool wait -t resilver {POOL}"))?;
        // Volumes: give the volume daemon time to finish a pass the fault interrupted.
        let mut world = self.observe(change)?;
        for _ in 0..20 {
            let mut probe = self.model.clone();
            let _ = model::settle(&mut probe, change, ack, &world);
            if model::check(&probe, &world).0.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_secs(3));
            world = self.observe(change)?;
        }
        let (v, notes) = model::settle(&mut self.model, change, ack, &world);
        bad.extend(v);
        let (v, k) = model::check(&self.model, &world);
        bad.extend(v);
        n += k;
        let strays = model::strays(&self.model, &world);
        self.model.strays.extend(strays);
        // The pool: whole, without data errors, its vault open.
        let mut p = guest::parse_pool(&self.sh_ok(guest::POOL_SCRIPT)?);
        if p.health != "ONLINE" {
            self.repair(false)?;
            p = guest::parse_pool(&self.sh_ok(guest::POOL_SCRIPT)?);
        }
        n += 3;
        if p.health != "ONLINE" {
            let st = self.sh(&format!("zpool status {POOL}"))?.stdout;
            bad.push(format!(
                "the pool is {} after recovery (redundancy not back):\n{st}",
                p.health
            ));
        }
        if p.data_errors {
            bad.push("the pool reports data errors".into());
        }
        if p.key != "available" {
            bad.push(format!(
                "the vault is not open with the box's own TPM (key {})",
                p.key
            ));
        }
        // The foreign drive, byte for byte.
        n += 1;
        let f = self.sh_ok("d=$(ls /dev/disk/by-id/ | grep -E '[-_]FOREIGN$' | head -1); [ -n \"$d\" ] && sha256sum < /dev/disk/by-id/$d")?;
        if f.split_whitespace().next() != Some(self.foreign_hash.as_str()) {
            bad.push("the foreign drive changed".into());
        }
        // A/B: the running slot is not bad, and the next boot goes to a slot that is not.
        n += 1;
        match serde_json::from_str::<serde_json::Value>(&self.sh_ok("abupdate status --json")?) {
            Ok(st) => {
                let state = |slot: &serde_json::Value| {
                    st["slots"]
                        .as_array()
                        .and_then(|a| a.iter().find(|s| &s["slot"] == slot))
                        .and_then(|s| s["state"].as_str())
                        .unwrap_or("missing")
                        .to_string()
                };
                for which in ["running", "next"] {
                    let s = state(&st[which]);
                    if s == "bad" || s == "missing" {
                        bad.push(format!("A/B: the {which} slot {} is {s}", st[which]));
                    }
                }
            }
            Err(e) => bad.push(format!("abupdate status --json: {e}")),
        }
        // No program crashed; no service is in a crash loop; every daemon runs.
        n += 2;
        // Every boot's console since the last look, the ones a power cut ended included.
        let (first, mut from) = self.console_seen;
        let mut len = 0;
        for b in first..=self.m.boots() {
            let console = std::fs::read_to_string(self.m.dir.join(format!("console-{b}.log")))
                .unwrap_or_default();
            let start = if b == first {
                from.min(console.len())
            } else {
                0
            };
            for c in guest::crashes(&console[start..]) {
                bad.push(format!("console of boot {b}: {c}"));
            }
            len = console.len();
            from = 0;
        }
        self.console_seen = (self.m.boots(), len);
        match serde_json::from_str::<serde_json::Value>(&self.sh_ok("eve-init status --json")?) {
            Ok(st) => {
                for s in st["services"].as_array().into_iter().flatten() {
                    let name = s["name"].as_str().unwrap_or("?");
                    let starts = s["starts"].as_u64().unwrap_or(0);
                    let allowed = 1 + u64::from(self.kills.get(name).copied().unwrap_or(0));
                    if DAEMONS.contains(&name) && s["pid"].is_null() {
                        bad.push(format!("{name} is not running"));
                    }
                    if starts > allowed + 1 {
                        bad.push(format!(
                            "{name} started {starts} times this boot ({} kills): a crash loop",
                            allowed - 1
                        ));
                    }
                }
            }
            Err(e) => bad.push(format!("eve-init status --json: {e}")),
        }
        Ok((bad, n, notes))
    }
}

/// The operation's exit status and when it started and ended (guest uptime, which a clock
/// jump leaves alone), from its `status start end` line.
fn parse_rc(line: &str) -> (i32, Option<(f64, f64)>) {
    let f: Vec<&str> = line.split_whitespace().collect();
    let status = f.first().and_then(|x| x.parse().ok()).unwrap_or(-1);
    let up = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok());
    let span = match (up(1), up(2)) {
        (Some(a), Some(b)) if b >= a => Some((a, b)),
        _ => None,
    };
    (status, span)
}

/// `cmd` preceded by a `STRUCK <uptime>` line: when, in the guest's time, the fault struck.
fn stamped(cmd: &str) -> String {
    format!("echo \"STRUCK $(cut -d' ' -f1 /proc/uptime)\"; {cmd}")
}

fn parse_stamp(out: &str) -> Option<f64> {
    out.lines()
        .find_map(|l| l.strip_prefix("STRUCK "))
        .and_then(|x| x.trim().parse().ok())
}

/// The guest command that writes `{RUN}/blk` over block `k` of volume `name`: direct and
/// flushed, so its return acknowledges the data.
fn write_block(name: &str, k: usize) -> String {
    format!(
        "dd if={RUN}/blk of={} bs=1M seek={k} count=1 oflag=direct conv=fsync,notrunc 2>&1",
        zvol(name)
    )
}

/// The udev link of a SCSI drive the campaign plugged in.
fn by_id(serial: &str) -> String {
    link(DiskKind::Scsi, serial)
}

/// The udev link qemu's drive of `kind` with `serial` gets in the guest.
fn link(kind: DiskKind, serial: &str) -> String {
    match kind {
        DiskKind::Scsi => format!("/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_{serial}"),
        DiskKind::Virtio => format!("/dev/disk/by-id/virtio-{serial}"),
        DiskKind::Nvme => format!("/dev/disk/by-id/nvme-QEMU_NVMe_Ctrl_{serial}"),
        _ => format!("/dev/disk/by-id/ata-QEMU_HARDDISK_{serial}"),
    }
}

fn image_policy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rootfs/etc/storage.toml")
}

fn utc_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    platform::units::utc_stamp(now)
}

/// A 64 MiB ext4 file system with random data in it: a drive another system owns.
fn make_foreign(path: &Path, r: &mut Rng) -> Result<()> {
    let f = std::fs::File::create(path).map_err(|e| Error::Io(path.into(), e))?;
    f.set_len(64 << 20).map_err(|e| Error::Io(path.into(), e))?;
    drop(f);
    let st = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "foreign"])
        .arg(path)
        .status()
        .map_err(|e| Error::Io("mkfs.ext4".into(), e))?;
    if !st.success() {
        return Err(Error::Setup(format!("mkfs.ext4 {}: {st}", path.display())));
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::Io(path.into(), e))?;
    f.seek(SeekFrom::Start(32 << 20))
        .map_err(|e| Error::Io(path.into(), e))?;
    f.write_all(&r.bytes(4 << 20))
        .map_err(|e| Error::Io(path.into(), e))?;
    Ok(())
}

/// Overwrites 32 random 4 KiB sectors of a member's file, away from its labels (the first and
/// last 8 MiB): silent corruption ZFS must find by checksum and repair from the other side.
fn corrupt(file: &Path, r: &mut Rng) -> Result<()> {
    let len = std::fs::metadata(file)
        .map_err(|e| Error::Io(file.into(), e))?
        .len();
    let span = (len - (16 << 20)) / 4096;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .map_err(|e| Error::Io(file.into(), e))?;
    for _ in 0..32 {
        let at = (8 << 20) + r.below(span) * 4096;
        f.seek(SeekFrom::Start(at))
            .map_err(|e| Error::Io(file.into(), e))?;
        f.write_all(&r.bytes(4096))
            .map_err(|e| Error::Io(file.into(), e))?;
    }
    f.sync_all().map_err(|e| Error::Io(file.into(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_end_gives_its_status_and_how_long_it_ran() {
        assert_eq!(parse_rc("0 101.25 103.75"), (0, Some((101.25, 103.75))));
        assert_eq!(parse_rc("3 9.5 9.5"), (3, Some((9.5, 9.5))));
        // An end line from before this change, or a torn one: the status still counts.
        assert_eq!(parse_rc("1"), (1, None));
        assert_eq!(parse_rc(""), (-1, None));
        assert_eq!(parse_rc("0 20.0 10.0"), (0, None));
    }

    #[test]
    fn a_fault_applied_in_the_guest_stamps_its_instant() {
        let c = stamped("kill -9 $(pidof volumed)");
        assert!(c.starts_with("echo \"STRUCK $(cut -d' ' -f1 /proc/uptime)\"; kill"));
        assert_eq!(parse_stamp("STRUCK 812.40\nrest\n"), Some(812.4));
        assert_eq!(parse_stamp("nothing\n"), None);
    }
}
