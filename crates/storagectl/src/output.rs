//! How every storagectl command answers: text or `--json` (stamped with the command and the JSON
//! format's version), the error chain on stderr, and the exit code the result says (README,
//! "Exit codes"). The command modules and the dispatcher use it; it uses none of them.

use crate::cli::Cli;
use std::process::ExitCode;

/// Whether the command line asked for JSON: errors are then printed as JSON on stdout too.
pub(crate) static JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The command whose JSON this run prints (`storagectl disk list`), for `output_version`.
pub(crate) static COMMAND: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The major version of every object `--json` prints; raised when a field changes meaning or
/// goes away (new fields raise the minor).
pub const JSON_MAJOR: u64 = 1;
pub const JSON_MINOR: u64 = 0;

/// Pure: the subcommand path `args` name (`storagectl disk list`), by the command tree.
pub fn command_path(args: &[String]) -> String {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let mut path = vec!["storagectl".to_string()];
    for a in args.iter().skip(1) {
        if a.starts_with('-') {
            continue;
        }
        match cmd.find_subcommand(a) {
            Some(sub) => {
                path.push(a.clone());
                cmd = sub.clone();
            }
            None => {
                if cmd.has_subcommands() {
                    continue;
                }
                break;
            }
        }
    }
    path.join(" ")
}

/// Pure: `v` as `--json` prints it: an object gets `output_version` as OpenZFS's `-j` output
/// has it (`{"command": "storagectl status", "vers_major": 1, "vers_minor": 0}`), so a script can
/// tell the schema it reads; arrays and other values are printed as they are.
pub fn stamped(v: serde_json::Value, command: &str) -> serde_json::Value {
    match v {
        serde_json::Value::Object(mut m) => {
            m.entry("output_version").or_insert_with(|| {
                serde_json::json!({"command": command, "vers_major": JSON_MAJOR, "vers_minor": JSON_MINOR})
            });
            serde_json::Value::Object(m)
        }
        v => v,
    }
}

/// The text `--json` prints for `v`.
pub fn json_text<T: serde::Serialize + ?Sized>(v: &T) -> String {
    let v = serde_json::to_value(v).unwrap_or_default();
    let cmd = COMMAND.get().map_or("storagectl", String::as_str);
    serde_json::to_string_pretty(&stamped(v, cmd)).unwrap_or_default()
}

/// Prints a result as JSON or as text, or its error chain; the exit code follows.
pub fn emit<T: serde::Serialize, E: std::error::Error + platform::exit::Classify>(
    r: Result<T, E>,
    json: bool,
    text: impl Fn(&T) -> String,
) -> ExitCode {
    match r {
        Ok(v) if json => {
            println!("{}", json_text(&v));
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
            json_text(&serde_json::json!({
                "file": path.display().to_string(),
                "bytes": bytes.len(),
                "manifest": m,
            }))
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
        println!("{}", json_text(&v));
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
        println!("{}", json_text(v));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_objects_carry_their_command_and_schema_version_and_arrays_stay_arrays() {
        let args = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            command_path(&args("storagectl --json disk list --bytes")),
            "storagectl disk list"
        );
        assert_eq!(
            command_path(&args("storagectl volume snapshot web before")),
            "storagectl volume snapshot"
        );
        assert_eq!(
            command_path(&args("storagectl status -x")),
            "storagectl status"
        );
        let v = stamped(serde_json::json!({"pool": "persist"}), "storagectl status");
        assert_eq!(
            v["output_version"],
            serde_json::json!({"command": "storagectl status", "vers_major": 1, "vers_minor": 0})
        );
        assert_eq!(v["pool"], "persist");
        // The box's own stamp (through --remote) is kept, not replaced.
        let keep = serde_json::json!({"output_version": {"command": "x", "vers_major": 9}});
        assert_eq!(stamped(keep.clone(), "storagectl status"), keep);
        assert_eq!(
            stamped(serde_json::json!([1, 2]), "c"),
            serde_json::json!([1, 2])
        );
    }
}
