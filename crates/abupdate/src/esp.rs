//! The slot state on the ESP: two copies of a GRUB environment block, written in place.
//!
//! Power-loss argument: every block we write keeps its variables in the first 512-byte sector
//! (`grubenv::PAYLOAD_LIMIT`); the rest is `#` padding that never changes, so a write changes one
//! sector, which the drives we target write atomically. For drives that may tear a sector, there
//! are two copies, written one after the other with an fsync between: an interrupted write leaves
//! one complete copy. Readers (GRUB and us) take copy 1 when it parses and carries `EVE_FMT`,
//! else copy 2. GRUB's own in-place `save_env` of the tries counters follows the same order.

use crate::error::{Error, IoContext, Result};
use crate::grubenv;
use crate::state::Slots;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Paths of the two copies inside the ESP (the GRUB script names the same files).
pub const COPIES: [&str; 2] = ["EFI/eve/state1.env", "EFI/eve/state2.env"];

/// Reads the state from a directory holding the ESP's files.
pub fn load(esp: &Path) -> Result<Slots> {
    let mut why = Vec::new();
    for rel in COPIES {
        let p = esp.join(rel);
        let parsed = std::fs::read(&p)
            .map_err(|e| e.to_string())
            .and_then(|b| grubenv::parse(&b).map_err(|e| e.to_string()))
            .and_then(|env| Slots::from_env(&env).map_err(|e| e.to_string()));
        match parsed {
            Ok(s) => {
                if !why.is_empty() {
                    eprintln!("abupdate: using {}: {}", p.display(), why.join("; "));
                }
                return Ok(s);
            }
            Err(e) => why.push(format!("{}: {e}", p.display())),
        }
    }
    Err(Error::NoState(why.join("; ")))
}

fn write_in_place(p: &Path, block: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(p)
        .at("open", p)?;
    // GRUB's save_env rewrites the file's blocks in place; keep the file exactly one block.
    let mut cur = Vec::new();
    f.read_to_end(&mut cur).at("read", p)?;
    if cur == block {
        return Ok(());
    }
    f.seek(SeekFrom::Start(0)).at("seek", p)?;
    f.write_all(block).at("write", p)?;
    f.set_len(block.len() as u64).at("truncate", p)?;
    Ok(f.sync_all().at("fsync", p)?)
}

/// Writes both copies, copy 1 first.
pub fn store(esp: &Path, s: &Slots) -> Result<()> {
    let block = grubenv::serialize(&s.to_env()).map_err(|source| Error::Env {
        path: esp.join(COPIES[0]),
        source,
    })?;
    for rel in COPIES {
        let p = esp.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).at("create", d)?;
        }
        write_in_place(&p, &block)?;
    }
    Ok(())
}

/// The ESP mounted privately for one operation; unmounted on drop.
#[derive(Debug)]
pub struct Mounted {
    pub dir: PathBuf,
}

impl Mounted {
    pub fn new(dev: &Path, dir: &Path) -> Result<Mounted> {
        Mounted::with(dev, dir, MsFlags::empty())
    }

    /// Read-only: a read-write vfat mount and unmount each write the boot sector (its dirty
    /// flag), which reads (status, polled by the API) must not do.
    pub fn read_only(dev: &Path, dir: &Path) -> Result<Mounted> {
        Mounted::with(dev, dir, MsFlags::MS_RDONLY)
    }

    fn with(dev: &Path, dir: &Path, extra: MsFlags) -> Result<Mounted> {
        std::fs::create_dir_all(dir).at("create", dir)?;
        // A previous run killed mid-way may have left it mounted.
        let _ = umount2(dir, MntFlags::MNT_DETACH);
        mount(
            Some(dev),
            dir,
            Some("vfat"),
            MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC
                | MsFlags::MS_NOATIME
                | extra,
            None::<&str>,
        )
        .map_err(std::io::Error::from)
        .at("mount the ESP (vfat)", dev)?;
        Ok(Mounted { dir: dir.into() })
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = umount2(&self.dir, MntFlags::empty()) {
            eprintln!("abupdate: unmount {}: {e}", self.dir.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Slot, State};

    #[test]
    fn both_copies_written_and_a_torn_first_copy_falls_back() {
        let t = tempfile::tempdir().unwrap();
        let s = Slots::factory("v1");
        store(t.path(), &s).unwrap();
        for rel in COPIES {
            assert_eq!(std::fs::metadata(t.path().join(rel)).unwrap().len(), 1024);
        }
        assert_eq!(load(t.path()).unwrap(), s);
        // Copy 1 torn (a zeroed sector): copy 2 still holds the state.
        let p1 = t.path().join(COPIES[0]);
        let mut b = std::fs::read(&p1).unwrap();
        b[..512].fill(0);
        std::fs::write(&p1, &b).unwrap();
        assert_eq!(load(t.path()).unwrap(), s);
        // The next store repairs copy 1, in place, at the same size.
        let mut n = s.clone();
        n.install_started(Slot::A).unwrap();
        store(t.path(), &n).unwrap();
        assert_eq!(load(t.path()).unwrap().b.state, State::Empty);
        assert_eq!(
            std::fs::read(&p1).unwrap(),
            std::fs::read(t.path().join(COPIES[1])).unwrap()
        );
        std::fs::write(&p1, b"junk").unwrap();
        std::fs::write(t.path().join(COPIES[1]), b"junk").unwrap();
        let e = load(t.path()).unwrap_err().to_string();
        assert!(e.contains("state1.env") && e.contains("state2.env"), "{e}");
    }
}
