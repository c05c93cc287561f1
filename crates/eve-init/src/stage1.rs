//! Stage 1, in the initramfs: load the storage drivers, find the slot's squashfs by the PARTUUID
//! GRUB passed, mount it and switch_root into it. On failure it says what it saw and reboots, so
//! GRUB's boot counting can fall back to the other slot.

use crate::{cmdline, partfind, roots::Roots, sys};
use nix::mount::{mount, MsFlags};
use std::ffi::CString;
use std::path::Path;
use std::time::{Duration, Instant};

const NEWROOT: &str = "/newroot";
/// Module paths in load order, written by the builder.
const LOAD_ORDER: &str = "/lib/modules/load-order";
const ROOT_WAIT: Duration = Duration::from_secs(60);

fn load_modules() {
    let Ok(list) = std::fs::read_to_string(LOAD_ORDER) else {
        sys::log(format!("{LOAD_ORDER} missing: no drivers loaded"));
        return;
    };
    let empty = CString::default();
    for path in list.lines().filter(|l| !l.is_empty()) {
        let r = std::fs::File::open(path)
            .map_err(|e| e.to_string())
            .and_then(|f| {
                nix::kmod::finit_module(&f, &empty, nix::kmod::ModuleInitFlags::empty())
                    .map_err(|e| e.to_string())
            });
        match r {
            Ok(()) => {}
            Err(e) if e.contains("EEXIST") => {}
            Err(e) => sys::log(format!("load {path}: {e}")),
        }
    }
}

fn fail(msg: String) -> ! {
    sys::log(format!("FATAL: {msg}"));
    sys::log("rebooting in 10 s");
    sys::sleep(Duration::from_secs(10));
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    loop {
        sys::sleep(Duration::from_secs(60));
    }
}

pub fn run() -> ! {
    sys::mount_fs("devtmpfs", "/dev", MsFlags::MS_NOSUID, Some("mode=0755"));
    sys::mount_fs(
        "proc",
        "/proc",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    );
    sys::mount_fs(
        "sysfs",
        "/sys",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    );
    let cmd = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let params = cmdline::params(&cmd);
    let Some(guid) = cmdline::root_partuuid(&params) else {
        fail(format!(
            "no root=PARTUUID=<guid> on the kernel command line: `{}`",
            cmd.trim()
        ))
    };
    sys::log(format!(
        "stage 1: loading drivers, looking for root PARTUUID={guid}"
    ));
    load_modules();
    let roots = Roots::host();
    let start = Instant::now();
    let dev = loop {
        let found = partfind::find(&roots, guid);
        if let Some(first) = found.first() {
            if found.len() > 1 {
                sys::log(format!(
                    "WARNING: PARTUUID {guid} is on {} partitions ({found:?}); using {}",
                    found.len(),
                    first.display()
                ));
            }
            break first.clone();
        }
        if start.elapsed() > ROOT_WAIT {
            fail(format!(
                "no partition with PARTUUID {guid} after {ROOT_WAIT:?}; block devices: {}",
                partfind::inventory(&roots)
            ));
        }
        sys::sleep(Duration::from_millis(250));
    };
    sys::log(format!(
        "stage 1: root is {} ({:.1} s)",
        dev.display(),
        start.elapsed().as_secs_f32()
    ));
    let _ = std::fs::create_dir_all(NEWROOT);
    if let Err(e) = mount(
        Some(&dev),
        NEWROOT,
        Some("squashfs"),
        MsFlags::MS_RDONLY,
        None::<&str>,
    ) {
        fail(format!(
            "mount {} (squashfs) on {NEWROOT}: {e}",
            dev.display()
        ));
    }
    // sbin/init is an absolute symlink, meaningful only inside the new root: check the link itself.
    if Path::new(NEWROOT)
        .join("sbin/init")
        .symlink_metadata()
        .is_err()
    {
        fail(format!("{} has no /sbin/init", dev.display()));
    }
    for m in ["/dev", "/proc", "/sys"] {
        let target = format!("{NEWROOT}{m}");
        if let Err(e) = mount(
            Some(m),
            target.as_str(),
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        ) {
            fail(format!("move {m} to {target}: {e}"));
        }
    }
    // Free the initramfs' memory: everything but the new root is on the rootfs ramfs now.
    if let Ok(rd) = std::fs::read_dir("/") {
        for e in rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name() != "newroot")
        {
            let p = e.path();
            let _ = if p.is_dir() && !p.is_symlink() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
    let switch = || -> nix::Result<()> {
        nix::unistd::chdir(NEWROOT)?;
        mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)?;
        nix::unistd::chroot(".")?;
        nix::unistd::chdir("/")
    };
    if let Err(e) = switch() {
        fail(format!("switch_root: {e}"));
    }
    let init = CString::new("/sbin/init").unwrap_or_default();
    let e = nix::unistd::execv(&init, std::slice::from_ref(&init));
    fail(format!("exec /sbin/init: {e:?}"))
}
