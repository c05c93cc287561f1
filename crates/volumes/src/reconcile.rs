//! One reconcile pass over every volume: read the spool, observe zvols, nvmet, LIO and loop
//! connections, plan (pure, in [`crate::target`] and `ktarget`), then apply in dependency order.
//! Every step is idempotent, so a pass interrupted anywhere (crash, SIGKILL, power cut) is
//! finished by the next one.

use crate::apply::{apply, Report};
use crate::decide::{self, Plan};
use crate::env::Env;
use crate::error::{Error, Result};
use crate::guard;
use crate::spec::{self, SpecError};
use crate::spool::{self, Spool};
use crate::target::ZOp;
use crate::zvol::{self, Zvol};
use platform::log;
use platform::Roots;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

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
    let spool = spool::read_spool_with(&env.cfg.spool, env.cache.as_deref().map(|c| &c.specs))?;
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
    let p = decide::for_pass(env, spool, &have, &gate, !dry_run)?;
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
    use crate::apply::exports_without;
    use crate::cache::Cache;
    use crate::cmd::fake::FakeZfs;
    use crate::cmd::Tools;
    use crate::cmd::ZFS;
    use crate::config::Config;
    use crate::decide::{decide, draft};
    use crate::env::{Gate, Observed};
    use crate::hostside;
    use crate::ids;
    use crate::memo::Memo;
    use crate::spec::Transport;
    use crate::spool::{read_spool, read_spool_with};
    use crate::target::{self, Wanted};
    use ktarget::cfs::fake::FaultyFs;
    use ktarget::lio;
    use ktarget::nvmet;
    use std::path::Path;

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
        decide::for_pass(e, spool, have, &g, true).unwrap()
    }

    /// What a finished pass leaves for the spool's volumes: their zvols and nvmet objects.
    fn applied(e: &Env, zvols: Vec<Zvol>) -> Observed {
        let p = plan_for(e, &Observed::default());
        let (nvmet, _) = target::targets(&p.wanted, "persist", &e.cfg).unwrap();
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
        decide::for_pass(
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
