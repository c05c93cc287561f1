//! `storagectl vault`: unlock with the recovery key after a board or TPM change, or make a new
//! recovery key.

use crate::cli::VaultCmd;
use crate::{emit, fail};
use std::process::ExitCode;

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
            let r = vault::recover_here(pool, &rk, accept_unproven);
            emit(r, json, |v| v.render())
        }
        VaultCmd::RecoveryKey => match vault::new_recovery_key_here(pool) {
            Ok(rk) => {
                println!("{}", rk.display());
                eprintln!("storagectl: new recovery key for {pool}/vault; the vault key was rotated, so the old recovery key and every old seal or copy of them open nothing; the new key is not stored anywhere");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
    }
}
