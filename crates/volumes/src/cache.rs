//! What the daemon keeps between passes, so that a pass with nothing to do costs what changed and
//! not what exists: spec and identity files are re-parsed only when their inode, size, mtime or
//! ctime moved, and the zvol list (the costly `zfs list` with our user properties) is re-read
//! only when a pass changed a zvol, when the set of zvol device links under our parents differs
//! from the one seen at the last read, or when the full re-read interval is up. configfs gives
//! no change events, so nvmet is read every pass, but lightly once an earlier read is kept
//! ([`ktarget::nvmet::observe_since`]: enablement and who may connect, not the attributes the
//! kernel fixes under an enabled namespace); a pass that changed nvmet, or the full re-read
//! interval, has the next pass read it in full. A namespace disabled by hand is still repaired
//! by the next pass. LIO and loop connections are read every pass. The CLI runs without a
//! cache: every `storagectl volume reconcile` is a full re-read.

use crate::zvol::{self, Zvol};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::memo::Memo;

#[derive(Debug)]
struct Zvols {
    list: Vec<Zvol>,
    pool: Option<(u64, u64)>,
    links: BTreeSet<String>,
    read_at: Instant,
    /// A pass changed zvols since this list was read.
    changed: bool,
}

/// Why the zvols were read again, or that they were not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZvolSource {
    /// No cache (the CLI), or the first pass.
    Full,
    /// The last pass changed zvols.
    Changed,
    /// A zvol device link appeared or went away outside a pass.
    Links,
    /// The full re-read interval was up.
    Timer,
    Cached,
}

impl std::fmt::Display for ZvolSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ZvolSource::Full => "read",
            ZvolSource::Changed => "read (a pass changed zvols)",
            ZvolSource::Links => "read (zvol links changed)",
            ZvolSource::Timer => "read (periodic full re-read)",
            ZvolSource::Cached => "kept",
        })
    }
}

/// Zvols as observed, the pool's (size, free) bytes, and how the list was had.
pub type ZvolView = (Vec<Zvol>, Option<(u64, u64)>, ZvolSource);

/// The daemon's memory between passes (see the module docs).
#[derive(Debug)]
pub struct Cache {
    pub specs: Memo<Result<crate::spec::Volume, crate::spec::SpecError>>,
    /// The identity files' memos, shared with the identity store.
    pub ids: std::sync::Arc<crate::ids::Memos>,
    zvols: Mutex<Option<Zvols>>,
    /// The last nvmet observation and when its full read was.
    nvmet: Mutex<Option<(ktarget::nvmet::Nvmet, Instant)>>,
    /// How long an observed zvol list is trusted when no link and no pass says it changed.
    pub full_every: Duration,
}

impl Cache {
    pub fn new(full_every: Duration) -> Cache {
        Cache {
            specs: Memo::default(),
            ids: Default::default(),
            zvols: Mutex::new(None),
            nvmet: Mutex::new(None),
            full_every,
        }
    }

    /// nvmet as observed now: a light read against the kept observation, or a full one when
    /// nothing is kept or its full read is older than the interval. Says which it was.
    pub fn nvmet(
        &self,
        read: impl FnOnce(Option<&ktarget::nvmet::Nvmet>) -> crate::Result<ktarget::nvmet::Nvmet>,
    ) -> crate::Result<(ktarget::nvmet::Nvmet, bool)> {
        let mut k = self.nvmet.lock().unwrap_or_else(|e| e.into_inner());
        let kept = k.take().filter(|(_, at)| at.elapsed() < self.full_every);
        let light = kept.is_some();
        let n = read(kept.as_ref().map(|(n, _)| n))?;
        let at = kept.map_or_else(Instant::now, |(_, at)| at);
        *k = Some((n.clone(), at));
        Ok((n, light))
    }

    /// A pass is about to change nvmet (or failed part-way): the next one reads it in full.
    pub fn nvmet_changed(&self) {
        *self.nvmet.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The zvol list to plan with: the kept one, or `read()` when [`decide`] says so.
    pub fn zvols(
        &self,
        links: BTreeSet<String>,
        read: impl FnOnce() -> crate::Result<(Vec<Zvol>, Option<(u64, u64)>)>,
    ) -> crate::Result<ZvolView> {
        let mut z = self.zvols.lock().unwrap_or_else(|e| e.into_inner());
        let why = decide(
            z.as_ref()
                .map(|k| (&k.links, k.read_at.elapsed(), k.changed)),
            &links,
            self.full_every,
        );
        if let (ZvolSource::Cached, Some(k)) = (why, z.as_ref()) {
            return Ok((k.list.clone(), k.pool, why));
        }
        // Forgotten first: a failed read leaves nothing stale behind.
        *z = None;
        let (list, pool) = read()?;
        *z = Some(Zvols {
            list: list.clone(),
            pool,
            links,
            read_at: Instant::now(),
            changed: false,
        });
        Ok((list, pool, why))
    }

    /// The pool's free space changes with every write; a pass about to create volumes reads it.
    pub fn set_pool(&self, pool: Option<(u64, u64)>) {
        if let Some(k) = self
            .zvols
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            k.pool = pool;
        }
    }

    /// A pass changed zvols (or failed part-way): the next one reads them again.
    pub fn zvols_changed(&self) {
        let mut z = self.zvols.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = z.as_mut() {
            k.changed = true;
        }
    }
}

/// Whether the kept zvol list may be used: `kept` is the link set seen at the last read, its
/// age and whether a pass changed zvols since; `None` when nothing is kept.
pub fn decide(
    kept: Option<(&BTreeSet<String>, Duration, bool)>,
    links: &BTreeSet<String>,
    full_every: Duration,
) -> ZvolSource {
    match kept {
        None => ZvolSource::Full,
        Some((_, _, true)) => ZvolSource::Changed,
        Some((_, age, _)) if age >= full_every => ZvolSource::Timer,
        Some((had, _, _)) if had != links => ZvolSource::Links,
        Some(_) => ZvolSource::Cached,
    }
}

/// The zvol device links under our two parents, as dataset names: one directory read each, the
/// cheap sign that a zvol was made or destroyed outside a pass.
pub fn zvol_links(dev: &Path, pool: &str) -> BTreeSet<String> {
    let mut s = BTreeSet::new();
    for enc in [true, false] {
        let parent = zvol::parent(pool, enc);
        if let Ok(rd) = std::fs::read_dir(dev.join("zvol").join(&parent)) {
            for e in rd.flatten() {
                s.insert(format!("{parent}/{}", e.file_name().to_string_lossy()));
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zvol_list_is_kept_only_while_nothing_says_it_changed() {
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let a = l(&["p/vault/volumes/a"]);
        let hour = Duration::from_secs(3600);
        assert_eq!(decide(None, &a, hour), ZvolSource::Full);
        assert_eq!(
            decide(Some((&a, Duration::ZERO, false)), &a, hour),
            ZvolSource::Cached
        );
        assert_eq!(
            decide(Some((&a, hour, false)), &a, hour),
            ZvolSource::Timer,
            "drift that leaves the links alone (a property set by hand) is found on the timer"
        );
        assert_eq!(
            decide(Some((&a, Duration::ZERO, false)), &l(&[]), hour),
            ZvolSource::Links,
            "a zvol destroyed behind our back"
        );
        assert_eq!(
            decide(
                Some((&a, Duration::ZERO, false)),
                &l(&["p/vault/volumes/a", "p/x"]),
                hour
            ),
            ZvolSource::Links
        );
        assert_eq!(
            decide(Some((&a, Duration::ZERO, true)), &a, hour),
            ZvolSource::Changed
        );
    }

    #[test]
    fn a_pass_that_changed_zvols_or_a_failed_read_forces_a_read() {
        let c = Cache::new(Duration::from_secs(3600));
        let links = BTreeSet::from(["p/vault/volumes/a".to_string()]);
        let reads = std::cell::Cell::new(0);
        let read = || {
            reads.set(reads.get() + 1);
            Ok((Vec::new(), Some((10, 5))))
        };
        assert_eq!(c.zvols(links.clone(), read).unwrap().2, ZvolSource::Full);
        assert_eq!(c.zvols(links.clone(), read).unwrap().2, ZvolSource::Cached);
        assert_eq!(reads.get(), 1);
        c.zvols_changed();
        assert_eq!(c.zvols(links.clone(), read).unwrap().2, ZvolSource::Changed);
        assert_eq!(reads.get(), 2);
        c.zvols_changed();
        assert!(c
            .zvols(links.clone(), || Err(crate::Error::Refused(
                "zfs failed".into()
            )))
            .is_err());
        assert_eq!(
            c.zvols(links, read).unwrap().2,
            ZvolSource::Full,
            "nothing is kept from a failed read"
        );
    }

    #[test]
    fn nvmet_is_read_lightly_against_the_last_read_until_a_pass_changes_it_or_time_is_up() {
        use ktarget::nvmet::Nvmet;
        let c = Cache::new(Duration::from_secs(600));
        let mut n = Nvmet::default();
        n.ports.insert(1, Default::default());
        let seen = |c: &Cache, give: &Nvmet| {
            let mut had = None;
            let (_, light) = c
                .nvmet(|p| {
                    had = p.cloned();
                    Ok(give.clone())
                })
                .unwrap();
            (had, light)
        };
        assert_eq!(seen(&c, &n), (None, false), "the first read is full");
        assert_eq!(seen(&c, &Nvmet::default()), (Some(n.clone()), true));
        assert_eq!(
            seen(&c, &n),
            (Some(Nvmet::default()), true),
            "against the newest read"
        );
        c.nvmet_changed();
        assert_eq!(seen(&c, &n), (None, false), "a pass changed nvmet");
        let err = c.nvmet(|_| Err(crate::Error::Refused("configfs gone".into())));
        assert!(err.is_err());
        assert_eq!(
            seen(&c, &n),
            (None, false),
            "nothing is kept from a failed read"
        );
        let c = Cache::new(Duration::ZERO);
        seen(&c, &n);
        assert_eq!(seen(&c, &n), (None, false), "the interval is up");
    }
}
