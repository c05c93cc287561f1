//! The volume commands behind `storagectl volume`: each validates first, changes the spool, runs
//! a reconcile pass under the lock and, when the pass fails, puts the spool back and reconciles
//! again so nothing stays half-applied.

use crate::cmd;
use crate::env::Env;
use crate::error::{Error, Result};
use crate::hostside;
use crate::ids;
use crate::reconcile;
use crate::snap;
use crate::spec::{RawSpec, Transport, Volume};
use crate::spool;
use crate::zvol;
use platform::log;
use platform::IoContext;
use serde::Serialize;
use std::path::{Path, PathBuf};

pub(crate) fn spool_file(env: &Env, name: &str) -> Option<PathBuf> {
    ["toml", "json"]
        .iter()
        .map(|e| env.cfg.spool.join(format!("{name}.{e}")))
        .find(|p| p.exists())
}

/// Runs a pass; on failure restores the spool file to `before` (or removes it) and reconciles
/// back, returning the original error.
fn pass_or_restore(env: &Env, path: &Path, before: Option<&[u8]>, name: &str) -> Result<()> {
    let result = reconcile::pass(env, false).and_then(|(p, _)| {
        match p.conflicts.iter().find(|c| c.name == name) {
            Some(c) => Err(Error::Refused(format!("{}: {}", c.name, c.msg))),
            None => Ok(()),
        }
    });
    let Err(e) = result else { return Ok(()) };
    log(format!("{name}: {}; undoing", platform::chain(&e)));
    let undo = match before {
        Some(b) => crate::ids::write_private(path, b),
        None => Ok(std::fs::remove_file(path).at("remove", path)?),
    };
    match undo.and_then(|_| reconcile::pass(env, false)) {
        Ok(_) => log(format!("{name}: undone")),
        Err(u) => log(format!(
            "{name}: undoing failed too: {}",
            platform::chain(&u)
        )),
    }
    Err(e)
}

/// The locks one operation holds until it returns.
#[derive(Debug)]
struct Held {
    _volumes: Vec<platform::lock::Held>,
    _pass: platform::lock::Held,
}

/// Takes the named volumes' own locks (refusing at once when one is busy), then the pass lock,
/// once the spool and state are known to be on the unlocked vault: nothing is read from or
/// written to a directory that only looks like the spool.
fn locked(env: &Env, names: &[&str]) -> Result<Held> {
    env.check_vault()?;
    let volumes = names
        .iter()
        .map(|n| reconcile::volume_lock(&env.roots, n))
        .collect::<Result<Vec<_>>>()?;
    Ok(Held {
        _volumes: volumes,
        _pass: reconcile::lock(&env.roots)?,
    })
}

/// Refuses a transport this kernel cannot serve, before anything is written.
pub fn check_transport(env: &Env, t: Transport) -> Result<()> {
    match t {
        Transport::VhostNvme => Err(Error::Unsupported(format!(
            "vhost-nvme (no {}; use nvme-tcp or vhost-scsi)",
            env.roots.dev.join("vhost-nvme").display()
        ))),
        Transport::VhostScsi if !env.roots.dev.join("vhost-scsi").exists() => {
            Err(Error::Unsupported(format!(
                "vhost-scsi (no {})",
                env.roots.dev.join("vhost-scsi").display()
            )))
        }
        _ => Ok(()),
    }
}

pub fn create(env: &Env, raw: &RawSpec, label: &str) -> Result<Shown> {
    let v = raw.validate(label)?;
    check_transport(env, v.transport)?;
    if let Some(src) = &v.source {
        zvol::check_source(env.tools, src, v.size, &env.cfg.imports())?;
    }
    let _lock = locked(env, &[&v.name])?;
    env.ensure_spool()?;
    if spool_file(env, &v.name).is_some()
        || zvol::list(env.tools, &env.cfg.pool)?
            .iter()
            .any(|z| z.volume == v.name)
    {
        return Err(Error::Exists(v.name));
    }
    let pool = cmd::list_pools(env.tools, Some(&env.cfg.pool))?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Refused(format!("pool {} is not imported", env.cfg.pool)))?;
    let floor = env.cfg.floor_bytes(pool.size);
    let need = if v.thin { 0 } else { v.size };
    if pool.free < floor.saturating_add(need) {
        return Err(Error::Refused(format!(
            "pool {} has {} bytes free; a {} volume of {} bytes would leave less than the floor of {floor} bytes (free_floor {})",
            env.cfg.pool,
            pool.free,
            if v.thin { "thin" } else { "thick" },
            v.size,
            env.cfg.free_floor
        )));
    }
    let path = env.cfg.spool.join(format!("{}.toml", v.name));
    let text = toml::to_string(&v.to_raw()).map_err(|e| Error::State {
        path: path.clone(),
        msg: e.to_string(),
    })?;
    crate::ids::write_private(&path, text.as_bytes())?;
    log(format!("{}: spec written to {}", v.name, path.display()));
    pass_or_restore(env, &path, None, &v.name)?;
    show(env, &v.name)
}

pub fn resize(env: &Env, name: &str, size: &str) -> Result<Shown> {
    let _lock = locked(env, &[name])?;
    let path = spool_file(env, name).ok_or_else(|| Error::NoVolume(name.into()))?;
    let before = std::fs::read(&path).at("read", &path)?;
    let label = path.display().to_string();
    let old = crate::spec::load_file(&path)?;
    let mut raw = old.to_raw();
    raw.size = size.into();
    let new = raw.validate(&label)?;
    if new.size < old.size {
        return Err(Error::Refused(format!(
            "{name}: {size} ({} bytes) is smaller than the current {} bytes; volumes only grow",
            new.size, old.size
        )));
    }
    if new.size == old.size {
        return show(env, name);
    }
    let text = toml::to_string(&new.to_raw()).map_err(|e| Error::State {
        path: path.clone(),
        msg: e.to_string(),
    })?;
    crate::ids::write_private(&path, text.as_bytes())?;
    pass_or_restore(env, &path, Some(&before), name)?;
    show(env, name)
}

pub fn delete(env: &Env, name: &str, force: bool) -> Result<()> {
    let _lock = locked(env, &[name])?;
    let path = spool_file(env, name);
    let Some(path) = path else {
        // A zvol the spool does not name (held by a pass) can still be deleted explicitly.
        if zvol::list(env.tools, &env.cfg.pool)?
            .iter()
            .any(|z| z.volume == name && !z.staging)
        {
            env.store().tombstone(name)?;
            return reconcile::pass(env, false).map(|_| ());
        }
        return Err(Error::NoVolume(name.into()));
    };
    let v = crate::spec::load_file(&path)?;
    if !force {
        let users = if v.transport.is_nvmet() {
            users(env, &v)
        } else {
            Vec::new()
        };
        if !users.is_empty() {
            return Err(Error::Refused(format!(
                "{name} is in use by {}; disconnect them or use --force",
                users.join(", ")
            )));
        }
        refuse_held(env, &v, "deleting it")?;
    }
    let ds = zvol::dataset(&env.cfg.pool, &v);
    if let Some(s) = snap::list(env.tools, std::slice::from_ref(&ds))
        .unwrap_or_default()
        .iter()
        .find(|s| !s.clones.is_empty())
    {
        return Err(Error::Refused(format!(
            "{name}: its snapshot {} has clones ({}); delete them first",
            s.name,
            s.clones.join(", ")
        )));
    }
    let before = std::fs::read(&path).at("read", &path)?;
    env.store().tombstone(name)?;
    std::fs::remove_file(&path).at("remove", &path)?;
    let r = pass_or_restore(env, &path, Some(&before), name);
    if r.is_err() {
        env.store().clear_tombstone(name)?;
    }
    r
}

/// The operator's word that the spool as it is now is this box's: says what it will remove.
pub fn adopt_spool(env: &Env) -> Result<String> {
    let _lock = locked(env, &[])?;
    env.ensure_spool()?;
    let dry = reconcile::pass(env, true)?.0;
    let id = env.markers().adopt()?;
    let held: Vec<&str> = dry.held.iter().map(|(n, _)| n.as_str()).collect();
    log(format!(
        "spool {:032x} adopted at generation {}",
        id.id, id.generation
    ));
    Ok(if held.is_empty() {
        "spool adopted; nothing was held".into()
    } else {
        format!(
            "spool adopted; the next pass deletes the volumes it has no spec for, if this box created them: {}",
            held.join(", ")
        )
    })
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Shown {
    pub name: String,
    pub vm: String,
    pub transport: Transport,
    pub dataset: String,
    pub size: u64,
    pub thin: bool,
    pub encrypted: bool,
    pub serial: String,
    pub uuid: String,
    pub nguid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subsystem_nqn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_nqn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
    /// Where the VM's DH-HMAC-CHAP secrets are kept (never printed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wwpn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qemu_args: Option<Vec<String>>,
}

impl Shown {
    /// The volume's facts; its size in human units unless `bytes`.
    pub fn render(&self, bytes: bool) -> String {
        let mut s = format!(
            "volume {} (vm {}): {} {}, {}, {}\n  dataset {}\n  serial {}  uuid {}  nguid {}\n",
            self.name,
            self.vm,
            self.transport.as_str(),
            if bytes {
                format!("{} bytes", self.size)
            } else {
                platform::units::size_cell(self.size, false)
            },
            if self.thin { "thin" } else { "thick" },
            if self.encrypted { "encrypted" } else { "clear" },
            self.dataset,
            self.serial,
            self.uuid,
            self.nguid
        );
        let mut kv = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                s.push_str(&format!("  {k}: {v}\n"));
            }
        };
        kv("subsystem NQN", &self.subsystem_nqn);
        kv("host NQN", &self.host_nqn);
        kv("host ID", &self.host_id);
        kv("secrets in", &self.secret_ref);
        kv("NVMe/TCP", &self.tcp);
        kv("host device", &self.host_device);
        kv("vhost WWPN", &self.wwpn);
        if let Some(a) = &self.qemu_args {
            s.push_str(&format!("  qemu: {}\n", a.join(" ")));
        }
        s
    }
}

pub fn show(env: &Env, name: &str) -> Result<Shown> {
    env.check_vault()?;
    let path = spool_file(env, name).ok_or_else(|| Error::NoVolume(name.into()))?;
    let v: Volume = crate::spec::load_file(&path)?;
    let store = env.store();
    let i = store
        .volume(name)?
        .ok_or_else(|| Error::Refused(format!("{name} has not been reconciled yet")))?;
    let nvme = v.transport.is_nvmet();
    let nqn = ids::subsystem_nqn(name);
    Ok(Shown {
        dataset: zvol::dataset(&env.cfg.pool, &v),
        subsystem_nqn: nvme.then(|| nqn.clone()),
        host_nqn: nvme.then(|| ids::host_nqn(&v.vm)),
        host_id: nvme.then(|| ids::host_id(&v.vm)),
        secret_ref: nvme.then(|| store.host_ref(&v.vm).display().to_string()),
        tcp: (v.transport == Transport::NvmeTcp).then(|| {
            format!(
                "traddr={} trsvcid={} (nvme connect -t tcp -a {} -s {} -n {nqn} -q {} -I {} --dhchap-secret=<key> --dhchap-ctrl-secret=<ctrl_key>)",
                env.cfg.nvme_tcp.address,
                env.cfg.nvme_tcp.port,
                env.cfg.nvme_tcp.address,
                env.cfg.nvme_tcp.port,
                ids::host_nqn(&v.vm),
                ids::host_id(&v.vm)
            )
        }),
        host_device: (v.transport == Transport::NvmeLoop)
            .then(|| hostside::namespace_dev(&env.roots, &nqn))
            .flatten()
            .map(|p| p.display().to_string()),
        wwpn: (v.transport == Transport::VhostScsi).then(|| i.wwpn.clone()),
        qemu_args: (v.transport == Transport::VhostScsi).then(|| {
            vec![
                "-device".into(),
                format!("vhost-scsi-pci,wwpn={},num_queues={}", i.wwpn, v.vcpus),
            ]
        }),
        name: v.name,
        vm: v.vm,
        transport: v.transport,
        size: v.size,
        thin: v.thin,
        encrypted: v.encrypted,
        serial: i.serial,
        uuid: i.uuid,
        nguid: i.nguid,
    })
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Listing {
    pub volumes: Vec<ListRow>,
    pub pool_size: u64,
    pub pool_free: u64,
    /// Sum of all volume sizes over the pool's size (above 1.0 means over-committed).
    pub commit_ratio: f64,
    pub invalid: Vec<String>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ListRow {
    pub name: String,
    pub vm: String,
    pub transport: Transport,
    pub size: u64,
    pub used: Option<u64>,
    /// Of `used`, what only its snapshots hold.
    pub snapshots_used: Option<u64>,
    pub thin: bool,
    pub encrypted: bool,
    pub ready: bool,
}

pub fn list(env: &Env) -> Result<Listing> {
    env.check_vault()?;
    let mut spool = if env.cfg.spool.is_dir() {
        spool::read_spool(&env.cfg.spool)?
    } else {
        Default::default()
    };
    let zvols = zvol::list(env.tools, &env.cfg.pool)?;
    // A spec whose source the pass refuses is listed as the invalid spec it is.
    reconcile::refuse_bad_sources(env, &mut spool, &zvols);
    let pool = cmd::list_pools(env.tools, Some(&env.cfg.pool))?
        .into_iter()
        .next();
    let (size, free) = pool.map_or((0, 0), |p| (p.size, p.free));
    let total: u64 = spool.volumes.values().map(|v| v.size).sum();
    Ok(Listing {
        volumes: spool
            .volumes
            .values()
            .map(|v| {
                let z = zvols.iter().find(|z| z.volume == v.name && !z.staging);
                ListRow {
                    name: v.name.clone(),
                    vm: v.vm.clone(),
                    transport: v.transport,
                    size: v.size,
                    used: z.map(|z| z.used),
                    snapshots_used: z.map(|z| z.snapshots_used),
                    thin: v.thin,
                    encrypted: v.encrypted,
                    ready: z.is_some_and(|z| z.ready),
                }
            })
            .collect(),
        pool_size: size,
        pool_free: free,
        commit_ratio: if size == 0 {
            0.0
        } else {
            total as f64 / size as f64
        },
        invalid: spool.invalid.iter().map(|e| e.to_string()).collect(),
    })
}

impl Listing {
    /// A table; sizes in human units unless `bytes`.
    pub fn render(&self, bytes: bool) -> String {
        let sz = |b: u64| platform::units::size_cell(b, bytes);
        let mut t = platform::table::Table::new(
            &[
                "NAME",
                "VM",
                "TRANSPORT",
                "SIZE",
                "USED",
                "SNAPS",
                "PROV",
                "CRYPT",
                "READY",
            ],
            &[3, 4, 5],
        );
        for r in &self.volumes {
            t.row([
                r.name.as_str(),
                &r.vm,
                r.transport.as_str(),
                &sz(r.size),
                &r.used.map_or("-".into(), sz),
                &r.snapshots_used.map_or("-".into(), sz),
                if r.thin { "thin" } else { "thick" },
                if r.encrypted { "encrypted" } else { "clear" },
                if r.ready { "yes" } else { "no" },
            ]);
        }
        let mut s = t.render();
        s.push_str(&format!(
            "pool: {} of {} free; volumes commit {:.0}% of the pool{}\n",
            sz(self.pool_free),
            sz(self.pool_size),
            self.commit_ratio * 100.0,
            if self.commit_ratio > 1.0 {
                " (over-committed)"
            } else {
                ""
            }
        ));
        for e in &self.invalid {
            s.push_str(&format!("invalid spec: {e}\n"));
        }
        s
    }
}

/// The whole live nvmet configuration (not only ours) in nvmetcli's layout.
pub fn export_save(env: &Env) -> Result<serde_json::Value> {
    let t = env.nvmet_tree();
    let ports = env
        .fs
        .list(&t.root.join("ports"))
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p.parse().ok())
        .collect();
    let n = ktarget::nvmet::observe(
        env.fs,
        &t,
        &ktarget::nvmet::Scope {
            nqn_prefix: String::new(),
            port_ids: ports,
        },
    )?;
    Ok(ktarget::nvmetcli::to_json(&n))
}

/// A volume's spec and zvol dataset, for the snapshot commands; the zvol must exist.
fn volume_dataset(env: &Env, name: &str) -> Result<(Volume, String)> {
    let path = spool_file(env, name).ok_or_else(|| Error::NoVolume(name.into()))?;
    let v = crate::spec::load_file(&path)?;
    let ds = zvol::dataset(&env.cfg.pool, &v);
    // One `zfs get` on the dataset, not a list of the pool.
    zvol::volsize(env.tools, &ds)
        .map_err(|_| Error::Refused(format!("{name}: its zvol {ds} does not exist yet")))?;
    Ok((v, ds))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Takes a snapshot by hand (named `SNAP`, or after the UTC time); retention never removes it.
pub fn snapshot(env: &Env, name: &str, snap: Option<&str>) -> Result<snap::Snapshot> {
    let snap = match snap {
        Some(s) => s.to_string(),
        None => snap::stamp(now_secs()),
    };
    snap::check_snap_name(&snap).map_err(|m| Error::Refused(format!("snapshot name {m}")))?;
    let _lock = locked(env, &[name])?;
    let (_, ds) = volume_dataset(env, name)?;
    if snap::list(env.tools, std::slice::from_ref(&ds))?
        .iter()
        .any(|s| s.name == snap)
    {
        return Err(Error::Exists(format!("{name}@{snap}")));
    }
    snap::take(env.tools, &[format!("{ds}@{snap}")])?;
    log(format!("{name}: snapshot {snap} taken"));
    snap::list(env.tools, std::slice::from_ref(&ds))?
        .into_iter()
        .find(|s| s.name == snap)
        .ok_or_else(|| Error::Refused(format!("{ds}@{snap} was taken but is not listed")))
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Snapshots {
    pub volume: String,
    pub dataset: String,
    pub schedules: Vec<snap::Schedule>,
    pub snapshots: Vec<snap::Snapshot>,
    /// When the list was read (for "3 h ago").
    pub at: u64,
}

pub fn snapshots(env: &Env, name: &str) -> Result<Snapshots> {
    env.check_vault()?;
    let (v, ds) = volume_dataset(env, name)?;
    Ok(Snapshots {
        at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        snapshots: snap::list(env.tools, std::slice::from_ref(&ds))?,
        volume: v.name,
        dataset: ds,
        schedules: v.snapshots,
    })
}

impl Snapshots {
    /// A table, oldest first; sizes in human units unless `bytes`.
    pub fn render(&self, bytes: bool) -> String {
        let sz = |b: u64| platform::units::size_cell(b, bytes);
        let mut t = platform::table::Table::new(
            &["SNAPSHOT", "CREATED", "USED", "REFER", "CLONES"],
            &[2, 3],
        );
        for x in &self.snapshots {
            t.row([
                x.name.clone(),
                platform::units::when(x.creation, self.at),
                sz(x.used),
                sz(x.referenced),
                if x.clones.is_empty() {
                    "-".into()
                } else {
                    x.clones.join(",")
                },
            ]);
        }
        let mut s = t.render();
        let total: u64 = self.snapshots.iter().map(|x| x.used).sum();
        s.push_str(&format!(
            "{} snapshots of {} ({}), {} held by them alone",
            self.snapshots.len(),
            self.volume,
            self.dataset,
            sz(total)
        ));
        if self.schedules.is_empty() {
            s.push_str("; no schedule\n");
        } else {
            let sc: Vec<String> = self
                .schedules
                .iter()
                .map(|x| format!("every {} keep {}", snap::every_label(x.every), x.keep))
                .collect();
            s.push_str(&format!("; scheduled {}\n", sc.join(", ")));
        }
        s
    }
}

/// The block devices on this box that show the volume's blocks: its zvol and, for nvme-loop, the
/// namespace the box connects to.
fn local_devices(env: &Env, v: &Volume) -> Vec<PathBuf> {
    let mut d = vec![zvol::dev_path(&env.roots, &zvol::dataset(&env.cfg.pool, v))];
    if v.transport == Transport::NvmeLoop {
        d.extend(hostside::namespace_dev(
            &env.roots,
            &ids::subsystem_nqn(&v.name),
        ));
    }
    d
}

/// Processes, mounts and stacked devices on this box holding the volume's devices open; and
/// what cannot be judged (a zvol whose device link is missing) counts as held.
fn held_by(env: &Env, v: &Volume) -> Vec<String> {
    let devs = local_devices(env, v);
    let mut held = crate::holders::holders(&env.roots, &devs);
    // A zvol that exists with no device link (udev has not made it yet) cannot be judged; one
    // that does not exist is held by nobody.
    if !devs[0].exists() && zvol::volsize(env.tools, &zvol::dataset(&env.cfg.pool, v)).is_ok() {
        held.push(format!(
            "{} is missing, so who holds the volume cannot be seen",
            devs[0].display()
        ));
    }
    if v.transport.is_nvmet() {
        for d in devs
            .iter()
            .filter(|d| d.exists() && crate::holders::claimed(d))
        {
            held.push(format!(
                "{} is held exclusively (a mount, a device-mapper or md device, or a ZFS vdev)",
                d.display()
            ));
        }
    }
    held
}

/// Refuses `what` while anything on this box holds the volume's devices open.
fn refuse_held(env: &Env, v: &Volume, what: &str) -> Result<()> {
    let held = held_by(env, v);
    if held.is_empty() {
        return Ok(());
    }
    Err(Error::Refused(format!(
        "{} is in use on this box: {}; close them before {what}, or use --force",
        v.name,
        held.join("; ")
    )))
}

/// Who may be using an nvmet volume: hosts connected to its subsystem (as far as the kernel says)
/// and, for NVMe/TCP on a kernel that cannot say which subsystem a remote host uses, every host
/// with a connection open to the NVMe/TCP port. Over-counting refuses a change that `--force`
/// can still make; under-counting would change a disk under a running VM.
fn users(env: &Env, v: &Volume) -> Vec<String> {
    let mut u = hostside::connected_hosts(&env.roots, &ids::subsystem_nqn(&v.name), true);
    if v.transport == Transport::NvmeTcp && !hostside::sees_remote_controllers(&env.roots) {
        u.extend(
            hostside::tcp_peers(&env.roots, env.cfg.nvme_tcp.port)
                .into_iter()
                .map(|p| {
                    format!(
                        "a host at {p} connected to NVMe/TCP port {} (this kernel does not say to which volume)",
                        env.cfg.nvme_tcp.port
                    )
                }),
        );
    }
    u
}

/// Refuses while anyone but this box's own loop connection uses the volume (as delete does);
/// for vhost-scsi, where the kernel does not say whether a VM holds the endpoint, unless forced.
fn refuse_if_in_use(env: &Env, v: &Volume, what: &str, force: bool) -> Result<()> {
    if force {
        return Ok(());
    }
    refuse_held(env, v, what)?;
    if v.transport.is_nvmet() {
        let users = users(env, v);
        if !users.is_empty() {
            return Err(Error::Refused(format!(
                "{} is in use by {}; disconnect them before {what}, or use --force",
                v.name,
                users.join(", ")
            )));
        }
    } else if v.transport == Transport::VhostScsi {
        return Err(Error::Refused(format!(
            "{}: whether a VM holds its vhost-scsi endpoint cannot be seen from here; stop its VM, then use --force for {what}",
            v.name
        )));
    }
    Ok(())
}

/// Rolls a volume back to `snap`. Newer snapshots are destroyed only with `destroy_newer` and
/// never when one of them has a clone; refused while a host is connected.
pub fn rollback(
    env: &Env,
    name: &str,
    snap_name: &str,
    destroy_newer: bool,
    force: bool,
) -> Result<snap::Snapshot> {
    let _lock = locked(env, &[name])?;
    let (v, ds) = volume_dataset(env, name)?;
    let all = snap::list(env.tools, std::slice::from_ref(&ds))?;
    let target = all
        .iter()
        .find(|s| s.name == snap_name)
        .cloned()
        .ok_or_else(|| Error::NoVolume(format!("{name}@{snap_name}")))?;
    let newer: Vec<&snap::Snapshot> = all
        .iter()
        .filter(|s| s.createtxg > target.createtxg)
        .collect();
    if let Some(c) = newer.iter().find(|s| !s.clones.is_empty()) {
        return Err(Error::Refused(format!(
            "{name}: rolling back to {snap_name} would destroy {}, which {} cloned from; delete the clones first",
            c.name,
            c.clones.join(", ")
        )));
    }
    if !newer.is_empty() && !destroy_newer {
        let n: Vec<&str> = newer.iter().map(|s| s.name.as_str()).collect();
        return Err(Error::Refused(format!(
            "{name}: {snap_name} is not the newest snapshot; rolling back destroys {}: use --destroy-newer",
            n.join(", ")
        )));
    }
    refuse_if_in_use(env, &v, "a rollback", force)?;
    snap::rollback(env.tools, &ds, snap_name, destroy_newer)?;
    log(format!(
        "{name}: rolled back to {snap_name}{}",
        if newer.is_empty() {
            String::new()
        } else {
            format!(
                ", destroying {}",
                newer
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    ));
    // Every device over the zvol may hold the old blocks in its page cache: the zvol itself and
    // the box's own loop namespace. Nothing holds them open (checked above), so the cache goes.
    // The rollback is done whatever comes of this: a failure is said, not returned.
    for dev in local_devices(env, &v) {
        if dev.exists() {
            let d = dev.display().to_string();
            if let Err(e) =
                env.tools
                    .run(cmd::BLOCKDEV, &["--flushbufs".to_string(), d.clone()], None)
            {
                platform::log::warn(format!(
                    "{name}: rolled back, but {d}'s page cache could not be dropped ({}): a reader on this box may see old blocks until it reopens the device",
                    platform::chain(&e)
                ));
            }
        }
    }
    Ok(target)
}

/// Destroys a snapshot (scheduled or by hand); refused while a clone depends on it.
pub fn snapshot_delete(env: &Env, name: &str, snap_name: &str) -> Result<()> {
    let _lock = locked(env, &[name])?;
    let (_, ds) = volume_dataset(env, name)?;
    let all = snap::list(env.tools, std::slice::from_ref(&ds))?;
    let s = all
        .iter()
        .find(|s| s.name == snap_name)
        .ok_or_else(|| Error::NoVolume(format!("{name}@{snap_name}")))?;
    if !s.clones.is_empty() {
        return Err(Error::Refused(format!(
            "{name}@{snap_name} has clones ({}); delete them first",
            s.clones.join(", ")
        )));
    }
    snap::destroy(env.tools, &ds, &[snap_name])?;
    log(format!("{name}: snapshot {snap_name} destroyed"));
    Ok(())
}

/// A new volume `new` cloned from `origin` (`VOLUME@SNAP`): the origin's spec under the new name
/// (its own identity and export, thin, no schedule), for `vm` and over `transport` when given.
pub fn clone(
    env: &Env,
    new: &str,
    origin: &str,
    vm: Option<&str>,
    transport: Option<Transport>,
) -> Result<Shown> {
    let (ovol, osnap) =
        snap::parse_ref(origin).map_err(|m| Error::Refused(format!("--from: {m}")))?;
    if new == ovol {
        return Err(Error::Exists(new.into()));
    }
    // The origin is held while its snapshot is checked and the clone made.
    let _origin = {
        env.check_vault()?;
        reconcile::volume_lock(&env.roots, &ovol)?
    };
    let (ov, ods) = volume_dataset(env, &ovol)?;
    if !snap::list(env.tools, std::slice::from_ref(&ods))?
        .iter()
        .any(|s| s.name == osnap)
    {
        return Err(Error::NoVolume(format!("{ovol}@{osnap}")));
    }
    let mut raw = ov.to_raw();
    raw.name = new.into();
    raw.origin = Some(format!("{ovol}@{osnap}"));
    raw.source = None;
    raw.snapshots = Vec::new();
    raw.provisioning = "thin".into();
    if let Some(vm) = vm.filter(|vm| *vm != ov.vm) {
        return Err(Error::Refused(format!(
            "--vm {vm}: `{ovol}` belongs to VM `{}`; a clone stays with its origin's VM (copy the data in through an import instead)",
            ov.vm
        )));
    }
    if let Some(t) = transport {
        raw.transport = t;
        if t != Transport::VhostScsi {
            raw.vcpus = None;
        }
    }
    create(env, &raw, "clone")
}
