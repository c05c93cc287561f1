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

/// Whether the command line asked for JSON: errors are then printed as JSON on stdout too.
static JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Runs one parsed command line; the exit code follows the result (README, "Exit codes").
pub fn run(cli: Cli) -> ExitCode {
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

/// Prints a result as JSON or as text, or its error chain; the exit code follows.
pub fn emit<T: serde::Serialize, E: std::error::Error + platform::exit::Classify>(
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

/// Prints an error's chain on stderr (and as `{"error": {"code", "message"}}` on stdout when the
/// command line asked for JSON); exits with its kind's code.
pub fn fail<E: std::error::Error + platform::exit::Classify>(e: &E) -> ExitCode {
    let msg = platform::chain(e);
    eprintln!("storagectl: {msg}");
    if JSON.load(std::sync::atomic::Ordering::Relaxed) {
        println!("{}", platform::exit::json_error(e.code(), &msg));
    }
    ExitCode::from(e.kind().exit_code())
}

/// Saves a support bundle (made here or fetched from a box) and says what is in it.
pub fn bundled(bytes: &[u8], out: Option<std::path::PathBuf>, now: u64, json: bool) -> ExitCode {
    let path = out.unwrap_or_else(|| format!("{}.tar.gz", support::name(now)).into());
    if let Err(e) = support::save(&path, bytes) {
        return fail(&e);
    }
    let m = support::read_manifest(bytes).unwrap_or_default();
    let items = m["items"].as_array().map_or(0, Vec::len);
    let failed: Vec<String> = m["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i.get("error").is_some())
        .filter_map(|i| i["name"].as_str().map(String::from))
        .collect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "file": path.display().to_string(),
                "bytes": bytes.len(),
                "manifest": m,
            }))
            .unwrap_or_default()
        );
    } else {
        println!(
            "wrote {} ({}, {items} items, {} secrets redacted{})",
            path.display(),
            platform::units::human(bytes.len() as u64),
            m["redacted"].as_u64().unwrap_or(0),
            if failed.is_empty() {
                String::new()
            } else {
                format!("; could not read: {}", failed.join(", "))
            }
        );
    }
    ExitCode::SUCCESS
}

/// A change's result: its one line, or with `--json` an object saying what was done.
pub fn changed(json: bool, v: serde_json::Value, line: impl std::fmt::Display) -> ExitCode {
    if json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        println!("{line}");
    }
    ExitCode::SUCCESS
}

/// The line `scrub` and `trim` print: what was started or stopped, on which pool.
pub fn maintained(v: &serde_json::Value) -> String {
    let done = match v["op"].as_str() {
        Some("scrub-stop") => "scrub stopped",
        Some("trim-now") => "trim started",
        _ => "scrub started",
    };
    format!(
        "{}: {done} (storagectl status shows its progress)\n",
        v["pool"].as_str().unwrap_or("?")
    )
}

/// A usage error found after parsing (2, as clap's own); as JSON too when asked.
pub fn usage(msg: &str) -> ExitCode {
    eprintln!("storagectl: {msg}");
    if JSON.load(std::sync::atomic::Ordering::Relaxed) {
        println!(
            "{}",
            platform::exit::json_error(platform::exit::Kind::BadInput.code(), msg)
        );
    }
    ExitCode::from(platform::exit::Kind::BadInput.exit_code())
}

/// A report (`status`, `health`): printed whole, as JSON, or (`quiet`, like `zpool status -x`)
/// only what is wrong; the exit code says how things stand whatever is printed.
pub fn report<T: serde::Serialize>(
    v: &T,
    code: u8,
    problems: &[String],
    json: bool,
    quiet: bool,
    text: impl Fn(&T) -> String,
) -> ExitCode {
    if json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else if quiet {
        print!("{}", render_problems(problems));
    } else {
        print!("{}", text(v));
    }
    ExitCode::from(code)
}

/// `-x`'s text: one line per problem, or that there is none.
pub fn render_problems(problems: &[String]) -> String {
    if problems.is_empty() {
        "all is well\n".to_string()
    } else {
        problems.iter().map(|p| format!("{p}\n")).collect()
    }
}
