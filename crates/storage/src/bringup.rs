//! storage-init's bring-up: observe drives and pools, decide (plan.rs), apply, reconcile datasets.
//! Each step logs what it does and why on stderr; the summary goes to stdout.

use crate::cmd::CmdError;
use crate::datasets::{self, Action};
use crate::discover::{self, BlockDev, Context, Verdict};
use crate::host::Host;
use crate::plan::{Drive, Observed, Plan, P3};
use crate::policy::Policy;
use crate::probe::{self, Probed, P3_DONE, P3_PENDING, PART_DONE, PART_PENDING};
use crate::zfs;
use platform::Roots;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cmd(#[from] CmdError),
    #[error(transparent)]
    Gpt(#[from] crate::gptops::GptError),
    #[error(transparent)]
    Probe(#[from] crate::probe::ProbeError),
    #[error("{0}")]
    Refused(String),
    #[error("{path}: {what} did not appear within {secs} s")]
    Timeout {
        path: PathBuf,
        what: &'static str,
        secs: u64,
    },
    #[error("{0}")]
    Parse(String),
}

use platform::log;

/// One device in the report: what it is and what storage-init decided about it.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceReport {
    pub name: String,
    pub stable_id: String,
    pub stable: bool,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub transport: discover::Transport,
    pub size_bytes: u64,
    pub verdict: Verdict,
}

/// The disk holding the running root filesystem, from mountinfo's major:minor. The root is a
/// dm-verity device over the slot's partition: its one `slaves` entry leads to the partition.
pub fn boot_disk(roots: &Roots, mountinfo: &str) -> Option<String> {
    let majmin = mountinfo
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))?
        .split_whitespace()
        .nth(2)?
        .to_string();
    let mut part = std::fs::canonicalize(roots.sys.join("dev/block").join(&majmin)).ok()?;
    for _ in 0..4 {
        let slaves: Vec<PathBuf> = match std::fs::read_dir(part.join("slaves")) {
            Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
            Err(_) => break,
        };
        match slaves.as_slice() {
            [one] => part = std::fs::canonicalize(one).ok()?,
            [] => break,
            _ => return None,
        }
    }
    // A partition's sysfs directory sits inside its disk's.
    let parent = if part.join("partition").exists() {
        part.parent()?
    } else {
        &part
    };
    parent.file_name().map(|n| n.to_string_lossy().into_owned())
}

#[derive(Debug)]
pub struct Observation {
    pub observed: Observed,
    pub devices: Vec<(BlockDev, Probed)>,
    pub report: Vec<DeviceReport>,
}

pub fn observe(
    host: &mut dyn Host,
    roots: &Roots,
    policy: &Policy,
    mountinfo: &str,
) -> Result<Observation, Error> {
    let boot = boot_disk(roots, mountinfo);
    let imported: Vec<(String, u64)> = platform::zfs::list_pools_with(None, |a| host.zpool(a))?
        .into_iter()
        .map(|p| (p.name, p.guid))
        .collect();
    // `zpool import` exits 1 with "no pools available" when there are none.
    let dir = host.partuuid_dir().display().to_string();
    let importable = match host.zpool(&["import".into(), "-d".into(), dir]) {
        Ok(out) => zfs::parse_importable(&out),
        Err(CmdError::Failed { .. }) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let pool_guid = imported
        .iter()
        .chain(&importable)
        .find(|(n, _)| n == &policy.pool.name)
        .map(|(_, g)| *g);
    let ctx = Context {
        boot_disk: boot.as_deref(),
        min_size_bytes: policy.pool.min_drive_size.get_ref().bytes(0),
        pool: &policy.pool.name,
        pool_guid,
    };
    let mut devices = Vec::new();
    let mut drives = Vec::new();
    let mut report = Vec::new();
    let mut p3 = P3::Absent;
    let mut p3_room = false;
    for d in discover::enumerate(roots) {
        // One device that cannot be read (no medium, I/O errors) is reported and left out; it
        // never stops bring-up for the others.
        let (probed, unreadable) = if d.transport == discover::Transport::Virtual {
            (Probed::default(), None)
        } else {
            match probe::probe(&d, roots) {
                Ok(p) => (p, None),
                Err(e) => {
                    log(format!("{}: {e}; left out", d.name));
                    (Probed::default(), Some(e.to_string()))
                }
            }
        };
        let (id, stable) = discover::stable_id(&d);
        let mut verdict = match &unreadable {
            Some(reason) if boot.as_deref() != Some(d.name.as_str()) => Verdict::Unreadable {
                reason: reason.clone(),
            },
            _ => discover::verdict(&d, &probed.sig, &ctx),
        };
        let ours_pending = probed.only_ours() && probed.pending();
        let before = verdict.clone();
        verdict = discover::overridden(verdict, ours_pending, &id, stable, &policy.pool.wipe);
        if let Verdict::ForeignData { reason } = &verdict {
            if verdict != before {
                log(format!("{} ({id}): {reason}", d.name));
            }
        }
        if verdict != before && !ours_pending && verdict == Verdict::Eligible {
            log(format!(
                "{} ({id}): policy lists it for wiping; its data will be overwritten",
                d.name
            ));
        }
        if boot.as_deref() == Some(d.name.as_str()) {
            p3_room = crate::gptops::p3_room(&d.dev);
            for (_, name, guid) in &probed.gpt {
                if name == P3_DONE {
                    p3 = P3::Done {
                        partuuid: guid.to_string(),
                    };
                } else if name == P3_PENDING {
                    p3 = P3::Pending {
                        partuuid: guid.to_string(),
                    };
                }
            }
        } else if d.transport != discover::Transport::Virtual {
            drives.push(Drive {
                name: d.name.clone(),
                stable_id: id.clone(),
                verdict: verdict.clone(),
                ours_pending,
                rotational: d.rotational,
            });
        }
        report.push(DeviceReport {
            name: d.name.clone(),
            stable_id: id,
            stable,
            model: d.model.clone(),
            serial: d.serial.clone(),
            transport: d.transport,
            size_bytes: d.size_bytes,
            verdict,
        });
        devices.push((d, probed));
    }
    Ok(Observation {
        observed: Observed {
            boot_disk: boot,
            p3,
            p3_room,
            drives,
            importable,
            imported,
        },
        devices,
        report,
    })
}

/// Renames storage-init's pending partitions (boot disk P3 and pooled drives) to their final names.
fn finalize_names(host: &mut dyn Host, obs: &Observation) -> Result<(), Error> {
    for (d, probed) in &obs.devices {
        let is_boot = obs.observed.boot_disk.as_deref() == Some(d.name.as_str());
        if is_boot && matches!(obs.observed.p3, P3::Pending { .. }) {
            host.rename_partitions(&d.dev, P3_PENDING, P3_DONE)?;
            log(format!("{}: P3 finalised", d.name));
        } else if !is_boot
            && probed.only_ours()
            && probed.pending()
            && obs
                .observed
                .drives
                .iter()
                .any(|x| x.name == d.name && discover::reusable(&x.verdict))
        {
            host.rename_partitions(&d.dev, PART_PENDING, PART_DONE)?;
            log(format!("{}: partition finalised", d.name));
        }
    }
    Ok(())
}

/// Later boots: blank eligible drives join a striped pool when the policy says so. Other
/// topologies cannot grow by one drive; those drives are reported and left blank.
pub fn add_new_drives(
    host: &mut dyn Host,
    obs: &Observation,
    policy: &Policy,
) -> Result<Vec<String>, Error> {
    let new: Vec<&Drive> = obs
        .observed
        .drives
        .iter()
        .filter(|d| d.verdict == Verdict::Eligible && !d.ours_pending)
        .collect();
    if new.is_empty() {
        return Ok(vec![]);
    }
    let names: Vec<&str> = new.iter().map(|d| d.name.as_str()).collect();
    if !policy.pool.add_new_drives {
        log(format!(
            "new blank drives {names:?} not added: pool.add_new_drives is false"
        ));
        return Ok(vec![]);
    }
    if policy.pool.topology != crate::policy::Topology::Stripe {
        log(format!(
            "new blank drives {names:?} not added: a {:?} pool cannot grow by single drives",
            policy.pool.topology
        ));
        return Ok(vec![]);
    }
    let mut added = Vec::new();
    for d in new {
        let Some((bd, _)) = obs.devices.iter().find(|(b, _)| b.name == d.name) else {
            continue;
        };
        log(format!(
            "{} ({}): adding to pool {}",
            d.name, d.stable_id, policy.pool.name
        ));
        let p = partition_for_pool(host, bd)?;
        host.zpool(&[
            "add".into(),
            "-f".into(),
            policy.pool.name.clone(),
            p.display().to_string(),
        ])?;
        finalize_partition(host, bd)?;
        added.push(d.name.clone());
    }
    Ok(added)
}

/// Gives a blank drive one whole-disk partition named pending (so an interrupted step is
/// recognisably ours) and returns its stable path once udev has made it. The caller hands it to
/// ZFS, then finalises the name.
pub fn partition_for_pool(host: &mut dyn Host, bd: &BlockDev) -> Result<PathBuf, Error> {
    let guid = host.partition_whole(&bd.dev, PART_PENDING)?;
    host.reread_table(&bd.dev)?;
    host.settle();
    let p = host.by_partuuid(&guid.to_string());
    host.wait_for(&p, "partition link")?;
    Ok(p)
}

/// The pending partition of a drive ZFS now holds gets its final name.
pub fn finalize_partition(host: &mut dyn Host, bd: &BlockDev) -> Result<(), Error> {
    host.rename_partitions(&bd.dev, PART_PENDING, PART_DONE)
}

/// Pure: bytes of RAM from /proc/meminfo's `MemTotal:` line (0 when it is not there).
pub fn mem_total(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// ashift for the drives: the policy's, or more when a drive's physical sectors are larger.
pub fn ashift_for(policy_ashift: u8, physical_block_sizes: &[u64]) -> u8 {
    let need = physical_block_sizes
        .iter()
        .map(|&b| 63 - b.max(512).leading_zeros() as u8)
        .max()
        .unwrap_or(9);
    policy_ashift.max(need)
}

/// The ARC ceiling: the policy's, else a quarter of RAM but at least 256 MiB, leaving the
/// rest for VMs (ZFS's own default is half of RAM).
pub fn arc_max(policy: &Policy, ram: u64, pool_size: u64) -> u64 {
    match &policy.pool.arc_max {
        Some(s) => s.get_ref().bytes(pool_size),
        None => (ram / 4).max(256 << 20),
    }
}

/// Applies the pool part of the plan; returns the pool GUID.
/// Applies the plan through `host`: imports, or partitions the chosen drives (names pending),
/// creates the pool, and only then gives the partitions their final names, so a cut at any point
/// leaves either a pool or partitions the next boot recognises as its own.
pub fn apply_pool(
    host: &mut dyn Host,
    plan: &Plan,
    obs: &Observation,
    policy: &Policy,
) -> Result<u64, Error> {
    let name = &policy.pool.name;
    let dev_of = |n: &str| {
        obs.devices
            .iter()
            .find(|(d, _)| d.name == n)
            .map(|(d, p)| (d.dev.clone(), p.clone()))
    };
    match plan {
        Plan::Refuse { reason } => Err(Error::Refused(reason.clone())),
        Plan::AlreadyImported { guid } => Ok(*guid),
        Plan::Import { guid } => {
            log(format!("importing pool {name} (guid {guid})"));
            host.zpool(&import_args(&host.partuuid_dir(), *guid))?;
            // A cut between `zpool create` and the rename leaves members pending: finish it.
            finalize_names(host, obs)?;
            Ok(*guid)
        }
        Plan::Create {
            topology,
            new_p3,
            use_p3,
            partition,
            reuse_pending,
            autotrim,
        } => {
            let mut vdevs = Vec::new();
            let mut renames: Vec<(PathBuf, &str, &str)> = Vec::new();
            if let (Some(boot), false) = (&obs.observed.boot_disk, *use_p3) {
                log(format!(
                    "WARNING: boot disk {boot} has no free space for P3; the pool is made from the other drives only"
                ));
            }
            if let (Some(boot), true) = (&obs.observed.boot_disk, *use_p3) {
                let bdev = obs
                    .devices
                    .iter()
                    .find(|(d, _)| &d.name == boot)
                    .map(|(d, _)| d.dev.clone())
                    .unwrap_or_else(|| PathBuf::from("/dev").join(boot));
                let guid = match (&obs.observed.p3, new_p3) {
                    (P3::Pending { partuuid }, _) => partuuid.clone(),
                    (_, true) => {
                        log(format!("creating P3 in the free space of boot disk {boot}"));
                        let (num, guid) = host.add_tail_partition(&bdev, P3_PENDING)?;
                        // The disk is busy (the root is on it): add just this partition (BLKPG).
                        host.partx_add(&bdev, num)?;
                        guid.to_string()
                    }
                    _ => return Err(Error::Refused("P3 state does not allow creation".into())),
                };
                let p = host.by_partuuid(&guid);
                host.wait_for(&p, "P3 partition link")?;
                vdevs.push(p);
                renames.push((bdev, P3_PENDING, P3_DONE));
            }
            for n in reuse_pending {
                let Some((dev, probed)) = dev_of(n) else {
                    continue;
                };
                let Some((_, _, guid)) = probed.gpt.first() else {
                    continue;
                };
                log(format!(
                    "{n}: reusing partition from an interrupted first boot"
                ));
                let p = host.by_partuuid(&guid.to_string());
                host.wait_for(&p, "partition link")?;
                vdevs.push(p);
                renames.push((dev, PART_PENDING, PART_DONE));
            }
            for n in partition {
                let Some((dev, _)) = dev_of(n) else { continue };
                log(format!("{n}: writing a GPT with one persist partition"));
                let guid = host.partition_whole(&dev, PART_PENDING)?;
                host.reread_table(&dev)?;
                let p = host.by_partuuid(&guid.to_string());
                host.wait_for(&p, "partition link")?;
                vdevs.push(p);
                renames.push((dev, PART_PENDING, PART_DONE));
            }
            // A table re-read makes udev remove and re-add the disk's partition links: let it finish,
            // then make sure every link is there before handing the paths to zpool.
            host.settle();
            for p in &vdevs {
                host.wait_for(p, "partition link")?;
            }
            let ashift = ashift_for(
                policy.pool.ashift,
                &obs.devices
                    .iter()
                    .filter(|(d, _)| {
                        partition.contains(&d.name)
                            || reuse_pending.contains(&d.name)
                            || (*use_p3
                                && obs.observed.boot_disk.as_deref() == Some(d.name.as_str()))
                    })
                    .map(|(d, _)| d.physical_block_size)
                    .collect::<Vec<_>>(),
            );
            log(format!(
                "creating pool {name} ({topology:?}) on {} devices",
                vdevs.len()
            ));
            host.zpool(&create_args(policy, *topology, ashift, *autotrim, &vdevs))?;
            // Only now are the partitions final: a cut before this point leaves them pending.
            for (dev, from, to) in renames {
                host.rename_partitions(&dev, from, to)?;
            }
            host.pool_guid(name)
        }
    }
}

/// Pure: `zpool import` of the pool with `guid` from the stable partition links, not mounted,
/// with no cache file (the box finds its pool by scanning, every boot).
pub fn import_args(link_dir: &Path, guid: u64) -> Vec<String> {
    vec![
        "import".into(),
        "-N".into(),
        "-f".into(),
        "-o".into(),
        "cachefile=none".into(),
        "-d".into(),
        link_dir.display().to_string(),
        guid.to_string(),
    ]
}

/// Pure: `zpool create` for the policy's pool on `vdevs` in `topology`.
pub fn create_args(
    policy: &Policy,
    topology: crate::policy::Topology,
    ashift: u8,
    autotrim: bool,
    vdevs: &[PathBuf],
) -> Vec<String> {
    let name = &policy.pool.name;
    let mut args: Vec<String> = vec![
        "create".into(),
        "-f".into(),
        "-o".into(),
        format!("ashift={ashift}"),
        "-o".into(),
        "cachefile=none".into(),
    ];
    if autotrim {
        args.extend(["-o".into(), "autotrim=on".into()]);
    }
    for o in [
        format!("compression={}", policy.pool.compression),
        "atime=off".into(),
        "xattr=sa".into(),
        format!("mountpoint=/{name}"),
        "canmount=on".into(),
    ] {
        args.extend(["-O".into(), o]);
    }
    args.push(name.clone());
    match topology {
        crate::policy::Topology::Stripe => {}
        t => args.push(format!("{t:?}").to_lowercase()),
    }
    args.extend(vdevs.iter().map(|p| p.display().to_string()));
    args
}

/// Reconciles datasets; returns the actions taken (or that would be, with `dry_run`).
pub fn reconcile_datasets(
    host: &mut dyn Host,
    policy: &Policy,
    pool_size: u64,
    vault_ok: bool,
    dry_run: bool,
) -> Result<Vec<Action>, Error> {
    let name = &policy.pool.name;
    let args = zfs::get_recursive_args(name, &datasets::MANAGED.join(","));
    let have = zfs::parse_get_output(&args, &host.zfs(&args, None)?)?;
    let actions = datasets::diff(&datasets::desired(policy, pool_size), &have, name);
    for a in &actions {
        match a {
            Action::Unmanaged { name } => log(format!("{name}: not in the policy; left alone")),
            // The vault itself is ensure_vault's job: creating it needs the key.
            Action::Create { name: ds, .. } if *ds == format!("{name}/vault") => {}
            Action::Create {
                name: ds,
                encrypted: true,
                ..
            } if !vault_ok => log(format!(
                "{ds}: skipped: the vault is not available (see above)"
            )),
            _ if dry_run => log(format!("would {a:?}")),
            Action::Create {
                name: ds, props, ..
            } => {
                let mut args = vec!["create".to_string()];
                for (k, v) in props {
                    args.extend(["-o".into(), format!("{k}={v}")]);
                }
                args.push(ds.clone());
                log(format!("{ds}: create {props:?}"));
                host.zfs(&args, None)?;
            }
            Action::Set {
                name: ds,
                prop,
                from,
                to,
            } => {
                log(format!("{ds}: {prop} {from} -> {to}"));
                host.zfs(&["set".into(), format!("{prop}={to}"), ds.clone()], None)?;
            }
        }
    }
    Ok(actions)
}

/// Names of the pools whose labels sit on storage-init's own finished partitions (P3, and
/// drives holding only our partitions): this box's pool, whatever the policy now calls it.
pub fn our_pools(obs: &Observation) -> Vec<String> {
    let mut names = Vec::new();
    for (d, p) in &obs.devices {
        let is_boot = obs.observed.boot_disk.as_deref() == Some(d.name.as_str());
        let ours = if is_boot {
            matches!(obs.observed.p3, P3::Done { .. })
        } else {
            p.only_ours() && !p.pending()
        };
        if ours {
            for (n, _) in &p.sig.zfs_pools {
                if !names.contains(n) {
                    names.push(n.clone());
                }
            }
        }
    }
    names
}

/// Pure: what an imported pool already is, from `zpool list -v -H -P <pool>`, `zpool get -H -p
/// -o value ashift <pool>` and `zfs get -H -o property,value encryption,<sealed> <pool>/vault`
/// (empty when there is no vault).
pub fn pool_facts(
    name: &str,
    list_v: &str,
    ashift: &str,
    vault_props: &str,
) -> crate::policy::PoolFacts {
    use crate::policy::{PoolFacts, Topology, VaultKind};
    let vdev = |prefix: &str| {
        list_v.lines().any(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.starts_with(prefix))
        })
    };
    let topology = if vdev("mirror-") {
        Topology::Mirror
    } else if vdev("raidz2-") {
        Topology::Raidz2
    } else if vdev("raidz1-") || vdev("raidz-") {
        Topology::Raidz1
    } else {
        Topology::Stripe
    };
    let prop = |k: &str| {
        vault_props.lines().find_map(|l| {
            l.split_once('\t')
                .filter(|(p, _)| *p == k)
                .map(|(_, v)| v.trim().to_string())
        })
    };
    let vault = match (prop("encryption"), prop(crate::tpm::SEALED_PROPERTY)) {
        (None, _) => None,
        (Some(e), _) if e == "off" => Some(VaultKind::Unencrypted),
        (Some(_), Some(b)) if !b.is_empty() && b != "-" => Some(VaultKind::Tpm),
        (Some(_), _) => Some(VaultKind::Keyfile),
    };
    PoolFacts {
        name: Some(name.to_string()),
        topology: (!list_v.trim().is_empty()).then_some(topology),
        ashift: ashift.trim().parse().ok().filter(|&a| a > 0),
        vault,
    }
}

/// The facts of the imported pool `name`, from the tools; what cannot be read stays unknown.
pub fn gather_pool_facts(host: &mut dyn Host, name: &str) -> crate::policy::PoolFacts {
    let s = |a: &[&str]| a.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let list_v = host
        .zpool(&s(&["list", "-v", "-H", "-P", name]))
        .unwrap_or_default();
    let ashift = host
        .zpool(&s(&["get", "-H", "-p", "-o", "value", "ashift", name]))
        .unwrap_or_default();
    let props = format!("encryption,{}", crate::tpm::SEALED_PROPERTY);
    let vault_args = s(&[
        "get",
        "-H",
        "-o",
        "property,value",
        &props,
        &format!("{name}/vault"),
    ]);
    let vault = host.zfs(&vault_args, None).unwrap_or_default();
    pool_facts(name, &list_v, &ashift, &vault)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::Transport;
    use crate::host::fake::FakeHost;
    use crate::policy::Topology;
    use uuid::Uuid;

    fn bd(name: &str, pbs: u64) -> BlockDev {
        BlockDev {
            name: name.into(),
            dev: PathBuf::from("/dev").join(name),
            transport: Transport::Virtio,
            size_bytes: 8 << 30,
            removable: false,
            read_only: false,
            rotational: false,
            physical_block_size: pbs,
            model: None,
            serial: None,
            wwid: None,
            partitions: vec![],
            holders: vec![],
            fabric: None,
        }
    }

    fn drive(name: &str) -> Drive {
        Drive {
            name: name.into(),
            stable_id: format!("virtio-{name}"),
            verdict: Verdict::Eligible,
            ours_pending: false,
            rotational: false,
        }
    }

    /// Two blank drives (one with 8 KiB physical sectors) and a boot disk `vda`.
    fn two_blank() -> Observation {
        Observation {
            observed: Observed {
                boot_disk: Some("vda".into()),
                p3: P3::Absent,
                p3_room: true,
                drives: vec![drive("vdb"), drive("vdc")],
                importable: vec![],
                imported: vec![],
            },
            devices: vec![
                (bd("vda", 512), Probed::default()),
                (bd("vdb", 4096), Probed::default()),
                (bd("vdc", 8192), Probed::default()),
            ],
            report: vec![],
        }
    }

    fn create(use_p3: bool) -> Plan {
        Plan::Create {
            topology: Topology::Mirror,
            new_p3: use_p3,
            use_p3,
            partition: vec!["vdb".into(), "vdc".into()],
            reuse_pending: vec![],
            autotrim: true,
        }
    }

    fn link(n: u128) -> String {
        format!("/l/{}", Uuid::from_u128(n))
    }

    #[test]
    fn a_pool_is_made_on_pending_partitions_and_they_are_named_final_only_after_create() {
        let mut h = FakeHost {
            guid: 42,
            ..FakeHost::default()
        };
        let p = Policy::builtin();
        let guid = apply_pool(&mut h, &create(true), &two_blank(), &p).unwrap();
        assert_eq!(guid, 42);
        let create_at = h
            .calls
            .iter()
            .position(|c| c.starts_with("zpool create"))
            .unwrap();
        let c = &h.calls[create_at];
        // P3 first (added live to the busy boot disk), then each drive; ashift follows the
        // largest physical sector (8 KiB: 13) over the policy's 12.
        assert_eq!(
            &h.calls[..4],
            [
                format!("add-tail /dev/vda {P3_PENDING}"),
                "partx-add /dev/vda 3".to_string(),
                format!("wait {}", link(1)),
                format!("partition /dev/vdb {PART_PENDING}"),
            ]
        );
        assert!(
            c.contains("-o ashift=13") && c.contains("-o autotrim=on"),
            "{c}"
        );
        assert!(
            c.ends_with(&format!(
                "persist mirror {} {} {}",
                link(1),
                link(2),
                link(3)
            )),
            "{c}"
        );
        let renames: Vec<usize> = h
            .calls
            .iter()
            .enumerate()
            .filter(|(_, c)| c.starts_with("rename"))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(renames.len(), 3, "{:?}", h.calls);
        assert!(renames.iter().all(|&i| i > create_at), "{:?}", h.calls);
        assert!(h
            .calls
            .contains(&format!("rename /dev/vda {P3_PENDING} {P3_DONE}")));
    }

    #[test]
    fn a_failed_create_leaves_every_partition_pending_for_the_next_boot() {
        let mut h = FakeHost {
            fail: Some("zpool create"),
            ..FakeHost::default()
        };
        let e = apply_pool(&mut h, &create(false), &two_blank(), &Policy::builtin()).unwrap_err();
        assert!(e.to_string().contains("zpool create"), "{e}");
        assert!(
            !h.calls.iter().any(|c| c.starts_with("rename")),
            "{:?}",
            h.calls
        );
        // Without P3 the boot disk is not touched at all.
        assert!(
            !h.calls.iter().any(|c| c.contains("/dev/vda")),
            "{:?}",
            h.calls
        );
    }

    #[test]
    fn a_link_that_never_appears_stops_before_zpool_sees_anything() {
        let mut h = FakeHost {
            fail: Some("wait"),
            ..FakeHost::default()
        };
        assert!(apply_pool(&mut h, &create(false), &two_blank(), &Policy::builtin()).is_err());
        assert!(
            !h.calls.iter().any(|c| c.starts_with("zpool")),
            "{:?}",
            h.calls
        );
    }

    #[test]
    fn an_import_finishes_the_names_an_interrupted_first_boot_left_pending() {
        let mut o = two_blank();
        o.observed.p3 = P3::Pending {
            partuuid: "aa".into(),
        };
        o.devices[1].1.gpt = vec![(1, PART_PENDING.into(), Uuid::from_u128(9))];
        o.observed.drives[0].ours_pending = true;
        let mut h = FakeHost::default();
        let g = apply_pool(&mut h, &Plan::Import { guid: 7 }, &o, &Policy::builtin()).unwrap();
        assert_eq!(g, 7);
        assert_eq!(
            h.calls,
            [
                "zpool import -N -f -o cachefile=none -d /l 7".to_string(),
                format!("rename /dev/vda {P3_PENDING} {P3_DONE}"),
                format!("rename /dev/vdb {PART_PENDING} {PART_DONE}"),
            ]
        );
    }

    #[test]
    fn a_refusal_or_an_imported_pool_touches_nothing() {
        let mut h = FakeHost::default();
        let refuse = Plan::Refuse {
            reason: "foreign pool".into(),
        };
        assert!(apply_pool(&mut h, &refuse, &two_blank(), &Policy::builtin()).is_err());
        let up = Plan::AlreadyImported { guid: 3 };
        assert_eq!(
            apply_pool(&mut h, &up, &two_blank(), &Policy::builtin()).unwrap(),
            3
        );
        assert!(h.calls.is_empty(), "{:?}", h.calls);
    }

    #[test]
    fn ram_from_meminfo() {
        assert_eq!(mem_total("MemFree: 5 kB\nMemTotal:  2048 kB\n"), 2 << 20);
        assert_eq!(mem_total("garbage"), 0);
    }

    #[test]
    fn new_drives_join_only_a_stripe_whose_policy_allows_it() {
        let o = two_blank();
        let mut p = Policy::builtin();
        p.pool.topology = Topology::Mirror;
        p.pool.add_new_drives = true;
        let mut h = FakeHost::default();
        assert!(add_new_drives(&mut h, &o, &p).unwrap().is_empty());
        p.pool.topology = Topology::Stripe;
        p.pool.add_new_drives = false;
        assert!(add_new_drives(&mut h, &o, &p).unwrap().is_empty());
        assert!(h.calls.is_empty(), "{:?}", h.calls);
        p.pool.add_new_drives = true;
        assert_eq!(add_new_drives(&mut h, &o, &p).unwrap(), ["vdb", "vdc"]);
        let add = format!("zpool add -f persist {}", link(1));
        let at = h.calls.iter().position(|c| *c == add).unwrap();
        assert_eq!(
            h.calls[at + 1],
            format!("rename /dev/vdb {PART_PENDING} {PART_DONE}")
        );
    }

    #[test]
    fn facts_of_an_existing_pool_from_tool_output() {
        use crate::policy::{Topology, VaultKind};
        let list = "persist\t3.75G\t1M\t3.75G\t-\t-\t0%\t0%\t1.00x\tONLINE\t-\n\tmirror-0\t3.75G\t1M\t3.75G\t-\t-\t0%\t0.00%\t-\tONLINE\n\t/dev/disk/by-partuuid/a\t4G\t-\t-\t-\t-\t-\t-\t-\tONLINE\n";
        let f = pool_facts(
            "persist",
            list,
            "12\n",
            "encryption\taes-256-gcm\norg.lfedge.eve:sealed-key\tv1:::\n",
        );
        assert_eq!(f.topology, Some(Topology::Mirror));
        assert_eq!(f.ashift, Some(12));
        let f = pool_facts("p", "p\t1G\n\t/dev/x\t1G\n", "9", "encryption\toff\n");
        assert_eq!(
            (f.topology, f.vault),
            (Some(Topology::Stripe), Some(VaultKind::Unencrypted))
        );
        let f = pool_facts("p", "", "", "");
        assert_eq!((f.topology, f.ashift, f.vault), (None, None, None));
    }

    #[test]
    fn ashift_follows_the_largest_physical_sector() {
        assert_eq!(ashift_for(12, &[512, 4096]), 12);
        assert_eq!(ashift_for(12, &[512, 16384]), 14);
        assert_eq!(ashift_for(9, &[512]), 9);
        assert_eq!(ashift_for(12, &[]), 12);
    }

    #[test]
    fn arc_max_defaults_to_a_quarter_of_ram_with_a_floor() {
        let p = Policy::builtin();
        assert_eq!(arc_max(&p, 16 << 30, 0), 4 << 30);
        assert_eq!(arc_max(&p, 512 << 20, 0), 256 << 20);
        let p = Policy::parse(
            std::path::Path::new("t"),
            "[pool]\narc_max = \"1G\"\n",
            None,
        )
        .unwrap();
        assert_eq!(arc_max(&p, 16 << 30, 0), 1 << 30);
    }

    #[test]
    fn boot_disk_from_mountinfo_and_sysfs() {
        let t = tempfile::tempdir().unwrap();
        let disk = t
            .path()
            .join("sys/devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1");
        std::fs::create_dir_all(disk.join("nvme0n1p2")).unwrap();
        std::fs::write(disk.join("nvme0n1p2/partition"), "2\n").unwrap();
        std::fs::create_dir_all(t.path().join("sys/dev/block")).unwrap();
        std::os::unix::fs::symlink(disk.join("nvme0n1p2"), t.path().join("sys/dev/block/259:2"))
            .unwrap();
        let mi = "22 1 259:2 / / ro,relatime - squashfs /dev/nvme0n1p2 ro\n23 22 0:5 / /dev rw - devtmpfs devtmpfs rw\n";
        assert_eq!(
            boot_disk(&Roots::under(t.path()), mi).as_deref(),
            Some("nvme0n1")
        );
        assert_eq!(
            boot_disk(
                &Roots::under(t.path()),
                "23 22 0:5 / /dev rw - devtmpfs x rw\n"
            ),
            None
        );
        // The verified root: dm-0 over nvme0n1p2.
        let dm = t.path().join("sys/devices/virtual/block/dm-0");
        std::fs::create_dir_all(dm.join("slaves")).unwrap();
        std::os::unix::fs::symlink(disk.join("nvme0n1p2"), dm.join("slaves/nvme0n1p2")).unwrap();
        std::os::unix::fs::symlink(&dm, t.path().join("sys/dev/block/252:0")).unwrap();
        let mi = "22 1 252:0 / / ro,relatime - squashfs /dev/dm-0 ro\n";
        assert_eq!(
            boot_disk(&Roots::under(t.path()), mi).as_deref(),
            Some("nvme0n1")
        );
    }
}
