//! The README's `storagectl` command lines name commands and flags that exist: every line in a
//! code block that starts with `storagectl` is walked through the parser's command tree, so a
//! renamed command or a removed flag fails here instead of misleading an operator.

#![allow(clippy::unwrap_used)]

use clap::CommandFactory;
use storagectl::cli::Cli;

/// The `storagectl ...` lines of the README's code blocks, comments cut.
fn documented() -> Vec<String> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let mut in_code = false;
    let mut v = Vec::new();
    for l in text.lines() {
        if l.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        let l = l.trim();
        if in_code && l.starts_with("storagectl ") && !l.starts_with("storagectl: ") {
            v.push(l.split(" #").next().unwrap().trim().to_string());
        }
    }
    v
}

/// Walks `line` through the command tree: subcommands descend, `--flags` must exist where they
/// are given (or globally); the first other word is a value and ends the walk of subcommands.
fn check(line: &str) -> Result<(), String> {
    let root = Cli::command();
    let mut cmd = &root;
    let mut descending = true;
    for w in line.split_whitespace().skip(1) {
        let w = w.trim_matches(['[', ']']);
        if let Some(flag) = w.strip_prefix("--") {
            let flag = flag.split('=').next().unwrap();
            let known = |c: &clap::Command| c.get_arguments().any(|a| a.get_long() == Some(flag));
            if flag != "help" && !known(cmd) && !known(&root) {
                return Err(format!("`{line}`: no --{flag} on `{}`", cmd.get_name()));
            }
            continue;
        }
        if descending {
            if let Some(sub) = cmd.find_subcommand(w) {
                cmd = sub;
                continue;
            }
            if cmd.has_subcommands() && cmd.get_positionals().next().is_none() {
                return Err(format!(
                    "`{line}`: no command `{w}` under `{}`",
                    cmd.get_name()
                ));
            }
            descending = false;
        }
    }
    if cmd.has_subcommands() && cmd.get_positionals().next().is_none() && descending {
        return Err(format!("`{line}`: `{}` needs a command", cmd.get_name()));
    }
    Ok(())
}

#[test]
fn every_documented_command_line_parses_to_commands_and_flags_that_exist() {
    let lines = documented();
    assert!(lines.len() > 20, "{lines:?}");
    let bad: Vec<String> = lines.iter().filter_map(|l| check(l).err()).collect();
    assert!(bad.is_empty(), "{bad:#?}");
    // And the walk catches what it is for.
    assert!(check("storagectl volume frobnicate web").is_err());
    assert!(check("storagectl volume delete web --gently").is_err());
    assert!(check("storagectl status -x --json").is_ok());
}
