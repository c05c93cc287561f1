//! Thin wrappers over the system calls init makes, each logging what failed and why.

use nix::mount::{mount, MsFlags};
use std::path::Path;
use std::time::Duration;

/// A line on the console (init's stderr); never fails.
pub use platform::log;

/// Milliseconds since boot.
pub fn uptime_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0)
}

/// Mounts unless something is mounted there already; logs and continues on failure because a
/// missing optional filesystem must not stop the box from booting.
pub fn mount_fs(fstype: &str, target: &str, flags: MsFlags, data: Option<&str>) -> bool {
    let t = Path::new(target);
    if !t.exists() {
        if let Err(e) = std::fs::create_dir_all(t) {
            log(format!("mkdir {target}: {e}"));
            return false;
        }
    }
    if is_mountpoint(t) {
        return true;
    }
    match mount(Some(fstype), t, Some(fstype), flags, data) {
        Ok(()) => true,
        Err(e) => {
            log(format!("mount {fstype} on {target}: {e}"));
            false
        }
    }
}

/// True when `p` is on a different filesystem from its parent (or is `/`).
pub fn is_mountpoint(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(parent) = p.parent() else {
        return true;
    };
    match (std::fs::metadata(p), std::fs::metadata(parent)) {
        (Ok(a), Ok(b)) => a.dev() != b.dev() || a.ino() == b.ino(),
        _ => false,
    }
}

pub fn sleep(d: Duration) {
    std::thread::sleep(d);
}
