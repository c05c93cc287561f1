//! The whole status of a pool as `storagectl status` and the management API's `GET /v1/status`
//! show it: the pool, its members and datasets, the vault and its boot binding, scheduled
//! maintenance and the alerts storaged left. Reads only.

use platform::Roots;
use serde::Serialize;
use storage::realhost::RealHost;
use storage::status::{self, Member, Status};
use storage::{discover, zfs};

/// /dev/disk/by-partuuid/<x> -> (whole disk, its stable id).
fn disk_of(path: &str, devs: &[discover::BlockDev]) -> (Option<String>, Option<String>) {
    let disk = discover::disk_holding(path, devs);
    (
        disk.map(|d| d.name.clone()),
        disk.map(|d| discover::stable_id(d).0),
    )
}

/// The pool's own status: members, datasets, the vault and the boot binding.
pub fn gather(pool: &str) -> Result<Status, storage::cmd::CmdError> {
    // A pool the kernel has not imported is a status ("none imported"), not an error; a `zpool`
    // that fails on an imported pool is an error, never "none imported".
    if !platform::zfs::imported(&Roots::host(), pool) {
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
    }
    let info = zfs::list_pools(Some(pool))?.into_iter().next();
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
#[derive(Debug, Serialize, schemars::JsonSchema)]
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
    /// What is wrong, one line each (empty: all is well): what `storagectl status -x` prints.
    pub problems: Vec<String>,
    /// What `storagectl status` exits with (here and through the API): 0 all well, 5 vault
    /// locked, 6 pool not imported, 7 degraded.
    pub exit_code: u8,
}

/// The full status of `pool`, read now.
pub fn full(pool: &str) -> Result<FullStatus, storage::cmd::CmdError> {
    let root = std::path::Path::new("/");
    gather(pool).map(|status| {
        // Maintenance is shown once the pool is there; a failure to read it is said.
        let m = status.pool.as_ref().map(|_| crate::views::view(pool, root));
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
        let mut f = FullStatus {
            status,
            maintenance,
            maintenance_error,
            alerts,
            problems: Vec::new(),
            exit_code: 0,
        };
        f.problems = f.find_problems();
        f.exit_code = f.find_exit_code();
        f
    })
}

impl FullStatus {
    /// What is wrong, one line each, worst first; empty when all is well.
    fn find_problems(&self) -> Vec<String> {
        let mut v = Vec::new();
        let Some(p) = &self.status.pool else {
            v.push("pool: not imported (storage-init's log says why)".to_string());
            return v;
        };
        if p.health != "ONLINE" {
            v.push(format!("pool {}: {}", p.name, p.health));
        }
        for m in self.status.members.iter().filter(|m| m.state != "ONLINE") {
            v.push(format!(
                "member {}{}: {}",
                m.path,
                m.disk
                    .as_ref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default(),
                m.state
            ));
        }
        if let Some(vault) = self
            .status
            .vault
            .as_ref()
            .filter(|x| x.state == "locked" || x.state == "absent")
        {
            v.push(format!(
                "vault {}: {}{}",
                vault.dataset,
                vault.state,
                vault
                    .advice
                    .as_ref()
                    .map(|a| format!(" ({a})"))
                    .unwrap_or_default()
            ));
        }
        for a in self.alerts.iter().flatten() {
            if a.alert.severity == crate::health::Severity::Critical {
                v.push(format!("critical: {}", a.alert.message));
            }
        }
        v
    }

    /// The exit code `storagectl status` ends with: 0 when all is well, else the worst of pool
    /// absent, vault locked and degraded (a pool or member not ONLINE, a critical alert).
    fn find_exit_code(&self) -> u8 {
        use platform::exit::{Kind, DEGRADED};
        if self.status.pool.is_none() {
            Kind::PoolAbsent.exit_code()
        } else if self
            .status
            .vault
            .as_ref()
            .is_some_and(|x| x.state == "locked")
        {
            Kind::VaultLocked.exit_code()
        } else if self.find_problems().is_empty() {
            0
        } else {
            DEGRADED
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{Alert, Severity};
    use crate::journal::Active;
    use platform::zfs::PoolInfo;
    use storage::status::VaultView;

    fn full(health: &str, member: &str, vault: &str, alerts: Vec<Active>) -> FullStatus {
        let mut f = FullStatus {
            status: Status {
                pool: Some(PoolInfo {
                    name: "persist".into(),
                    guid: 1,
                    health: health.into(),
                    size: 1 << 30,
                    allocated: 0,
                    free: 1 << 30,
                }),
                members: vec![Member {
                    path: "/dev/disk/by-partuuid/x".into(),
                    disk: Some("nvme0n1".into()),
                    stable_id: None,
                    state: member.into(),
                }],
                datasets: vec![],
                vault: Some(VaultView {
                    state: vault.into(),
                    dataset: "persist/vault".into(),
                    advice: None,
                }),
                boot: None,
            },
            maintenance: None,
            maintenance_error: None,
            alerts: Some(alerts),
            problems: vec![],
            exit_code: 0,
        };
        f.problems = f.find_problems();
        f.exit_code = f.find_exit_code();
        f
    }

    fn alert(sev: Severity, msg: &str) -> Active {
        Active {
            alert: Alert {
                key: msg.into(),
                severity: sev,
                message: msg.into(),
            },
            since: 0,
        }
    }

    #[test]
    fn status_exits_by_the_worst_of_what_is_wrong() {
        let ok = full(
            "ONLINE",
            "ONLINE",
            "unlocked",
            vec![alert(Severity::Warning, "warm")],
        );
        assert_eq!(
            (ok.exit_code, ok.problems.len()),
            (0, 0),
            "{:?}",
            ok.problems
        );
        let d = full("DEGRADED", "FAULTED", "unlocked", vec![]);
        assert_eq!(d.exit_code, platform::exit::DEGRADED);
        assert_eq!(
            d.problems,
            [
                "pool persist: DEGRADED",
                "member /dev/disk/by-partuuid/x (nvme0n1): FAULTED"
            ]
        );
        let c = full(
            "ONLINE",
            "ONLINE",
            "unlocked",
            vec![alert(Severity::Critical, "nvme0n1 is failing")],
        );
        assert_eq!(c.exit_code, 7);
        assert_eq!(c.problems, ["critical: nvme0n1 is failing"]);
        let l = full("DEGRADED", "ONLINE", "locked", vec![]);
        assert_eq!(l.exit_code, platform::exit::Kind::VaultLocked.exit_code());
        assert!(l
            .problems
            .iter()
            .any(|p| p.starts_with("vault persist/vault: locked")));
        let mut none = full("ONLINE", "ONLINE", "unlocked", vec![]);
        none.status.pool = None;
        assert_eq!(
            none.find_exit_code(),
            platform::exit::Kind::PoolAbsent.exit_code()
        );
        assert_eq!(none.find_problems().len(), 1);
        // The JSON carries both, for scripts and for `storagectl --remote`.
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["exit_code"], 7);
        assert_eq!(v["problems"][0], "pool persist: DEGRADED");
    }
}
