//! Stage 1, in the initramfs: load the storage drivers, find the slot by the PARTUUID GRUB passed,
//! check its signed verity descriptor and every block of its squashfs (`verity`), mount it
//! through dm-verity and switch_root into it. An image that fails verification is marked bad on
//! the ESP and the box reboots into the other slot, or stops with the reason when there is none;
//! other failures reboot, so GRUB's boot counting can fall back. A slot below the rollback floor
//! in the TPM ([`platform::rollback`]) is refused the same way; the verdict is measured into the
//! rollback PCR, which the vault's seal is bound to.

use crate::{partfind, sys, verity};
use abupdate::device::BootDisk;
use abupdate::state::{Slot, State};
use abupdate::trust::Trust;
use nix::mount::{mount, MsFlags};
use platform::Roots;
use std::ffi::CString;
use std::path::Path;
use std::time::{Duration, Instant};

const NEWROOT: &str = "/newroot";
/// Module paths in load order, written by the builder.
const LOAD_ORDER: &str = "/lib/modules/load-order";
const ROOT_WAIT: Duration = Duration::from_secs(60);
const ESP_DIR: &str = "/esp";
/// How long the TPM driver may take to bind after its module is loaded: briefly on a box whose
/// firmware declares no TPM, longer on one whose does (a slow TPM must not pass for none).
const TPM_WAIT: Duration = Duration::from_secs(3);
const TPM_DECLARED_WAIT: Duration = Duration::from_secs(30);

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

/// Runs `f` on the mounted ESP; `None` (logged) when it cannot be mounted or `f` fails.
fn with_esp<T>(bd: &BootDisk, f: impl FnOnce(&Path) -> abupdate::error::Result<T>) -> Option<T> {
    let m = match abupdate::esp::Mounted::new(&bd.esp.dev, Path::new(ESP_DIR)) {
        Ok(m) => m,
        Err(e) => {
            sys::log(format!("ESP {}: {e}", bd.esp.dev.display()));
            return None;
        }
    };
    match f(&m.dir) {
        Ok(v) => Some(v),
        Err(e) => {
            sys::log(format!("ESP {}: {e}", bd.esp.dev.display()));
            None
        }
    }
}

/// The slot's image failed verification: record it, then boot the other slot if it holds an
/// image; never boot this one.
fn refuse(bd: Option<&BootDisk>, slot: Slot, why: &str) -> ! {
    refuse_as(bd, slot, "verity", why)
}

/// [`refuse`], recorded under `kind` (`verity`, `rollback`).
fn refuse_as(bd: Option<&BootDisk>, slot: Slot, kind: &str, why: &str) -> ! {
    sys::log(format!("SLOT {slot} REFUSED: {why}"));
    let other = bd.and_then(|bd| {
        with_esp(bd, |dir| {
            let mut s = abupdate::esp::load(dir)?;
            if s.image_refused(slot, &format!("boot: {kind}: {why}")) {
                abupdate::esp::store(dir, &s)?;
            }
            Ok(s.get(slot.other()).state)
        })
    });
    match other {
        Some(State::Empty) => {
            sys::log(format!(
                "slot {} holds no image: nothing verified to boot; this box stops here (reinstall it from a signed image)",
                slot.other()
            ));
            loop {
                sys::sleep(Duration::from_secs(3600));
            }
        }
        Some(_) => {
            sys::log(format!(
                "slot {slot} marked bad; rebooting into slot {}",
                slot.other()
            ));
            sys::sleep(Duration::from_secs(3));
            let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
            loop {
                sys::sleep(Duration::from_secs(60));
            }
        }
        None => fail(format!(
            "slot {slot} failed verification and the slot state could not be updated"
        )),
    }
}

/// The kernel's TPM device, once its driver has bound (`None`: this box has no TPM).
fn tpm_device(roots: &Roots) -> Option<platform::tpmcmd::Device> {
    let class = roots.sys.join("class/tpm/tpm0");
    let declared = roots.sys.join("firmware/acpi/tables/TPM2").exists();
    let wait = if declared {
        TPM_DECLARED_WAIT
    } else {
        TPM_WAIT
    };
    let start = Instant::now();
    while !class.exists() {
        if start.elapsed() > wait {
            if declared {
                sys::log(format!(
                    "stage 1: WARNING: the firmware declares a TPM but none appeared in {wait:?}: the vault stays sealed this boot"
                ));
            }
            return None;
        }
        sys::sleep(Duration::from_millis(100));
    }
    let dev = roots.dev.join("tpmrm0");
    while !dev.exists() && start.elapsed() < wait {
        sys::sleep(Duration::from_millis(100));
    }
    match platform::tpmcmd::Device::open(&dev) {
        Ok(d) => Some(d),
        Err(e) => {
            sys::log(format!("WARNING: TPM present but not usable: {e}"));
            None
        }
    }
}

/// The other slot's release, when GRUB will boot it (good, or on trial with tries left) and its
/// signed descriptor meets the epoch floor `fe`.
fn other_at_floor(bd: &BootDisk, other: Slot, trust: &Trust, fe: u64) -> Option<String> {
    let info = with_esp(bd, |dir| Ok(abupdate::esp::load(dir)?.get(other).clone()))?;
    let bootable = match info.state {
        State::Good => true,
        State::Trial => info.tries > 0,
        State::Empty | State::Bad => false,
    };
    if !bootable {
        return None;
    }
    let d = verity::descriptor(&bd.slot(other).dev, trust)
        .map_err(|e| sys::log(format!("slot {other}: {e}")))
        .ok()?;
    (u64::from(d.security_epoch) >= fe).then(|| {
        format!(
            "version {} of security epoch {}",
            d.version, d.security_epoch
        )
    })
}

/// Checks the slot against the rollback floor: refuses it when below, else measures the verdict
/// into the rollback PCR (a TPM that cannot be asked leaves the PCR as it is: the vault stays
/// locked, the box still boots).
/// `facts`: the slot's signed security epoch, the serial of the key list built into this
/// initramfs, and the epoch the boot loader that started it was built for (from the command line
/// its signed config wrote).
fn rollback_check(
    roots: &Roots,
    bd: Option<&BootDisk>,
    slot: Slot,
    trust: &Trust,
    (epoch, builtin, loader): (u32, u32, u32),
) {
    let serial = trust.serial;
    use platform::rollback::{self, Floor, Verdict};
    let mut dev = tpm_device(roots);
    let floor = match dev.as_mut() {
        None => Floor::NoTpm,
        Some(d) => platform::tpmcmd::read_floor(d),
    };
    let verdict = rollback::decide(
        &floor,
        rollback::Slot {
            epoch,
            serial,
            builtin,
            loader,
        },
    );
    let measure: Vec<u8> = match &verdict {
        Verdict::NoTpm => {
            sys::log("stage 1: no TPM: no rollback floor to check");
            return;
        }
        Verdict::Refuse(why) => {
            // Refused (and marked bad) only when the other slot holds a signed release at the
            // floor: with none (a TPM whose counters restarted above every release), the box
            // boots without the vault, reachable for an update, and no good slot is lost.
            let fe = match floor {
                Floor::Present { epoch, .. } => epoch,
                _ => 0,
            };
            if let Some(other) = bd.and_then(|bd| other_at_floor(bd, slot.other(), trust, fe)) {
                refuse_as(
                    bd,
                    slot,
                    "rollback",
                    &format!("{why}; slot {} holds {other}", slot.other()),
                );
            }
            sys::log(format!(
                "stage 1: WARNING: {why}; slot {} holds no release at the floor either: booting slot {slot} WITHOUT the vault (install a release at the floor)",
                slot.other()
            ));
            rollback::UNCHECKED.to_vec()
        }
        Verdict::Checked(measured) => {
            if let Floor::Present {
                epoch: fe,
                serial: fs,
                keys,
            } = &floor
            {
                let keys = match keys {
                    Some(k) => format!(
                        ", built-in key list {builtin} >= {}; counters counted from {:?}",
                        k.builtin, k.origins
                    ),
                    None => "; no origins recorded yet: the next good boot records them and seals the vault to them".into(),
                };
                sys::log(format!(
                    "stage 1: rollback floor met (epoch {epoch} >= {fe}, key serial {serial} >= {fs}, boot loader epoch {loader} >= {fe}{keys})"
                ));
            }
            measured.clone()
        }
        Verdict::Unchecked(why) => {
            sys::log(format!("stage 1: WARNING: {why}"));
            rollback::UNCHECKED.to_vec()
        }
    };
    if let Some(d) = dev.as_mut() {
        if let Err(e) = platform::tpmcmd::extend(d, &measure) {
            sys::log(format!(
                "stage 1: WARNING: extending PCR {}: {e}; the vault will stay locked",
                rollback::PCR
            ));
        }
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
    let (slot, guid) = match abupdate::device::parse_cmdline(&cmd) {
        Ok(v) => v,
        Err(e) => fail(e.to_string()),
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
    let bd = abupdate::device::find(&platform::Roots::host(), slot, guid)
        .map_err(|e| sys::log(format!("WARNING: boot disk: {e}")))
        .ok();
    let chain = bd
        .as_ref()
        .and_then(|bd| with_esp(bd, abupdate::release::load_chain));
    let (trust, builtin) = match verity::trust(Path::new(verity::BOOT_KEYS), chain.as_deref()) {
        Ok(t) => t,
        Err(e) => refuse(bd.as_ref(), slot, &format!("no boot keys: {e}")),
    };
    let t = Instant::now();
    let v = match verity::open(&dev, &trust, &roots.dev) {
        Ok(v) => v,
        Err(e) => refuse(bd.as_ref(), slot, &e),
    };
    let built = std::fs::read_to_string(verity::PROFILE).ok();
    if let Err(e) = verity::check_profile(built.as_deref(), &v.descriptor.profile) {
        refuse(bd.as_ref(), slot, &e);
    }
    rollback_check(
        &roots,
        bd.as_ref(),
        slot,
        &trust,
        (
            v.descriptor.security_epoch,
            builtin,
            platform::rollback::loader_epoch_of_cmdline(&cmd),
        ),
    );
    let bytes = match verity::read_all(&v.node) {
        Ok(b) => b,
        Err(e) => refuse(bd.as_ref(), slot, &e),
    };
    sys::log(format!(
        "stage 1: slot {slot} verified: {} MiB of version {} against its signed root hash {}... in {:.1} s",
        bytes >> 20,
        v.descriptor.version,
        &v.descriptor.root_hash[..16],
        t.elapsed().as_secs_f32()
    ));
    let root_dev = v.node;
    let _ = std::fs::create_dir_all(NEWROOT);
    if let Err(e) = mount(
        Some(&root_dev),
        NEWROOT,
        Some("squashfs"),
        MsFlags::MS_RDONLY,
        None::<&str>,
    ) {
        fail(format!(
            "mount {} (squashfs of {}) on {NEWROOT}: {e}",
            root_dev.display(),
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
