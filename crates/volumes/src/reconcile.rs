//! One reconcile pass over every volume: read the spool, observe zvols, nvmet, LIO and loop
//! connections, plan (pure, in [`crate::plan`] and `ktarget`), then apply in dependency order.
//! Every step is idempotent, so a pass interrupted anywhere (crash, SIGKILL, power cut) is
//! finished by the next one.

use crate::cache::{self, Cache, Found, Memo, ZvolSource};
use crate::cmd::Tools;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::guard;
use crate::hostside;
use crate::ids::{self, Store};
use crate::plan::{self, Conflict, Wanted, ZOp};
use crate::spec::{self, SpecError, Transport, Volume};
use crate::zvol::{self, Zvol};
use ktarget::lio::{self, Lio};
use ktarget::nvmet::{self, Nvmet};
use ktarget::Cfs;
use platform::Roots;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

pub use platform::log;

type SpecResult = std::result::Result<Volume, SpecError>;

#[derive(Debug, Default)]
pub struct Spool {
    pub volumes: BTreeMap<String, Volume>,
    pub invalid: Vec<SpecError>,
}

/// Every `*.toml` / `*.json` in the spool; the rest (editor backups, temporaries) is ignored.
pub fn read_spool(dir: &Path) -> Result<Spool> {
    read_spool_with(dir, None)
}

/// [`read_spool`], parsing only the files that changed since `memo` saw them.
pub fn read_spool_with(dir: &Path, memo: Option<&Memo<SpecResult>>) -> Result<Spool> {
    let rd = std::fs::read_dir(dir).map_err(|source| {
        Error::Io(platform::IoError {
            op: "read spool directory",
            path: dir.into(),
            source,
        })
    })?;
    let mut paths: Vec<_> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("toml") | Some("json")
            )
        })
        .collect();
    paths.sort();
    if let Some(m) = memo {
        m.retain(&paths.iter().cloned().collect());
    }
    let mut s = Spool::default();
    for p in paths {
        let loaded = match memo.map(|m| m.get(&p)) {
            Some(Ok(Found::Cached(r))) => r,
            Some(Ok(Found::Changed(k))) => {
                let r = spec::load_file(&p);
                if let Some(m) = memo {
                    m.put(&p, k, r.clone());
                }
                r
            }
            // Gone since the directory was read, or not stat-able: read as without a memo.
            _ => spec::load_file(&p),
        };
        match loaded {
            Ok(v) if s.volumes.contains_key(&v.name) => s.invalid.push(SpecError {
                file: p.display().to_string(),
                field: "name".into(),
                msg: format!("`{}` is declared by another file too", v.name),
            }),
            Ok(v) => {
                s.volumes.insert(v.name.clone(), v);
            }
            Err(e) => s.invalid.push(e),
        }
    }
    Ok(s)
}

#[derive(Debug, Default)]
pub struct Observed {
    /// The pool's (size, free) bytes, for the free-space floor.
    pub pool: Option<(u64, u64)>,
    pub zvols: Vec<Zvol>,
    pub nvmet: Nvmet,
    pub lio: Lio,
    pub loops: BTreeMap<String, Vec<hostside::Ctrl>>,
    /// The zvols (and the pool's space) are the daemon's kept copy, not read by this pass.
    pub zvols_kept: bool,
}

/// What a pass may remove. A zvol is destroyed only on an explicit deletion (a tombstone written
/// by `storagectl volume delete`), or when its spec file is gone from a trusted spool and this
/// box's state shows it had seen that volume. Anything else without a spec is held, exports and
/// all, and reported.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    /// Why the spool is not trusted to mean deletions; `None` when it is.
    pub untrusted: Option<String>,
    pub spool_id: Option<guard::SpoolId>,
    /// Volumes with an identity in the state: seen by an earlier pass.
    pub seen: BTreeSet<String>,
    /// Tombstones: volumes explicitly deleted.
    pub deleted: BTreeSet<String>,
}

impl Gate {
    /// A gate that trusts the spool, for callers that have just checked it.
    pub fn trusting(seen: BTreeSet<String>) -> Gate {
        Gate {
            seen,
            ..Gate::default()
        }
    }
    fn may_remove(&self, name: &str, spool_valid: bool) -> bool {
        self.deleted.contains(name)
            || (self.untrusted.is_none() && spool_valid && self.seen.contains(name))
    }
}

fn names_in(dir: &Path, ext: &str) -> Result<BTreeSet<String>> {
    match std::fs::read_dir(dir) {
        Ok(rd) => Ok(rd
            .flatten()
            .filter_map(|e| {
                let p = e.path();
                (p.extension().and_then(|x| x.to_str()) == Some(ext))
                    .then(|| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                    .flatten()
            })
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(source) => Err(Error::Io(platform::IoError {
            op: "read",
            path: dir.into(),
            source,
        })),
    }
}

#[derive(Debug)]
pub struct Env<'a> {
    pub roots: Roots,
    pub cfg: Config,
    pub fs: &'a dyn Cfs,
    /// zfs, zpool, qemu-img and udevadm ([`crate::cmd::SYSTEM`] on the box).
    pub tools: &'a dyn Tools,
    /// The daemon's memory between passes; `None` (the CLI, tests) reads everything each pass.
    pub cache: Option<std::sync::Arc<Cache>>,
}

impl Env<'static> {
    /// The volume settings (layered, see `Config::load_layered`) on this host's kernel trees,
    /// reading everything each pass: what the CLI and the management API act through.
    pub fn host(config: Option<&std::path::Path>) -> Result<Self> {
        Ok(Env {
            roots: Roots::host(),
            cfg: Config::load_layered(config)?,
            fs: &ktarget::HostFs,
            tools: &crate::cmd::SYSTEM,
            cache: None,
        })
    }
}

impl Env<'_> {
    pub fn nvmet_tree(&self) -> nvmet::Tree {
        nvmet::Tree::new(&self.roots.configfs)
    }
    pub fn lio_tree(&self) -> lio::Tree {
        lio::Tree::new(&self.roots.configfs, self.cfg.iblock_hba, ids::WWPN_PREFIX)
    }
    pub fn store(&self) -> Store {
        Store {
            dir: self.cfg.state.clone(),
            memo: self.cache.clone(),
        }
    }
    pub fn markers(&self) -> guard::Markers {
        guard::Markers::new(&self.cfg.spool, &self.cfg.state)
    }

    /// Refuses unless the spool and the state are on the unlocked vault.
    pub fn check_vault(&self) -> Result<()> {
        if !platform::zfs::imported(&self.roots, &self.cfg.pool) {
            return Err(Error::PoolAbsent(self.cfg.pool.clone()));
        }
        guard::vault_ready(
            self.tools,
            &self.roots.mountinfo(),
            &self.cfg.spool,
            &self.cfg.state,
            &self.cfg.pool,
        )
    }

    /// Makes the spool directory (owner-only) if it is missing; the caller checked the vault.
    /// A spool made anew has no marker, so it is not trusted with deletions while the state
    /// knows volumes.
    pub fn ensure_spool(&self) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.cfg.spool)
            .map_err(|source| {
                Error::Io(platform::IoError {
                    op: "create",
                    path: self.cfg.spool.clone(),
                    source,
                })
            })
    }

    /// Reads the spool's identity, the seen volumes and the tombstones; a fresh box gets its
    /// spool identity here (unless `dry_run`).
    pub fn gate(&self, dry_run: bool, spool: &Spool) -> Result<Gate> {
        let store = self.store();
        let seen = names_in(&store.dir.join("volumes"), "json")?;
        let deleted = names_in(&store.dir.join("deleted"), "json")?;
        let m = self.markers();
        let (sp, st) = m.read()?;
        let all_present =
            seen.iter().all(|n| spool.volumes.contains_key(n)) && spool.invalid.is_empty();
        let (untrusted, spool_id) = match guard::judge(sp, st, seen.len(), all_present) {
            guard::Trust::Fresh if dry_run => (None, None),
            guard::Trust::Fresh => (None, Some(m.create()?)),
            guard::Trust::Trusted(s) => (None, Some(s)),
            guard::Trust::Untrusted(why) => (Some(why), None),
        };
        Ok(Gate {
            untrusted,
            spool_id,
            seen,
            deleted,
        })
    }

    /// The pool's (size, free) bytes.
    pub fn pool_space(&self) -> Result<Option<(u64, u64)>> {
        Ok(crate::cmd::list_pools(self.tools, Some(&self.cfg.pool))?
            .into_iter()
            .next()
            .map(|p| (p.size, p.free)))
    }

    /// What exists now, and what each source took to read (a slow pass shows where time went).
    pub fn observe(&self) -> Result<(Observed, String)> {
        let t = Instant::now();
        // A record of creations a pass did not finish (a crash, a power cut): the zvols are read
        // in full, so the untagged ones it claims are found and discarded.
        let intent = zvol::Intent::read(&self.cfg.state)?;
        if let (Some(c), Some(_)) = (&self.cache, &intent) {
            c.zvols_changed();
        }
        let read = || {
            Ok((
                zvol::list_claiming(self.tools, &self.cfg.pool, intent.as_ref())?,
                self.pool_space()?,
            ))
        };
        let (zvols, pool, zsrc) = match &self.cache {
            Some(c) => c.zvols(cache::zvol_links(&self.roots.dev, &self.cfg.pool), read)?,
            None => {
                let (z, p) = read()?;
                (z, p, ZvolSource::Full)
            }
        };
        let t_zfs = t.elapsed();
        let t = Instant::now();
        let (tree, scope) = (self.nvmet_tree(), plan::nvmet_scope(&self.cfg));
        let read = |prev: Option<&Nvmet>| Ok(nvmet::observe_since(self.fs, &tree, &scope, prev)?);
        let (nvmet, light) = match &self.cache {
            Some(c) => c.nvmet(read)?,
            None => (read(None)?, false),
        };
        let t_nvmet = t.elapsed();
        let t = Instant::now();
        let lio = lio::observe(self.fs, &self.lio_tree())?;
        let t_lio = t.elapsed();
        let t = Instant::now();
        let loops = hostside::loop_connections(&self.roots, &format!("{}:", ids::NQN_BASE));
        let times = format!(
            "{} zvols {zsrc} {} ms, {} nvmet subsystems {} {} ms, {} LIO backstores {} ms, {} loop hosts {} ms",
            zvols.len(),
            t_zfs.as_millis(),
            nvmet.subsystems.len(),
            if light { "read lightly" } else { "read" },
            t_nvmet.as_millis(),
            lio.backstores.len(),
            t_lio.as_millis(),
            loops.len(),
            t.elapsed().as_millis(),
        );
        Ok((
            Observed {
                pool,
                zvols_kept: zsrc == ZvolSource::Cached,
                zvols,
                nvmet,
                lio,
                loops,
            },
            times,
        ))
    }
}

#[derive(Debug, Default)]
pub struct Plan {
    pub disconnect: Vec<(String, String)>,
    pub nvmet_down: Vec<nvmet::Op>,
    pub lio_down: Vec<lio::Op>,
    pub zvols: Vec<ZOp>,
    pub lio_up: Vec<lio::Op>,
    pub nvmet_up: Vec<nvmet::Op>,
    pub revalidate: Vec<String>,
    pub connect: Vec<String>,
    pub conflicts: Vec<Conflict>,
    pub invalid: Vec<SpecError>,
    /// Set when a spec is invalid or the spool is not trusted: only explicit deletions remove
    /// anything, so a typo in one file or a lost spool cannot delete a volume.
    pub additive_only: bool,
    /// Volumes with a zvol but no spec, kept with their exports, and why.
    pub held: Vec<(String, String)>,
    pub wanted: Vec<Wanted>,
}

impl Plan {
    pub fn steps(&self) -> usize {
        self.disconnect.len()
            + self.nvmet_down.len()
            + self.lio_down.len()
            + self.zvols.len()
            + self.lio_up.len()
            + self.nvmet_up.len()
            + self.revalidate.len()
            + self.connect.len()
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        for e in &self.invalid {
            let _ = writeln!(
                s,
                "invalid spec (kept out; nothing is removed meanwhile): {e}"
            );
        }
        for c in &self.conflicts {
            let _ = writeln!(s, "conflict: {}: {}", c.name, c.msg);
        }
        for (name, why) in &self.held {
            let _ = writeln!(s, "kept: {name}: {why}");
        }
        let mut n = 0;
        let mut line = |s: &mut String, what: String| {
            n += 1;
            let _ = writeln!(s, "{n:>3}. {what}");
        };
        for (nqn, c) in &self.disconnect {
            line(&mut s, format!("disconnect host controller {c} from {nqn}"));
        }
        for o in &self.nvmet_down {
            line(&mut s, format!("nvmet: {o}"));
        }
        for o in &self.lio_down {
            line(&mut s, format!("lio: {o}"));
        }
        for o in &self.zvols {
            line(&mut s, format!("zfs: {o}"));
        }
        for o in &self.lio_up {
            line(&mut s, format!("lio: {o}"));
        }
        for o in &self.nvmet_up {
            line(&mut s, format!("nvmet: {o}"));
        }
        for q in &self.revalidate {
            line(&mut s, format!("nvmet: revalidate the size of {q}"));
        }
        for v in &self.connect {
            line(&mut s, format!("connect the host to {v} over loop"));
        }
        if n == 0 {
            s.push_str("nothing to do\n");
        }
        s
    }
}

fn is_teardown_nvmet(o: &nvmet::Op) -> bool {
    use nvmet::Op::*;
    matches!(
        o,
        UnlinkPort { .. }
            | RemovePort { .. }
            | DisallowHost { .. }
            | RemoveNamespace { .. }
            | RemoveSubsystem { .. }
            | RemoveHost { .. }
    )
}

/// Keeps what is exported for a volume in conflict exactly as it is.
fn keep_observed(name: &str, have_n: &Nvmet, have_l: &Lio, n: &mut Nvmet, l: &mut Lio) {
    let nqn = ids::subsystem_nqn(name);
    if let Some(s) = have_n.subsystems.get(&nqn) {
        for h in &s.allowed_hosts {
            if let Some(x) = have_n.hosts.get(h) {
                n.hosts.insert(h.clone(), x.clone());
            }
        }
        n.subsystems.insert(nqn.clone(), s.clone());
        for (id, p) in &have_n.ports {
            if p.subsystems.contains(&nqn) {
                n.ports
                    .entry(*id)
                    .or_insert_with(|| nvmet::Port {
                        subsystems: Default::default(),
                        ..p.clone()
                    })
                    .subsystems
                    .insert(nqn.clone());
            }
        }
    }
    if let Some(b) = have_l.backstores.get(name) {
        l.backstores.insert(name.into(), b.clone());
        for (w, t) in &have_l.vhost {
            if t.lun0 == name {
                l.vhost.insert(w.clone(), t.clone());
            }
        }
    }
}

/// Plans a pass in three steps: a pure draft of the zvol steps (what is refused, what is held),
/// the identities of the volumes that go ahead (the one step that reads and writes the store:
/// with `persist`, new ones are made and stored now; a dry run makes throwaway ones), then the
/// pure rest. `gate` decides which spec-less zvols may go.
pub fn plan(env: &Env, spool: Spool, have: &Observed, gate: &Gate, persist: bool) -> Result<Plan> {
    let d = draft(&env.cfg, &spool, have, gate);
    let wanted = identities(&env.store(), &spool, &d, persist)?;
    decide(&env.cfg, spool, have, gate, d, wanted)
}

/// The zvol half of a plan, before any identity is known.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub zops: Vec<ZOp>,
    /// Volumes refused this pass (a conflict with what exists, the free-space floor).
    pub conflicts: Vec<Conflict>,
    /// Spec-less zvols kept, and why.
    pub held: Vec<(String, String)>,
}

impl Draft {
    /// Whether `name` goes ahead this pass (is not refused).
    pub fn goes_ahead(&self, name: &str) -> bool {
        !self.conflicts.iter().any(|c| c.name == name)
    }
}

/// The spool's volumes that go ahead, each with its identities and its VM's: kept ones from the
/// store; for new ones, made and stored when `persist`, throwaway otherwise.
pub fn identities(store: &Store, spool: &Spool, d: &Draft, persist: bool) -> Result<Vec<Wanted>> {
    let mut wanted = Vec::new();
    for (name, v) in spool.volumes.iter().filter(|(n, _)| d.goes_ahead(n)) {
        let vids = match store.volume(name)? {
            Some(x) => x,
            None if persist => store.volume_or_new(name)?,
            None => ids::new_volume_ids(),
        };
        let host = match store.host(&v.vm)? {
            Some(x) => x,
            None if persist => store.host_or_new(&v.vm)?,
            None => ids::new_host_ids(&v.vm),
        };
        wanted.push(Wanted {
            vol: v.clone(),
            ids: vids,
            host,
        });
    }
    Ok(wanted)
}

/// Pure: the zvol steps, the refusals and the held removals.
pub fn draft(cfg: &Config, spool: &Spool, have: &Observed, gate: &Gate) -> Draft {
    let (mut zops, mut conflicts) = plan::zvol_diff(&spool.volumes, &have.zvols, &cfg.pool);
    // The free-space floor holds for specs dropped into the spool, not only for the CLI: a new
    // volume that does not fit is reported and left out, the others go ahead.
    if let Some((size, free)) = have.pool {
        let new: Vec<(&str, u64)> = zops
            .iter()
            .filter_map(|z| match z {
                ZOp::Create { name } => {
                    let v = &spool.volumes[name];
                    Some((name.as_str(), if v.thin { 0 } else { v.size }))
                }
                _ => None,
            })
            .collect();
        let refused = plan::over_floor(&new, free, cfg.floor_bytes(size));
        zops.retain(
            |z| !matches!(z, ZOp::Create { name } if refused.iter().any(|(n, _)| n == name)),
        );
        conflicts.extend(refused.into_iter().map(|(name, msg)| Conflict {
            name,
            msg: format!("{msg} (free_floor {})", cfg.free_floor),
        }));
    }
    let spool_valid = spool.invalid.is_empty();
    let mut held = Vec::new();
    zops.retain(|o| match o {
        ZOp::Destroy { name, dataset } if !gate.may_remove(name, spool_valid) => {
            let why = if let Some(u) = &gate.untrusted {
                format!("{dataset} has no spec, and the spool is not trusted with deletions: {u}")
            } else if !spool_valid {
                format!("{dataset} has no valid spec; nothing is removed while a spec is invalid")
            } else {
                format!("{dataset} has no spec and this box's state never saw it (not created here, or the state was lost); delete it with `storagectl volume delete {name}`")
            };
            held.push((name.clone(), why));
            false
        }
        _ => true,
    });
    Draft {
        zops,
        conflicts,
        held,
    }
}

/// Pure: the whole plan from the draft and the identities of the volumes that go ahead.
pub fn decide(
    cfg: &Config,
    spool: Spool,
    have: &Observed,
    gate: &Gate,
    d: Draft,
    wanted: Vec<Wanted>,
) -> Result<Plan> {
    let Draft {
        zops,
        conflicts,
        held,
    } = d;
    let spool_valid = spool.invalid.is_empty();
    let (mut want_n, mut want_l) =
        plan::targets(&wanted, &cfg.pool, cfg).map_err(Error::Refused)?;
    for name in conflicts
        .iter()
        .map(|c| &c.name)
        .chain(held.iter().map(|h| &h.0))
    {
        keep_observed(name, &have.nvmet, &have.lio, &mut want_n, &mut want_l);
    }
    let additive_only = !spool_valid || gate.untrusted.is_some();
    let nops = nvmet::diff(&want_n, &have.nvmet);
    let lops = lio::diff(&want_l, &have.lio);
    let (nvmet_down, nvmet_up): (Vec<_>, Vec<_>) = nops.into_iter().partition(is_teardown_nvmet);
    let (lio_down, lio_up): (Vec<_>, Vec<_>) = lops.into_iter().partition(|o| {
        matches!(
            o,
            lio::Op::RemoveVhost { .. } | lio::Op::RemoveBackstore { .. }
        )
    });

    // Loop connections: drop those whose subsystem goes away or is rebuilt, make missing ones.
    let rebuilt = |nqn: &str| {
        nvmet_down
            .iter()
            .any(|o| matches!(o, nvmet::Op::RemoveSubsystem { nqn: n } if n == nqn))
    };
    let loop_wanted = |nqn: &str| {
        wanted.iter().any(|w| {
            w.vol.transport == Transport::NvmeLoop && ids::subsystem_nqn(&w.vol.name) == nqn
        })
    };
    let is_held = |nqn: &str| held.iter().any(|(n, _)| ids::subsystem_nqn(n) == nqn);
    let mut disconnect = Vec::new();
    for (nqn, ctrls) in &have.loops {
        let drop_all = (!loop_wanted(nqn) && !is_held(nqn)) || rebuilt(nqn);
        for (i, c) in ctrls.iter().enumerate() {
            // One connection per volume; extra ones (a crash between connect and record) go.
            if drop_all || i > 0 || c.state == "dead" {
                disconnect.push((nqn.clone(), c.name.clone()));
            }
        }
    }
    let connect: Vec<String> = wanted
        .iter()
        .filter(|w| w.vol.transport == Transport::NvmeLoop)
        .filter(|w| {
            let nqn = ids::subsystem_nqn(&w.vol.name);
            let live = have
                .loops
                .get(&nqn)
                .is_some_and(|c| c.first().is_some_and(|c| c.state != "dead"));
            !live || rebuilt(&nqn)
        })
        .map(|w| w.vol.name.clone())
        .collect();
    let revalidate = zops
        .iter()
        .filter_map(|o| match o {
            ZOp::Grow { name, .. }
                if spool
                    .volumes
                    .get(name)
                    .is_some_and(|v| v.transport.is_nvmet()) =>
            {
                Some(ids::subsystem_nqn(name))
            }
            _ => None,
        })
        .collect();
    Ok(Plan {
        disconnect,
        nvmet_down,
        lio_down,
        zvols: zops,
        lio_up,
        nvmet_up,
        revalidate,
        connect,
        conflicts,
        invalid: spool.invalid,
        additive_only,
        held,
        wanted,
    })
}

pub use crate::apply::{apply, exports_without, Exports, Report};

/// Serialises passes between the daemon and the CLI.
pub fn lock(roots: &Roots) -> Result<platform::lock::Held> {
    let p = roots.run.join("volumes.lock");
    platform::lock::exclusive(&p, true)?.ok_or_else(|| Error::Busy("volumes.lock".into()))
}

/// One volume's own lock, `{run}/volumes.d/<name>.lock`, taken without waiting: a second
/// mutating operation on the same volume is refused with [`Error::Busy`] instead of queueing
/// behind the first, so a caller never sees a mix of two.
pub fn volume_lock(roots: &Roots, name: &str) -> Result<platform::lock::Held> {
    spec::check_name(name).map_err(Error::BadName)?;
    let p = roots.run.join("volumes.d").join(format!("{name}.lock"));
    platform::lock::exclusive(&p, false)?.ok_or_else(|| Error::Busy(name.into()))
}

/// A new volume's source is checked before its zvol is planned (a spec dropped into the spool
/// gets the same checks as the CLI's): one that cannot be read safely makes the spec invalid,
/// reported with the reason, and the other volumes go ahead.
pub(crate) fn refuse_bad_sources(env: &Env, spool: &mut Spool, zvols: &[Zvol]) {
    let bad: Vec<(String, SpecError)> = spool
        .volumes
        .iter()
        .filter(|(name, v)| {
            v.source.is_some()
                && !zvols
                    .iter()
                    .any(|z| &z.volume == *name && !z.staging && z.ready)
        })
        .filter_map(|(name, v)| {
            let src = v.source.as_ref()?;
            let e = zvol::check_source(env.tools, src, v.size, &env.cfg.imports()).err()?;
            Some((
                name.clone(),
                SpecError {
                    file: ["toml", "json"]
                        .iter()
                        .map(|x| env.cfg.spool.join(format!("{name}.{x}")))
                        .find(|p| p.exists())
                        .unwrap_or_else(|| env.cfg.spool.join(name))
                        .display()
                        .to_string(),
                    field: "source".into(),
                    msg: platform::chain(&e),
                },
            ))
        })
        .collect();
    for (name, e) in bad {
        spool.volumes.remove(&name);
        spool.invalid.push(e);
    }
}

/// Observe, plan, apply. The caller holds the lock and has checked the vault
/// ([`Env::check_vault`]).
pub fn pass(env: &Env, dry_run: bool) -> Result<(Plan, Report)> {
    let t0 = Instant::now();
    if !dry_run {
        env.ensure_spool()?;
    }
    let spool = read_spool_with(&env.cfg.spool, env.cache.as_deref().map(|c| &c.specs))?;
    let vols = spool.volumes.clone();
    let t_read = t0.elapsed();
    let gate = env.gate(dry_run, &spool)?;
    let (mut have, observed) = env.observe()?;
    // A kept zvol list carries the free space of its read; a volume about to be created is
    // checked against the free-space floor as it is now.
    if let (Some(c), true) = (&env.cache, have.zvols_kept) {
        let known: BTreeSet<&str> = have.zvols.iter().map(|z| z.volume.as_str()).collect();
        if vols.keys().any(|n| !known.contains(n.as_str())) {
            have.pool = env.pool_space()?;
            c.set_pool(have.pool);
        }
    }
    let mut spool = spool;
    refuse_bad_sources(env, &mut spool, &have.zvols);
    let t = Instant::now();
    let p = plan(env, spool, &have, &gate, !dry_run)?;
    let breakdown = format!(
        "read {} specs {} ms; observed {observed}; planned {} steps {} ms",
        vols.len(),
        t_read.as_millis(),
        p.steps(),
        t.elapsed().as_millis()
    );
    // Quiet when idle (the daemon passes every 30 s); said when there is work or it was slow.
    if p.steps() > 0 || t0.elapsed() > Duration::from_secs(2) {
        log(format!("pass: {breakdown}"));
    }
    for e in &p.invalid {
        log(format!(
            "invalid spec, nothing is removed until it is fixed: {e}"
        ));
    }
    for c in &p.conflicts {
        log(format!("{}: left as it is: {}", c.name, c.msg));
    }
    for (name, why) in &p.held {
        log(format!("{name}: kept: {why}"));
    }
    if dry_run {
        return Ok((
            p,
            Report {
                breakdown,
                ..Report::default()
            },
        ));
    }
    // A tombstone whose volume has a spec again, or no zvol left, has nothing more to do.
    let store = env.store();
    for name in &gate.deleted {
        let has_zvol = have.zvols.iter().any(|z| &z.volume == name && !z.staging);
        if vols.contains_key(name) || !has_zvol {
            if !vols.contains_key(name) {
                store.forget_volume(name)?;
            }
            store.clear_tombstone(name)?;
        }
    }
    // Whatever the outcome, a pass that set out to change zvols has the next one read them.
    if let (Some(c), false) = (&env.cache, p.zvols.is_empty()) {
        c.zvols_changed();
    }
    // Any step may reach nvmet (a new zvol is exported in the same pass).
    if let (Some(c), true) = (&env.cache, p.steps() > 0) {
        c.nvmet_changed();
    }
    let mut r = if p.steps() == 0 {
        Report::default()
    } else {
        apply(env, &p, &vols)?
    };
    // Every zvol step of this pass succeeded, the discards of what an earlier pass left
    // included: no creation is pending. (A failed pass keeps the record for the next.)
    zvol::Intent::clear(&env.cfg.state)?;
    r.breakdown = breakdown;
    // The set of volumes changed: the spool moves to a new generation, so an older copy of it
    // (a restored backup) is recognised and not trusted with deletions.
    if let Some(id) = gate.spool_id {
        let new_names = p.wanted.iter().any(|w| !gate.seen.contains(&w.vol.name));
        let destroyed = p.zvols.iter().any(|z| matches!(z, ZOp::Destroy { .. }));
        if new_names || destroyed {
            env.markers().write(guard::SpoolId {
                id: id.id,
                generation: id.generation + 1,
            })?;
        }
    }
    Ok((p, r))
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_second_operation_on_a_busy_volume_is_refused_at_once() {
        let d = tempfile::tempdir().unwrap();
        let roots = Roots::under(d.path());
        std::fs::create_dir_all(&roots.run).unwrap();
        let held = volume_lock(&roots, "web").unwrap();
        assert!(matches!(volume_lock(&roots, "web"), Err(Error::Busy(n)) if n == "web"));
        // Another volume goes ahead; a name that is not one is refused before any file.
        let other = volume_lock(&roots, "db").unwrap();
        assert!(matches!(
            volume_lock(&roots, "../x"),
            Err(Error::BadName(_))
        ));
        drop(held);
        let _again = volume_lock(&roots, "web").unwrap();
        drop(other);
    }
    use super::*;
    use crate::cmd::fake::FakeZfs;
    use crate::cmd::ZFS;
    use ktarget::cfs::fake::FaultyFs;

    fn env<'a>(d: &Path, fs: &'a FaultyFs) -> Env<'a> {
        // Plans run no tool; a test that applies gives its own zfs (`env_with`).
        let zfs = Box::leak(Box::new(FakeZfs::new(d, &["persist"])));
        env_with(d, fs, zfs)
    }

    fn env_with<'a>(d: &Path, fs: &'a FaultyFs, tools: &'a FakeZfs) -> Env<'a> {
        let cfg = Config {
            spool: d.join("spool"),
            state: d.join("state"),
            ..Config::default()
        };
        std::fs::create_dir_all(&cfg.spool).unwrap();
        Env {
            roots: Roots::under(d),
            cfg,
            fs,
            tools,
            cache: None,
        }
    }

    fn spec(e: &Env, name: &str, t: &str) {
        std::fs::write(
            e.cfg.spool.join(format!("{name}.toml")),
            format!("name=\"{name}\"\nsize=\"1G\"\nvm=\"vm1\"\ntransport=\"{t}\"\n"),
        )
        .unwrap();
    }

    /// A pass's plan: the gate read as a pass reads it.
    fn plan_for(e: &Env, have: &Observed) -> Plan {
        let spool = read_spool(&e.cfg.spool).unwrap();
        let g = e.gate(false, &spool).unwrap();
        plan(e, spool, have, &g, true).unwrap()
    }

    /// What a finished pass leaves for the spool's volumes: their zvols and nvmet objects.
    fn applied(e: &Env, zvols: Vec<Zvol>) -> Observed {
        let p = plan_for(e, &Observed::default());
        let (nvmet, _) = plan::targets(&p.wanted, "persist", &e.cfg).unwrap();
        Observed {
            zvols,
            nvmet,
            ..Observed::default()
        }
    }

    fn zv(name: &str) -> Zvol {
        Zvol {
            dataset: format!("persist/vault/volumes/{name}"),
            volume: name.into(),
            vm: "vm1".into(),
            volsize: 1 << 30,
            volblocksize: 16384,
            refreservation: 0,
            used: 0,
            snapshots_used: 0,
            ready: true,
            staging: false,
        }
    }

    /// A spool of `(name, transport)` volumes for VM `vm1`, as read from specs.
    fn spool_of(vols: &[(&str, &str)]) -> Spool {
        let volumes = vols
            .iter()
            .map(|(n, t)| {
                let text = format!("name=\"{n}\"\nsize=\"1G\"\nvm=\"vm1\"\ntransport=\"{t}\"\n");
                let v = spec::RawSpec::parse("t.toml", &text)
                    .unwrap()
                    .validate("t.toml")
                    .unwrap();
                (n.to_string(), v)
            })
            .collect();
        Spool {
            volumes,
            invalid: Vec::new(),
        }
    }

    #[test]
    fn the_plan_is_pure_once_identities_are_given_and_refused_volumes_get_none() {
        // No store, no spool directory, no configfs: the draft and the decision read nothing.
        let cfg = Config::default();
        let spool = spool_of(&[("a", "nvme-tcp"), ("big", "nvme-tcp")]);
        let have = Observed {
            pool: Some((10 << 30, 1 << 30)),
            ..Observed::default()
        };
        let gate = Gate {
            untrusted: None,
            spool_id: None,
            seen: BTreeSet::new(),
            deleted: BTreeSet::new(),
        };
        let mut spool = spool;
        spool.volumes.get_mut("big").unwrap().thin = false;
        spool.volumes.get_mut("big").unwrap().size = 8 << 30;
        let d = draft(&cfg, &spool, &have, &gate);
        assert_eq!(d.zops, [ZOp::Create { name: "a".into() }], "{d:?}");
        assert!(!d.goes_ahead("big") && d.goes_ahead("a"), "{d:?}");
        let ids = ids::VolumeIds {
            serial: "SERIAL-A".into(),
            ..ids::new_volume_ids()
        };
        let wanted = vec![Wanted {
            vol: spool.volumes["a"].clone(),
            ids: ids.clone(),
            host: ids::new_host_ids("vm1"),
        }];
        let p1 = decide(
            &cfg,
            spool_of(&[("a", "nvme-tcp")]),
            &have,
            &gate,
            d.clone(),
            wanted.clone(),
        )
        .unwrap();
        let p2 = decide(
            &cfg,
            spool_of(&[("a", "nvme-tcp")]),
            &have,
            &gate,
            d,
            wanted,
        )
        .unwrap();
        assert_eq!(p1.render(), p2.render(), "same inputs, same plan");
        assert!(
            p1.nvmet_up
                .iter()
                .any(|o| matches!(o, nvmet::Op::AddSubsystem { nqn, serial, .. }
                if *nqn == ids::subsystem_nqn("a") && serial == "SERIAL-A")),
            "{:?}",
            p1.nvmet_up
        );
        assert_eq!(p1.wanted.len(), 1);
        assert!(
            p1.conflicts.iter().any(|c| c.name == "big"),
            "{:?}",
            p1.conflicts
        );
    }

    #[test]
    fn a_new_volume_gets_a_zvol_then_exports_and_its_ids_are_kept() {
        let d = tempfile::tempdir().unwrap();
        let fs = FaultyFs::default();
        let e = env(d.path(), &fs);
        spec(&e, "a", "nvme-loop");
        let p = plan_for(&e, &Observed::default());
        assert_eq!(p.zvols, [ZOp::Create { name: "a".into() }]);
        assert!(p.nvmet_down.is_empty() && !p.nvmet_up.is_empty());
        assert_eq!(p.connect, ["a"]);
        let r = p.render();
        assert!(
            r.contains("zfs: create zvol for a") && r.contains("over loop"),
            "{r}"
        );
        let ids = e.store().volume("a").unwrap().unwrap();
        let p2 = plan_for(&e, &Observed::default());
        assert_eq!(p2.wanted[0].ids, ids, "identities persist across passes");
    }

    #[test]
    fn a_dry_run_stores_nothing() {
        let d = tempfile::tempdir().unwrap();
        let fs = FaultyFs::default();
        let e = env(d.path(), &fs);
        spec(&e, "a", "nvme-tcp");
        let g = e.gate(true, &read_spool(&e.cfg.spool).unwrap()).unwrap();
        plan(
            &e,
            read_spool(&e.cfg.spool).unwrap(),
            &Observed::default(),
            &g,
            false,
        )
        .unwrap();
        assert!(e.store().volume("a").unwrap().is_none());
        assert_eq!(e.markers().read().unwrap(), (None, None));
        assert!(e.store().host("vm1").unwrap().is_none());
    }

    #[test]
    fn an_invalid_spec_removes_nothing_and_a_deleted_one_is_torn_down() {
        let d = tempfile::tempdir().unwrap();
        let fs = FaultyFs::default();
        let e = env(d.path(), &fs);
        spec(&e, "a", "nvme-tcp");
        spec(&e, "b", "nvme-tcp");
        let have = applied(&e, vec![zv("a"), zv("b")]);
        assert_eq!(plan_for(&e, &have).steps(), 0);
        // b's file gets a typo: b stays as it is, nothing is torn down.
        std::fs::write(e.cfg.spool.join("b.toml"), "name=\"b\"\nsize=\"1Q\"\n").unwrap();
        let p = plan_for(&e, &have);
        assert!(p.additive_only);
        assert_eq!(p.steps(), 0, "{}", p.render());
        assert!(p.render().contains("b.toml"), "{}", p.render());
        // b's file is removed: b's exports go first, then its zvol.
        std::fs::remove_file(e.cfg.spool.join("b.toml")).unwrap();
        let p = plan_for(&e, &have);
        assert!(!p.nvmet_down.is_empty());
        assert!(p.nvmet_up.is_empty());
        assert_eq!(
            p.zvols,
            [ZOp::Destroy {
                name: "b".into(),
                dataset: "persist/vault/volumes/b".into()
            }]
        );
    }

    #[test]
    fn no_single_fault_deletes_a_volume() {
        let d = tempfile::tempdir().unwrap();
        let fs = FaultyFs::default();
        let e = env(d.path(), &fs);
        spec(&e, "a", "nvme-tcp");
        spec(&e, "b", "nvme-loop");
        let have = applied(&e, vec![zv("a"), zv("b")]);
        let mut have = have;
        have.loops.insert(
            ids::subsystem_nqn("b"),
            vec![hostside::Ctrl {
                name: "nvme3".into(),
                subsysnqn: ids::subsystem_nqn("b"),
                hostnqn: ids::host_nqn("vm1"),
                transport: "loop".into(),
                state: "live".into(),
            }],
        );
        assert_eq!(plan_for(&e, &have).steps(), 0);
        let kept = |p: &Plan| {
            assert!(
                p.steps() == 0 && p.held.len() == 2 && p.additive_only,
                "{}",
                p.render()
            );
        };
        // The spool directory is lost and made again, empty: nothing goes.
        std::fs::remove_dir_all(&e.cfg.spool).unwrap();
        e.ensure_spool().unwrap();
        let p = plan_for(&e, &have);
        kept(&p);
        assert!(p.render().contains("not trusted"), "{}", p.render());
        // An older copy of the spool (a restored backup) is not trusted either.
        let m = e.markers();
        let (_, st) = m.read().unwrap();
        let st = st.unwrap();
        std::fs::write(
            &m.spool,
            serde_json::to_vec(&guard::SpoolId {
                id: st.id,
                generation: st.generation.saturating_sub(1),
            })
            .unwrap(),
        )
        .unwrap();
        std::fs::write(
            &m.state,
            serde_json::to_vec(&guard::SpoolId {
                generation: st.generation + 1,
                ..st
            })
            .unwrap(),
        )
        .unwrap();
        kept(&plan_for(&e, &have));
        // The state is lost too (or the spool is read from somewhere else): unseen zvols are kept.
        std::fs::remove_dir_all(&e.cfg.state).unwrap();
        std::fs::remove_file(&m.spool).unwrap();
        let p = plan_for(&e, &have);
        assert!(p.steps() == 0 && p.held.len() == 2, "{}", p.render());
        assert!(p.render().contains("never saw it"), "{}", p.render());
        // An explicit deletion goes through whatever the spool's state.
        std::fs::remove_file(&m.spool).unwrap();
        e.store().tombstone("a").unwrap();
        let p = plan_for(&e, &have);
        assert!(
            p.zvols
                .iter()
                .any(|z| matches!(z, ZOp::Destroy { name, .. } if name == "a")),
            "{}",
            p.render()
        );
        assert!(
            !p.zvols
                .iter()
                .any(|z| matches!(z, ZOp::Destroy { name, .. } if name == "b")),
            "{}",
            p.render()
        );
        assert!(
            p.disconnect.is_empty(),
            "b's loop connection stays: {}",
            p.render()
        );
    }

    #[test]
    fn a_spooled_volume_over_the_free_space_floor_is_refused_and_the_rest_go_ahead() {
        let d = tempfile::tempdir().unwrap();
        let fs = FaultyFs::default();
        let e = env(d.path(), &fs);
        spec(&e, "a", "nvme-tcp");
        std::fs::write(
            e.cfg.spool.join("big.toml"),
            "name=\"big\"\nsize=\"50G\"\nvm=\"vm1\"\ntransport=\"nvme-tcp\"\nprovisioning=\"thick\"\n",
        )
        .unwrap();
        let have = Observed {
            pool: Some((100 << 30, 40 << 30)),
            ..Observed::default()
        };
        let p = plan_for(&e, &have);
        assert_eq!(
            p.zvols,
            [ZOp::Create { name: "a".into() }],
            "{}",
            p.render()
        );
        assert!(p
            .conflicts
            .iter()
            .any(|c| c.name == "big" && c.msg.contains("floor")));
        assert!(p.wanted.iter().all(|w| w.vol.name != "big"));
    }

    #[test]
    fn a_volume_in_conflict_keeps_its_exports() {
        let d = tempfile::tempdir().unwrap();
        let fs = FaultyFs::default();
        let e = env(d.path(), &fs);
        spec(&e, "a", "nvme-tcp");
        let mut z = zv("a");
        z.volsize = 2 << 30; // the spec asks for less than the zvol has
        let have = applied(&e, vec![z]);
        let p = plan_for(&e, &have);
        assert_eq!(p.conflicts.len(), 1);
        assert_eq!(p.steps(), 0, "{}", p.render());
    }

    #[test]
    fn duplicate_and_misnamed_spool_files_are_reported_not_applied() {
        let d = tempfile::tempdir().unwrap();
        let fs = FaultyFs::default();
        let e = env(d.path(), &fs);
        spec(&e, "a", "nvme-tcp");
        std::fs::write(
            e.cfg.spool.join("a.json"),
            r#"{"name":"a","size":"1G","vm":"v","transport":"nvme-tcp"}"#,
        )
        .unwrap();
        std::fs::write(e.cfg.spool.join("a.toml~"), "junk").unwrap();
        let s = read_spool(&e.cfg.spool).unwrap();
        assert_eq!(s.volumes.len(), 1);
        assert_eq!(s.invalid.len(), 1);
        assert!(s.invalid[0].msg.contains("another file"));
    }

    #[test]
    fn a_kept_spool_reads_as_a_fresh_one_after_every_kind_of_change() {
        let d = tempfile::tempdir().unwrap();
        let fs = FaultyFs::default();
        let e = env(d.path(), &fs);
        let memo = Memo::default();
        let same = |why: &str| {
            let kept = read_spool_with(&e.cfg.spool, Some(&memo)).unwrap();
            let fresh = read_spool(&e.cfg.spool).unwrap();
            assert_eq!(kept.volumes, fresh.volumes, "{why}");
            assert_eq!(kept.invalid, fresh.invalid, "{why}");
            kept
        };
        for n in ["a", "b", "c"] {
            spec(&e, n, "nvme-tcp");
        }
        assert_eq!(same("first read").volumes.len(), 3);
        assert_eq!(memo.len(), 3);
        same("nothing changed");
        // Rewritten in place: broken, then fixed with another transport.
        std::thread::sleep(Duration::from_millis(10));
        spec(&e, "a", "nvme-loo_");
        assert_eq!(same("a broken in place").invalid.len(), 1);
        std::thread::sleep(Duration::from_millis(10));
        spec(&e, "a", "nvme-loop");
        let s = same("a fixed");
        assert_eq!(s.volumes["a"].transport, Transport::NvmeLoop);
        std::fs::remove_file(e.cfg.spool.join("b.toml")).unwrap();
        assert!(!same("b removed").volumes.contains_key("b"));
        assert_eq!(memo.len(), 2, "a removed spec is forgotten");
        std::fs::write(
            e.cfg.spool.join("c.json"),
            r#"{"name":"c","size":"1G","vm":"v","transport":"nvme-tcp"}"#,
        )
        .unwrap();
        assert_eq!(same("c declared twice").invalid.len(), 1);
    }

    #[test]
    fn a_kept_identity_is_read_again_once_its_file_is_replaced() {
        let d = tempfile::tempdir().unwrap();
        let fs = FaultyFs::default();
        let mut e = env(d.path(), &fs);
        e.cache = Some(std::sync::Arc::new(Cache::new(Duration::from_secs(600))));
        let s = e.store();
        let first = s.volume_or_new("a").unwrap();
        assert_eq!(s.volume("a").unwrap(), Some(first.clone()));
        s.forget_volume("a").unwrap();
        assert_eq!(s.volume("a").unwrap(), None, "a forgotten identity is gone");
        let second = s.volume_or_new("a").unwrap();
        assert_ne!(first, second);
        assert_eq!(s.volume("a").unwrap(), Some(second), "the new file is read");
        // A damaged file is an error naming it, kept or not.
        std::fs::write(d.path().join("state/volumes/a.json"), "{}").unwrap();
        let err = s.volume("a").unwrap_err().to_string();
        assert!(err.contains("a.json"), "{err}");
    }

    #[test]
    fn a_missing_device_link_holds_only_that_volumes_exports() {
        let ns = |name: &str| nvmet::Op::PutNamespace {
            nqn: ids::subsystem_nqn(name),
            nsid: 1,
            spec: nvmet::Namespace {
                device_path: zvol::export_path(&format!("persist/vault/volumes/{name}")),
                ..Default::default()
            },
            exists: false,
        };
        let bs = |name: &str| lio::Op::AddBackstore {
            name: format!("bs-{name}"),
            spec: lio::Backstore {
                udev_path: zvol::export_path(&format!("persist/vault/volumes/{name}")),
                ..Default::default()
            },
        };
        let vh = |name: &str| lio::Op::AddVhost {
            wwpn: format!("naa.{name}"),
            spec: lio::VhostTarget {
                nexus: "naa.x".into(),
                lun0: format!("bs-{name}"),
            },
        };
        let p = Plan {
            lio_up: vec![bs("a"), bs("b"), vh("a"), vh("b")],
            nvmet_up: vec![
                nvmet::Op::AddSubsystem {
                    nqn: ids::subsystem_nqn("a"),
                    serial: "1".into(),
                    model: "m".into(),
                },
                ns("a"),
                ns("b"),
            ],
            revalidate: vec![ids::subsystem_nqn("a"), ids::subsystem_nqn("b")],
            connect: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        let all = exports_without(&p, &BTreeSet::new());
        assert!(all.held.is_empty());
        assert_eq!((all.lio_up.len(), all.nvmet_up.len()), (4, 3));
        assert_eq!((all.revalidate.len(), all.connect.len()), (2, 2));

        let missing = BTreeSet::from([zvol::export_path("persist/vault/volumes/b")]);
        let e = exports_without(&p, &missing);
        assert_eq!(e.lio_up, vec![bs("a"), vh("a")]);
        assert_eq!(e.nvmet_up.len(), 2, "a's subsystem and namespace");
        assert!(e.nvmet_up.contains(&ns("a")) && !e.nvmet_up.contains(&ns("b")));
        assert_eq!(e.revalidate, vec![ids::subsystem_nqn("a")]);
        assert_eq!(e.connect, vec!["a".to_string()]);
        assert_eq!(e.held.len(), 5, "{:?}", e.held);
        assert!(e.held.iter().all(|h| h.contains("b")), "{:?}", e.held);
    }

    /// A box with an unlocked vault (in the fake zfs) and nvmet's configfs tree.
    fn whole_box(d: &Path) -> (FaultyFs, FakeZfs) {
        let roots = Roots::under(d);
        for s in ["hosts", "subsystems", "ports"] {
            std::fs::create_dir_all(roots.configfs.join("nvmet").join(s)).unwrap();
        }
        let fs = FaultyFs::with_groups(vec![
            ("subsystems", vec!["namespaces", "allowed_hosts"]),
            ("ports", vec!["subsystems", "referrals"]),
        ]);
        (fs, FakeZfs::new(&roots.dev, &["persist", "persist/vault"]))
    }

    fn subsystem(e: &Env, name: &str) -> std::path::PathBuf {
        e.nvmet_tree()
            .root
            .join("subsystems")
            .join(ids::subsystem_nqn(name))
    }

    #[test]
    fn a_whole_pass_makes_zvols_and_exports_and_the_next_pass_changes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let (fs, zfs) = whole_box(d.path());
        let e = env_with(d.path(), &fs, &zfs);
        spec(&e, "a", "nvme-tcp");
        spec(&e, "b", "nvme-tcp");
        let (p, r) = pass(&e, false).unwrap();
        assert!(r.changed() > 0, "{}", p.render());
        assert_eq!(
            zfs.volumes(),
            ["persist/vault/volumes/a", "persist/vault/volumes/b"]
        );
        // Made in place, tagged ready in the same create, under a parent made once.
        let creates = zfs.take_calls("zfs create");
        assert_eq!(creates.len(), 3, "{creates:#?}");
        assert!(creates[0].ends_with("volmode=dev persist/vault/volumes"));
        assert!(creates[1..]
            .iter()
            .all(|c| c.contains("org.lfedge.eve:content=ready") && c.contains(" -s ")));
        assert!(subsystem(&e, "a").join("namespaces/1").exists());
        assert!(!e.cfg.state.join(zvol::Intent::FILE).exists());
        // Idempotent: the next pass has no step and runs no zfs command that changes anything.
        let (p2, r2) = pass(&e, false).unwrap();
        assert_eq!((p2.steps(), r2.changed()), (0, 0), "{}", p2.render());
        let writes: Vec<String> = zfs
            .take_calls("zfs")
            .into_iter()
            .filter(|c| !c.starts_with("zfs list") && !c.starts_with("zfs get"))
            .collect();
        assert!(writes.is_empty(), "{writes:?}");
        // b's spec is removed: its exports go, then its zvol; a is not touched.
        std::fs::remove_file(e.cfg.spool.join("b.toml")).unwrap();
        pass(&e, false).unwrap();
        assert_eq!(zfs.volumes(), ["persist/vault/volumes/a"]);
        assert!(!subsystem(&e, "b").exists() && subsystem(&e, "a").exists());
        assert_eq!(
            zfs.take_calls("zfs destroy"),
            ["zfs destroy -r persist/vault/volumes/b"]
        );
    }

    #[test]
    fn a_failed_create_leaves_the_rest_and_the_next_pass_finishes_it() {
        let d = tempfile::tempdir().unwrap();
        let (fs, zfs) = whole_box(d.path());
        let e = env_with(d.path(), &fs, &zfs);
        spec(&e, "a", "nvme-tcp");
        pass(&e, false).unwrap();
        spec(&e, "c", "nvme-tcp");
        zfs.fail("zfs create -s -V");
        let err = pass(&e, false).unwrap_err().to_string();
        assert!(
            err.contains("zfs create") && err.contains("injected"),
            "{err}"
        );
        assert_eq!(zfs.volumes(), ["persist/vault/volumes/a"]);
        assert!(!subsystem(&e, "c").exists(), "no export without its zvol");
        assert!(subsystem(&e, "a").exists());
        // The intent record stays for the next pass, which finishes the job.
        assert!(e.cfg.state.join(zvol::Intent::FILE).exists());
        pass(&e, false).unwrap();
        assert_eq!(
            zfs.volumes(),
            ["persist/vault/volumes/a", "persist/vault/volumes/c"]
        );
        assert!(subsystem(&e, "c").join("namespaces/1").exists());
    }

    #[test]
    fn a_zvol_that_is_not_ours_is_never_touched_and_an_inherited_tag_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let (fs, zfs) = whole_box(d.path());
        let e = env_with(d.path(), &fs, &zfs);
        spec(&e, "a", "nvme-tcp");
        pass(&e, false).unwrap();
        // Someone else's zvol under our parent (no tag), and one elsewhere with a tag.
        let t = &zfs as &dyn Tools;
        let run = |a: &[&str]| {
            t.run(
                ZFS,
                &a.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                None,
            )
            .unwrap()
        };
        run(&["create", "-V", "1024", "persist/vault/volumes/theirs"]);
        run(&[
            "create",
            "-V",
            "1024",
            "-o",
            "org.lfedge.eve:volume=a",
            "persist/vault/a",
        ]);
        zfs.take_calls("");
        std::fs::remove_file(e.cfg.spool.join("a.toml")).unwrap();
        pass(&e, false).unwrap();
        assert_eq!(
            zfs.take_calls("zfs destroy"),
            ["zfs destroy -r persist/vault/volumes/a"]
        );
        assert_eq!(
            zfs.volumes(),
            ["persist/vault/a", "persist/vault/volumes/theirs"]
        );
        // A zvol whose tag is inherited, not set on it, is refused at destroy time.
        run(&["create", "-V", "1024", "persist/vault/volumes/x"]);
        let err = zvol::destroy_volume(t, "persist/vault/volumes/x").unwrap_err();
        assert!(err.to_string().contains("not ours to destroy"), "{err}");
    }
}
