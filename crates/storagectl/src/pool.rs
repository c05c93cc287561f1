//! `storagectl status`: the pool, its members and datasets, the vault and its boot binding,
//! scheduled maintenance and the alerts storaged left (gathered by `storaged::status`).

use crate::emit;
use std::process::ExitCode;

/// `storagectl status [--json] [--pool P]`.
pub fn status(pool: &str, json: bool) -> ExitCode {
    emit(storaged::status::full(pool), json, |s| s.render())
}
