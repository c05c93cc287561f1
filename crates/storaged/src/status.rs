//! The whole status of a pool as `storagectl status` and the management API's `GET /v1/status`
//! show it: the pool, its members and datasets, the vault and its boot binding, scheduled
//! maintenance and the alerts storaged left. Reads only.

use platform::Roots;
use serde::Serialize;
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

/// The pool's own status: members, datasets, the vault and the boot binding.
pub fn gather(pool: &str) -> Result<Status, storage::cmd::CmdError> {
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

/// The pool's state with its maintenance schedule and the alerts on record.
#[derive(Debug, Serialize)]
pub struct FullStatus {
    #[serde(flatten)]
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<crate::maint::View>,
    /// Why the maintenance view could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintenance_error: Option<String>,
    /// The alerts storaged's last health look left in the journal on the pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alerts: Option<Vec<crate::journal::Active>>,
}

/// The full status of `pool`, read now.
pub fn full(pool: &str) -> Result<FullStatus, storage::cmd::CmdError> {
    let root = std::path::Path::new("/");
    gather(pool).map(|status| {
        // Maintenance is shown once the pool is there; a failure to read it is said.
        let m = status.pool.as_ref().map(|_| crate::view(pool, root));
        let (maintenance, maintenance_error) = match m {
            Some(Ok(v)) => (Some(v), None),
            Some(Err(e)) => (None, Some(platform::chain(&e))),
            None => (None, None),
        };
        let alerts = status.pool.as_ref().and_then(|_| {
            crate::journal::Journal::load(&crate::journal::path(root, pool))
                .ok()
                .map(|j| j.active)
        });
        FullStatus {
            status,
            maintenance,
            maintenance_error,
            alerts,
        }
    })
}

impl FullStatus {
    /// The text `storagectl status` prints.
    pub fn render(&self) -> String {
        let mut t = status::render(&self.status);
        if let Some(v) = &self.maintenance {
            t.push_str(&v.render());
        }
        if let Some(e) = &self.maintenance_error {
            t.push_str(&format!("maintenance: unknown ({e})\n"));
        }
        if let Some(a) = &self.alerts {
            use crate::health::Severity::*;
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
    }
}
