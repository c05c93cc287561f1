//! What bring-up does to the box, behind one trait: [`RealHost`] writes GPTs and runs partx,
//! blockdev, udevadm and zpool; a fake in the unit tests records each call and can fail any of
//! them, so pool creation, import, finishing an interrupted first boot and growing a stripe are
//! tested as decisions, without a VM.

use crate::bringup::Error;
use crate::cmd::{run, BLOCKDEV, PARTX, UDEVADM};
use platform::Roots;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long a partition's udev link may take to appear.
const LINK_WAIT: Duration = Duration::from_secs(30);

pub trait Host {
    /// Adds a partition named `name` in the free tail of `disk`: (number, unique GUID).
    fn add_tail_partition(&mut self, disk: &Path, name: &str) -> Result<(u32, Uuid), Error>;
    /// Tells the kernel of one new partition on a busy disk (the root is on it).
    fn partx_add(&mut self, disk: &Path, num: u32) -> Result<(), Error>;
    /// A new GPT on `dev` with one partition named `name` over the whole disk.
    fn partition_whole(&mut self, dev: &Path, name: &str) -> Result<Uuid, Error>;
    /// Has the kernel re-read `dev`'s partition table.
    fn reread_table(&mut self, dev: &Path) -> Result<(), Error>;
    /// Lets udev finish what it was given (best effort: a slow udev is waited for per link).
    fn settle(&mut self);
    /// Waits for a device link to appear.
    fn wait_for(&mut self, path: &Path, what: &'static str) -> Result<(), Error>;
    /// Renames `dev`'s partitions named `from` to `to`.
    fn rename_partitions(&mut self, dev: &Path, from: &str, to: &str) -> Result<(), Error>;
    /// Runs zpool with `args`; its stdout.
    fn zpool(&mut self, args: &[String]) -> Result<String, Error>;
    /// The GUID of the imported pool `name`.
    fn pool_guid(&mut self, name: &str) -> Result<u64, Error>;
    /// Where the partitions' stable links are (`/dev/disk/by-partuuid`): the names ZFS records.
    fn partuuid_dir(&self) -> PathBuf;
    /// The stable path of the partition with this GUID.
    fn by_partuuid(&self, guid: &str) -> PathBuf {
        self.partuuid_dir().join(guid.to_lowercase())
    }
}

/// The box itself.
#[derive(Debug, Clone)]
pub struct RealHost {
    pub roots: Roots,
}

impl RealHost {
    pub fn new(roots: Roots) -> RealHost {
        RealHost { roots }
    }
}

impl Host for RealHost {
    fn add_tail_partition(&mut self, disk: &Path, name: &str) -> Result<(u32, Uuid), Error> {
        Ok(crate::gptops::add_tail_partition(disk, name)?)
    }

    fn partx_add(&mut self, disk: &Path, num: u32) -> Result<(), Error> {
        let args = [
            "--add",
            "--nr",
            &num.to_string(),
            &disk.display().to_string(),
        ]
        .map(String::from);
        run(PARTX, &args, None)?;
        Ok(())
    }

    fn partition_whole(&mut self, dev: &Path, name: &str) -> Result<Uuid, Error> {
        Ok(crate::gptops::partition_whole(dev, name)?)
    }

    fn reread_table(&mut self, dev: &Path) -> Result<(), Error> {
        run(
            BLOCKDEV,
            &["--rereadpt".into(), dev.display().to_string()],
            None,
        )?;
        Ok(())
    }

    fn settle(&mut self) {
        let _ = run(UDEVADM, &["settle".into(), "--timeout=30".into()], None);
    }

    fn wait_for(&mut self, path: &Path, what: &'static str) -> Result<(), Error> {
        let start = Instant::now();
        while !path.exists() {
            if start.elapsed() > LINK_WAIT {
                return Err(Error::Timeout {
                    path: path.into(),
                    what,
                    secs: LINK_WAIT.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn rename_partitions(&mut self, dev: &Path, from: &str, to: &str) -> Result<(), Error> {
        crate::gptops::rename(dev, from, to)?;
        Ok(())
    }

    fn zpool(&mut self, args: &[String]) -> Result<String, Error> {
        Ok(run(crate::zfs::ZPOOL, args, None)?)
    }

    fn pool_guid(&mut self, name: &str) -> Result<u64, Error> {
        crate::zfs::list_pools(Some(name))?
            .first()
            .map(|p| p.guid)
            .ok_or_else(|| Error::Parse(format!("pool {name} is not listed")))
    }

    fn partuuid_dir(&self) -> PathBuf {
        self.roots.dev.join("disk/by-partuuid")
    }
}

/// A host that records every call as one line and fails the first call starting with `fail`.
#[cfg(test)]
pub mod fake {
    use super::*;

    #[derive(Debug, Default)]
    pub struct FakeHost {
        pub calls: Vec<String>,
        pub fail: Option<&'static str>,
        /// What `pool_guid` answers.
        pub guid: u64,
        pub next: u128,
    }

    impl FakeHost {
        fn call(&mut self, line: String) -> Result<(), Error> {
            let failing = self.fail.is_some_and(|f| line.starts_with(f));
            self.calls.push(line.clone());
            if failing {
                self.fail = None;
                return Err(Error::Refused(format!("injected failure: {line}")));
            }
            Ok(())
        }

        fn uuid(&mut self) -> Uuid {
            self.next += 1;
            Uuid::from_u128(self.next)
        }
    }

    impl Host for FakeHost {
        fn add_tail_partition(&mut self, disk: &Path, name: &str) -> Result<(u32, Uuid), Error> {
            self.call(format!("add-tail {} {name}", disk.display()))?;
            Ok((3, self.uuid()))
        }
        fn partx_add(&mut self, disk: &Path, num: u32) -> Result<(), Error> {
            self.call(format!("partx-add {} {num}", disk.display()))
        }
        fn partition_whole(&mut self, dev: &Path, name: &str) -> Result<Uuid, Error> {
            self.call(format!("partition {} {name}", dev.display()))?;
            Ok(self.uuid())
        }
        fn reread_table(&mut self, dev: &Path) -> Result<(), Error> {
            self.call(format!("reread {}", dev.display()))
        }
        fn settle(&mut self) {
            let _ = self.call("settle".into());
        }
        fn wait_for(&mut self, path: &Path, _what: &'static str) -> Result<(), Error> {
            self.call(format!("wait {}", path.display()))
        }
        fn rename_partitions(&mut self, dev: &Path, from: &str, to: &str) -> Result<(), Error> {
            self.call(format!("rename {} {from} {to}", dev.display()))
        }
        fn zpool(&mut self, args: &[String]) -> Result<String, Error> {
            self.call(format!("zpool {}", args.join(" ")))?;
            Ok(String::new())
        }
        fn pool_guid(&mut self, name: &str) -> Result<u64, Error> {
            self.call(format!("guid {name}"))?;
            Ok(self.guid)
        }
        fn partuuid_dir(&self) -> PathBuf {
            PathBuf::from("/l")
        }
    }
}
