//! `storagectl volume` and `export`: guest volumes through the volumes crate's operations on this
//! host's kernel trees, and their I/O rates.

use crate::cli::{raw_from_args, transport_arg, SnapCmd, SnapshotArgs, VolCmd};
use crate::output::{emit, fail};
use platform::Roots;
use serde_json::json;
use std::process::ExitCode;
use volumes::env::Env;

pub fn volume(config: Option<&std::path::Path>, cmd: VolCmd) -> ExitCode {
    let env = match Env::host(config) {
        Ok(e) => e,
        Err(e) => return fail(&e),
    };
    let shown_as = |r: volumes::Result<volumes::ops::Shown>, json: bool, bytes: bool| {
        emit(r, json, |s| s.render(bytes))
    };
    let shown = |r, json| shown_as(r, json, false);
    match cmd {
        VolCmd::Create(a) => match raw_from_args(&a) {
            Ok((raw, label)) => shown(volumes::ops::create(&env, &raw, &label), a.json),
            Err(m) => crate::output::usage(&m),
        },
        VolCmd::Resize { name, size, json } => {
            shown(volumes::ops::resize(&env, &name, &size), json)
        }
        VolCmd::Show { name, json, bytes } => {
            shown_as(volumes::ops::show(&env, &name), json, bytes)
        }
        VolCmd::Connect { name, out, json } => {
            connect(volumes::connect::connect(&env, &name), out.as_deref(), json)
        }
        VolCmd::Iostat {
            names,
            interval,
            json,
        } => iostat(&env.cfg.pool, &names, interval, json),
        VolCmd::Delete { name, force, json } => match volumes::ops::delete(&env, &name, force) {
            Ok(()) => {
                crate::output::changed(json, json!({"deleted": name}), format!("deleted {name}"))
            }
            Err(e) => fail(&e),
        },
        VolCmd::List { json, bytes } => emit(volumes::ops::list(&env), json, |l| l.render(bytes)),
        VolCmd::Snapshot(SnapshotArgs {
            cmd:
                Some(SnapCmd::Delete {
                    name,
                    snapshot,
                    json,
                }),
            ..
        }) => match volumes::ops::snapshot_delete(&env, &name, &snapshot) {
            Ok(()) => crate::output::changed(
                json,
                json!({"volume": name, "deleted_snapshot": snapshot}),
                format!("deleted {name}@{snapshot}"),
            ),
            Err(e) => fail(&e),
        },
        VolCmd::Snapshot(SnapshotArgs {
            name: Some(name),
            snap,
            json,
            ..
        }) => emit(
            volumes::ops::snapshot(&env, &name, snap.as_deref()),
            json,
            |s| format!("{name}@{}\n", s.name),
        ),
        VolCmd::Snapshot(_) => {
            crate::output::usage("volume snapshot needs a volume name (or `delete NAME SNAP`)")
        }
        VolCmd::Snapshots { name, json, bytes } => {
            emit(volumes::ops::snapshots(&env, &name), json, |l| {
                l.render(bytes)
            })
        }
        VolCmd::Rollback {
            name,
            snapshot,
            destroy_newer,
            force,
            json,
        } => match volumes::ops::rollback(&env, &name, &snapshot, destroy_newer, force) {
            Ok(_) => crate::output::changed(
                json,
                json!({"volume": name, "rolled_back_to": snapshot}),
                format!("{name} rolled back to {snapshot}"),
            ),
            Err(e) => fail(&e),
        },
        VolCmd::Clone {
            new,
            from,
            vm,
            transport,
            json,
        } => shown(
            volumes::ops::clone(
                &env,
                &new,
                &from,
                vm.as_deref(),
                transport.as_deref().map(transport_arg),
            ),
            json,
        ),
        VolCmd::AdoptSpool { json } => match volumes::ops::adopt_spool(&env) {
            Ok(m) => crate::output::changed(json, json!({"adopted": true, "message": m}), m),
            Err(e) => fail(&e),
        },
        VolCmd::Reconcile { dry_run, json } => {
            let r = env
                .check_vault()
                .and_then(|_| volumes::reconcile::lock(&env.roots))
                .and_then(|_l| volumes::reconcile::pass(&env, dry_run));
            match r {
                Ok((p, rep)) if json => crate::output::changed(
                    true,
                    json!({"dry_run": dry_run, "plan": p.render(), "steps": rep.steps.len(), "changed": rep.changed()}),
                    "",
                ),
                Ok((p, rep)) => {
                    if dry_run {
                        print!("{}", p.render());
                    } else {
                        println!("{} steps, {} changed", rep.steps.len(), rep.changed());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
    }
}

pub fn iostat(pool: &str, names: &[String], interval: f64, json: bool) -> ExitCode {
    if !(0.1..=3600.0).contains(&interval) {
        return crate::output::usage(&format!("--interval {interval}: give 0.1 to 3600 seconds"));
    }
    let roots = Roots::host();
    let have = storaged::iostat::volumes(&roots, pool);
    if let Some(n) = names.iter().find(|n| !have.iter().any(|v| &v.volume == *n)) {
        eprintln!("storagectl: {n}: no such volume with a device in pool {pool}");
        return ExitCode::from(platform::exit::Kind::NotFound.exit_code());
    }
    show_rates(
        storaged::iostat::sample(&roots, pool, interval),
        names,
        json,
    )
}

/// Prints the rates of `names` (every volume when empty) from `s`.
pub fn show_rates(s: storaged::iostat::Sample, names: &[String], json: bool) -> ExitCode {
    let secs = s.interval_secs;
    let rows: Vec<_> = s
        .volumes
        .into_iter()
        .filter(|v| names.is_empty() || names.contains(&v.volume))
        .collect();
    emit(Ok::<_, storaged::Error>(rows), json, |rows| {
        storaged::iostat::render(rows, secs)
    })
}

/// `storagectl export save [FILE]`: every volume's identity, for a new box.
pub fn export_save(
    config: Option<&std::path::Path>,
    file: Option<std::path::PathBuf>,
    json: bool,
) -> ExitCode {
    let env = match Env::host(config) {
        Ok(e) => e,
        Err(e) => return fail(&e),
    };
    match volumes::ops::export_save(&env) {
        Ok(j) => write_export(&j, file, json),
        Err(e) => fail(&e),
    }
}

/// The export (from this box or through the API) to `file`, owner-only as identities are, or
/// to stdout.
pub fn write_export(
    export: &serde_json::Value,
    file: Option<std::path::PathBuf>,
    json: bool,
) -> ExitCode {
    let text = serde_json::to_string_pretty(export).unwrap_or_default() + "\n";
    match file {
        Some(f) => match volumes::ids::write_private(&f, text.as_bytes()) {
            Ok(()) if json => crate::output::changed(true, json!({"written": f}), ""),
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        None => {
            print!("{text}");
            ExitCode::SUCCESS
        }
    }
}

/// Prints a volume's connection (from this box or through the API) after writing its secrets to
/// `out`, or leaving them out when there is none: they never reach stdout.
pub fn connect<E: std::error::Error + platform::exit::Classify>(
    c: Result<volumes::connect::Connect, E>,
    out: Option<&std::path::Path>,
    json: bool,
) -> ExitCode {
    let mut c = match c {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    match out {
        Some(dir) => {
            if let Err(e) = c.write_secrets(dir) {
                return fail(&e);
            }
        }
        None => c.redact(),
    }
    emit(Ok::<_, E>(c), json, |c| c.render())
}
