//! Who on this box holds a volume's block devices open: processes with the zvol or the box's
//! own nvme-loop namespace (or a partition of either) open, mounts of them, and devices stacked
//! over them (device-mapper, md). A rollback or a delete under any of them would change a disk
//! under a running VM, a mounted file system or a copy in progress, and leave stale blocks in
//! their page cache; so they are refused, naming the holder. The kernel's own users (nvmet, LIO)
//! hold the zvol without a file descriptor and are not counted here: connected hosts are.

use platform::Roots;
use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// A device number as the kernel writes it in sysfs and mountinfo, `MAJ:MIN`.
type DevNo = (u64, u64);

fn devno(rdev: u64) -> DevNo {
    (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev))
}

fn parse_devno(s: &str) -> Option<DevNo> {
    let (a, b) = s.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The device numbers of `dev` (a path to a block device node, links followed) and of its
/// partitions (from sysfs).
fn device_numbers(roots: &Roots, dev: &Path) -> BTreeSet<DevNo> {
    let mut set = BTreeSet::new();
    let Ok(m) = std::fs::metadata(dev) else {
        return set;
    };
    if !m.file_type().is_block_device() {
        return set;
    }
    let d = devno(m.rdev());
    set.insert(d);
    let sys = roots.sys.join("dev/block").join(format!("{}:{}", d.0, d.1));
    for e in std::fs::read_dir(&sys).into_iter().flatten().flatten() {
        if e.path().join("partition").exists() {
            if let Some(p) = std::fs::read_to_string(e.path().join("dev"))
                .ok()
                .and_then(|s| parse_devno(&s))
            {
                set.insert(p);
            }
        }
    }
    set
}

/// Mount points whose source is one of `devs`, from a mountinfo text (field 3 is `MAJ:MIN`,
/// field 5 the mount point).
fn mounted(mountinfo: &str, devs: &BTreeSet<DevNo>) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (d, at) = (parse_devno(f.get(2)?)?, f.get(4)?);
            devs.contains(&d).then(|| format!("mounted at {at}"))
        })
        .collect()
}

/// Whether the kernel holds `dev` exclusively: a mount (in any mount namespace), a
/// device-mapper or md device, a ZFS vdev. An exclusive open fails with EBUSY then. Not for
/// devices a kernel target claims by design (LIO's iblock opens its backstore exclusively);
/// nvmet's namespaces open theirs shared.
pub fn claimed(dev: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    matches!(
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_EXCL | libc::O_CLOEXEC)
            .open(dev),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY)
    )
}

/// Everything holding any of `devs` (block device paths) open; empty when nothing does.
pub fn holders(roots: &Roots, devs: &[PathBuf]) -> Vec<String> {
    let mut nums = BTreeSet::new();
    for d in devs {
        nums.extend(device_numbers(roots, d));
    }
    if nums.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let me = std::process::id().to_string();
    for p in std::fs::read_dir(&roots.proc)
        .into_iter()
        .flatten()
        .flatten()
    {
        let pid = p.file_name().to_string_lossy().into_owned();
        if pid == me || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let mut held = BTreeSet::new();
        for fd in std::fs::read_dir(p.path().join("fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            // metadata follows the fd's link to the device node it opened.
            if let Ok(m) = std::fs::metadata(fd.path()) {
                if m.file_type().is_block_device() && nums.contains(&devno(m.rdev())) {
                    let target = std::fs::read_link(fd.path())
                        .map(|t| t.display().to_string())
                        .unwrap_or_else(|_| {
                            format!(
                                "{}:{}",
                                nix::sys::stat::major(m.rdev()),
                                nix::sys::stat::minor(m.rdev())
                            )
                        });
                    held.insert(target);
                }
            }
        }
        if !held.is_empty() {
            let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            out.push(format!(
                "{} (pid {pid}) has {} open",
                comm.trim(),
                held.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    let mi = std::fs::read_to_string(roots.proc.join("self/mountinfo")).unwrap_or_default();
    out.extend(mounted(&mi, &nums));
    for (maj, min) in &nums {
        let h = roots.sys.join(format!("dev/block/{maj}:{min}/holders"));
        for e in std::fs::read_dir(&h).into_iter().flatten().flatten() {
            out.push(format!(
                "{} is stacked over it",
                e.file_name().to_string_lossy()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_and_mounts_are_read_as_the_kernel_writes_them() {
        assert_eq!(parse_devno("230:16\n"), Some((230, 16)));
        assert_eq!(parse_devno("230"), None);
        assert_eq!(parse_devno("a:b"), None);
        let devs: BTreeSet<DevNo> = [(230, 16), (230, 17)].into_iter().collect();
        let mi = "22 1 0:21 / /proc rw - proc proc rw
97 29 230:17 / /mnt/guest rw,relatime - ext4 /dev/zd16p1 rw
98 29 230:32 / /mnt/other rw - ext4 /dev/zd32 rw
bad line
";
        assert_eq!(
            mounted(mi, &devs),
            vec!["mounted at /mnt/guest".to_string()]
        );
    }

    #[test]
    fn nothing_holds_a_device_that_is_not_there() {
        let d = tempfile::tempdir().unwrap();
        let r = Roots::under(d.path());
        std::fs::write(d.path().join("plain"), b"x").unwrap();
        assert!(holders(&r, &[d.path().join("absent"), d.path().join("plain")]).is_empty());
    }

    /// A real block device when the test runs as root on Linux (a loop device is not needed:
    /// /dev/null is a character device and must not match, whatever holds it).
    #[test]
    fn a_character_device_is_never_a_holder() {
        let r = Roots::host();
        assert!(holders(&r, &[PathBuf::from("/dev/null")]).is_empty());
    }
}
