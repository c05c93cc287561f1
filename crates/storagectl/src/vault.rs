//! `storagectl vault`: unlock with the recovery key after a board or TPM change, or make a new
//! recovery key.

use crate::cli::VaultCmd;
use crate::{emit, fail};
use platform::Roots;
use std::process::ExitCode;
use storage::host::RealHost;

pub fn vault(pool: &str, cmd: VaultCmd) -> ExitCode {
    use storage::vault;
    match cmd {
        VaultCmd::Recover {
            json,
            accept_unproven,
        } => {
            let mut line = zeroize::Zeroizing::new(String::new());
            if let Err(e) = std::io::stdin().read_line(&mut line) {
                eprintln!("storagectl: reading the recovery key on stdin: {e}");
                return ExitCode::FAILURE;
            }
            let rk = match vault::RecoveryKey::parse(&line) {
                Ok(k) => k,
                Err(e) => return fail(&e),
            };
            // What the key is sealed to is the signed image's to say (never CONFIG's).
            let enc = storage::config::image_encryption();
            let mut host = RealHost::new(Roots::host());
            let sb = vault::secure_boot(&host.roots.sys);
            // Where the vault's datasets mount: the policy storage-init last applied here.
            let mut policy = storage::config::last_good_policy(pool)
                .unwrap_or_else(storage::policy::Policy::builtin);
            policy.pool.name = pool.to_string();
            let r = vault::recover(&mut host, &policy, &rk, &enc, sb, accept_unproven);
            if let Ok(v) = &r {
                if v.unlocked {
                    storage::config::record_vault_state(
                        &Roots::host(),
                        pool,
                        "unlocked",
                        v.sealed_to.as_deref(),
                    );
                }
            }
            emit(r, json, |v| {
                if !v.unlocked {
                    format!("{}: already unlocked; nothing changed\n", v.vault)
                } else {
                    let mut t = format!(
                        "{}: unlocked with the recovery key; {}\n",
                        v.vault,
                        match (&v.sealed_to, &v.warning) {
                            (Some(b), _) => format!(
                                "its key is now sealed to {b}: the next boot unlocks by itself"
                            ),
                            (None, Some(_)) =>
                                "its seal is not replaced: the next boot needs the recovery key again".into(),
                            (None, None) =>
                                "no TPM here: the next boot needs the recovery key again".into(),
                        }
                    );
                    if let Some(w) = &v.warning {
                        t.push_str(&format!("WARNING: {w}\n"));
                    }
                    t
                }
            })
        }
        VaultCmd::RecoveryKey => {
            let mut host = RealHost::new(Roots::host());
            let sb = vault::secure_boot(&host.roots.sys);
            let enc = storage::config::image_encryption();
            match vault::new_recovery_key(&mut host, pool, &enc, sb) {
                Ok(rk) => {
                    println!("{}", rk.display());
                    eprintln!("storagectl: new recovery key for {pool}/vault; the vault key was rotated, so the old recovery key and every old seal or copy of them open nothing; the new key is not stored anywhere");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
    }
}
