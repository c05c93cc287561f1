//! `storagectl status`: the pool, its members and datasets, the vault and its boot binding,
//! scheduled maintenance and the alerts storaged left (gathered by `storaged::status`).

use std::process::ExitCode;

/// `storagectl status [--json] [-x] [--pool P]`.
pub fn status(pool: &str, json: bool, quiet: bool) -> ExitCode {
    match storaged::status::full(pool) {
        Ok(s) => crate::output::report(&s, s.exit_code, &s.problems, json, quiet, |s| s.render()),
        Err(e) => crate::output::fail(&e),
    }
}
