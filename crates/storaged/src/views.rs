//! What `storagectl` and the daemon both show and do: the policy in force on the pool, the
//! maintenance view (scrub and TRIM due, running, last), a scrub or TRIM asked by hand, and the
//! health view (alerts, the journal's recent events).

use crate::error::{Error, Result};
use crate::{cmd, gather, health, journal, maint, record};

/// Seconds since the epoch now (0 if the clock is before it).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The policy storage-init last applied on `pool` (kept there), else the image's, else built in.
/// The policy storage-init last applied on `pool`, else the built-in one.
pub fn policy(pool: &str) -> storage::policy::Policy {
    storage::config::last_good_policy(pool).unwrap_or_else(storage::policy::Policy::builtin)
}

/// The maintenance view of `pool` as it is now (for `storagectl status`), changing nothing: the
/// schedule storage-init last applied, the pool's records and the history on the pool.
pub fn view(pool: &str, root: &std::path::Path) -> Result<maint::View> {
    let sched = maint::Schedule::from_policy(&policy(pool).maintenance);
    let st = cmd::status(pool)?;
    let created = cmd::created(pool)?;
    let mut rec = record::Record::load(&record::path(root, pool))?;
    let t = now();
    rec.observe(&st, t);
    Ok(maint::decide(&st, &rec, created, &sched, t))
}

/// Runs `ask` on `pool` now, unless the pool's state refuses it ([`maint::allow`]); the
/// scheduler sees what was done in the pool's own records.
pub fn maintain_now(pool: &str, ask: maint::Ask) -> Result<()> {
    let st = cmd::status(pool)?;
    maint::allow(&st, ask, now())
        .map_err(|why| Error::Refused(format!("{pool}: {}: {why}", ask.as_str())))?;
    match ask {
        maint::Ask::ScrubNow => cmd::scrub(pool),
        maint::Ask::ScrubStop => cmd::scrub_stop(pool),
        maint::Ask::TrimNow => cmd::trim(pool),
    }?;
    platform::log(format!("{pool}: {} (asked by hand)", ask.as_str()));
    Ok(())
}

/// The health view of `pool` as it is now (for `storagectl health`): a fresh look at the drives
/// and the pool, with the journal on the pool for when each alert began and what happened last.
/// Writes nothing: the journal is storaged's.
pub fn health_view(pool: &str, root: &std::path::Path) -> health::HealthView {
    let tiers = policy(pool).health.tiers();
    let t = now();
    let observed = gather::observe(&platform::Roots::host(), pool, t);
    let alerts = health::assess(&observed, tiers);
    let (mut j, journal_error) = match journal::Journal::load(&journal::path(root, pool)) {
        Ok(j) => (j, None),
        Err(e) if observed.pool.is_some() => {
            (journal::Journal::default(), Some(platform::chain(&e)))
        }
        Err(_) => (journal::Journal::default(), None),
    };
    let skip = j.events.len().saturating_sub(health::RECENT_EVENTS);
    let events = j.events[skip..].to_vec();
    j.update(&alerts, &observed.unknown(), t);
    health::HealthView {
        observed,
        alerts: j.active,
        events,
        journal_error,
        problems: Vec::new(),
        exit_code: 0,
    }
    .finish()
}
