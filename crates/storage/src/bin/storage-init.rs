//! storage-init: the onboot step that turns the box's drives into /persist.

use clap::{Parser, Subcommand};
use platform::Roots;
use std::process::ExitCode;
use storage::bringup::{self, log};
use storage::plan;
use storage::policy::{self, Source};
use storage::{cmd, config, zfs};

#[derive(Parser)]
#[command(
    version,
    about = "Find every drive, pool them into ZFS and give /persist services their datasets"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show every device, its verdict and the actions that would be taken; change nothing.
    Plan {
        #[arg(long)]
        json: bool,
    },
    /// Recovery/escrow: unseal the vault key with this box's TPM into FILE, which must be on a
    /// memory filesystem (tmpfs/ramfs) so the raw key never reaches a disk.
    UnsealKey {
        #[arg(long)]
        out: std::path::PathBuf,
        #[arg(long, default_value = "persist")]
        pool: String,
    },
    /// Bring storage up (the onboot step).
    Run {
        /// Observe and print the plan and dataset diff only.
        #[arg(long)]
        dry_run: bool,
    },
}

fn load_policy(
    config_error: Option<String>,
    pool_size: Option<u64>,
    last_good: Option<&str>,
    facts: &policy::PoolFacts,
) -> (policy::Policy, Source, Option<String>) {
    let (p, src, keep) = policy::choose(
        &config::candidates(config_error),
        last_good,
        pool_size,
        facts,
    );
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

fn report(e: &dyn std::error::Error) -> ExitCode {
    eprintln!("storage-init: error: {}", platform::chain(e));
    ExitCode::FAILURE
}

fn pool_size(name: &str) -> Option<u64> {
    let out = cmd::run(
        zfs::ZFS,
        &[
            "get".into(),
            "-H".into(),
            "-p".into(),
            "-o".into(),
            "value".into(),
            "used,available".into(),
            name.into(),
        ],
        None,
    )
    .ok()?;
    Some(
        out.lines()
            .filter_map(|l| l.trim().parse::<u64>().ok())
            .sum(),
    )
}

/// True when `dir` is on tmpfs or ramfs.
fn in_memory(dir: &std::path::Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: statfs writes into the zeroed struct we own; the path is a valid C string.
    let r = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    r == 0 && (st.f_type == 0x0102_1994 || st.f_type as u64 == 0x8584_58f6)
}

fn unseal_key(out: &std::path::Path, pool: &str) -> ExitCode {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    if !in_memory(parent) {
        eprintln!(
            "storage-init: {}: not on tmpfs or ramfs; refusing to write a raw key there",
            parent.display()
        );
        return ExitCode::from(2);
    }
    let vault = format!("{pool}/vault");
    let blob = match cmd::run(
        zfs::ZFS,
        &[
            "get".into(),
            "-H".into(),
            "-o".into(),
            "value".into(),
            storage::tpm::SEALED_PROPERTY.into(),
            vault.clone(),
        ],
        None,
    ) {
        Ok(b) => b,
        Err(e) => return report(&e),
    };
    match storage::tpm::unseal(&blob) {
        Ok(key) => {
            use std::os::unix::fs::OpenOptionsExt;
            let w = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(out)
                .and_then(|mut f| std::io::Write::write_all(&mut f, &key));
            match w {
                Ok(()) => {
                    log(format!("{vault}: key written to {}", out.display()));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("storage-init: {}: {e}", out.display());
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => report(&e),
    }
}

/// The commands that observe storage first.
enum Action {
    Plan { json: bool },
    Run { dry_run: bool },
}

fn main() -> ExitCode {
    let action = match Cli::parse().cmd {
        Cmd::UnsealKey { out, pool } => return unseal_key(&out, &pool),
        Cmd::Plan { json } => Action::Plan { json },
        Cmd::Run { dry_run } => Action::Run { dry_run },
    };
    let roots = Roots::host();
    let mountinfo = std::fs::read_to_string(roots.mountinfo()).unwrap_or_default();
    let config_error =
        config::mount_config(&roots, bringup::boot_disk(&roots, &mountinfo).as_deref()).err();
    let (mut policy, _, _) = load_policy(
        config_error.clone(),
        None,
        None,
        &policy::PoolFacts::default(),
    );
    let mut obs = match bringup::observe(&roots, &policy, &mountinfo) {
        Ok(o) => o,
        Err(e) => return report(&e),
    };
    // The pool on this box's own partitions has a name; a policy that calls it something else
    // is rejected (not obeyed by making a new pool or refusing to import the one there is).
    let ours = bringup::our_pools(&obs);
    if let [name] = ours.as_slice() {
        if *name != policy.pool.name {
            let facts = policy::PoolFacts {
                name: Some(name.clone()),
                ..Default::default()
            };
            policy = load_policy(config_error.clone(), None, None, &facts).0;
            obs = match bringup::observe(&roots, &policy, &mountinfo) {
                Ok(o) => o,
                Err(e) => return report(&e),
            };
        }
    }
    let plan = plan::decide(&obs.observed, &policy);
    match action {
        Action::Plan { json } => {
            if json {
                let v = serde_json::json!({ "devices": obs.report, "observed": obs.observed, "plan": plan });
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                for d in &obs.report {
                    println!(
                        "{:<10} {:<9} {:>8} MiB  {:<40} {:?}",
                        d.name,
                        format!("{:?}", d.transport).to_lowercase(),
                        d.size_bytes >> 20,
                        d.stable_id,
                        d.verdict
                    );
                }
                println!("plan: {plan:?}");
            }
            ExitCode::SUCCESS
        }
        Action::Run { dry_run } => {
            for d in &obs.report {
                log(format!(
                    "{} ({}, {} MiB, id {}): {:?}",
                    d.name,
                    format!("{:?}", d.transport).to_lowercase(),
                    d.size_bytes >> 20,
                    d.stable_id,
                    d.verdict
                ));
            }
            log(format!("plan: {plan:?}"));
            if dry_run {
                // With the pool already up, also show what the dataset reconcile would change.
                if let plan::Plan::AlreadyImported { .. } = plan {
                    let size = pool_size(&policy.pool.name).unwrap_or(0);
                    if let Err(e) = bringup::reconcile_datasets(&policy, size, true, true) {
                        return report(&e);
                    }
                }
                return ExitCode::SUCCESS;
            }
            let mut host = storage::host::RealHost::new(roots.clone());
            let guid = match bringup::apply_pool(&mut host, &plan, &obs, &policy) {
                Ok(g) => g,
                Err(e) => return report(&e),
            };
            if matches!(
                plan,
                plan::Plan::Import { .. } | plan::Plan::AlreadyImported { .. }
            ) {
                if let Err(e) = bringup::add_new_drives(&mut host, &obs, &policy) {
                    log(format!("adding new drives failed: {}", platform::chain(&e)));
                }
            }
            warn_if_degraded(&policy.pool.name);
            if let Err(e) = cmd::run(zfs::ZFS, &["mount".into(), "-a".into()], None) {
                log(format!("zfs mount -a: {e}"));
            }
            // With the pool up, a rejected policy falls back to the last good one stored there.
            let size = pool_size(&policy.pool.name).unwrap_or(0);
            let last = std::fs::read_to_string(config::last_good_path(&policy.pool.name)).ok();
            let facts = bringup::gather_pool_facts(&policy.pool.name);
            let (policy, _, keep) = load_policy(config_error, Some(size), last.as_deref(), &facts);
            cap_arc(&roots, &policy, size);
            let sb = storage::vault::secure_boot(&roots.sys);
            log(format!("Secure Boot: {}", sb.describe()));
            let mut console = storage::vault::Console(roots.dev.join("console"));
            let vault = storage::vault::ensure(&policy, sb, &mut console);
            match bringup::reconcile_datasets(&policy, size, vault.usable(), false) {
                Ok(actions) => log(format!("datasets: {} change(s)", actions.len())),
                Err(e) => return report(&e),
            }
            if let Some(text) = keep {
                keep_last_good(&policy.pool.name, &text);
            }
            if let Err(e) = cmd::run(zfs::ZFS, &["mount".into(), "-a".into()], None) {
                log(format!("zfs mount -a: {e}"));
            }
            write_outcome(&roots, &policy.pool.name, &vault, sb);
            println!(
                "storage-init: pool {} guid {guid} ready at /{} ({} MiB usable); vault {vault:?}",
                policy.pool.name,
                policy.pool.name,
                size >> 20
            );
            ExitCode::SUCCESS
        }
    }
}

/// A degraded pool is served from the rest, loudly: the console gets zpool's own account.
fn warn_if_degraded(pool: &str) {
    let health = cmd::run(
        zfs::ZPOOL,
        &[
            "get".into(),
            "-H".into(),
            "-o".into(),
            "value".into(),
            "health".into(),
            pool.into(),
        ],
        None,
    )
    .map(|h| h.trim().to_string())
    .unwrap_or_else(|e| e.to_string());
    if health != "ONLINE" {
        let status = cmd::run(
            zfs::ZPOOL,
            &["status".into(), "-P".into(), pool.into()],
            None,
        )
        .unwrap_or_default();
        log(format!("WARNING: POOL {pool} IS {health}: a member is missing or failing; data is served from the rest\n{status}"));
    }
}

/// Caps the ARC as the policy says for this box's RAM and pool.
fn cap_arc(roots: &Roots, policy: &policy::Policy, size: u64) {
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
fn keep_last_good(pool: &str, text: &str) {
    let p = config::last_good_path(pool);
    let _ = std::fs::create_dir_all(p.parent().unwrap_or(&p));
    if let Err(e) = std::fs::write(&p, text) {
        log(format!("{}: {e}", p.display()));
    }
}

/// What ab-health judges this boot by: the names under the policy in force and what became of
/// the vault.
fn write_outcome(
    roots: &Roots,
    pool: &str,
    vault: &storage::vault::Vault,
    sb: storage::vault::SecureBoot,
) {
    let outcome = serde_json::json!({
        "pool": pool,
        "vault": format!("{pool}/vault"),
        "vault_state": vault.state(),
        "secure_boot": sb,
        "secure_boot_text": sb.describe(),
        "vault_bound_to": storage::vault::binding_of(pool),
    });
    let outcome_path = roots.storage_outcome();
    let _ = std::fs::create_dir_all(outcome_path.parent().unwrap_or(&outcome_path));
    if let Err(e) = std::fs::write(&outcome_path, outcome.to_string()) {
        log(format!("{}: {e}", outcome_path.display()));
    }
}
