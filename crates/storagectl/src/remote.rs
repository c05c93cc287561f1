//! `storagectl --remote`: the same commands run on a box through its management API. Text comes
//! rendered by the box with the code that renders it here (`Accept: text/plain`), JSON is the
//! box's, and the lines a change prints are the ones printed on the box; errors print the box's
//! message and exit 1, like a failure here.

use crate::cli::{Cmd, DiskCmd, ExportCmd, SnapCmd, SnapshotArgs, VaultCmd, VolCmd};
use mgmt_client::{segment, Client, Error};
use serde_json::{json, Value};
use std::process::ExitCode;

/// A command that has no remote form: a usage error (2).
fn usage(what: &str) -> ExitCode {
    crate::output::usage(&format!(
        "{what} runs on the box only; it is not available with --remote"
    ))
}

fn fail(e: &Error) -> ExitCode {
    crate::output::fail(e)
}

/// The box's JSON as it sent it, or its text.
fn show(c: &Client, method: &str, path: &str, body: Option<&Value>, json: bool) -> ExitCode {
    let r = if json {
        c.call(method, path, body)
            .and_then(|r| r.json())
            .map(|v| crate::output::json_text(&v) + "\n")
    } else {
        c.text(method, path, body)
    };
    match r {
        Ok(t) => {
            print!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

/// A report (`status`, `health`): the box's JSON says what is wrong and what the command exits
/// with on the box; the text is the box's too.
fn report(c: &Client, path: &str, json: bool, quiet: bool) -> ExitCode {
    let v = match c.call("GET", path, None).and_then(|r| r.json()) {
        Ok(v) => v,
        Err(e) => return fail(&e),
    };
    let code = v["exit_code"]
        .as_u64()
        .and_then(|c| u8::try_from(c).ok())
        .unwrap_or(platform::exit::Kind::Failed.exit_code());
    if json {
        println!("{}", crate::output::json_text(&v));
    } else if quiet {
        print!("{}", crate::output::render_problems(&strs(&v["problems"])));
    } else {
        match c.text("GET", path, None) {
            Ok(t) => print!("{t}"),
            Err(e) => return fail(&e),
        }
    }
    ExitCode::from(code)
}

/// A change: its JSON answer handed to `line`, which prints what the local command prints.
fn change(
    c: &Client,
    method: &str,
    path: &str,
    body: Option<&Value>,
    json: bool,
    line: impl Fn(&Value) -> String,
) -> ExitCode {
    match c.call(method, path, body).and_then(|r| r.json()) {
        Ok(v) => {
            let l = line(&v);
            crate::output::changed(json, v, l)
        }
        Err(e) => fail(&e),
    }
}

fn bytes_q(bytes: bool) -> &'static str {
    if bytes {
        "?bytes=true"
    } else {
        ""
    }
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `cmd` on the box `c` calls.
pub fn run(c: &Client, cmd: Cmd) -> ExitCode {
    match cmd {
        Cmd::Status { json, quiet, .. } => report(c, "/v1/status", json, quiet),
        Cmd::Scrub { json, .. } | Cmd::Trim { json, .. } => {
            let ask = cmd.ask().unwrap_or(storaged::maint::Ask::ScrubNow);
            match c
                .call("POST", "/v1/pool/maintenance", Some(&json!({"op": ask})))
                .and_then(|r| r.json())
            {
                Ok(v) if json => {
                    println!("{}", crate::output::json_text(&v));
                    ExitCode::SUCCESS
                }
                Ok(v) => {
                    print!("{}", crate::output::maintained(&v));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Cmd::Health {
            json, bytes, quiet, ..
        } => report(c, &format!("/v1/health{}", bytes_q(bytes)), json, quiet),
        Cmd::Bundle { out, json, .. } => {
            match c.call("GET", "/v1/bundle", None).and_then(|r| r.bytes()) {
                Ok(b) => crate::output::bundled(&b, out, storaged::now(), json),
                Err(e) => fail(&e),
            }
        }
        Cmd::Audit { json, lines, .. } => {
            let path = format!("/v1/audit?lines={lines}");
            if !json {
                return show(c, "GET", &path, None, false);
            }
            // As on the box: the entries, oldest first.
            match c.get(&path) {
                Ok(v) => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&v["entries"]).unwrap_or_default()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Cmd::Disk { pool, cmd } => disk(c, &pool, cmd),
        Cmd::Volume {
            config: Some(_), ..
        }
        | Cmd::Export {
            config: Some(_), ..
        } => usage("--config (the box's volume settings)"),
        Cmd::Volume { cmd, .. } => volume(c, cmd),
        Cmd::Vault { pool, cmd } => vault(c, &pool, cmd),
        Cmd::Export {
            cmd: ExportCmd::Save { file, json },
            ..
        } => match c.get("/v1/export") {
            Ok(v) => crate::volume::write_export(&v, file, json),
            Err(e) => fail(&e),
        },
    }
}

fn disk(c: &Client, pool: &str, cmd: DiskCmd) -> ExitCode {
    match cmd {
        DiskCmd::List { json, bytes } => show(
            c,
            "GET",
            &format!("/v1/disks{}", bytes_q(bytes)),
            None,
            json,
        ),
        DiskCmd::Replace {
            old,
            new,
            no_wait,
            json,
        } => {
            let r = c
                .call(
                    "POST",
                    "/v1/disks/replace",
                    Some(&json!({"old": old, "new": new})),
                )
                .and_then(|r| r.json());
            let part = match r {
                Ok(v) => v["partition"].as_str().unwrap_or("?").to_string(),
                Err(e) => return fail(&e),
            };
            let observe = || -> Result<storaged::pool::PoolState, String> {
                let v = c.get("/v1/pool").map_err(|e| platform::chain(&e))?;
                serde_json::from_value(v).map_err(|e| format!("GET /v1/pool: {e}"))
            };
            crate::disk::replaced(pool, &old, &new, &part, no_wait, json, observe)
        }
        DiskCmd::Add { drives, json } => change(
            c,
            "POST",
            "/v1/disks/add",
            Some(&json!({"drives": drives})),
            json,
            |v| {
                format!(
                    "pool {pool} grew by {} ({})",
                    drives.join(", "),
                    strs(&v["added"]).join(", ")
                )
            },
        ),
        DiskCmd::Offline { member, json } => change(
            c,
            "POST",
            "/v1/disks/offline",
            Some(&json!({"member": member})),
            json,
            |v| format!("{} is offline", v["member"].as_str().unwrap_or(&member)),
        ),
        DiskCmd::Selftest { drives, long, json } => {
            let kind = if long {
                storaged::selftest::Kind::Long
            } else {
                storaged::selftest::Kind::Short
            };
            let r = c
                .call(
                    "POST",
                    "/v1/disks/selftest",
                    Some(&json!({"drives": drives, "kind": kind})),
                )
                .and_then(|r| r.json());
            match r {
                Ok(v) => match serde_json::from_value::<Vec<storaged::disks::SelftestRow>>(
                    v["drives"].clone(),
                ) {
                    Ok(rows) => crate::disk::selftested(kind, &rows, json),
                    Err(e) => {
                        eprintln!("storagectl: POST /v1/disks/selftest: unexpected answer: {e}");
                        ExitCode::from(platform::exit::Kind::Failed.exit_code())
                    }
                },
                Err(e) => fail(&e),
            }
        }
        DiskCmd::Online { member, json } => change(
            c,
            "POST",
            "/v1/disks/online",
            Some(&json!({"member": member})),
            json,
            |v| format!("{} is online", v["member"].as_str().unwrap_or(&member)),
        ),
    }
}

fn volume(c: &Client, cmd: VolCmd) -> ExitCode {
    let vol = |n: &str| format!("/v1/volumes/{}", segment(n));
    match cmd {
        VolCmd::Create(a) => match crate::cli::raw_from_args(&a) {
            Ok((raw, _)) => match serde_json::to_value(&raw) {
                Ok(body) => show(c, "POST", "/v1/volumes", Some(&body), a.json),
                Err(e) => {
                    eprintln!("storagectl: {e}");
                    ExitCode::FAILURE
                }
            },
            Err(m) => crate::output::usage(&m),
        },
        VolCmd::Resize { name, size, json } => show(
            c,
            "POST",
            &format!("{}/resize", vol(&name)),
            Some(&json!({"size": size})),
            json,
        ),
        VolCmd::Show { name, json, bytes } => show(
            c,
            "GET",
            &format!("{}{}", vol(&name), bytes_q(bytes)),
            None,
            json,
        ),
        VolCmd::Connect { name, out, json } => crate::volume::connect(
            c.call("GET", &format!("{}/connect", vol(&name)), None)
                .and_then(|r| r.json())
                .and_then(|v| {
                    serde_json::from_value::<volumes::connect::Connect>(v).map_err(|e| Error::Api {
                        status: 200,
                        code: "bad_reply".into(),
                        message: format!("the box's connection details do not parse: {e}"),
                    })
                }),
            out.as_deref(),
            json,
        ),
        VolCmd::List { json, bytes } => show(
            c,
            "GET",
            &format!("/v1/volumes{}", bytes_q(bytes)),
            None,
            json,
        ),
        VolCmd::Delete { name, force, json } => {
            let q = if force { "?force=true" } else { "" };
            change(
                c,
                "DELETE",
                &format!("{}{q}", vol(&name)),
                None,
                json,
                |_| format!("deleted {name}"),
            )
        }
        VolCmd::Snapshot(SnapshotArgs {
            cmd:
                Some(SnapCmd::Delete {
                    name,
                    snapshot,
                    json,
                }),
            ..
        }) => change(
            c,
            "DELETE",
            &format!("{}/snapshots/{}", vol(&name), segment(&snapshot)),
            None,
            json,
            |_| format!("deleted {name}@{snapshot}"),
        ),
        VolCmd::Snapshot(SnapshotArgs {
            name: Some(name),
            snap,
            json,
            ..
        }) => {
            let path = format!("{}/snapshots", vol(&name));
            let body = json!({"name": snap});
            if json {
                return show(c, "POST", &path, Some(&body), true);
            }
            change(c, "POST", &path, Some(&body), json, |v| {
                format!("{name}@{}", v["name"].as_str().unwrap_or("?"))
            })
        }
        VolCmd::Snapshot(_) => {
            crate::output::usage("volume snapshot needs a volume name (or `delete NAME SNAP`)")
        }
        VolCmd::Snapshots { name, json, bytes } => show(
            c,
            "GET",
            &format!("{}/snapshots{}", vol(&name), bytes_q(bytes)),
            None,
            json,
        ),
        VolCmd::Rollback {
            name,
            snapshot,
            destroy_newer,
            force,
            json,
        } => change(
            c,
            "POST",
            &format!("{}/rollback", vol(&name)),
            Some(&json!({"snapshot": snapshot, "destroy_newer": destroy_newer, "force": force})),
            json,
            |_| format!("{name} rolled back to {snapshot}"),
        ),
        VolCmd::Clone {
            new,
            from,
            vm,
            transport,
            json,
        } => {
            let Some((origin, snap)) = from.split_once('@') else {
                return crate::output::usage(&format!("--from {from}: expected VOLUME@SNAPSHOT"));
            };
            let mut body = json!({"name": new});
            if let Some(v) = vm {
                body["vm"] = v.into();
            }
            if let Some(t) = transport {
                body["transport"] = t.into();
            }
            show(
                c,
                "POST",
                &format!("{}/snapshots/{}/clone", vol(origin), segment(snap)),
                Some(&body),
                json,
            )
        }
        VolCmd::Iostat {
            names,
            interval,
            json,
        } => {
            if !(0.1..=5.0).contains(&interval) {
                return crate::output::usage(&format!(
                    "--interval {interval}: give 0.1 to 5 seconds with --remote"
                ));
            }
            let s: Result<storaged::iostat::Sample, String> = c
                .get(&format!("/v1/iostat?interval={interval}"))
                .map_err(|e| platform::chain(&e))
                .and_then(|v| {
                    serde_json::from_value(v).map_err(|e| format!("GET /v1/iostat: {e}"))
                });
            match s {
                Ok(s) => {
                    if let Some(n) = names
                        .iter()
                        .find(|n| !s.volumes.iter().any(|v| &v.volume == *n))
                    {
                        eprintln!("storagectl: {n}: no such volume with a device on the box");
                        return ExitCode::FAILURE;
                    }
                    crate::volume::show_rates(s, &names, json)
                }
                Err(e) => {
                    eprintln!("storagectl: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        VolCmd::Reconcile { dry_run, json } => show(
            c,
            "POST",
            &format!("/v1/volumes/reconcile?dry_run={dry_run}"),
            None,
            json,
        ),
        VolCmd::AdoptSpool { json } => show(c, "POST", "/v1/volumes/adopt-spool", None, json),
    }
}

fn vault(c: &Client, pool: &str, cmd: VaultCmd) -> ExitCode {
    match cmd {
        VaultCmd::Recover {
            json,
            accept_unproven,
        } => {
            let line = match crate::vault::read_recovery_key() {
                Ok(l) => l,
                Err(code) => return code,
            };
            // The JSON copy is not wiped (serde_json's strings cannot be); it lives until the
            // call returns.
            let body = json!({
                "recovery_key": line.trim(),
                "accept_unproven": accept_unproven,
            });
            show(c, "POST", "/v1/vault/recover", Some(&body), json)
        }
        VaultCmd::RecoveryKey { json } => match c
            .call("POST", "/v1/vault/recovery-key", None)
            .and_then(|r| r.json())
        {
            Ok(v) => {
                if json {
                    println!("{}", crate::output::json_text(&v));
                } else {
                    println!("{}", v["recovery_key"].as_str().unwrap_or(""));
                }
                eprintln!("storagectl: new recovery key for {pool}/vault; the vault key was rotated, so the old recovery key and every old seal or copy of them open nothing; the new key is not stored anywhere");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
    }
}
