//! Applying a plan: disconnects, export teardown, the zvol steps (removals first, then builds
//! under staging names or the intent record, a bounded number at a time), then the exports of
//! what has its device link, the size revalidations and the loop connects. Each step reports
//! whether it changed anything; a failure leaves the rest for the next pass.

use crate::cmd::Tools;
use crate::decide::Plan;
use crate::env::Env;
use crate::error::{Error, Result};
use crate::hostside;
use crate::ids;
use crate::import::ImportDir;
use crate::spec::{Format, Volume};
use crate::target::ZOp;
use crate::zvol;
use ktarget::lio;
use ktarget::nvmet;
use platform::log;
use platform::IoContext;
use platform::Roots;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    /// (step, whether it changed anything)
    pub steps: Vec<(String, bool)>,
    /// Where the pass's time went: specs read, each observed source, planning.
    pub breakdown: String,
}

impl Report {
    fn step(&mut self, what: String, changed: bool) {
        log(format!(
            "{what}: {}",
            if changed { "done" } else { "already so" }
        ));
        self.push(what, changed);
    }
    /// A step already logged when it finished.
    fn push(&mut self, what: String, changed: bool) {
        self.steps.push((what, changed));
    }
    pub fn changed(&self) -> usize {
        self.steps.iter().filter(|s| s.1).count()
    }
}

/// A staging zvol that came whole from elsewhere (a stream, a snapshot): our properties, the
/// spec's size when it asks for more than the copy has, then the ready marker; on a failure it is
/// destroyed, so nothing half-made stays.
fn finish_copied(t: &dyn Tools, stage: &str, v: &Volume) -> Result<()> {
    let finish = || -> Result<()> {
        zvol::set_props(t, stage, v)?;
        if zvol::volsize(t, stage)? < v.size {
            zvol::resize(t, stage, v.size)?;
        }
        zvol::mark_ready(t, stage)
    };
    finish().inspect_err(|_| {
        let _ = zvol::destroy(t, stage);
    })
}

/// Builds the zvol under its staging name (create or receive, then the initial content, then the
/// ready marker) and renames it into place, so a final name always means a complete volume. The
/// parent exists (see [`apply`]).
fn fill(
    (t, roots, imports): (&dyn Tools, &Roots, &ImportDir),
    v: &Volume,
    ds: &str,
    origin: Option<&str>,
) -> Result<()> {
    let stage = zvol::staging(ds);
    if let Some(o) = origin {
        log(format!("cloning {o} into {stage}"));
        zvol::clone_from(t, v, o, &stage)?;
        finish_copied(t, &stage, v)?;
        return zvol::rename(t, &stage, ds);
    }
    // The pass refused unsafe sources before planning (`refuse_bad_sources`); import and receive
    // check again on the file they open, and a failure destroys what was made.
    match &v.source {
        Some(src) if src.format == Format::ZfsStream => {
            log(format!("receiving {} into {stage}", src.path.display()));
            zvol::receive(t, src, &stage, imports)?;
            finish_copied(t, &stage, v)?;
        }
        Some(src) => {
            zvol::create(t, v, &stage, false)?;
            let filled =
                zvol::wait_dev(t, roots, &stage, Duration::from_secs(60)).and_then(|dev| {
                    log(format!("importing {} onto {stage}", src.path.display()));
                    zvol::import_image(t, src, &dev, v.size, imports)
                });
            if let Err(e) = filled.and_then(|_| zvol::mark_ready(t, &stage)) {
                // Nothing half-imported stays behind.
                let _ = zvol::destroy(t, &stage);
                return Err(e);
            }
        }
        // Its content is its zeros: created in place, tagged and ready in one step, under the
        // pass's intent record (written by `apply_zvols`) instead of a staging name.
        None => return zvol::create(t, v, ds, true),
    }
    zvol::rename(t, &stage, ds)
}

/// A clone's origin snapshot as `dataset@snapshot`, checked against the origin volume's spec:
/// ZFS gives a clone its origin's block size and encryption, so a spec asking otherwise is
/// refused rather than made into a volume that differs from its spec forever.
fn origin_of(pool: &str, v: &Volume, spool: &BTreeMap<String, Volume>) -> Result<Option<String>> {
    let Some(o) = &v.origin else { return Ok(None) };
    let ov = spool.get(&o.volume).ok_or_else(|| {
        Error::Refused(format!(
            "{}: its origin volume `{}` has no spec in the spool",
            v.name, o.volume
        ))
    })?;
    if ov.vm != v.vm {
        return Err(Error::Refused(format!(
            "{}: a clone of `{}@{}` would give VM `{}` the data of VM `{}`; a clone's origin is a snapshot of the same VM's volume",
            v.name, o.volume, o.snapshot, v.vm, ov.vm
        )));
    }
    if ov.encrypted != v.encrypted || ov.volblocksize != v.volblocksize {
        return Err(Error::Refused(format!(
            "{}: a clone of `{}@{}` has its origin's encryption ({}) and volblocksize ({}); the spec asks for {} and {}",
            v.name,
            o.volume,
            o.snapshot,
            if ov.encrypted { "encrypted" } else { "clear" },
            ov.volblocksize,
            if v.encrypted { "encrypted" } else { "clear" },
            v.volblocksize
        )));
    }
    Ok(Some(format!("{}@{}", zvol::dataset(pool, ov), o.snapshot)))
}

/// One zvol step; the removals (destroy, discard) must all be done before the builds start, as
/// a discarded staging zvol may have the name a build is about to use.
fn zvol_step(
    (t, roots, pool, imports): (&dyn Tools, &Roots, &str, &ImportDir),
    z: &ZOp,
    spool: &BTreeMap<String, Volume>,
) -> Result<()> {
    match z {
        ZOp::Destroy { dataset, .. } => zvol::destroy_volume(t, dataset),
        ZOp::Discard { dataset } => zvol::destroy(t, dataset),
        ZOp::Recreate { name, dataset } => {
            let origin = origin_of(pool, &spool[name], spool)?;
            zvol::destroy(t, dataset)?;
            fill(
                (t, roots, imports),
                &spool[name],
                dataset,
                origin.as_deref(),
            )
        }
        ZOp::Create { name } => {
            let v = &spool[name];
            let origin = origin_of(pool, v, spool)?;
            fill(
                (t, roots, imports),
                v,
                &zvol::dataset(pool, v),
                origin.as_deref(),
            )
        }
        ZOp::Grow { dataset, to, .. } => zvol::resize(t, dataset, *to),
    }
}

/// The zvol steps, removals first, each group run `cfg.zfs_workers` at a time. Every step of a
/// group runs even when one fails; the report has the ones that succeeded, the error is the first
/// failure in plan order, and the next pass retries the rest.
fn apply_zvols(
    env: &Env,
    p: &Plan,
    spool: &BTreeMap<String, Volume>,
    r: &mut Report,
) -> Result<()> {
    let (removals, builds): (Vec<&ZOp>, Vec<&ZOp>) = p
        .zvols
        .iter()
        .partition(|z| matches!(z, ZOp::Destroy { .. } | ZOp::Discard { .. }));
    run_zvol_group(env, &removals, spool, r)?;
    // Once, before the builds: concurrent builds would race to create a missing parent.
    let parents: BTreeSet<bool> = builds
        .iter()
        .filter_map(|z| match z {
            ZOp::Create { name } | ZOp::Recreate { name, .. } => Some(spool[name].encrypted),
            _ => None,
        })
        .collect();
    for encrypted in parents {
        zvol::ensure_parent(env.tools, &env.cfg.pool, encrypted)?;
    }
    let in_place: BTreeSet<String> = builds
        .iter()
        .filter_map(|z| match z {
            ZOp::Create { name } if spool[name].in_place() => {
                Some(zvol::dataset(&env.cfg.pool, &spool[name]))
            }
            ZOp::Recreate { name, dataset } if spool[name].in_place() => Some(dataset.clone()),
            _ => None,
        })
        .collect();
    if !in_place.is_empty() {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        zvol::Intent {
            at,
            datasets: in_place,
        }
        .write(&env.cfg.state)?;
    }
    run_zvol_group(env, &builds, spool, r)
}

fn run_zvol_group(
    env: &Env,
    group: &[&ZOp],
    spool: &BTreeMap<String, Volume>,
    r: &mut Report,
) -> Result<()> {
    let imports = env.cfg.imports();
    let ctx = (env.tools, &env.roots, env.cfg.pool.as_str(), &imports);
    let results = crate::parallel::each(group, env.cfg.zfs_workers, |z| {
        let res = zvol_step(ctx, z, spool);
        if res.is_ok() {
            log(format!("zfs: {z}: done"));
        }
        res
    });
    let store = env.store();
    let mut first_err = None;
    for (z, res) in group.iter().zip(results) {
        match res {
            Ok(()) => {
                if let ZOp::Destroy { name, .. } = z {
                    store.forget_volume(name)?;
                    store.clear_tombstone(name)?;
                }
                r.push(format!("zfs: {z}"), true);
            }
            Err(e) => {
                log(format!("zfs: {z}: failed: {e}"));
                first_err.get_or_insert(e);
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

pub fn apply(env: &Env, p: &Plan, spool: &BTreeMap<String, Volume>) -> Result<Report> {
    let mut r = Report::default();
    for (nqn, c) in &p.disconnect {
        hostside::disconnect(&env.roots, c)?;
        r.step(format!("disconnect {c} from {nqn}"), true);
    }
    let nt = env.nvmet_tree();
    let lt = env.lio_tree();
    let need_nvmet = !p.nvmet_down.is_empty() || !p.nvmet_up.is_empty();
    if need_nvmet && !nt.available() {
        return Err(Error::Unsupported(format!(
            "nvmet ({} is missing: is the nvmet module loaded?)",
            nt.root.join("subsystems").display()
        )));
    }
    if (!p.lio_down.is_empty() || !p.lio_up.is_empty()) && !lt.available() {
        return Err(Error::Unsupported(format!(
            "LIO ({} is missing: is target_core_mod loaded?)",
            lt.target.join("core").display()
        )));
    }
    for (s, c) in nvmet::apply(env.fs, &nt, &p.nvmet_down)? {
        r.step(format!("nvmet: {s}"), c);
    }
    for (s, c) in lio::apply(env.fs, &lt, &p.lio_down)? {
        r.step(format!("lio: {s}"), c);
    }
    apply_zvols(env, p, spool, &mut r)?;
    // The exports name the zvols' device links, which udev makes asynchronously. A link that
    // never appears holds back that volume's export only.
    let dss: Vec<String> = p
        .wanted
        .iter()
        .map(|w| zvol::dataset(&env.cfg.pool, &w.vol))
        .collect();
    let wait = Duration::from_secs(60);
    let lost = zvol::wait_devs(env.tools, &env.roots, &dss, wait);
    let missing: BTreeSet<String> = lost.iter().map(|ds| zvol::export_path(ds)).collect();
    let up = exports_without(p, &missing);
    for h in &up.held {
        log(format!("held: {h}: its device link is missing"));
    }
    for (s, c) in lio::apply(env.fs, &lt, &up.lio_up)? {
        r.step(format!("lio: {s}"), c);
    }
    for (s, c) in nvmet::apply(env.fs, &nt, &up.nvmet_up)? {
        r.step(format!("nvmet: {s}"), c);
    }
    for nqn in &up.revalidate {
        let f = nt
            .root
            .join("subsystems")
            .join(nqn)
            .join("namespaces/1/revalidate_size");
        env.fs.write(&f, "1").at("write", f)?;
        r.step(format!("nvmet: revalidate the size of {nqn}"), true);
    }
    for name in &up.connect {
        let w = p
            .wanted
            .iter()
            .find(|w| &w.vol.name == name)
            .ok_or_else(|| Error::NoVolume(name.clone()))?;
        let c = hostside::connect_loop(
            &env.roots,
            &ids::subsystem_nqn(name),
            &w.host.nqn,
            &ids::host_id(&w.vol.vm),
            &w.host.key,
            &w.host.ctrl_key,
        )?;
        r.step(format!("connect {c} to {name} over loop"), true);
    }
    if !lost.is_empty() {
        return Err(Error::LinksMissing {
            devs: lost
                .iter()
                .map(|ds| zvol::dev_path(&env.roots, ds))
                .collect(),
            secs: wait.as_secs(),
        });
    }
    Ok(r)
}

/// The export steps of a plan that can run with the device links in `missing` (export paths)
/// absent, and the texts of those held back.
#[derive(Debug, Default)]
pub struct Exports {
    pub lio_up: Vec<lio::Op>,
    pub nvmet_up: Vec<nvmet::Op>,
    pub revalidate: Vec<String>,
    pub connect: Vec<String>,
    pub held: Vec<String>,
}

/// Holds back every step that would hand nvmet or LIO a path in `missing` (a configfs write of
/// a device that does not exist fails, and used to fail the whole pass), with the vhost targets
/// on such a backstore and the loop connects and size revalidations of such a subsystem; the
/// rest of the plan's exports go ahead.
pub fn exports_without(p: &Plan, missing: &BTreeSet<String>) -> Exports {
    let mut e = Exports::default();
    let lost_backstores: BTreeSet<&str> = p
        .lio_up
        .iter()
        .filter_map(|o| match o {
            lio::Op::AddBackstore { name, spec } if missing.contains(&spec.udev_path) => {
                Some(name.as_str())
            }
            _ => None,
        })
        .collect();
    for o in &p.lio_up {
        let on_lost = match o {
            lio::Op::AddBackstore { name, .. } => lost_backstores.contains(name.as_str()),
            lio::Op::AddVhost { spec, .. } => lost_backstores.contains(spec.lun0.as_str()),
            _ => false,
        };
        if on_lost {
            e.held.push(format!("lio: {o}"));
        } else {
            e.lio_up.push(o.clone());
        }
    }
    let mut lost_nqns = BTreeSet::new();
    for o in &p.nvmet_up {
        match o {
            nvmet::Op::PutNamespace { nqn, spec, .. } if missing.contains(&spec.device_path) => {
                lost_nqns.insert(nqn.clone());
                e.held.push(format!("nvmet: {o}"));
            }
            _ => e.nvmet_up.push(o.clone()),
        }
    }
    for q in &p.revalidate {
        if lost_nqns.contains(q) {
            e.held.push(format!("nvmet: revalidate the size of {q}"));
        } else {
            e.revalidate.push(q.clone());
        }
    }
    for v in &p.connect {
        if lost_nqns.contains(&ids::subsystem_nqn(v)) {
            e.held.push(format!("connect the host to {v} over loop"));
        } else {
            e.connect.push(v.clone());
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::RawSpec;

    fn vol(name: &str, vm: &str, extra: &str) -> Volume {
        RawSpec::parse(
            "t.toml",
            &format!("name=\"{name}\"\nsize=\"1G\"\nvm=\"{vm}\"\ntransport=\"nvme-loop\"\n{extra}"),
        )
        .unwrap()
        .validate("t.toml")
        .unwrap()
    }

    #[test]
    fn a_clone_s_origin_is_a_snapshot_of_the_same_vm_s_volume() {
        let mut spool = BTreeMap::new();
        spool.insert("web".to_string(), vol("web", "vm1", ""));
        let same = vol(
            "web2",
            "vm1",
            "origin = \"web@s1\"\nprovisioning = \"thin\"",
        );
        assert_eq!(
            origin_of("persist", &same, &spool).unwrap().as_deref(),
            Some("persist/vault/volumes/web@s1")
        );
        let other = vol(
            "steal",
            "vm2",
            "origin = \"web@s1\"\nprovisioning = \"thin\"",
        );
        let e = origin_of("persist", &other, &spool)
            .unwrap_err()
            .to_string();
        assert!(e.contains("VM `vm2`") && e.contains("VM `vm1`"), "{e}");
        let none = vol("x", "vm1", "origin = \"gone@s1\"\nprovisioning = \"thin\"");
        assert!(origin_of("persist", &none, &spool).is_err());
    }
}
