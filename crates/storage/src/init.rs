//! storage-init's run as library functions over the [`Host`], in the order the run goes: choose
//! the policy and observe the drives, decide the pool, apply it; then observe what the pool holds,
//! decide it, apply it. [`whole_plan`] is the same decisions without the applying, for
//! `storage-init plan`. The binary only parses its command line and prints; everything here runs
//! against the fake host in the unit tests.

use crate::apply;
use crate::error::Error;
use crate::host::Host;
use crate::observe::{self, Observation};
use crate::plan::{self, BootPlan, Plan};
use crate::policy::{Candidate, Encryption, Policy, PoolFacts};
use crate::vault::{SecureBoot, Vault};
use platform::log;
use serde::Serialize;

/// The policy in force from the candidate files before the pool is up, said on stderr.
pub fn load_policy(candidates: &[Candidate], image: &Encryption, facts: &PoolFacts) -> Policy {
    let (p, notes, _) = plan::settle_policy(candidates, None, None, facts, image);
    for n in notes {
        log(n);
    }
    p
}

/// The policy and the observation of the drives it was made under. The pool on this box's own
/// partitions has a name; a policy that calls it something else is rejected (not obeyed by
/// making a new pool or refusing to import the one there is), and the drives are observed again
/// under the right one.
pub fn observe(
    host: &mut dyn Host,
    candidates: &[Candidate],
    image: &Encryption,
    mountinfo: &str,
) -> Result<(Policy, Observation), Error> {
    let roots = host.roots().clone();
    let policy = load_policy(candidates, image, &PoolFacts::default());
    let obs = observe::drives(host, &roots, &policy, mountinfo)?;
    match observe::our_pools(&obs).as_slice() {
        [name] if *name != policy.pool.name => {
            let facts = PoolFacts {
                name: Some(name.clone()),
                ..Default::default()
            };
            let policy = load_policy(candidates, image, &facts);
            let obs = observe::drives(host, &roots, &policy, mountinfo)?;
            Ok((policy, obs))
        }
        _ => Ok((policy, obs)),
    }
}

/// What a bring-up run ended with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub pool: String,
    pub guid: u64,
    /// Used plus available bytes (0 when they could not be read).
    pub size: u64,
    pub vault: Vault,
    pub secure_boot: SecureBoot,
    /// Dataset actions taken (or skipped and said why).
    pub dataset_changes: usize,
}

/// Brings storage up: the pool as `pool_plan` says (import or create, new drives, the mounts
/// outside the vault); then reads what the pool holds, decides it at once (the policy settled
/// against the pool, the ARC cap, the vault, the datasets) and applies that. Only a failure
/// that leaves no pool, or datasets that cannot be read or made, is an error; the rest is logged
/// and the run goes on.
pub fn bring_up(
    host: &mut dyn Host,
    candidates: &[Candidate],
    image: &Encryption,
    pool_plan: &Plan,
    obs: &Observation,
    policy: &Policy,
) -> Result<Outcome, Error> {
    let (guid, refused) = apply::pool_stage(host, pool_plan, obs, policy)?;
    let contents = observe::contents(host, &policy.pool.name);
    let decided = plan::decide_contents(&contents, candidates, image);
    let applied = apply::contents(host, &decided, &contents.vault, refused)?;
    Ok(Outcome {
        pool: decided.pool,
        guid,
        size: contents.size,
        vault: applied.vault,
        secure_boot: decided.secure_boot,
        dataset_changes: applied.dataset_changes,
    })
}

/// The whole plan of a run, changing nothing: the pool step, and what becomes of the pool's
/// contents. Those are read from the pool when it is imported already, and decided for an empty
/// pool when it is about to be made (its size estimated from the drives); a pool still to be
/// imported cannot be read before it is, and the plan says so.
pub fn whole_plan(
    host: &mut dyn Host,
    candidates: &[Candidate],
    image: &Encryption,
    obs: &Observation,
    policy: &Policy,
) -> BootPlan {
    let pool_plan = plan::decide(&obs.observed, policy);
    let name = &policy.pool.name;
    let contents = match &pool_plan {
        Plan::AlreadyImported { .. } => Ok(observe::contents(host, name)),
        Plan::Create {
            topology,
            partition,
            reuse_pending,
            ..
        } => {
            let sizes: Vec<u64> = obs
                .devices
                .iter()
                .filter(|(d, _)| partition.contains(&d.name) || reuse_pending.contains(&d.name))
                .map(|(d, _)| d.size_bytes)
                .collect();
            Ok(observe::fresh_contents(
                host,
                name,
                plan::estimate_size(*topology, &sizes),
            ))
        }
        Plan::Import { .. } => Err(format!(
            "the vault and the datasets are decided once {name} is imported: what it holds cannot be read before"
        )),
        Plan::Refuse { .. } => Err("nothing more: there is no pool".to_string()),
    };
    BootPlan {
        contents: contents.map(|c| plan::decide_contents(&c, candidates, image)),
        pool: pool_plan,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;
    use crate::plan::{Observed, P3};
    use crate::{config, policy};
    use std::path::PathBuf;

    fn nothing_seen() -> Observation {
        Observation {
            observed: Observed {
                boot_disk: None,
                p3: P3::Absent,
                p3_room: false,
                drives: vec![],
                importable: vec![],
                imported: vec![("persist".into(), 7)],
            },
            devices: vec![],
            report: vec![],
        }
    }

    /// A box with 4 GiB of RAM, the zfs module loaded and an imported, healthy 10 GiB pool
    /// holding only its root dataset; the vault as `vault` says.
    fn imported_pool(base: &std::path::Path, vault: Result<&str, &str>) -> FakeHost {
        let mut h = FakeHost::under(base);
        std::fs::create_dir_all(h.roots.module("zfs").join("parameters")).unwrap();
        std::fs::create_dir_all(&h.roots.proc).unwrap();
        std::fs::write(h.roots.proc.join("meminfo"), "MemTotal: 4194304 kB\n").unwrap();
        h.answer("zpool get -H -o value health persist", Ok("ONLINE\n"));
        h.answer(
            "zfs get -H -p -o value used,available persist",
            Ok("1073741824\n9663676416\n"),
        );
        h.answer(
            "zfs get -H -p -r",
            Ok("persist\tmountpoint\t/persist\tdefault\n"),
        );
        h.answer("zfs get -H -p -o property,value", vault);
        h.answer("zfs get -H -p -o value guid persist/vault", Ok("42\n"));
        h
    }

    fn enc() -> Encryption {
        Policy::builtin().encryption
    }

    fn candidates() -> Vec<Candidate> {
        vec![(
            PathBuf::from("/config/storage.toml"),
            Ok(policy::BUILTIN.to_string()),
        )]
    }

    /// One bring-up with the built-in policy over a box where nothing new was seen.
    fn bring(h: &mut FakeHost, plan: Plan) -> Result<Outcome, Error> {
        let p = Policy::builtin();
        bring_up(h, &candidates(), &p.encryption, &plan, &nothing_seen(), &p)
    }

    /// The outcome file the boot health check reads.
    fn outcome(h: &FakeHost) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(h.roots.storage_outcome()).unwrap()).unwrap()
    }

    const NO_VAULT: &str = "cannot open 'persist/vault': dataset does not exist";

    fn position(h: &FakeHost, prefix: &str) -> usize {
        h.calls
            .iter()
            .position(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in {:#?}", h.calls))
    }

    #[test]
    fn a_whole_pass_caps_the_arc_makes_the_vault_before_its_datasets_and_reports() {
        let t = tempfile::tempdir().unwrap();
        let mut h = imported_pool(t.path(), Err(NO_VAULT));
        h.answer(
            "zfs list -H -o name,mountpoint,canmount,mounted",
            Ok("persist\t/persist\ton\tyes\npersist/vault/config\t/persist/config\ton\tno\n"),
        );
        let policy = Policy::builtin();
        let o = bring(&mut h, Plan::AlreadyImported { guid: 7 }).unwrap();
        assert_eq!(
            (o.guid, o.size, &o.vault, o.secure_boot),
            (7, 10 << 30, &Vault::Unlocked, SecureBoot::Unknown)
        );
        // The ARC cap is the policy's for 4 GiB of RAM and a 10 GiB pool.
        let arc =
            std::fs::read_to_string(h.roots.module("zfs").join("parameters/zfs_arc_max")).unwrap();
        assert_eq!(arc, plan::arc_max(&policy, 4 << 30, 10 << 30).to_string());
        // The vault is made (key sealed, on stdin) before anything under it, and every
        // dataset of the policy is made.
        let vault = position(&h, "zfs create -o encryption=aes-256-gcm");
        let under = h
            .calls
            .iter()
            .position(|c| c.starts_with("zfs create") && c.ends_with(" persist/vault/config"))
            .unwrap();
        assert!(vault < under && h.calls_to("tpm-seal").len() == 1);
        // The unlock phase ends after the vault, before anything else of the boot.
        let phase = position(&h, "tpm-end-unlock-phase");
        assert!(position(&h, "tpm-seal") < phase && phase < under);
        let made = h.calls_to("zfs create").len();
        // Every create but the vault's own (the vault step's) is a dataset change.
        assert_eq!(made, o.dataset_changes + 1, "{:#?}", h.calls);
        assert!(h.shown.len() == 1, "the recovery key is shown once");
        // Mounted again after the datasets (as crate::mounts decides), and the outcome and last
        // good policy written.
        let last_create = h.calls.iter().rposition(|c| c.starts_with("zfs create"));
        let last_list = h
            .calls
            .iter()
            .rposition(|c| c.starts_with("zfs list -H -o name,mountpoint,canmount,mounted"));
        assert!(last_list > last_create, "{:#?}", h.calls);
        assert_eq!(
            h.calls_to("zfs mount"),
            ["zfs mount -o nodev,nosuid persist/vault/config"],
            "only what the list said was unmounted"
        );
        let out = outcome(&h);
        assert_eq!(out["vault_state"], "unlocked");
        assert_eq!(out["pool"], "persist");
        assert_eq!(
            std::fs::read_to_string(config::last_good_in(&t.path().join("persist"))).unwrap(),
            policy::BUILTIN
        );
    }

    #[test]
    fn a_vault_that_cannot_be_read_costs_only_what_lives_in_it() {
        let t = tempfile::tempdir().unwrap();
        let mut h = imported_pool(t.path(), Err("pool I/O is currently suspended"));
        h.answer(
            "zfs list -H -o name,mountpoint,canmount,mounted",
            Ok(
                "persist/newlog\t/persist/newlog\ton\tno\npersist/vault\t/persist/vault\ton\tno\n\
                persist/vault/config\t/persist/config\ton\tno\n",
            ),
        );
        let o = bring(&mut h, Plan::AlreadyImported { guid: 7 }).unwrap();
        assert!(matches!(o.vault, Vault::Absent { .. }), "{:?}", o.vault);
        assert!(
            h.calls_to("zfs create")
                .iter()
                .all(|c| !c.contains("persist/vault")),
            "{:#?}",
            h.calls
        );
        assert!(
            h.calls_to("zfs create").len() >= 2,
            "the clear datasets are made"
        );
        assert!(h.calls_to("zfs load-key").is_empty());
        assert!(h.calls_to("tpm-seal").is_empty() && h.calls_to("tpm-unseal").is_empty());
        // Nothing of the vault's subtree is mounted: only the pool's other filesystems.
        assert_eq!(
            h.calls_to("zfs mount"),
            ["zfs mount -o nodev,nosuid,noexec persist/newlog"; 2],
            "{:#?}",
            h.calls
        );
        let out = outcome(&h);
        assert_eq!(out["vault_state"], "absent");
    }

    #[test]
    fn the_unlock_phase_ends_on_a_box_with_a_tpm_only() {
        let mut h = FakeHost::default();
        apply::end_unlock_phase(&mut h);
        assert!(h.phase_over && h.calls == ["tpm-end-unlock-phase"]);
        let mut h = FakeHost {
            tpm: false,
            ..FakeHost::default()
        };
        apply::end_unlock_phase(&mut h);
        assert!(!h.phase_over && h.calls.is_empty());
    }

    #[test]
    fn a_refused_plan_changes_nothing_and_reports_nothing() {
        let t = tempfile::tempdir().unwrap();
        let mut h = imported_pool(t.path(), Ok(""));
        let plan = Plan::Refuse {
            reason: "two pools claim to be ours".into(),
        };
        let e = bring(&mut h, plan).unwrap_err();
        assert!(e.to_string().contains("two pools"), "{e}");
        assert!(h.calls.is_empty(), "{:?}", h.calls);
        assert!(!h.roots.storage_outcome().exists());
    }

    #[test]
    fn a_degraded_pool_still_comes_up() {
        let t = tempfile::tempdir().unwrap();
        let mut h = imported_pool(t.path(), Err(NO_VAULT));
        h.answer("zpool get -H -o value health persist", Ok("DEGRADED\n"));
        let o = bring(&mut h, Plan::AlreadyImported { guid: 7 }).unwrap();
        assert_eq!(o.vault, Vault::Unlocked);
        assert_eq!(h.calls_to("zpool status -P persist").len(), 1);
    }

    #[test]
    fn observing_reads_pools_through_the_host_and_an_unreadable_list_is_no_empty_one() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("sys/block")).unwrap();
        let mut h = FakeHost::under(t.path());
        h.answer("zpool list -H -p", Ok("persist\t42\tONLINE\t100\t1\t99\n"));
        h.answer(
            "zpool import -d",
            Ok("   pool: tank\n     id: 77\n  state: ONLINE\n"),
        );
        let (policy, obs) = observe(&mut h, &candidates(), &enc(), "").unwrap();
        assert_eq!(policy.pool.name, "persist");
        assert_eq!(obs.observed.imported, [("persist".to_string(), 42)]);
        assert_eq!(obs.observed.importable, [("tank".to_string(), 77)]);
        // zpool import's "no pools available" (exit 1) is none to import...
        h.answer("zpool import -d", Err("no pools available to import"));
        let (_, obs) = observe(&mut h, &candidates(), &enc(), "").unwrap();
        assert!(obs.observed.importable.is_empty());
        // ...but a pool list that cannot be read says nothing, and bring-up stops there.
        h.answer("zpool list -H -p", Err("the ZFS modules are not loaded"));
        let e = observe(&mut h, &candidates(), &enc(), "").unwrap_err();
        assert!(e.to_string().contains("not loaded"), "{e}");
    }

    /// Every call the fake saw only reads.
    fn only_reads(h: &FakeHost) {
        let reads = [
            "zpool get ",
            "zpool list ",
            "zpool status ",
            "zfs get ",
            "zfs list ",
        ];
        for c in &h.calls {
            assert!(
                reads.iter().any(|r| c.starts_with(r)),
                "the plan changed something: {c}\n{:#?}",
                h.calls
            );
        }
    }

    /// Nothing under the box's trees was written: no ARC cap, no outcome, no last good policy.
    fn nothing_written(h: &FakeHost) {
        assert!(!h
            .roots
            .module("zfs")
            .join("parameters/zfs_arc_max")
            .exists());
        assert!(!h.roots.storage_outcome().exists());
        assert!(!crate::config::last_good_in(&h.pool_mount("persist")).exists());
    }

    fn creates(actions: &[crate::datasets::Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                crate::datasets::Action::Create { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_whole_plan_of_a_fresh_box_names_the_pool_the_vault_and_every_dataset_and_changes_nothing(
    ) {
        let t = tempfile::tempdir().unwrap();
        let mut h = imported_pool(t.path(), Err(NO_VAULT));
        let obs = crate::observe::fixtures::two_blank();
        let policy = Policy::builtin();
        let whole = whole_plan(&mut h, &candidates(), &enc(), &obs, &policy);
        assert!(
            matches!(whole.pool, Plan::Create { .. }),
            "{:?}",
            whole.pool
        );
        let c = whole.contents.as_ref().unwrap();
        assert_eq!(
            c.vault,
            crate::vault::Decision::Create(crate::vault::NewKey::Tpm)
        );
        // Every dataset of the policy is to be made, the vault and what lives in it included.
        let want: Vec<String> = crate::datasets::desired(&policy, 0)
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(creates(c.datasets.as_ref().unwrap()), want);
        assert!(want.contains(&"persist/vault/config".to_string()));
        // Quotas are shares of the pool the drives will make (two 8 GiB drives; P3's size is
        // not known before it is made).
        let size = plan::estimate_size(policy.pool.topology, &[8 << 30, 8 << 30]);
        assert!(size > 0);
        assert_eq!(c.arc_max, plan::arc_max(&policy, 4 << 30, size));
        let text = whole.text();
        for line in [
            "pool: create (",
            "vault: persist/vault: create it with a key generated by the TPM",
            "datasets: persist/vault: made by the vault step",
            "datasets: persist/vault/config: create ",
            "mounts: ",
            "files: the outcome",
        ] {
            assert!(text.contains(line), "no `{line}` in\n{text}");
        }
        let j = whole.json();
        assert_eq!(j["plan"]["action"], "create");
        assert_eq!(j["contents"]["vault"]["action"], "create");
        assert!(h.calls.is_empty(), "{:#?}", h.calls);
        nothing_written(&h);
    }

    #[test]
    fn the_whole_plan_of_an_imported_pool_only_reads_and_the_run_does_what_it_said() {
        let t = tempfile::tempdir().unwrap();
        let mut h = imported_pool(t.path(), Err(NO_VAULT));
        let mut obs = nothing_seen();
        obs.observed.imported = vec![("persist".into(), 7)];
        let policy = Policy::builtin();
        let whole = whole_plan(&mut h, &candidates(), &enc(), &obs, &policy);
        assert_eq!(whole.pool, Plan::AlreadyImported { guid: 7 });
        only_reads(&h);
        nothing_written(&h);
        let planned = creates(whole.contents.as_ref().unwrap().datasets.as_ref().unwrap());
        // The run on the same box makes exactly those datasets (the vault with its key).
        let mut run = imported_pool(t.path(), Err(NO_VAULT));
        bring(&mut run, Plan::AlreadyImported { guid: 7 }).unwrap();
        let mut made: Vec<String> = run
            .calls_to("zfs create")
            .iter()
            .filter_map(|c| c.split(' ').rfind(|w| w.starts_with("persist")))
            .map(String::from)
            .collect();
        made.sort();
        assert_eq!(made, planned);
    }

    #[test]
    fn a_pool_still_to_be_imported_is_planned_only_as_far_as_can_be_read() {
        let t = tempfile::tempdir().unwrap();
        let mut h = imported_pool(t.path(), Err(NO_VAULT));
        let mut obs = nothing_seen();
        obs.observed.imported = vec![];
        obs.observed.importable = vec![("persist".into(), 9)];
        let whole = whole_plan(&mut h, &candidates(), &enc(), &obs, &Policy::builtin());
        assert_eq!(whole.pool, Plan::Import { guid: 9 });
        let why = whole.contents.unwrap_err();
        assert!(why.contains("once persist is imported"), "{why}");
        assert!(h.calls.is_empty(), "{:#?}", h.calls);
    }
}
