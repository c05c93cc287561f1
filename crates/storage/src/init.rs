//! storage-init's run as library functions over the [`Host`]: choose the policy, observe, and
//! bring the pool, the vault and the datasets up. The binary only parses its command line and
//! prints; everything here runs against the fake host in the unit tests.

use crate::bringup::{self, Error, Observation};
use crate::config::{self, Candidate};
use crate::host::Host;
use crate::mounts;
use crate::plan::{self, Plan};
use crate::policy::{self, Policy, PoolFacts, Source};
use crate::vault::{self, SecureBoot, Vault};
use platform::log;
use platform::Roots;
use serde::Serialize;

/// The policy in force from the candidate files, the pool's size and last good policy (once it
/// is up) and what the pool already is; says on stderr where it came from. The third value is
/// the policy text to keep on the pool as the last good one.
pub fn load_policy(
    candidates: &[Candidate],
    pool_size: Option<u64>,
    last_good: Option<&str>,
    facts: &PoolFacts,
) -> (Policy, Source, Option<String>) {
    let (p, src, keep) = policy::choose(candidates, last_good, pool_size, facts);
    // How the vault is sealed is the signed image's to say, never the CONFIG partition's.
    let (p, ignored) = policy::pin_encryption(p, &config::image_encryption());
    if let Some(why) = ignored {
        log(format!("policy: {why}"));
    }
    match &src {
        Source::File(f) => log(format!("policy: {}", f.display())),
        Source::LastGood { rejected } => log(format!(
            "policy REJECTED: {rejected}; using the last good policy stored on the pool"
        )),
        Source::Builtin { rejected: Some(e) } => {
            log(format!("policy REJECTED: {e}; using the built-in policy"))
        }
        Source::Builtin { rejected: None } => log("policy: none found; using the built-in policy"),
    }
    (p, src, keep)
}

/// The policy and the observation it was made under. The pool on this box's own partitions has
/// a name; a policy that calls it something else is rejected (not obeyed by making a new pool or
/// refusing to import the one there is), and the drives are observed again under the right one.
pub fn observe(
    host: &mut dyn Host,
    candidates: &[Candidate],
    mountinfo: &str,
) -> Result<(Policy, Observation), Error> {
    let roots = host.roots().clone();
    let (policy, _, _) = load_policy(candidates, None, None, &PoolFacts::default());
    let obs = bringup::observe(host, &roots, &policy, mountinfo)?;
    match bringup::our_pools(&obs).as_slice() {
        [name] if *name != policy.pool.name => {
            let facts = PoolFacts {
                name: Some(name.clone()),
                ..Default::default()
            };
            let policy = load_policy(candidates, None, None, &facts).0;
            let obs = bringup::observe(host, &roots, &policy, mountinfo)?;
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

/// Brings storage up as `plan` says: the pool, new drives, mounts, the policy again with the pool
/// up (its last good policy and facts), the ARC cap, the vault and the datasets; then keeps the
/// policy and writes the outcome the boot health check reads. Only a failure that leaves no pool
/// is an error; the rest is logged and the run goes on.
pub fn bring_up(
    host: &mut dyn Host,
    candidates: &[Candidate],
    plan: &Plan,
    obs: &Observation,
    policy: &Policy,
) -> Result<Outcome, Error> {
    let guid = bringup::apply_pool(host, plan, obs, policy)?;
    if matches!(plan, Plan::Import { .. } | Plan::AlreadyImported { .. }) {
        if let Err(e) = bringup::add_new_drives(host, obs, policy) {
            log(format!("adding new drives failed: {}", platform::chain(&e)));
        }
    }
    let name = policy.pool.name.clone();
    warn_if_degraded(host, &name);
    // The vault's subtree waits until the vault is checked: a dataset put in its place must not
    // be mounted where services would write into it.
    let mut refused = mounts::apply(host, policy, false);
    let size = pool_size(host, &name).unwrap_or(0);
    let last = std::fs::read_to_string(config::last_good_in(&host.pool_mount(&name))).ok();
    let facts = bringup::gather_pool_facts(host, &name);
    let (policy, _, keep) = load_policy(candidates, Some(size), last.as_deref(), &facts);
    cap_arc(host.roots(), &policy, size);
    let sb = vault::secure_boot(&host.roots().sys);
    log(format!("Secure Boot: {}", sb.describe()));
    let (vault, recovery) = vault::ensure(host, &policy, sb);
    // Whatever became of the vault, no later process of this boot may unseal.
    end_unlock_phase(host);
    let actions = bringup::reconcile_datasets(host, &policy, size, vault.usable(), false)?;
    log(format!("datasets: {} change(s)", actions.len()));
    if let Some(text) = keep {
        keep_last_good(host, &name, &text);
    }
    // A refusal the dataset reconcile has since repaired is still tampering to report.
    for r in mounts::apply(host, &policy, vault.usable()) {
        if !refused.contains(&r) {
            refused.push(r);
        }
    }
    write_outcome(host, &name, &vault, recovery.as_ref(), sb, &refused);
    Ok(Outcome {
        pool: name,
        guid,
        size,
        vault,
        secure_boot: sb,
        dataset_changes: actions.len(),
    })
}

/// `--dry-run`: with the pool already up, what the dataset reconcile would change.
pub fn dry_run(host: &mut dyn Host, plan: &Plan, policy: &Policy) -> Result<(), Error> {
    if let plan::Plan::AlreadyImported { .. } = plan {
        let size = pool_size(host, &policy.pool.name).unwrap_or(0);
        bringup::reconcile_datasets(host, policy, size, true, true)?;
    }
    Ok(())
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

/// Used plus available bytes of the pool's root dataset.
fn pool_size(host: &mut dyn Host, name: &str) -> Option<u64> {
    let args = ["get", "-H", "-p", "-o", "value", "used,available", name].map(String::from);
    let out = host.zfs(&args, None).ok()?;
    Some(
        out.lines()
            .filter_map(|l| l.trim().parse::<u64>().ok())
            .sum(),
    )
}

/// A degraded pool is served from the rest, loudly: the console gets zpool's own account.
fn warn_if_degraded(host: &mut dyn Host, pool: &str) {
    let args = ["get", "-H", "-o", "value", "health", pool].map(String::from);
    let health = host
        .zpool(&args)
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|e| e.to_string());
    if health != "ONLINE" {
        let status = host
            .zpool(&["status".into(), "-P".into(), pool.into()])
            .unwrap_or_default();
        log(format!("WARNING: POOL {pool} IS {health}: a member is missing or failing; data is served from the rest\n{status}"));
    }
}

/// Caps the ARC as the policy says for this box's RAM and pool.
fn cap_arc(roots: &Roots, policy: &Policy, size: u64) {
    let meminfo = std::fs::read_to_string(roots.proc.join("meminfo")).unwrap_or_default();
    let ram = bringup::mem_total(&meminfo);
    let arc = bringup::arc_max(policy, ram, size);
    let arc_param = roots.module("zfs").join("parameters/zfs_arc_max");
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
    let p = config::last_good_in(&host.pool_mount(pool));
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
    let outcome_path = host.roots().storage_outcome();
    let _ = std::fs::create_dir_all(outcome_path.parent().unwrap_or(&outcome_path));
    if let Err(e) = std::fs::write(&outcome_path, outcome.to_string()) {
        log(format!("{}: {e}", outcome_path.display()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;
    use crate::plan::{Observed, P3};
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

    fn candidates() -> Vec<Candidate> {
        vec![(
            PathBuf::from("/config/storage.toml"),
            Ok(policy::BUILTIN.to_string()),
        )]
    }

    /// One bring-up with the built-in policy over a box where nothing new was seen.
    fn bring(h: &mut FakeHost, plan: Plan) -> Result<Outcome, Error> {
        bring_up(h, &candidates(), &plan, &nothing_seen(), &Policy::builtin())
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
        assert_eq!(
            arc,
            bringup::arc_max(&policy, 4 << 30, 10 << 30).to_string()
        );
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
        assert_eq!(made, o.dataset_changes, "{:#?}", h.calls);
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
        end_unlock_phase(&mut h);
        assert!(h.phase_over && h.calls == ["tpm-end-unlock-phase"]);
        let mut h = FakeHost {
            tpm: false,
            ..FakeHost::default()
        };
        end_unlock_phase(&mut h);
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
        let (policy, obs) = observe(&mut h, &candidates(), "").unwrap();
        assert_eq!(policy.pool.name, "persist");
        assert_eq!(obs.observed.imported, [("persist".to_string(), 42)]);
        assert_eq!(obs.observed.importable, [("tank".to_string(), 77)]);
        // zpool import's "no pools available" (exit 1) is none to import...
        h.answer("zpool import -d", Err("no pools available to import"));
        let (_, obs) = observe(&mut h, &candidates(), "").unwrap();
        assert!(obs.observed.importable.is_empty());
        // ...but a pool list that cannot be read says nothing, and bring-up stops there.
        h.answer("zpool list -H -p", Err("the ZFS modules are not loaded"));
        let e = observe(&mut h, &candidates(), "").unwrap_err();
        assert!(e.to_string().contains("not loaded"), "{e}");
    }
}
