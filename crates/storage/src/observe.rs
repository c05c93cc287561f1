//! What storage-init reads before it decides anything, in the two moments it can: the drives and
//! pools before the pool is up ([`drives`]), and what the imported pool holds and what the box is
//! once it is ([`contents`]). Nothing here changes the box; a value that cannot be read is said
//! to be unreadable, never taken for absent.

use crate::cmd::CmdError;
use crate::datasets;
use crate::discover::{self, BlockDev, Context, Verdict};
use crate::error::Error;
use crate::host::Host;
use crate::policy::{Policy, PoolFacts};
use crate::probe::{self, Probed, P3_DONE, P3_PENDING};
use crate::vault::{self, SecureBoot};
use crate::zfs::{self, Props};
use platform::log;
use platform::Roots;
use serde::Serialize;
use std::path::PathBuf;

/// One device in the report: what it is and what storage-init decided about it.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceReport {
    pub name: String,
    pub stable_id: String,
    pub stable: bool,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub transport: discover::Transport,
    pub size_bytes: u64,
    pub verdict: Verdict,
}

/// The disk holding the running root filesystem, from mountinfo's major:minor. The root is a
/// dm-verity device over the slot's partition: its one `slaves` entry leads to the partition.
pub fn boot_disk(roots: &Roots, mountinfo: &str) -> Option<String> {
    let majmin = mountinfo
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))?
        .split_whitespace()
        .nth(2)?
        .to_string();
    let mut part = std::fs::canonicalize(roots.sys.join("dev/block").join(&majmin)).ok()?;
    for _ in 0..4 {
        let slaves: Vec<PathBuf> = match std::fs::read_dir(part.join("slaves")) {
            Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
            Err(_) => break,
        };
        match slaves.as_slice() {
            [one] => part = std::fs::canonicalize(one).ok()?,
            [] => break,
            _ => return None,
        }
    }
    // A partition's sysfs directory sits inside its disk's.
    let parent = if part.join("partition").exists() {
        part.parent()?
    } else {
        &part
    };
    parent.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// A candidate drive as the plan sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Drive {
    pub name: String,
    pub stable_id: String,
    pub verdict: Verdict,
    /// Holds only storage-init partitions still named pending (an interrupted first boot).
    pub ours_pending: bool,
    pub rotational: bool,
}

/// The boot disk's P3 partition, if present.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum P3 {
    Absent,
    Pending { partuuid: String },
    Done { partuuid: String },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Observed {
    pub boot_disk: Option<String>,
    pub p3: P3,
    /// Whether the boot disk has free space for a new P3 (a disk exactly the image's size has
    /// none): without it the pool is made from the other drives.
    pub p3_room: bool,
    pub drives: Vec<Drive>,
    /// Pools `zpool import` offers: (name, guid).
    pub importable: Vec<(String, u64)>,
    /// Pools already imported: (name, guid).
    pub imported: Vec<(String, u64)>,
}

/// The drives and pools as found before the pool is up: what the pool decision
/// ([`crate::plan::decide`]) is made from, and the devices it names.
#[derive(Debug)]
pub struct Observation {
    pub observed: Observed,
    pub devices: Vec<(BlockDev, Probed)>,
    pub report: Vec<DeviceReport>,
}

/// Every block device probed and judged under `policy` (what it is, whether it may join the
/// pool), the pools already imported and those `zpool import` offers.
pub fn drives(
    host: &mut dyn Host,
    roots: &Roots,
    policy: &Policy,
    mountinfo: &str,
) -> Result<Observation, Error> {
    let boot = boot_disk(roots, mountinfo);
    let imported: Vec<(String, u64)> = platform::zfs::list_pools_with(None, |a| host.zpool(a))?
        .into_iter()
        .map(|p| (p.name, p.guid))
        .collect();
    // `zpool import` exits 1 with "no pools available" when there are none.
    let dir = host.partuuid_dir().display().to_string();
    let importable = match host.zpool(&["import".into(), "-d".into(), dir]) {
        Ok(out) => zfs::parse_importable(&out),
        Err(CmdError::Failed { .. }) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let pool_guid = imported
        .iter()
        .chain(&importable)
        .find(|(n, _)| n == &policy.pool.name)
        .map(|(_, g)| *g);
    let ctx = Context {
        boot_disk: boot.as_deref(),
        min_size_bytes: policy.pool.min_drive_size.get_ref().bytes(0),
        pool: &policy.pool.name,
        pool_guid,
    };
    let mut devices = Vec::new();
    let mut drives = Vec::new();
    let mut report = Vec::new();
    let mut p3 = P3::Absent;
    let mut p3_room = false;
    for d in discover::enumerate(roots) {
        // One device that cannot be read (no medium, I/O errors) is reported and left out; it
        // never stops bring-up for the others.
        let (probed, unreadable) = if d.transport == discover::Transport::Virtual {
            (Probed::default(), None)
        } else {
            match probe::probe(&d, roots) {
                Ok(p) => (p, None),
                Err(e) => {
                    log(format!("{}: {e}; left out", d.name));
                    (Probed::default(), Some(e.to_string()))
                }
            }
        };
        let (id, stable) = discover::stable_id(&d);
        let mut verdict = match &unreadable {
            Some(reason) if boot.as_deref() != Some(d.name.as_str()) => Verdict::Unreadable {
                reason: reason.clone(),
            },
            _ => discover::verdict(&d, &probed.sig, &ctx),
        };
        let ours_pending = probed.only_ours() && probed.pending();
        let before = verdict.clone();
        verdict = discover::overridden(verdict, ours_pending, &id, stable, &policy.pool.wipe);
        if let Verdict::ForeignData { reason } = &verdict {
            if verdict != before {
                log(format!("{} ({id}): {reason}", d.name));
            }
        }
        if verdict != before && !ours_pending && verdict == Verdict::Eligible {
            log(format!(
                "{} ({id}): policy lists it for wiping; its data will be overwritten",
                d.name
            ));
        }
        if boot.as_deref() == Some(d.name.as_str()) {
            p3_room = crate::gptops::p3_room(&d.dev);
            for (_, name, guid) in &probed.gpt {
                if name == P3_DONE {
                    p3 = P3::Done {
                        partuuid: guid.to_string(),
                    };
                } else if name == P3_PENDING {
                    p3 = P3::Pending {
                        partuuid: guid.to_string(),
                    };
                }
            }
        } else if d.transport != discover::Transport::Virtual {
            drives.push(Drive {
                name: d.name.clone(),
                stable_id: id.clone(),
                verdict: verdict.clone(),
                ours_pending,
                rotational: d.rotational,
            });
        }
        report.push(DeviceReport {
            name: d.name.clone(),
            stable_id: id,
            stable,
            model: d.model.clone(),
            serial: d.serial.clone(),
            transport: d.transport,
            size_bytes: d.size_bytes,
            verdict,
        });
        devices.push((d, probed));
    }
    Ok(Observation {
        observed: Observed {
            boot_disk: boot,
            p3,
            p3_room,
            drives,
            importable,
            imported,
        },
        devices,
        report,
    })
}

/// Pure: bytes of RAM from /proc/meminfo's `MemTotal:` line (0 when it is not there).
pub fn mem_total(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// Names of the pools whose labels sit on storage-init's own finished partitions (P3, and
/// drives holding only our partitions): this box's pool, whatever the policy now calls it.
pub fn our_pools(obs: &Observation) -> Vec<String> {
    let mut names = Vec::new();
    for (d, p) in &obs.devices {
        let is_boot = obs.observed.boot_disk.as_deref() == Some(d.name.as_str());
        let ours = if is_boot {
            matches!(obs.observed.p3, P3::Done { .. })
        } else {
            p.only_ours() && !p.pending()
        };
        if ours {
            for (n, _) in &p.sig.zfs_pools {
                if !names.contains(n) {
                    names.push(n.clone());
                }
            }
        }
    }
    names
}

/// Pure: what an imported pool already is, from `zpool list -v -H -P <pool>`, `zpool get -H -p
/// -o value ashift <pool>` and `zfs get -H -o property,value encryption,<sealed> <pool>/vault`
/// (empty when there is no vault).
pub fn pool_facts(
    name: &str,
    list_v: &str,
    ashift: &str,
    vault_props: &str,
) -> crate::policy::PoolFacts {
    use crate::policy::{PoolFacts, Topology, VaultKind};
    let vdev = |prefix: &str| {
        list_v.lines().any(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.starts_with(prefix))
        })
    };
    let topology = if vdev("mirror-") {
        Topology::Mirror
    } else if vdev("raidz2-") {
        Topology::Raidz2
    } else if vdev("raidz1-") || vdev("raidz-") {
        Topology::Raidz1
    } else {
        Topology::Stripe
    };
    let prop = |k: &str| {
        vault_props.lines().find_map(|l| {
            l.split_once('\t')
                .filter(|(p, _)| *p == k)
                .map(|(_, v)| v.trim().to_string())
        })
    };
    let vault = match (prop("encryption"), prop(crate::tpm::SEALED_PROPERTY)) {
        (None, _) => None,
        (Some(e), _) if e == "off" => Some(VaultKind::Unencrypted),
        (Some(_), Some(b)) if !b.is_empty() && b != "-" => Some(VaultKind::Tpm),
        (Some(_), _) => Some(VaultKind::Keyfile),
    };
    PoolFacts {
        name: Some(name.to_string()),
        topology: (!list_v.trim().is_empty()).then_some(topology),
        ashift: ashift.trim().parse().ok().filter(|&a| a > 0),
        vault,
    }
}

/// The facts of the imported pool `name`, from the tools; what cannot be read stays unknown.
pub fn gather_pool_facts(host: &mut dyn Host, name: &str) -> crate::policy::PoolFacts {
    let s = |a: &[&str]| a.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let list_v = host
        .zpool(&s(&["list", "-v", "-H", "-P", name]))
        .unwrap_or_default();
    let ashift = host
        .zpool(&s(&["get", "-H", "-p", "-o", "value", "ashift", name]))
        .unwrap_or_default();
    let props = format!("encryption,{}", crate::tpm::SEALED_PROPERTY);
    let vault_args = s(&[
        "get",
        "-H",
        "-o",
        "property,value",
        &props,
        &format!("{name}/vault"),
    ]);
    let vault = host.zfs(&vault_args, None).unwrap_or_default();
    pool_facts(name, &list_v, &ashift, &vault)
}

/// What the imported pool holds and what the box is, read once the pool is imported and its root
/// mounted, before anything of it is decided: everything [`crate::plan::decide_contents`] needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Contents {
    pub pool: String,
    /// `zpool get health`, or why it could not be read.
    pub health: String,
    /// `zpool status -P`, read only when the pool is not ONLINE (what the console gets).
    pub status: Option<String>,
    /// Used plus available bytes of the pool's root dataset (0 when they could not be read).
    pub size: u64,
    /// The last good policy kept on the pool.
    pub last_good: Option<String>,
    pub facts: PoolFacts,
    /// The managed properties of every dataset, or why they could not be read.
    pub datasets: Result<Props, String>,
    pub vault: vault::Seen,
    pub secure_boot: SecureBoot,
    /// Bytes of RAM.
    pub ram: u64,
}

/// Reads [`Contents`] of the imported pool `pool`.
pub fn contents(host: &mut dyn Host, pool: &str) -> Contents {
    let s = |a: &[&str]| a.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let health = host
        .zpool(&s(&["get", "-H", "-o", "value", "health", pool]))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|e| e.to_string());
    let status =
        (health != "ONLINE").then(|| host.zpool(&s(&["status", "-P", pool])).unwrap_or_default());
    let size = host
        .zfs(
            &s(&["get", "-H", "-p", "-o", "value", "used,available", pool]),
            None,
        )
        .map(|out| {
            out.lines()
                .filter_map(|l| l.trim().parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    let last_good =
        std::fs::read_to_string(crate::config::last_good_in(&host.pool_mount(pool))).ok();
    let facts = gather_pool_facts(host, pool);
    let args = zfs::get_recursive_args(pool, &datasets::MANAGED.join(","));
    let datasets = host
        .zfs(&args, None)
        .and_then(|out| zfs::parse_get_output(&args, &out))
        .map_err(|e: CmdError| platform::chain(&e));
    let vault = vault::see(host, &format!("{pool}/vault"));
    let (secure_boot, ram) = the_box(host);
    Contents {
        pool: pool.to_string(),
        health,
        status,
        size,
        last_good,
        facts,
        datasets,
        vault,
        secure_boot,
        ram,
    }
}

/// This boot's Secure Boot state and the box's RAM in bytes.
fn the_box(host: &dyn Host) -> (SecureBoot, u64) {
    let roots = host.roots();
    let meminfo = std::fs::read_to_string(roots.proc.join("meminfo")).unwrap_or_default();
    (vault::secure_boot(&roots.sys), mem_total(&meminfo))
}

/// What a pool about to be created will hold: nothing yet, on a box as it is (TPM, Secure Boot,
/// RAM read for real). `size` is an estimate from the drives; the run reads the real one once
/// the pool exists.
pub fn fresh_contents(host: &mut dyn Host, pool: &str, size: u64) -> Contents {
    let (secure_boot, ram) = the_box(host);
    Contents {
        pool: pool.to_string(),
        health: "ONLINE".into(),
        status: None,
        size,
        last_good: None,
        facts: PoolFacts {
            name: Some(pool.to_string()),
            ..Default::default()
        },
        datasets: Ok(Props::new()),
        vault: vault::see_none(host),
        secure_boot,
        ram,
    }
}

/// Observations the unit tests of the later steps start from.
#[cfg(test)]
pub mod fixtures {
    use super::*;
    use crate::discover::Transport;

    pub fn bd(name: &str, pbs: u64) -> BlockDev {
        BlockDev {
            name: name.into(),
            dev: PathBuf::from("/dev").join(name),
            transport: Transport::Virtio,
            size_bytes: 8 << 30,
            removable: false,
            read_only: false,
            rotational: false,
            physical_block_size: pbs,
            model: None,
            serial: None,
            wwid: None,
            partitions: vec![],
            holders: vec![],
            fabric: None,
        }
    }

    pub fn drive(name: &str) -> Drive {
        Drive {
            name: name.into(),
            stable_id: format!("virtio-{name}"),
            verdict: Verdict::Eligible,
            ours_pending: false,
            rotational: false,
        }
    }

    /// Two blank drives (one with 8 KiB physical sectors) and a boot disk `vda`.
    pub fn two_blank() -> Observation {
        Observation {
            observed: Observed {
                boot_disk: Some("vda".into()),
                p3: P3::Absent,
                p3_room: true,
                drives: vec![drive("vdb"), drive("vdc")],
                importable: vec![],
                imported: vec![],
            },
            devices: vec![
                (bd("vda", 512), Probed::default()),
                (bd("vdb", 4096), Probed::default()),
                (bd("vdc", 8192), Probed::default()),
            ],
            report: vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_from_meminfo() {
        assert_eq!(mem_total("MemFree: 5 kB\nMemTotal:  2048 kB\n"), 2 << 20);
        assert_eq!(mem_total("garbage"), 0);
    }

    #[test]
    fn facts_of_an_existing_pool_from_tool_output() {
        use crate::policy::{Topology, VaultKind};
        let list = "persist\t3.75G\t1M\t3.75G\t-\t-\t0%\t0%\t1.00x\tONLINE\t-\n\tmirror-0\t3.75G\t1M\t3.75G\t-\t-\t0%\t0.00%\t-\tONLINE\n\t/dev/disk/by-partuuid/a\t4G\t-\t-\t-\t-\t-\t-\t-\tONLINE\n";
        let f = pool_facts(
            "persist",
            list,
            "12\n",
            "encryption\taes-256-gcm\norg.lfedge.eve:sealed-key\tv1:::\n",
        );
        assert_eq!(f.topology, Some(Topology::Mirror));
        assert_eq!(f.ashift, Some(12));
        let f = pool_facts("p", "p\t1G\n\t/dev/x\t1G\n", "9", "encryption\toff\n");
        assert_eq!(
            (f.topology, f.vault),
            (Some(Topology::Stripe), Some(VaultKind::Unencrypted))
        );
        let f = pool_facts("p", "", "", "");
        assert_eq!((f.topology, f.ashift, f.vault), (None, None, None));
    }

    #[test]
    fn boot_disk_from_mountinfo_and_sysfs() {
        let t = tempfile::tempdir().unwrap();
        let disk = t
            .path()
            .join("sys/devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1");
        std::fs::create_dir_all(disk.join("nvme0n1p2")).unwrap();
        std::fs::write(disk.join("nvme0n1p2/partition"), "2\n").unwrap();
        std::fs::create_dir_all(t.path().join("sys/dev/block")).unwrap();
        std::os::unix::fs::symlink(disk.join("nvme0n1p2"), t.path().join("sys/dev/block/259:2"))
            .unwrap();
        let mi = "22 1 259:2 / / ro,relatime - squashfs /dev/nvme0n1p2 ro\n23 22 0:5 / /dev rw - devtmpfs devtmpfs rw\n";
        assert_eq!(
            boot_disk(&Roots::under(t.path()), mi).as_deref(),
            Some("nvme0n1")
        );
        assert_eq!(
            boot_disk(
                &Roots::under(t.path()),
                "23 22 0:5 / /dev rw - devtmpfs x rw\n"
            ),
            None
        );
        // The verified root: dm-0 over nvme0n1p2.
        let dm = t.path().join("sys/devices/virtual/block/dm-0");
        std::fs::create_dir_all(dm.join("slaves")).unwrap();
        std::os::unix::fs::symlink(disk.join("nvme0n1p2"), dm.join("slaves/nvme0n1p2")).unwrap();
        std::os::unix::fs::symlink(&dm, t.path().join("sys/dev/block/252:0")).unwrap();
        let mi = "22 1 252:0 / / ro,relatime - squashfs /dev/dm-0 ro\n";
        assert_eq!(
            boot_disk(&Roots::under(t.path()), mi).as_deref(),
            Some("nvme0n1")
        );
    }
}
