//! What storage-init changes, in the order its plans say: the pool (import, or partitions
//! named pending, `zpool create`, then the final names), new drives, then the contents (ARC cap,
//! the vault, the datasets, the mounts, the last good policy and the outcome file). Every change
//! goes through the [`Host`]; each step logs what it does and why.

use crate::datasets::Action;
use crate::discover::{self, BlockDev, Verdict};
use crate::error::Error;
use crate::host::Host;
use crate::mounts;
use crate::observe::Observation;
use crate::plan::{ContentsPlan, Drive, Plan, P3};
use crate::policy::Policy;
use crate::probe::{P3_DONE, P3_PENDING, PART_DONE, PART_PENDING};
use crate::vault::{self, SecureBoot, Vault};
use platform::log;
use std::path::{Path, PathBuf};

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

/// ashift for the drives: the policy's, or more when a drive's physical sectors are larger.
pub fn ashift_for(policy_ashift: u8, physical_block_sizes: &[u64]) -> u8 {
    let need = physical_block_sizes
        .iter()
        .map(|&b| 63 - b.max(512).leading_zeros() as u8)
        .max()
        .unwrap_or(9);
    policy_ashift.max(need)
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

/// Carries out the dataset changes in order. The vault itself is the vault step's (creating it
/// needs the key), and what lives in it waits until the vault is usable.
pub fn datasets(
    host: &mut dyn Host,
    pool: &str,
    actions: &[Action],
    vault_ok: bool,
) -> Result<(), Error> {
    for a in actions {
        match a {
            Action::Unmanaged { name } => log(format!("{name}: not in the policy; left alone")),
            Action::Create { name: ds, .. } if *ds == format!("{pool}/vault") => {}
            Action::Create {
                name: ds,
                encrypted: true,
                ..
            } if !vault_ok => log(format!(
                "{ds}: skipped: the vault is not available (see above)"
            )),
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
    Ok(())
}

/// The pool step of the boot: imports or creates the pool as `plan` says, lets new blank
/// drives join an existing one, and mounts what lives outside the vault (the vault's subtree
/// waits until the vault is checked: a dataset put in its place must not be mounted where
/// services would write into it). The pool's GUID and the mounts refused.
pub fn pool_stage(
    host: &mut dyn Host,
    plan: &Plan,
    obs: &Observation,
    policy: &Policy,
) -> Result<(u64, Vec<String>), Error> {
    let guid = apply_pool(host, plan, obs, policy)?;
    if matches!(plan, Plan::Import { .. } | Plan::AlreadyImported { .. }) {
        if let Err(e) = add_new_drives(host, obs, policy) {
            log(format!("adding new drives failed: {}", platform::chain(&e)));
        }
    }
    Ok((guid, mounts::apply(host, policy, false)))
}

/// What the contents step ended with.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub vault: Vault,
    pub recovery: Option<vault::RecoveryState>,
    /// Dataset actions taken (or skipped and said why).
    pub dataset_changes: usize,
    /// Policy datasets left unmounted (tampering), from both mount passes.
    pub mounts_refused: Vec<String>,
}

/// Applies the contents plan in order: the ARC cap, the vault (then this boot's unlock phase
/// ends, whatever became of it), the datasets, the last good policy, the mounts and the outcome
/// file. Only datasets that cannot be read or changed stop it (after the vault).
pub fn contents(
    host: &mut dyn Host,
    plan: &ContentsPlan,
    seen: &vault::Seen,
    mut refused: Vec<String>,
) -> Result<Applied, Error> {
    for n in &plan.policy_notes {
        log(n);
    }
    if let Some(w) = &plan.warning {
        log(w);
    }
    cap_arc(host, plan.arc_max, plan.ram);
    let sb = plan.secure_boot;
    log(format!("Secure Boot: {}", sb.describe()));
    let (vault, recovery) = vault::act(host, &plan.policy, sb, seen, plan.vault.clone());
    // Whatever became of the vault, no later process of this boot may unseal.
    end_unlock_phase(host);
    let actions = plan
        .datasets
        .as_ref()
        .map_err(|e| Error::Unreadable(e.clone()))?;
    datasets(host, &plan.pool, actions, vault.usable())?;
    // The vault's own creation is the vault step's, not a dataset change.
    let vault_ds = format!("{}/vault", plan.pool);
    let changes = actions
        .iter()
        .filter(|a| !matches!(a, Action::Create { name, .. } if *name == vault_ds))
        .count();
    log(format!("datasets: {changes} change(s)"));
    if let Some(text) = &plan.keep_last_good {
        keep_last_good(host, &plan.pool, text);
    }
    // A refusal the dataset changes have since repaired is still tampering to report.
    for r in mounts::apply(host, &plan.policy, vault.usable()) {
        if !refused.contains(&r) {
            refused.push(r);
        }
    }
    write_outcome(host, &plan.pool, &vault, recovery.as_ref(), sb, &refused);
    Ok(Applied {
        vault,
        recovery,
        dataset_changes: changes,
        mounts_refused: refused,
    })
}

/// Ends this boot's unlock phase (extends PCR 11) when the box has a TPM. Called after the vault,
/// and by `storage-init run` when bring-up stops before it: an early failure must not leave the
/// phase open for a later process.
pub fn end_unlock_phase(host: &mut dyn Host) {
    if !host.tpm_present() {
        return;
    }
    match host.tpm_end_unlock_phase() {
        Ok(()) => log("TPM: unlock phase over (PCR 11 extended)"),
        Err(e) => log(format!(
            "TPM: ending the unlock phase failed: {}",
            platform::chain(&e)
        )),
    }
}

/// Caps the ARC at `arc` bytes.
fn cap_arc(host: &dyn Host, arc: u64, ram: u64) {
    let arc_param = host.roots().module("zfs").join("parameters/zfs_arc_max");
    match std::fs::write(&arc_param, arc.to_string()) {
        Ok(()) => log(format!(
            "ARC capped at {} MiB (RAM {} MiB)",
            arc >> 20,
            ram >> 20
        )),
        Err(e) => log(format!("ARC cap not set: {}: {e}", arc_param.display())),
    }
}

/// Keeps the policy that validated on the pool, for a later boot whose override is rejected.
fn keep_last_good(host: &dyn Host, pool: &str, text: &str) {
    let p = crate::config::last_good_in(&host.pool_mount(pool));
    // Whole or not at all: a torn copy would not parse when a later boot needs it.
    if let Err(e) = platform::fsx::write_atomic(&p, text.as_bytes(), None) {
        log(format!(
            "last good policy not kept: {}",
            platform::chain(&e)
        ));
    }
}

/// What ab-health judges this boot by: the names under the policy in force and what became of
/// the vault.
fn write_outcome(
    host: &mut dyn Host,
    pool: &str,
    vault: &Vault,
    recovery: Option<&vault::RecoveryState>,
    sb: SecureBoot,
    mounts_refused: &[String],
) {
    let outcome = serde_json::json!({
        "pool": pool,
        "vault": format!("{pool}/vault"),
        "vault_state": vault.state(),
        "vault_reason": match vault {
            Vault::Locked { reason } | Vault::Absent { reason } => Some(reason.as_str()),
            _ => None,
        },
        "vault_recovery": recovery.map(vault::RecoveryState::as_str),
        "secure_boot": sb,
        "secure_boot_text": sb.describe(),
        "vault_bound_to": vault::binding_of(host, pool),
        "mounts_refused": mounts_refused,
    });
    // Whole or not at all: the health check and storagectl read it while the boot goes on.
    let outcome_path = host.roots().storage_outcome();
    if let Err(e) = platform::fsx::write_atomic(&outcome_path, outcome.to_string().as_bytes(), None)
    {
        log(platform::chain(&e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;
    use crate::observe::fixtures::two_blank;
    use crate::policy::Topology;
    use uuid::Uuid;

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
    fn ashift_follows_the_largest_physical_sector() {
        assert_eq!(ashift_for(12, &[512, 4096]), 12);
        assert_eq!(ashift_for(12, &[512, 16384]), 14);
        assert_eq!(ashift_for(9, &[512]), 9);
        assert_eq!(ashift_for(12, &[]), 12);
    }
}
