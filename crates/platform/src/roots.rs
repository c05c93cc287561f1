//! Where the kernel's trees and the box's runtime directories are: `/` on the box, a temporary
//! tree in tests. Every path into /sys, /dev, /proc, /run, /etc, /usr or configfs is built from one.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    pub sys: PathBuf,
    pub dev: PathBuf,
    pub proc: PathBuf,
    pub run: PathBuf,
    pub etc: PathBuf,
    /// The running image's `/usr` (read-only, verified).
    pub usr: PathBuf,
    pub configfs: PathBuf,
    pub debugfs: PathBuf,
}

impl Roots {
    pub fn under(base: &Path) -> Roots {
        Roots {
            sys: base.join("sys"),
            dev: base.join("dev"),
            proc: base.join("proc"),
            run: base.join("run"),
            etc: base.join("etc"),
            usr: base.join("usr"),
            configfs: base.join("sys/kernel/config"),
            debugfs: base.join("sys/kernel/debug"),
        }
    }

    pub fn host() -> Roots {
        Roots::under(Path::new("/"))
    }

    /// `/dev/disk/by-partuuid/<uuid>`, the name every partition we made is addressed by.
    pub fn by_partuuid(&self, uuid: &str) -> PathBuf {
        self.dev.join("disk/by-partuuid").join(uuid)
    }

    /// `/proc/self/mounts`.
    pub fn mounts(&self) -> PathBuf {
        self.proc.join("self/mounts")
    }

    /// `/proc/self/mountinfo`: the mount table with sources and mount ids.
    pub fn mountinfo(&self) -> PathBuf {
        self.proc.join("self/mountinfo")
    }

    /// What storage-init reports at the end of its run, for the boot health check and storagectl.
    pub fn storage_outcome(&self) -> PathBuf {
        self.run.join("eve/storage.json")
    }

    /// What storage-init leaves, for this boot only, when `storage-init raise-floor` must replace
    /// a vault seal from before the rollback floor (the vault, its GUID, the recovery key's public
    /// half); the floor's raise reads whether it is there.
    pub fn vault_floor_migration(&self) -> PathBuf {
        self.run.join("eve/vault-floor-migration.json")
    }

    /// `/sys/module/<name>`: present once the module is loaded (or built in).
    pub fn module(&self, name: &str) -> PathBuf {
        self.sys.join("module").join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tree_is_under_the_base() {
        let r = Roots::under(Path::new("/tmp/t"));
        for p in [
            &r.sys,
            &r.dev,
            &r.proc,
            &r.run,
            &r.etc,
            &r.configfs,
            &r.debugfs,
        ] {
            assert!(p.starts_with("/tmp/t"), "{}", p.display());
        }
        assert_eq!(
            r.by_partuuid("x"),
            Path::new("/tmp/t/dev/disk/by-partuuid/x")
        );
        assert_eq!(Roots::host().mounts(), Path::new("/proc/self/mounts"));
        assert_eq!(r.module("zfs"), Path::new("/tmp/t/sys/module/zfs"));
    }
}
