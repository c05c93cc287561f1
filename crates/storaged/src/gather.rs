//! One health look at the box: every drive's own report (nvme-cli, smartctl; each killed after
//! 30 s, since a failing drive is exactly the one that hangs), the pool's status, space and
//! quotas, and each volume's I/O counters. Reads only; parsing is in pure functions.

use crate::health::{Device, Observed, Quota, Space};
use crate::smart::{self, Reading};
use platform::Roots;
use std::time::Duration;
use storage::discover::{BlockDev, Transport};
use storage::zfs::{ZFS, ZPOOL};

pub const NVME: &str = "/usr/sbin/nvme";
pub const SMARTCTL: &str = "/usr/sbin/smartctl";
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

fn timed(prog: &str, args: &[&str]) -> Result<platform::cmd::Finished, String> {
    platform::cmd::run_timed(prog, args, TOOL_TIMEOUT).map_err(|e| e.to_string())
}

/// The drive's own report, by the protocol its bus speaks.
pub fn read_device(b: &BlockDev) -> Reading {
    let dev = b.dev.display().to_string();
    match b.transport {
        Transport::Nvme => {
            let log = match timed(NVME, &["smart-log", &dev, "-o", "json"]) {
                Ok(f) if f.code == Some(0) => f.stdout,
                Ok(f) => {
                    return Reading::Unreadable {
                        reason: format!(
                            "`{NVME} smart-log {dev}` failed ({:?}): {}",
                            f.code,
                            f.stderr.lines().next().unwrap_or("").trim()
                        ),
                    }
                }
                Err(e) => return Reading::Unreadable { reason: e },
            };
            let id = timed(NVME, &["id-ctrl", &dev, "-o", "json"])
                .ok()
                .filter(|f| f.code == Some(0))
                .map(|f| f.stdout);
            match smart::parse_nvme(&log, id.as_deref()) {
                Ok(mut h) => {
                    if h.selftest.is_none() && id.is_some() {
                        h.selftest = nvme_selftest(&dev, h.power_on_hours);
                    }
                    Reading::Data(Box::new(h))
                }
                Err(e) => Reading::Unreadable {
                    reason: format!("`{NVME} smart-log {dev}`: {e}"),
                },
            }
        }
        Transport::Sata | Transport::Scsi | Transport::Usb | Transport::Unknown => {
            match timed(SMARTCTL, &["--json", "-a", &dev]) {
                Ok(f) => smart::parse_smartctl(&f.stdout),
                Err(e) => Reading::Unreadable { reason: e },
            }
        }
        Transport::Virtio => Reading::NoData {
            reason: "a virtio disk gives no health report (the host's drives have it)".into(),
        },
        Transport::Mmc => Reading::NoData {
            reason: "eMMC life-time estimates are not read yet".into(),
        },
        Transport::Virtual => Reading::NoData {
            reason: "not a drive".into(),
        },
    }
}

/// A drive that offers self-tests: its log (`None` when it cannot be read).
fn nvme_selftest(dev: &str, poh: Option<u64>) -> Option<crate::selftest::SelfTest> {
    let f = timed(NVME, &["self-test-log", dev, "-o", "json"])
        .ok()
        .filter(|f| f.code == Some(0))?;
    let v: serde_json::Value = serde_json::from_str(&f.stdout).ok()?;
    crate::selftest::from_nvme_log(&v, poh).ok()
}

/// Starts a `kind` self-test on `b` (a drive [`crate::selftest::plan`] chose).
pub fn start_selftest(b: &BlockDev, kind: crate::selftest::Kind) -> crate::error::Result<()> {
    let dev = b.dev.display().to_string();
    let (prog, args): (&str, Vec<&str>) = match b.transport {
        // NVMe Device Self-test code 1 short, 2 extended; every namespace.
        Transport::Nvme => (
            NVME,
            vec![
                "device-self-test",
                &dev,
                "--namespace-id=0xffffffff",
                match kind {
                    crate::selftest::Kind::Short => "--self-test-code=1",
                    crate::selftest::Kind::Long => "--self-test-code=2",
                },
            ],
        ),
        _ => (SMARTCTL, vec!["-t", kind_word(kind), &dev]),
    };
    let f = platform::cmd::run_timed(prog, &args, TOOL_TIMEOUT)?;
    // smartctl's exit bits 0-2 are failures to run the command; higher bits report findings.
    let failed = match b.transport {
        Transport::Nvme => f.code != Some(0),
        _ => f.code.is_none_or(|c| c & 0b111 != 0),
    };
    if failed {
        let said = if f.stderr.trim().is_empty() {
            &f.stdout
        } else {
            &f.stderr
        };
        return Err(crate::error::Error::Cmd(platform::CmdError::Failed {
            argv: std::iter::once(prog)
                .chain(args.iter().copied())
                .collect::<Vec<_>>()
                .join(" "),
            status: f.status,
            stderr: {
                let lines: Vec<&str> = said.lines().filter(|l| !l.trim().is_empty()).collect();
                lines[lines.len().saturating_sub(5)..].join(" / ")
            },
        }));
    }
    Ok(())
}

fn kind_word(kind: crate::selftest::Kind) -> &'static str {
    match kind {
        crate::selftest::Kind::Short => "short",
        crate::selftest::Kind::Long => "long",
    }
}

/// `zpool list -Hp -o size,allocated,free,capacity,fragmentation POOL`.
pub fn parse_space(out: &str) -> Option<Space> {
    let f: Vec<&str> = out.lines().next()?.split('\t').collect();
    let n = |i: usize| -> Option<u64> { f.get(i)?.trim().trim_end_matches('%').parse().ok() };
    Some(Space {
        size: n(0)?,
        allocated: n(1)?,
        free: n(2)?,
        capacity_pct: n(3)?,
        fragmentation_pct: n(4),
    })
}

/// `zfs list -Hp -t filesystem -o name,used,quota -r POOL`: the datasets with a quota.
pub fn parse_quotas(out: &str) -> Vec<Quota> {
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let (name, used, quota) = (f.first()?, f.get(1)?, f.get(2)?);
            let quota: u64 = quota.trim().parse().ok().filter(|&q| q > 0)?;
            Some(Quota {
                dataset: name.to_string(),
                used: used.trim().parse().ok()?,
                quota,
            })
        })
        .collect()
}

fn run(prog: &str, args: &[&str]) -> Result<String, String> {
    platform::cmd::run(prog, args).map_err(|e| e.to_string())
}

/// Everything a health look needs, at time `at`.
pub fn observe(roots: &Roots, pool: &str, at: u64) -> Observed {
    let devices = storage::discover::enumerate(roots)
        .into_iter()
        .filter(|b| b.transport != Transport::Virtual && b.size_bytes > 0)
        .map(|b| Device {
            reading: read_device(&b),
            stable_id: storage::discover::stable_id(&b).0,
            bus: format!("{:?}", b.transport).to_lowercase(),
            size: b.size_bytes,
            name: b.name,
        })
        .collect();
    let (pool_state, imported, pool_error) = match crate::cmd::status(pool) {
        Ok(p) => (Some(p), true, None),
        Err(e) => (
            crate::cmd::importable(pool),
            false,
            Some(platform::chain(&e)),
        ),
    };
    let space = imported.then_some(()).and_then(|_| {
        run(
            ZPOOL,
            &[
                "list",
                "-Hp",
                "-o",
                "size,allocated,free,capacity,fragmentation",
                pool,
            ],
        )
        .ok()
        .and_then(|o| parse_space(&o))
    });
    let quotas = if imported {
        run(
            ZFS,
            &[
                "list",
                "-Hp",
                "-t",
                "filesystem",
                "-o",
                "name,used,quota",
                "-r",
                pool,
            ],
        )
        .map(|o| parse_quotas(&o))
        .unwrap_or_default()
    } else {
        vec![]
    };
    Observed {
        at,
        pool_name: pool.into(),
        devices,
        pool: pool_state,
        imported,
        pool_error,
        space,
        quotas,
        volumes: crate::iostat::volumes(roots, pool),
        vault: std::fs::read(roots.storage_outcome())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_space_and_quotas_are_read_from_script_output() {
        // As `zpool list -Hp` printed it in the guest.
        let s = parse_space("13019119616\t2424832\t13016694784\t0\t0\n").unwrap();
        assert_eq!(
            (s.size, s.allocated, s.capacity_pct, s.fragmentation_pct),
            (13019119616, 2424832, 0, Some(0))
        );
        let s = parse_space("100\t90\t10\t90%\t-\n").unwrap();
        assert_eq!((s.capacity_pct, s.fragmentation_pct), (90, None));
        assert!(parse_space("").is_none());
        assert!(parse_space("x\t1\t2\t3\t4").is_none());
        let q = parse_quotas(
            "persist\t500\t0\npersist/newlog\t100\t200\npersist/config\t5\t1073741824\nbad\tline\n",
        );
        assert_eq!(
            q.iter()
                .map(|x| (x.dataset.as_str(), x.used, x.quota))
                .collect::<Vec<_>>(),
            [
                ("persist/newlog", 100, 200),
                ("persist/config", 5, 1073741824)
            ]
        );
    }
}
