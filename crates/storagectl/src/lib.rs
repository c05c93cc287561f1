//! storagectl: the operator's view of the appliance's storage (pool status, drives, the vault)
//! and guest volumes, on the box or (`--remote`) through its management API. `main` parses the
//! command line; each command lives in its own module.

pub mod cli;
pub mod disk;
pub mod output;
pub mod pool;
pub mod remote;
pub mod vault;
pub mod volume;

use cli::{Cli, Cmd, ExportCmd};
use output::{bundled, command_path, emit, fail, maintained, report, COMMAND, JSON};
use std::process::ExitCode;

pub use output::{stamped, JSON_MAJOR, JSON_MINOR};

/// Runs one parsed command line; the exit code follows the result (README, "Exit codes").
pub fn run(cli: Cli) -> ExitCode {
    // Lossy: a path argument need not be UTF-8, and only subcommand names are looked at.
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let _ = COMMAND.set(command_path(&args));
    JSON.store(
        std::env::args_os().any(|a| a == "--json"),
        std::sync::atomic::Ordering::Relaxed,
    );
    match cli.remote.remote() {
        Ok(Some(r)) => {
            return match mgmt_client::Client::new(&r) {
                Ok(c) => remote::run(&c, cli.cmd),
                Err(e) => fail(&e),
            }
        }
        Ok(None) => {}
        Err(e) => return fail(&e),
    }
    match cli.cmd {
        Cmd::Disk { pool, cmd } => disk::disk(&pool, cmd),
        Cmd::Health {
            json,
            bytes,
            quiet,
            pool,
        } => {
            let v = storaged::health_view(&pool, std::path::Path::new("/"));
            report(&v, v.exit_code, &v.problems, json, quiet, |v| {
                v.render(bytes)
            })
        }
        Cmd::Status { json, quiet, pool } => pool::status(&pool, json, quiet),
        Cmd::Bundle { out, json, pool } => {
            let now = storaged::now();
            match support::make(&support::Sources::host(&pool), now) {
                Ok((bytes, _)) => bundled(&bytes, out, now, json),
                Err(e) => fail(&e),
            }
        }
        Cmd::Audit { json, lines, pool } => {
            let j = storaged::audit::Journal::at(storaged::audit::path(
                std::path::Path::new("/"),
                &pool,
            ));
            emit(j.tail(lines), json, |e| storaged::audit::render(e))
        }
        Cmd::Scrub { json, ref pool, .. } | Cmd::Trim { json, ref pool, .. } => {
            let ask = cli.cmd.ask().unwrap_or(storaged::maint::Ask::ScrubNow);
            let r = storaged::maintain_now(pool, ask)
                .map(|()| serde_json::json!({"pool": pool, "op": ask}));
            emit(r, json, maintained)
        }
        Cmd::Volume { config, cmd } => volume::volume(config.as_deref(), cmd),
        Cmd::Vault { pool, cmd } => vault::vault(&pool, cmd),
        Cmd::Export {
            config,
            cmd: ExportCmd::Save { file, json },
        } => volume::export_save(config.as_deref(), file, json),
    }
}
