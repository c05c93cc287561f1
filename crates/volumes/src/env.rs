//! What a pass works against and what it sees: the box ([`Env`]: roots, settings, configfs, the
//! tools, the identity store, the daemon's cache), what it observes (zvols, nvmet, LIO, loop
//! connections, the pool's space) and the gate that says what it may remove.

use crate::cache::{self, Cache, ZvolSource};
use crate::cmd::Tools;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::guard;
use crate::hostside;
use crate::ids::{self, Store};
use crate::spool::Spool;
use crate::target;
use crate::zvol::{self, Zvol};
use ktarget::lio::{self, Lio};
use ktarget::nvmet::{self, Nvmet};
use ktarget::Cfs;
use platform::IoContext;
use platform::Roots;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

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
    pub(crate) fn may_remove(&self, name: &str, spool_valid: bool) -> bool {
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
        Err(source) => Err(Error::Io(platform::io("read", dir)(source))),
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
            memo: self.cache.as_ref().map(|c| c.ids.clone()),
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
            .at("create", &self.cfg.spool)?;
        Ok(())
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
        let (tree, scope) = (self.nvmet_tree(), target::nvmet_scope(&self.cfg));
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
