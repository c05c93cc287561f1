//! storagectl: the operator's view of the appliance's storage (pool status, drives, the vault)
//! and guest volumes, on the box or (`--remote`) through its management API. `main` parses the
//! command line; each command lives in its own module.

pub mod cli;
pub mod disk;
pub mod pool;
pub mod remote;
pub mod vault;
pub mod volume;

use cli::{Cli, Cmd, ExportCmd};
use std::process::ExitCode;

/// Runs one parsed command line; the exit code follows the result.
pub fn run(cli: Cli) -> ExitCode {
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
        Cmd::Health { json, bytes, pool } => {
            let v = storaged::health_view(&pool, std::path::Path::new("/"));
            emit(Ok::<_, storaged::Error>(v), json, |v| v.render(bytes))
        }
        Cmd::Status { json, pool } => pool::status(&pool, json),
        Cmd::Audit { json, lines, pool } => {
            let j = storaged::audit::Journal::at(storaged::audit::path(
                std::path::Path::new("/"),
                &pool,
            ));
            emit(j.tail(lines), json, |e| storaged::audit::render(e))
        }
        Cmd::Volume { config, cmd } => volume::volume(config.as_deref(), cmd),
        Cmd::Vault { pool, cmd } => vault::vault(&pool, cmd),
        Cmd::Export {
            config,
            cmd: ExportCmd::Save { file },
        } => volume::export_save(config.as_deref(), file),
    }
}

/// Prints a result as JSON or as text, or its error chain; the exit code follows.
pub fn emit<T: serde::Serialize, E: std::error::Error>(
    r: Result<T, E>,
    json: bool,
    text: impl Fn(&T) -> String,
) -> ExitCode {
    match r {
        Ok(v) if json => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(v) => {
            print!("{}", text(&v));
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

pub fn fail(e: &dyn std::error::Error) -> ExitCode {
    eprintln!("storagectl: {}", platform::chain(e));
    ExitCode::FAILURE
}
