//! Stage 2: bring the system up, run onboot steps in order, then keep services running.

use crate::bundle::{self, Bundle};
use crate::machine::Supervision;
use crate::{cmdline, logsink, logsink::Sink, sys};
use nix::mount::MsFlags;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use platform::status::{self, Status};
use std::fs::{File, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const STATUS_PATH: &str = "/run/eve-init/status.json";
const CONTAINERS: &str = "/containers";
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const ONBOOT_TIMEOUT: Duration = Duration::from_secs(900);
const UDEVD: &str = "/lib/systemd/systemd-udevd";
const UDEVADM: &str = "/bin/udevadm";
const IP: &str = "/bin/ip";
const MODPROBE: &str = "/sbin/modprobe";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Shutdown {
    Reboot,
    PowerOff,
    Halt,
}

fn exit_code(ws: WaitStatus) -> Option<i32> {
    match ws {
        WaitStatus::Exited(_, c) => Some(c),
        WaitStatus::Signaled(_, s, _) => Some(128 + s as i32),
        _ => None,
    }
}

fn console_tty(params: &[(String, String)]) -> Option<String> {
    cmdline::primary_console(params).map(|c| format!("/dev/{c}"))
}

/// Starts a bundle's process with its output piped to a log sink (or on a tty when it asks).
fn spawn(b: &Bundle, console: &str) -> std::io::Result<Pid> {
    let Some((prog, rest)) = b.config.process.args.split_first() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "process.args is empty",
        ));
    };
    let mut c = Command::new(prog);
    c.args(rest).env_clear().current_dir(&b.config.process.cwd);
    for kv in std::iter::once(DEFAULT_PATH).chain(b.config.process.env.iter().map(String::as_str)) {
        if let Some((k, v)) = kv.split_once('=') {
            c.env(k, v);
        }
    }
    let tty = b.tty().map(|t| {
        if t == "console" {
            console.to_string()
        } else {
            t.to_string()
        }
    });
    let mut pipe = false;
    match &tty {
        Some(t) => {
            let f = OpenOptions::new().read(true).write(true).open(t)?;
            c.stdin(f.try_clone()?).stdout(f.try_clone()?).stderr(f);
        }
        None => {
            c.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            pipe = true;
        }
    }
    let rootfs = b.rootfs();
    let chroot = std::fs::canonicalize(&rootfs)
        .map(|p| p != Path::new("/"))
        .unwrap_or(true);
    let has_tty = tty.is_some();
    // SAFETY: only async-signal-safe calls (setsid, ioctl, chroot, chdir) run between fork and exec.
    unsafe {
        c.pre_exec(move || {
            // init blocks the signals it waits for; a child must not inherit that mask, or it
            // would ignore SIGTERM at shutdown.
            let empty = nix::sys::signal::SigSet::empty();
            nix::sys::signal::sigprocmask(
                nix::sys::signal::SigmaskHow::SIG_SETMASK,
                Some(&empty),
                None,
            )?;
            nix::unistd::setsid()?;
            if has_tty && libc::ioctl(0, libc::TIOCSCTTY, 1) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if chroot {
                nix::unistd::chroot(&rootfs)?;
                nix::unistd::chdir("/")?;
            }
            Ok(())
        });
    }
    let mut child = c.spawn()?;
    if pipe {
        let console = OpenOptions::new().write(true).open("/dev/console").ok();
        let run = PathBuf::from("/run/log");
        let sink = std::sync::Arc::new(std::sync::Mutex::new(Sink::new(
            &b.name,
            console,
            &run,
            Path::new("/persist"),
        )));
        if let Some(out) = child.stdout.take() {
            let s = sink.clone();
            std::thread::spawn(move || logsink::pump(&s, out));
        }
        if let Some(err) = child.stderr.take() {
            std::thread::spawn(move || logsink::pump(&sink, err));
        }
    }
    Ok(Pid::from_raw(child.id() as i32))
}

/// What ab-health and the operator read of the services: replaced whole, so a reader never
/// sees half a file.
fn write_status(st: &Status) {
    if let Ok(j) = serde_json::to_vec_pretty(st) {
        if let Err(e) = platform::fsx::write_atomic(Path::new(STATUS_PATH), &j, None) {
            eprintln!(
                "eve-init: service status not written: {}",
                platform::chain(&e)
            );
        }
    }
}

fn internal(name: &str, args: &[&str]) -> Bundle {
    Bundle {
        name: name.into(),
        dir: PathBuf::from("/"),
        config: bundle::Config {
            oci_version: "1.0.2".into(),
            process: bundle::Process {
                args: args.iter().map(|s| s.to_string()).collect(),
                env: vec![],
                cwd: "/".into(),
            },
            root: bundle::Root {
                path: ".".into(),
                readonly: true,
            },
            annotations: Default::default(),
        },
    }
}

/// The syscall side of supervision: spawning, reaping, signals, the status file. What to do
/// is decided by [`Supervision`].
#[derive(Debug)]
pub struct Init {
    console: String,
    /// The slot, onboot steps and bundle errors; the services' part comes from `machine`.
    status: Status,
    bundles: Vec<Bundle>,
    machine: Supervision,
    signals: SigSet,
    shutdown: Option<Shutdown>,
}

impl Init {
    /// Waits for one signal up to `timeout`; reaps children and records shutdown requests.
    /// Returns the children that exited.
    fn wait_events(&mut self, timeout: Duration) -> Vec<(Pid, WaitStatus)> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: sigtimedwait with a valid set and timespec; the info pointer may be null.
        let sig = unsafe { libc::sigtimedwait(self.signals.as_ref(), std::ptr::null_mut(), &ts) };
        match Signal::try_from(sig) {
            Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => self.shutdown = Some(Shutdown::Reboot),
            Ok(Signal::SIGUSR2) => self.shutdown = Some(Shutdown::PowerOff),
            Ok(Signal::SIGUSR1) => self.shutdown = Some(Shutdown::Halt),
            _ => {}
        }
        let mut out = Vec::new();
        while let Ok(ws) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            match ws.pid() {
                Some(p) => out.push((p, ws)),
                None => break,
            }
        }
        for (pid, ws) in &out {
            self.on_exit(*pid, *ws);
        }
        out
    }

    fn on_exit(&mut self, pid: Pid, ws: WaitStatus) {
        let how = format!("{ws:?}");
        if let Some(line) = self
            .machine
            .exited(pid.as_raw(), exit_code(ws), &how, Instant::now())
        {
            sys::log(line);
            self.write_status();
        }
    }

    fn start_service(&mut self, i: usize) {
        let b = &self.bundles[i];
        let line = match spawn(b, &self.console) {
            Ok(pid) => self.machine.started(i, pid.as_raw(), Instant::now()),
            Err(e) => self.machine.start_failed(
                i,
                &format!("{:?}: {e}", b.config.process.args),
                Instant::now(),
            ),
        };
        sys::log(line);
        self.write_status();
    }

    fn add_service(&mut self, b: Bundle) {
        let i = self
            .machine
            .add(&b.name, b.restart_on_success(), b.tty().is_some());
        self.bundles.push(b);
        self.start_service(i);
    }

    fn write_status(&mut self) {
        self.status.services = self.machine.status().to_vec();
        write_status(&self.status);
    }

    /// Runs a one-shot command to completion, supervising services meanwhile. None if it could not start.
    fn run_once(&mut self, b: &Bundle, timeout: Duration) -> Result<i32, String> {
        let pid = spawn(b, &self.console)
            .map_err(|e| format!("cannot start {:?}: {e}", b.config.process.args))?;
        let deadline = Instant::now() + timeout;
        loop {
            for (p, ws) in self.wait_events(Duration::from_millis(500)) {
                if p == pid {
                    return exit_code(ws).ok_or_else(|| format!("{ws:?}"));
                }
            }
            if Instant::now() > deadline {
                let _ = kill(pid, Signal::SIGKILL);
                return Err(format!("timed out after {timeout:?}; killed"));
            }
        }
    }

    fn onboot(&mut self) {
        let (bundles, errs) = bundle::load_dir(&Path::new(CONTAINERS).join("onboot"));
        self.status.errors.extend(errs.iter().cloned());
        for e in errs {
            sys::log(format!("onboot: {e}"));
        }
        for b in bundles {
            let started = sys::uptime_ms();
            self.status.onboot.push(status::Step {
                name: b.name.clone(),
                started_ms: started,
                ..Default::default()
            });
            write_status(&self.status);
            sys::log(format!("onboot {}: {:?}", b.name, b.config.process.args));
            let r = self.run_once(&b, ONBOOT_TIMEOUT);
            let finished = sys::uptime_ms();
            let step = self.status.onboot.last_mut().expect("pushed above");
            step.finished_ms = Some(finished);
            match r {
                Ok(code) => {
                    step.exit = Some(code);
                    sys::log(format!(
                        "onboot {} exited {code} after {} ms",
                        b.name,
                        finished - started
                    ));
                }
                Err(e) => {
                    step.error = Some(e.clone());
                    sys::log(format!("onboot {} failed: {e}", b.name));
                }
            }
            write_status(&self.status);
        }
    }

    fn mounts() {
        let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        sys::mount_fs("proc", "/proc", nodev | MsFlags::MS_NOEXEC, None);
        sys::mount_fs("sysfs", "/sys", nodev | MsFlags::MS_NOEXEC, None);
        sys::mount_fs("devtmpfs", "/dev", MsFlags::MS_NOSUID, Some("mode=0755"));
        sys::mount_fs(
            "devpts",
            "/dev/pts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("gid=5,mode=620,ptmxmode=666"),
        );
        sys::mount_fs("tmpfs", "/dev/shm", nodev, Some("mode=1777"));
        sys::mount_fs("tmpfs", "/run", nodev, Some("mode=0755"));
        sys::mount_fs("tmpfs", "/tmp", nodev, Some("mode=1777"));
        sys::mount_fs("tmpfs", "/var", nodev, Some("mode=0755"));
        for d in [
            "/var/log",
            "/var/lib",
            "/var/tmp",
            "/var/cache",
            "/run/log",
            "/run/lock",
        ] {
            let _ = std::fs::create_dir_all(d);
        }
        // configfs is a module in Debian's kernel; its mountpoint appears once it is loaded.
        if !Path::new("/sys/kernel/config").exists() {
            let _ = Command::new(MODPROBE)
                .arg("configfs")
                .stdin(Stdio::null())
                .status();
        }
        sys::mount_fs(
            "configfs",
            "/sys/kernel/config",
            nodev | MsFlags::MS_NOEXEC,
            None,
        );
        sys::mount_fs(
            "cgroup2",
            "/sys/fs/cgroup",
            nodev | MsFlags::MS_NOEXEC,
            None,
        );
        // The kernel's lockdown state (Secure Boot) is read from here.
        sys::mount_fs(
            "securityfs",
            "/sys/kernel/security",
            nodev | MsFlags::MS_NOEXEC,
            None,
        );
        if Path::new("/sys/firmware/efi").exists() {
            sys::mount_fs(
                "efivarfs",
                "/sys/firmware/efi/efivars",
                nodev | MsFlags::MS_NOEXEC,
                None,
            );
        }
    }

    pub fn run() -> ! {
        Self::mounts();
        let cmd = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        let params = cmdline::params(&cmd);
        let console = console_tty(&params).unwrap_or_else(|| "/dev/console".into());
        let mut signals = SigSet::empty();
        for s in [
            Signal::SIGCHLD,
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGUSR1,
            Signal::SIGUSR2,
            Signal::SIGHUP,
        ] {
            signals.add(s);
        }
        let _ = signals.thread_block();
        // Ctrl-Alt-Del arrives as SIGINT rather than an immediate reboot.
        let _ = nix::sys::reboot::set_cad_enabled(false);
        let mut init = Init {
            console,
            status: Status {
                slot: cmdline::get(&params, "eve.slot").map(str::to_string),
                ..Default::default()
            },
            bundles: Vec::new(),
            machine: Supervision::default(),
            signals,
            shutdown: None,
        };
        sys::log(format!(
            "stage 2 on slot {}",
            init.status.slot.as_deref().unwrap_or("?")
        ));
        let _ = nix::unistd::sethostname("eve-storage");
        if let Err(e) = init.run_once(
            &internal("lo", &[IP, "link", "set", "lo", "up"]),
            Duration::from_secs(30),
        ) {
            sys::log(format!("loopback: {e}"));
        }
        // udev first: onboot steps expect /dev/disk/by-id and module autoloading.
        init.add_service(internal("udevd", &[UDEVD]));
        for args in [
            &[UDEVADM, "trigger", "--type=subsystems", "--action=add"][..],
            &[UDEVADM, "trigger", "--type=devices", "--action=add"],
            &[UDEVADM, "settle", "--timeout=60"],
        ] {
            let t = Instant::now();
            match init.run_once(&internal("udevadm", args), Duration::from_secs(90)) {
                Ok(0) => {}
                r => sys::log(format!("{args:?}: {r:?}")),
            }
            sys::log(format!("{} took {} ms", args[1], t.elapsed().as_millis()));
        }
        init.onboot();
        let (services, errs) = bundle::load_dir(&Path::new(CONTAINERS).join("services"));
        for e in errs {
            sys::log(format!("services: {e}"));
            init.status.errors.push(e);
        }
        for b in services {
            init.add_service(b);
        }
        sys::log(format!(
            "up: {} onboot steps, {} services",
            init.status.onboot.len(),
            init.machine.len()
        ));
        init.supervise()
    }

    fn supervise(mut self) -> ! {
        loop {
            let wait = self.machine.wait(Instant::now());
            self.wait_events(wait.max(Duration::from_millis(10)));
            if let Some(how) = self.shutdown {
                self.shut_down(how);
            }
            for i in self.machine.due(Instant::now()) {
                self.start_service(i);
            }
        }
    }

    fn shut_down(&mut self, how: Shutdown) -> ! {
        sys::log(format!("{how:?}: stopping services"));
        for (p, tty) in self.machine.stop() {
            // Interactive shells ignore SIGTERM; a terminal session ends on hangup.
            let sigs: &[Signal] = if tty {
                &[Signal::SIGHUP, Signal::SIGTERM]
            } else {
                &[Signal::SIGTERM]
            };
            for sig in sigs {
                let _ = kill(Pid::from_raw(-p), *sig);
                let _ = kill(Pid::from_raw(p), *sig);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.machine.live().is_empty() && Instant::now() < deadline {
            self.wait_events(Duration::from_millis(200));
        }
        for (p, _) in self.machine.live() {
            let name = self.machine.status().iter().find(|s| s.pid == Some(p));
            sys::log(format!(
                "{} did not stop; killing",
                name.map_or("?", |s| s.name.as_str())
            ));
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        let (hooks, _) = bundle::load_dir(&Path::new(CONTAINERS).join("onshutdown"));
        for b in hooks {
            let r = self.run_once(&b, Duration::from_secs(60));
            sys::log(format!("onshutdown {}: {r:?}", b.name));
        }
        nix::unistd::sync();
        unmount_all();
        nix::unistd::sync();
        let mode = match how {
            Shutdown::Reboot => nix::sys::reboot::RebootMode::RB_AUTOBOOT,
            Shutdown::PowerOff => nix::sys::reboot::RebootMode::RB_POWER_OFF,
            Shutdown::Halt => nix::sys::reboot::RebootMode::RB_HALT_SYSTEM,
        };
        let _ = nix::sys::reboot::reboot(mode);
        loop {
            sys::sleep(Duration::from_secs(60));
        }
    }
}

/// Unmounts everything but the kernel filesystems, deepest first; busy ones are detached.
fn unmount_all() {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let keep = ["/", "/proc", "/sys", "/dev", "/dev/pts", "/run"];
    for line in mounts.lines().rev() {
        let Some(target) = line.split_whitespace().nth(1) else {
            continue;
        };
        if keep.contains(&target) || target.starts_with("/sys/") || target.starts_with("/proc/") {
            continue;
        }
        if let Err(e) = nix::mount::umount2(target, nix::mount::MntFlags::empty()) {
            sys::log(format!("umount {target}: {e}; detaching"));
            let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Used by `eve-init status`.
pub fn read_status(path: &Path) -> std::io::Result<Status> {
    let f = File::open(path)?;
    serde_json::from_reader(f).map_err(std::io::Error::other)
}
