//! `storagectl status`: the pool, its members and datasets, the vault and its boot binding,
//! scheduled maintenance and the alerts storaged left.

use crate::emit;
use platform::Roots;
use std::process::ExitCode;
use storage::host::RealHost;
use storage::status::{self, Member, Status};
use storage::{discover, zfs};

/// /dev/disk/by-partuuid/<x> -> (whole disk, its stable id).
fn disk_of(path: &str, devs: &[discover::BlockDev]) -> (Option<String>, Option<String>) {
    let Ok(real) = std::fs::canonicalize(path) else {
        return (None, None);
    };
    let part = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let disk = devs
        .iter()
        .find(|d| d.partitions.contains(&part) || d.name == part);
    (
        disk.map(|d| d.name.clone()),
        disk.map(|d| discover::stable_id(d).0),
    )
}

fn gather(pool: &str) -> Result<Status, storage::cmd::CmdError> {
    // No such pool is a status ("none imported"), not an error.
    let Ok(pools) = zfs::list_pools(Some(pool)) else {
        return Ok(Status {
            pool: None,
            members: vec![],
            datasets: vec![],
            vault: None,
            boot: Some(storage::vault::gather_binding(
                &mut RealHost::new(Roots::host()),
                pool,
            )),
        });
    };
    let info = pools.into_iter().next();
    let devs = discover::enumerate(&Roots::host());
    let st = storage::cmd::run(
        zfs::ZPOOL,
        &["status".into(), "-P".into(), pool.into()],
        None,
    )?;
    let members = status::parse_status_members(&st)
        .into_iter()
        .map(|(path, state)| {
            let (disk, stable_id) = disk_of(&path, &devs);
            Member {
                path,
                disk,
                stable_id,
                state,
            }
        })
        .collect();
    let props = zfs::get_recursive(pool, status::DATASET_PROPS)?;
    let datasets = status::datasets(&props);
    Ok(Status {
        pool: info,
        members,
        vault: Some(status::vault_view(pool, &datasets)),
        boot: Some(storage::vault::gather_binding(
            &mut RealHost::new(Roots::host()),
            pool,
        )),
        datasets,
    })
}

/// `storagectl status`: the pool's state with its maintenance schedule.
#[derive(serde::Serialize)]
struct FullStatus {
    #[serde(flatten)]
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    maintenance: Option<storaged::maint::View>,
    /// Why the maintenance view could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    maintenance_error: Option<String>,
    /// The alerts storaged's last health look left in the journal on the pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    alerts: Option<Vec<storaged::journal::Active>>,
}

/// `storagectl status [--json] [--pool P]`.
pub fn status(pool: &str, json: bool) -> ExitCode {
    let r = gather(pool).map(|status| {
        // Maintenance is shown once the pool is there; a failure to read it is said.
        let m = status
            .pool
            .as_ref()
            .map(|_| storaged::view(pool, std::path::Path::new("/")));
        let (maintenance, maintenance_error) = match m {
            Some(Ok(v)) => (Some(v), None),
            Some(Err(e)) => (None, Some(platform::chain(&e))),
            None => (None, None),
        };
        let alerts = status.pool.as_ref().and_then(|_| {
            storaged::journal::Journal::load(&storaged::journal::path(
                std::path::Path::new("/"),
                pool,
            ))
            .ok()
            .map(|j| j.active)
        });
        FullStatus {
            status,
            maintenance,
            maintenance_error,
            alerts,
        }
    });
    emit(r, json, |s| {
        let mut t = status::render(&s.status);
        if let Some(v) = &s.maintenance {
            t.push_str(&v.render());
        }
        if let Some(e) = &s.maintenance_error {
            t.push_str(&format!("maintenance: unknown ({e})\n"));
        }
        if let Some(a) = &s.alerts {
            use storaged::health::Severity::*;
            let n = |sev| a.iter().filter(|x| x.alert.severity == sev).count();
            t.push_str(&if a.is_empty() {
                "health: no alerts recorded (storagectl health looks now)\n".to_string()
            } else {
                format!(
                    "health: {} critical, {} warning, {} notice at storaged's last look (storagectl health)\n",
                    n(Critical),
                    n(Warning),
                    n(Notice)
                )
            });
        }
        t
    })
}
