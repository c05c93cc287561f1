//! VM test harness: boots the built appliance image under OVMF in qemu (TCG) with a chosen set of
//! disks and a swtpm TPM, runs commands and moves files through eve-agent on a virtio-serial
//! port, and does clean reboots, power cuts and cold starts on the same disks. Every boot's serial
//! console is kept in the machine's folder.

pub mod bench;
pub mod error;
pub mod modgraph;
pub mod qemu;
pub mod qmp;

pub use error::{Error, Result};
pub use qemu::{DiskKind, Format, Wire};

use eve_agent::{b64, unb64, Envelope, Request, Response};
use platform::IoContext;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What a disk starts with.
#[derive(Debug, Clone)]
pub enum Content {
    Blank,
    /// A copy of this raw file (padded to the disk's size).
    Copy(PathBuf),
    /// A qcow2 overlay on this raw base, which is never written.
    Overlay(PathBuf),
}

#[derive(Debug, Clone)]
pub struct DiskSpec {
    pub kind: DiskKind,
    pub size_mib: u64,
    pub format: Format,
    pub serial: String,
    pub content: Content,
    /// Every read of the disk fails with EIO.
    pub io_errors: bool,
    /// NVMe only: the SMART critical-warning bits the drive reports from power-on (qemu's
    /// `smart_critical_warning`: 0x01 spare, 0x02 temperature, 0x04 reliability, 0x08 read-only).
    pub nvme_critical_warning: u8,
}

impl DiskSpec {
    pub fn blank(kind: DiskKind, size_mib: u64, serial: &str) -> DiskSpec {
        DiskSpec {
            kind,
            size_mib,
            format: Format::Raw,
            serial: serial.into(),
            content: Content::Blank,
            io_errors: false,
            nvme_critical_warning: 0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct MachineSpec {
    pub name: String,
    pub image: PathBuf,
    pub boot_kind: DiskKind,
    /// The boot disk grows to this size (room for P3).
    pub boot_size_mib: u64,
    pub disks: Vec<DiskSpec>,
    pub memory_mib: u32,
    pub cpus: u32,
    pub tpm: bool,
    pub boot_timeout: Duration,
    pub command_timeout: Duration,
    /// Files put on the image's CONFIG partition before the first boot (user overrides).
    pub config_files: Vec<(String, Vec<u8>)>,
    /// Lets the test type on the serial console ([`Machine::type_on_console`]).
    pub console_input: bool,
    /// Boot under Secure Boot with the image's enrolled keys (`<image>.vars.fd`, which the build
    /// makes). Off by default: OVMF's SMM build costs 10-15 s a boot under TCG, so only the tests
    /// about the boot chain (and the production image's) pay for it.
    /// [`Machine::set_secure_boot`] switches it between boots.
    pub secure_boot: bool,
    /// Guest TCP ports reachable from the host ([`Machine::host_port`]), through a user-mode
    /// network on a virtio NIC; none means no NIC at all.
    pub forward: Vec<u16>,
    /// A private wire to another machine ([`Wire::pair`]).
    pub wire: Option<Wire>,
}

/// The firmware variables the image build made, with the project's keys enrolled.
pub fn secure_boot_vars(image: &Path) -> PathBuf {
    image.with_extension("vars.fd")
}

impl MachineSpec {
    pub fn new(name: &str, image: &Path) -> MachineSpec {
        MachineSpec {
            name: name.into(),
            image: image.into(),
            boot_kind: DiskKind::Virtio,
            boot_size_mib: 4096,
            disks: Vec::new(),
            memory_mib: 2048,
            cpus: 2,
            tpm: true,
            boot_timeout: Duration::from_secs(420),
            command_timeout: Duration::from_secs(180),
            config_files: Vec::new(),
            console_input: false,
            secure_boot: false,
            forward: Vec::new(),
            wire: None,
        }
    }
}

/// Output of a guest command.
#[derive(Debug, Clone)]
pub struct Output {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug)]
struct Agent {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    next_id: u64,
}

#[derive(Debug)]
pub struct Machine {
    pub spec: MachineSpec,
    pub dir: PathBuf,
    boot_disk: qemu::Disk,
    disks: Vec<qemu::Disk>,
    qemu: Option<Child>,
    swtpm: Option<Child>,
    agent: Option<Agent>,
    boots: u32,
    interactive: bool,
    /// Held open read-write so qemu's open of the FIFO never blocks and never sees EOF.
    console_in: Option<std::fs::File>,
    /// (host, guest) TCP ports, chosen when the machine is made.
    hostfwd: Vec<(u16, u16)>,
}

/// A TCP port free on the host's loopback now.
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").at("bind", Path::new("127.0.0.1:0"))?;
    Ok(l.local_addr().at("bind", Path::new("127.0.0.1:0"))?.port())
}

impl Wire {
    /// The two ends of a new wire: the first for the machine started first.
    pub fn pair() -> Result<(Wire, Wire)> {
        let p = free_port()?;
        Ok((Wire::Listen(p), Wire::Connect(p)))
    }
}

/// Creates one disk's backing file in `dir` as the spec says.
fn make_disk(dir: &Path, i: usize, d: &DiskSpec) -> Result<qemu::Disk> {
    let ext = if d.format == Format::Qcow2 {
        "qcow2"
    } else {
        "img"
    };
    let file = dir.join(format!("disk{i}-{}.{ext}", d.serial));
    let size = format!("{}M", d.size_mib);
    let f = file.display().to_string();
    match (&d.content, d.format) {
        (Content::Blank, fmt) => run_tool(
            qemu::QEMU_IMG,
            &[
                "create".into(),
                "-q".into(),
                "-f".into(),
                fmt.as_str().into(),
                f,
                size,
            ],
        )?,
        (Content::Copy(src), Format::Raw) => {
            // Sparse: std::fs::copy writes every zero (a 1.1 GiB image took 1.1 GiB of disk).
            let args = ["convert", "-q", "-f", "raw", "-O", "raw"].map(String::from);
            run_tool(
                qemu::QEMU_IMG,
                &[&args[..], &[src.display().to_string(), f.clone()]].concat(),
            )?;
            let fh = std::fs::OpenOptions::new()
                .write(true)
                .open(&file)
                .at("open", &file)?;
            let want = d.size_mib << 20;
            if fh.metadata().at("stat", &file)?.len() < want {
                fh.set_len(want).at("resize", &file)?;
            }
        }
        (Content::Copy(src), Format::Qcow2) => {
            let args = ["convert", "-q", "-O", "qcow2"].map(String::from);
            run_tool(
                qemu::QEMU_IMG,
                &[&args[..], &[src.display().to_string(), f.clone()]].concat(),
            )?;
            // convert keeps the source's size; grow to the size asked for.
            let src_len = std::fs::metadata(src).at("stat", src)?.len();
            if src_len < d.size_mib << 20 {
                run_tool(qemu::QEMU_IMG, &["resize".into(), "-q".into(), f, size])?;
            }
        }
        (Content::Overlay(base), _) => qcow2_overlay(base, &file, d.size_mib)?,
    }
    let format = if matches!(d.content, Content::Overlay(_)) {
        Format::Qcow2
    } else {
        d.format
    };
    Ok(qemu::Disk {
        kind: d.kind,
        serial: d.serial.clone(),
        file,
        format,
        io_errors: d.io_errors,
        nvme_critical_warning: d.nvme_critical_warning,
    })
}

/// A private sparse copy of `image` whose CONFIG partition holds `files`.
fn with_config_files(image: &Path, dir: &Path, files: &[(String, Vec<u8>)]) -> Result<PathBuf> {
    let copy = dir.join("image-with-config.raw");
    run_tool(
        "/bin/cp",
        &[
            "--sparse=always".into(),
            image.display().to_string(),
            copy.display().to_string(),
        ],
    )?;
    let g = gpt::GptConfig::new()
        .open(&copy)
        .map_err(|e| Error::Spec(format!("{}: GPT: {e}", copy.display())))?;
    let start = g
        .partitions()
        .values()
        .find(|p| p.name == "CONFIG")
        .map(|p| p.first_lba * 512)
        .ok_or_else(|| Error::Spec(format!("{}: no CONFIG partition", image.display())))?;
    for (name, data) in files {
        let tmp = dir.join(format!("config-{name}"));
        std::fs::write(&tmp, data).at("write", &tmp)?;
        run_tool(
            "/usr/bin/mcopy",
            &[
                "-o".into(),
                "-i".into(),
                format!("{}@@{start}", copy.display()),
                tmp.display().to_string(),
                format!("::{name}"),
            ],
        )?;
    }
    Ok(copy)
}

/// A qcow2 file of `size_mib` whose unwritten blocks read from the raw `base`, which stays untouched.
fn qcow2_overlay(base: &Path, file: &Path, size_mib: u64) -> Result<()> {
    let args = ["create", "-q", "-f", "qcow2", "-F", "raw", "-b"].map(String::from);
    let rest = [
        base.display().to_string(),
        file.display().to_string(),
        format!("{size_mib}M"),
    ];
    run_tool(qemu::QEMU_IMG, &[&args[..], &rest[..]].concat())
}

fn run_tool(prog: &str, args: &[String]) -> Result<()> {
    platform::cmd::run(prog, args)?;
    Ok(())
}

const QEMU_IO: &str = "/usr/bin/qemu-io";

/// How long a boot took (see [`Machine::boot_timed`]).
#[derive(Debug, Clone, Copy)]
pub struct BootTimes {
    pub to_init: Duration,
    pub to_agent: Duration,
}

/// (byte offset, byte length) of the partition named `name` in the GPT of a raw disk image.
pub fn partition_of(image: &Path, name: &str) -> Result<(u64, u64)> {
    let g = gpt::GptConfig::new()
        .writable(false)
        .open(image)
        .map_err(|e| Error::Spec(format!("{}: GPT: {e}", image.display())))?;
    let bs = 512u64;
    g.partitions()
        .values()
        .find(|p| p.name == name)
        .map(|p| (p.first_lba * bs, (p.last_lba - p.first_lba + 1) * bs))
        .ok_or_else(|| Error::Spec(format!("{}: no partition {name}", image.display())))
}

/// The first line eve-init prints; a boot without it by [`INIT_DEADLINE`] has stalled.
pub const INIT_LINE: &str = "eve-init: stage 1";
/// Under TCG init starts within about 30 s; a stalled kernel shows RCU stalls for minutes.
pub const INIT_DEADLINE: Duration = Duration::from_secs(150);
const STALLED: &str = "init to start (the kernel stalled before init)";

/// Console lines after which the boot cannot succeed; waiting longer would only hide the cause.
pub const FATAL_MARKERS: &[&str] = &[
    "Failed to boot both default and fallback entries",
    "Kernel panic - not syncing",
    "eve-init: FATAL:",
];

/// The first fatal marker in a console log, if any.
pub fn fatal_marker(console: &str) -> Option<&'static str> {
    FATAL_MARKERS.iter().find(|m| console.contains(*m)).copied()
}

const PROC_NET_UNIX: &str = "/proc/net/unix";
/// `__SO_ACCEPTCON` in /proc/net/unix's Flags column: the socket is listening.
const SO_ACCEPTCON: u32 = 0x1_0000;

/// Whether the socket table (the text of /proc/net/unix) holds a listening socket bound to `path`.
fn unix_listening(table: &str, path: &Path) -> bool {
    let want = path.as_os_str().as_encoded_bytes();
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        let flags = fields.nth(3).and_then(|x| u32::from_str_radix(x, 16).ok());
        let bound = fields.nth(3);
        flags.is_some_and(|x| x & SO_ACCEPTCON != 0) && bound.is_some_and(|b| b.as_bytes() == want)
    })
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Machine {
    /// Creates the machine's folder, disks, firmware variables and TPM state; does not boot.
    pub fn create(spec: MachineSpec, dir: &Path) -> Result<Machine> {
        if !spec.image.exists() {
            return Err(Error::Spec(format!(
                "{}: image {} does not exist; run `make image`",
                spec.name,
                spec.image.display()
            )));
        }
        if dir.exists() {
            std::fs::remove_dir_all(dir).at("clean", dir)?;
        }
        std::fs::create_dir_all(dir.join("tpm")).at("mkdir", dir)?;
        std::fs::copy(qemu::OVMF_VARS, dir.join("OVMF_VARS.fd")).at("copy", qemu::OVMF_VARS)?;
        let sb_vars = secure_boot_vars(&spec.image);
        if sb_vars.exists() {
            std::fs::copy(&sb_vars, dir.join("OVMF_VARS.secboot.fd")).at("copy", &sb_vars)?;
        } else if spec.secure_boot {
            return Err(Error::Spec(format!(
                "{}: Secure Boot asked for, but {} does not exist; rebuild the image",
                spec.name,
                sb_vars.display()
            )));
        }
        let mut image = std::fs::canonicalize(&spec.image).at("resolve", &spec.image)?;
        if !spec.config_files.is_empty() {
            image = with_config_files(&image, dir, &spec.config_files)?;
        }
        let boot_file = dir.join("boot.qcow2");
        qcow2_overlay(&image, &boot_file, spec.boot_size_mib)?;
        let boot_disk = qemu::Disk {
            kind: spec.boot_kind,
            serial: "EVEBOOT".into(),
            file: boot_file,
            format: Format::Qcow2,
            io_errors: false,
            nvme_critical_warning: 0,
        };
        let mut disks = Vec::new();
        for (i, d) in spec.disks.iter().enumerate() {
            disks.push(make_disk(dir, i, d)?);
        }
        let hostfwd = spec
            .forward
            .iter()
            .map(|g| free_port().map(|h| (h, *g)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Machine {
            spec,
            dir: dir.into(),
            boot_disk,
            disks,
            qemu: None,
            swtpm: None,
            agent: None,
            boots: 0,
            interactive: false,
            console_in: None,
            hostfwd,
        })
    }

    /// Secure Boot on (the image's enrolled keys) or off (stock firmware, no keys) from the next
    /// boot; each keeps its own variable store.
    pub fn set_secure_boot(&mut self, on: bool) -> Result<()> {
        if on && !self.dir.join("OVMF_VARS.secboot.fd").exists() {
            return Err(Error::Spec(format!(
                "{}: no enrolled firmware variables for this image",
                self.spec.name
            )));
        }
        self.spec.secure_boot = on;
        Ok(())
    }

    /// Replaces the Secure Boot variable store (other keys enrolled, say) from the next boot;
    /// [`Machine::restore_secure_boot_vars`] puts the image's back.
    pub fn set_secure_boot_vars(&mut self, vars: &Path) -> Result<()> {
        self.require_off("changing the firmware's keys")?;
        std::fs::copy(vars, self.dir.join("OVMF_VARS.secboot.fd")).at("copy", vars)?;
        Ok(())
    }

    pub fn restore_secure_boot_vars(&mut self) -> Result<()> {
        let v = secure_boot_vars(&self.spec.image);
        self.set_secure_boot_vars(&v)
    }

    /// The backing file of the n-th extra disk (for inspecting it from the host while powered off).
    pub fn disk_file(&self, n: usize) -> &Path {
        &self.disks[n].file
    }

    /// The file behind the drive `serial`, while it is attached.
    pub fn disk_file_of(&self, serial: &str) -> Option<&Path> {
        self.disks
            .iter()
            .find(|d| d.serial == serial)
            .map(|d| d.file.as_path())
    }

    pub fn console_log(&self) -> PathBuf {
        self.dir.join(format!("console-{}.log", self.boots))
    }

    fn invocation(&self) -> qemu::Invocation {
        qemu::Invocation {
            name: self.spec.name.clone(),
            memory_mib: self.spec.memory_mib,
            cpus: self.spec.cpus,
            boot: self.boot_disk.clone(),
            disks: self.disks.clone(),
            vars: self.dir.join(if self.spec.secure_boot {
                "OVMF_VARS.secboot.fd"
            } else {
                "OVMF_VARS.fd"
            }),
            secure_boot: self.spec.secure_boot,
            agent_sock: self.dir.join("agent.sock"),
            tpm_sock: self.spec.tpm.then(|| self.dir.join("swtpm.sock")),
            console_log: self.console_log(),
            console_input: self.spec.console_input.then(|| self.dir.join("console.in")),
            interactive: self.interactive,
            hostfwd: self.hostfwd.clone(),
            wire: self.spec.wire,
            qmp_sock: Some(self.qmp_sock()),
        }
    }

    /// The host port (on 127.0.0.1) that reaches `guest` port in the machine.
    pub fn host_port(&self, guest: u16) -> u16 {
        self.hostfwd
            .iter()
            .find(|(_, g)| *g == guest)
            .map(|(h, _)| *h)
            .unwrap_or_else(|| panic!("guest port {guest} is not forwarded (MachineSpec.forward)"))
    }

    /// Waits until a process listens on the unix socket at `path`. The file appears at bind(),
    /// before listen(): a connect in between is refused (a CI run lost a boot to that), and a
    /// probe connection would end swtpm (`--terminate`), so the kernel's socket table is read.
    fn wait_for_socket(&mut self, path: &Path, what: &str) -> Result<()> {
        let start = Instant::now();
        loop {
            let table = std::fs::read_to_string(PROC_NET_UNIX).unwrap_or_default();
            if unix_listening(&table, path) {
                return Ok(());
            }
            let exited = self
                .qemu
                .as_mut()
                .and_then(|q| q.try_wait().ok().flatten())
                .is_some();
            if exited || start.elapsed() > Duration::from_secs(20) {
                return Err(self.timeout(what, start));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn timeout(&mut self, what: &str, since: Instant) -> Error {
        let log = self.console_log();
        if let Some(q) = self.qemu.as_mut() {
            if let Ok(Some(st)) = q.try_wait() {
                return Error::QemuExited {
                    machine: self.spec.name.clone(),
                    what: what.into(),
                    status: st.to_string(),
                    log: log.clone(),
                    tail: tail(&log, 40),
                };
            }
        }
        Error::Timeout {
            machine: self.spec.name.clone(),
            what: what.into(),
            secs: since.elapsed().as_secs(),
            log: log.clone(),
            tail: tail(&log, 40),
        }
    }

    /// Starts swtpm and qemu; returns once the guest's agent answers (or the boot timeout). Two
    /// TCG guests on two cores can stall a guest kernel's timers before init ever runs; such a
    /// boot (no init line on the console after [`INIT_DEADLINE`]) is cut and started once more.
    pub fn boot(&mut self) -> Result<()> {
        self.start()?;
        match self.wait_agent() {
            Err(Error::Timeout { what, .. }) if what == STALLED => {
                eprintln!(
                    "{}: boot {} stalled before init ({}); power-cycling once",
                    self.spec.name,
                    self.boots,
                    self.console_log().display()
                );
                self.power_cut()?;
                if let Some(mut t) = self.swtpm.take() {
                    let _ = t.kill();
                    let _ = t.wait();
                }
                self.start()?;
                self.wait_agent()
            }
            r => r,
        }
    }

    /// Boots like [`Machine::boot`] and says how long it took: to init's first line (firmware,
    /// shim, GRUB and its signature checks, the kernel) and to the agent (stage 1 with its verity
    /// check, then the whole bring-up).
    pub fn boot_timed(&mut self) -> Result<BootTimes> {
        for attempt in 0..2 {
            self.start()?;
            let start = Instant::now();
            loop {
                if self.console().contains(INIT_LINE) {
                    let to_init = start.elapsed();
                    self.wait_agent()?;
                    return Ok(BootTimes {
                        to_init,
                        to_agent: start.elapsed(),
                    });
                }
                if let Some(m) = fatal_marker(&self.console()) {
                    let log = self.console_log();
                    return Err(Error::BootFailed {
                        machine: self.spec.name.clone(),
                        marker: m.into(),
                        log: log.clone(),
                        tail: tail(&log, 40),
                    });
                }
                if start.elapsed() > INIT_DEADLINE {
                    if attempt == 0 {
                        eprintln!(
                            "{}: boot {} stalled before init; power-cycling once",
                            self.spec.name, self.boots
                        );
                        self.power_cut()?;
                        break;
                    }
                    return Err(self.timeout(STALLED, start));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Err(Error::Spec(format!(
            "{}: boot did not start",
            self.spec.name
        )))
    }

    /// Replaces the file `rel` on the boot disk's ESP with `data`, with the machine off: someone
    /// editing the ESP from another computer (mtools on a copy of the partition, written back
    /// through the overlay).
    pub fn write_esp_file(&mut self, rel: &str, data: &[u8]) -> Result<()> {
        self.require_off("editing the ESP")?;
        let (off, len) = partition_of(&self.spec.image, "EFI")?;
        let part = self.dir.join("esp.raw");
        let file = self.dir.join("esp-file.bin");
        let _ = std::fs::remove_file(&part);
        run_tool(
            qemu::QEMU_IMG,
            &[
                "dd".into(),
                "-f".into(),
                "qcow2".into(),
                "-O".into(),
                "raw".into(),
                "bs=512".into(),
                format!("skip={}", off / 512),
                format!("count={}", len / 512),
                format!("if={}", self.boot_disk.file.display()),
                format!("of={}", part.display()),
            ],
        )?;
        std::fs::write(&file, data).at("write", &file)?;
        run_tool(
            "/usr/bin/mcopy",
            &[
                "-o".into(),
                "-i".into(),
                part.display().to_string(),
                file.display().to_string(),
                format!("::{rel}"),
            ],
        )?;
        let bytes = std::fs::read(&part).at("read", &part)?;
        self.patch_boot_disk(off, &bytes)?;
        let _ = std::fs::remove_file(&part);
        let _ = std::fs::remove_file(&file);
        Ok(())
    }

    /// Writes `data` at `offset` of the boot disk (through its qcow2 overlay), with the machine
    /// off: someone editing the disk of a box that is not running.
    pub fn patch_boot_disk(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.require_off("editing the boot disk")?;
        let tmp = self.dir.join("patch.bin");
        std::fs::write(&tmp, data).at("write", &tmp)?;
        run_tool(
            QEMU_IO,
            &[
                "-f".into(),
                "qcow2".into(),
                "-c".into(),
                format!("write -q -s {} {offset} {}", tmp.display(), data.len()),
                self.boot_disk.file.display().to_string(),
            ],
        )?;
        std::fs::remove_file(&tmp).at("remove", &tmp)?;
        Ok(())
    }

    fn start(&mut self) -> Result<()> {
        if self.qemu.is_some() {
            return Err(Error::Spec(format!("{}: already running", self.spec.name)));
        }
        self.boots += 1;
        if self.spec.tpm {
            let sock = self.dir.join("swtpm.sock");
            let _ = std::fs::remove_file(&sock);
            let args = qemu::swtpm_args(&self.dir.join("tpm"), &sock, &self.dir.join("swtpm.log"));
            let child = Command::new(qemu::SWTPM)
                .args(&args)
                .stdin(Stdio::null())
                .spawn()
                .map_err(|source| Error::Spawn {
                    argv: format!("{} {}", qemu::SWTPM, args.join(" ")),
                    source,
                })?;
            self.swtpm = Some(child);
            self.wait_for_socket(&sock, "swtpm socket")?;
        }
        let _ = std::fs::remove_file(self.dir.join("agent.sock"));
        if self.spec.console_input && self.console_in.is_none() {
            let fifo = self.dir.join("console.in");
            let _ = std::fs::remove_file(&fifo);
            let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes())
                .map_err(|_| Error::Spec(format!("{}: NUL in path", fifo.display())))?;
            // SAFETY: a valid NUL-terminated path; mkfifo only reads it.
            if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
                return Err(platform::io("mkfifo", &fifo)(std::io::Error::last_os_error()).into());
            }
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&fifo)
                .at("open", &fifo)?;
            self.console_in = Some(f);
        }
        let args = qemu::qemu_args(&self.invocation()).map_err(Error::Spec)?;
        std::fs::write(
            self.dir.join(format!("qemu-{}.args", self.boots)),
            args.join("\n"),
        )
        .at("write", &self.dir)?;
        let mut c = Command::new(qemu::QEMU);
        c.args(&args);
        if !self.interactive {
            c.stdin(Stdio::null()).stdout(Stdio::null());
            let err = std::fs::File::create(self.dir.join(format!("qemu-{}.stderr", self.boots)))
                .at("create", &self.dir)?;
            c.stderr(err);
        }
        self.qemu = Some(c.spawn().map_err(|source| Error::Spawn {
            argv: qemu::QEMU.into(),
            source,
        })?);
        self.wait_for_socket(&self.dir.join("agent.sock"), "qemu's agent socket")?;
        Ok(())
    }

    fn wait_agent(&mut self) -> Result<()> {
        let start = Instant::now();
        let sock = self.dir.join("agent.sock");
        let stream = UnixStream::connect(&sock).at("connect", &sock)?;
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .at("configure", &sock)?;
        let reader = BufReader::new(stream.try_clone().at("dup", &sock)?);
        self.agent = Some(Agent {
            stream,
            reader,
            next_id: 1,
        });
        // The port delivers nothing until the guest opens it, so keep asking.
        loop {
            match self.request(Request::Ping, Duration::from_secs(3)) {
                Ok(Response::Pong { .. }) => return Ok(()),
                Ok(other) => {
                    return Err(Error::Agent {
                        machine: self.spec.name.clone(),
                        msg: format!("unexpected answer to ping: {other:?}"),
                    })
                }
                Err(Error::Timeout { .. }) => {}
                Err(e) => return Err(e),
            }
            if start.elapsed() > self.spec.boot_timeout {
                return Err(self.timeout("the guest agent (boot)", start));
            }
            let log = self.console_log();
            let console = std::fs::read(&log)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            if start.elapsed() > INIT_DEADLINE && !console.contains(INIT_LINE) {
                return Err(self.timeout(STALLED, start));
            }
            if let Some(marker) = fatal_marker(&console) {
                return Err(Error::BootFailed {
                    machine: self.spec.name.clone(),
                    marker: marker.into(),
                    log: log.clone(),
                    tail: tail(&log, 40),
                });
            }
            if self
                .qemu
                .as_mut()
                .and_then(|q| q.try_wait().ok().flatten())
                .is_some()
            {
                return Err(self.timeout("the guest agent (boot)", start));
            }
        }
    }

    fn request(&mut self, req: Request, timeout: Duration) -> Result<Response> {
        let machine = self.spec.name.clone();
        let agent = self.agent.as_mut().ok_or_else(|| Error::Agent {
            machine: machine.clone(),
            msg: "not booted".into(),
        })?;
        let id = agent.next_id;
        agent.next_id += 1;
        let mut line =
            serde_json::to_vec(&Envelope { id, body: req }).map_err(|e| Error::Agent {
                machine: machine.clone(),
                msg: e.to_string(),
            })?;
        line.push(b'\n');
        agent.stream.write_all(&line).map_err(|e| Error::Agent {
            machine: machine.clone(),
            msg: format!("send: {e}"),
        })?;
        let start = Instant::now();
        let mut buf = String::new();
        loop {
            buf.clear();
            match agent.reader.read_line(&mut buf) {
                Ok(0) => {
                    return Err(Error::Agent {
                        machine,
                        msg: "connection closed (guest gone?)".into(),
                    })
                }
                Ok(_) => {
                    if let Ok(env) = serde_json::from_str::<Envelope<Response>>(&buf) {
                        if env.id == id {
                            return Ok(env.body);
                        }
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => {
                    return Err(Error::Agent {
                        machine,
                        msg: format!("receive: {e}"),
                    })
                }
            }
            if start.elapsed() > timeout {
                let log = self.console_log();
                return Err(Error::Timeout {
                    machine,
                    what: "an agent reply".into(),
                    secs: timeout.as_secs(),
                    log: log.clone(),
                    tail: tail(&log, 20),
                });
            }
        }
    }

    /// The error for an agent reply that is not the one asked for.
    fn reply_error(&self, r: Response) -> Error {
        let msg = match r {
            Response::Error { message } => message,
            other => format!("unexpected reply {other:?}"),
        };
        Error::Agent {
            machine: self.spec.name.clone(),
            msg,
        }
    }

    /// Runs `argv` in the guest.
    pub fn exec_argv(&mut self, argv: &[&str], stdin: &[u8], timeout: Duration) -> Result<Output> {
        let req = Request::Exec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            stdin: b64(stdin),
            timeout_ms: timeout.as_millis() as u64,
        };
        match self.request(req, timeout + Duration::from_secs(30))? {
            Response::Exec {
                status,
                stdout,
                stderr,
                timed_out,
            } => {
                let dec = |s: &str| {
                    unb64(s)
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default()
                };
                if timed_out {
                    let log = self.console_log();
                    return Err(Error::Timeout {
                        machine: self.spec.name.clone(),
                        what: format!("guest command {argv:?}"),
                        secs: timeout.as_secs(),
                        log: log.clone(),
                        tail: dec(&stderr),
                    });
                }
                Ok(Output {
                    status,
                    stdout: dec(&stdout),
                    stderr: dec(&stderr),
                })
            }
            other => Err(self.reply_error(other)),
        }
    }

    /// Runs a shell command in the guest and returns its output whatever the exit status.
    pub fn sh(&mut self, cmd: &str) -> Result<Output> {
        let t = self.spec.command_timeout;
        self.exec_argv(&["/bin/sh", "-c", cmd], &[], t)
    }

    /// Runs a shell command that must succeed; returns its stdout.
    pub fn ok(&mut self, cmd: &str) -> Result<String> {
        let o = self.sh(cmd)?;
        if o.status != 0 {
            return Err(Error::Guest {
                machine: self.spec.name.clone(),
                cmd: cmd.into(),
                status: o.status,
                stdout: o.stdout,
                stderr: o.stderr,
            });
        }
        Ok(o.stdout)
    }

    pub fn read_file(&mut self, path: &str) -> Result<Vec<u8>> {
        match self.request(
            Request::Read { path: path.into() },
            self.spec.command_timeout,
        )? {
            Response::Data { data } => unb64(&data).map_err(|msg| Error::Agent {
                machine: self.spec.name.clone(),
                msg,
            }),
            other => Err(self.reply_error(other)),
        }
    }

    pub fn write_file(&mut self, path: &str, data: &[u8], mode: u32) -> Result<()> {
        match self.request(
            Request::Write {
                path: path.into(),
                data: b64(data),
                mode,
            },
            self.spec.command_timeout,
        )? {
            Response::Done => Ok(()),
            other => Err(self.reply_error(other)),
        }
    }

    pub fn copy_in(&mut self, host: &Path, guest: &str) -> Result<()> {
        let data = std::fs::read(host).at("read", host)?;
        self.write_file(guest, &data, 0o644)
    }

    pub fn copy_out(&mut self, guest: &str, host: &Path) -> Result<()> {
        let data = self.read_file(guest)?;
        std::fs::write(host, data).at("write", host)?;
        Ok(())
    }

    /// The guest's boot id (changes on every boot).
    pub fn boot_id(&mut self) -> Result<String> {
        match self.request(Request::Ping, Duration::from_secs(30))? {
            Response::Pong { boot_id, .. } => Ok(boot_id),
            other => Err(self.reply_error(other)),
        }
    }

    fn wait_exit(&mut self, what: &str, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let done = match self.qemu.as_mut() {
                None => true,
                Some(q) => q.try_wait().at("wait", "qemu")?.is_some(),
            };
            if done {
                break;
            }
            if start.elapsed() > timeout {
                return Err(self.timeout(what, start));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.qemu = None;
        self.agent = None;
        if let Some(mut t) = self.swtpm.take() {
            // swtpm --terminate exits when qemu disconnects; do not leave it behind if not.
            let deadline = Instant::now() + Duration::from_secs(5);
            while t.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = t.kill();
            let _ = t.wait();
        }
        Ok(())
    }

    /// Clean reboot: the guest's init stops services and unmounts; qemu exits on the reset
    /// (-no-reboot) and the machine cold-starts on the same disks, firmware vars and TPM state.
    pub fn reboot(&mut self) -> Result<()> {
        self.shut_down_for_reboot()?;
        self.boot()
    }

    /// A clean reboot that returns as soon as the next boot has started (firmware running, the
    /// agent not up): a fault can then strike while the box boots.
    pub fn reboot_begin(&mut self) -> Result<()> {
        self.shut_down_for_reboot()?;
        self.start()
    }

    fn shut_down_for_reboot(&mut self) -> Result<()> {
        // The agent is stopped by the shutdown it starts, so its reply may never come.
        let _ = self.exec_argv(
            &["/usr/bin/eve-init", "reboot"],
            &[],
            Duration::from_secs(30),
        );
        self.wait_exit("the guest to reboot", Duration::from_secs(180))
    }

    /// Waits for the guest to reset itself (qemu runs with -no-reboot, so it exits), e.g. after a
    /// failed health check. The next `boot` cold-starts it.
    pub fn wait_guest_reset(&mut self, timeout: Duration) -> Result<()> {
        self.wait_exit("the guest to reset itself", timeout)
    }

    /// Starts a boot that is expected to fail and reset by itself (a kernel panic with panic=N, an
    /// init that exits): fatal console markers are expected here, not errors. Returns that boot's
    /// console.
    pub fn boot_until_reset(&mut self, timeout: Duration) -> Result<String> {
        self.start()?;
        self.wait_exit("the failing boot to reset", timeout)?;
        let log = self.console_log();
        Ok(std::fs::read(&log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default())
    }

    /// Clean power-off.
    pub fn poweroff(&mut self) -> Result<()> {
        let _ = self.exec_argv(
            &["/usr/bin/eve-init", "poweroff"],
            &[],
            Duration::from_secs(30),
        );
        self.wait_exit("the guest to power off", Duration::from_secs(180))
    }

    /// Hard power cut: SIGKILL qemu, nothing in the guest gets to flush.
    pub fn power_cut(&mut self) -> Result<()> {
        if let Some(q) = self.qemu.as_mut() {
            let _ = q.kill();
        }
        self.wait_exit("qemu to die", Duration::from_secs(30))
    }

    /// Changes to the hardware are made with the machine off, as on a real box.
    fn require_off(&self, what: &str) -> Result<()> {
        if self.qemu.is_some() {
            return Err(Error::Spec(format!(
                "{}: power off before {what}",
                self.spec.name
            )));
        }
        Ok(())
    }

    /// Leaves the disk with this serial out of the next boots (its file is kept): a drive pulled
    /// while the box was off.
    pub fn detach_disk(&mut self, serial: &str) -> Result<qemu::Disk> {
        self.require_off(&format!("detaching {serial}"))?;
        let i = self
            .disks
            .iter()
            .position(|d| d.serial == serial)
            .ok_or_else(|| Error::Spec(format!("{}: no disk {serial}", self.spec.name)))?;
        Ok(self.disks.remove(i))
    }

    /// Adds a disk for the next boots: a drive plugged in while the box was off.
    pub fn attach_disk(&mut self, d: &DiskSpec) -> Result<()> {
        self.require_off(&format!("attaching {}", d.serial))?;
        let disk = make_disk(&self.dir, self.disks.len() + 100, d)?;
        self.disks.push(disk);
        Ok(())
    }

    fn qmp_sock(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }

    fn qmp(&mut self) -> Result<qmp::Qmp> {
        if self.qemu.is_none() {
            return Err(Error::Spec(format!(
                "{}: not running: no drive can be plugged or unplugged live",
                self.spec.name
            )));
        }
        qmp::Qmp::connect(&self.qmp_sock())
    }

    /// Pulls the SCSI drive `serial` out of the running machine (QMP `device_del`, returning once
    /// qemu has removed it); it stays out of later boots until [`Machine::replug_disk`].
    pub fn unplug_disk(&mut self, serial: &str) -> Result<qemu::Disk> {
        let i = self
            .disks
            .iter()
            .position(|d| d.serial == serial)
            .ok_or_else(|| Error::Spec(format!("{}: no disk {serial}", self.spec.name)))?;
        if self.disks[i].kind != DiskKind::Scsi {
            return Err(Error::Spec(format!(
                "{}: {serial} is not a SCSI drive: only those unplug live (q35's root bus takes no hot-unplug)",
                self.spec.name
            )));
        }
        let mut q = self.qmp()?;
        let id = format!("disk-{serial}");
        q.execute("device_del", serde_json::json!({ "id": id }))?;
        q.wait_event("DEVICE_DELETED", &id, Duration::from_secs(60))?;
        Ok(self.disks.remove(i))
    }

    /// Plugs `disk` (one [`Machine::unplug_disk`] returned, its file as it was) back into the
    /// running machine, on the SCSI bus under the same serial.
    pub fn replug_disk(&mut self, disk: qemu::Disk) -> Result<()> {
        let mut q = self.qmp()?;
        // A node name qemu has not seen: the unplugged drive's node may linger until released.
        let node = format!("n{}-{}", self.boots, disk.serial);
        let _ = q.execute("blockdev-del", serde_json::json!({ "node-name": node }));
        q.execute(
            "blockdev-add",
            serde_json::json!({
                "driver": disk.format.as_str(),
                "node-name": node,
                "discard": "unmap",
                "cache": { "direct": false, "no-flush": true },
                "file": { "driver": "file", "filename": disk.file.display().to_string() },
            }),
        )?;
        q.execute(
            "device_add",
            serde_json::json!({
                "driver": "scsi-hd",
                "drive": node,
                "bus": "scsi0.0",
                "serial": disk.serial,
                "id": format!("disk-{}", disk.serial),
            }),
        )?;
        self.disks.push(disk);
        Ok(())
    }

    /// Makes the blank SCSI drive `d` and plugs it into the running machine (a drive added to a
    /// box that is on); it stays for later boots.
    pub fn plug_disk(&mut self, d: &DiskSpec) -> Result<()> {
        if d.kind != DiskKind::Scsi {
            return Err(Error::Spec(format!(
                "{}: {}: only SCSI drives plug in live",
                self.spec.name, d.serial
            )));
        }
        if self.disks.iter().any(|x| x.serial == d.serial) {
            return Err(Error::Spec(format!(
                "{}: disk serial `{}` used twice",
                self.spec.name, d.serial
            )));
        }
        let disk = make_disk(&self.dir, self.disks.len() + 100 + self.boots as usize, d)?;
        self.replug_disk(disk)
    }

    /// Replaces the TPM with a factory-fresh one (new seeds): what a disk moved to another box sees.
    pub fn reset_tpm(&mut self) -> Result<()> {
        self.require_off("replacing the TPM")?;
        let d = self.dir.join("tpm");
        std::fs::remove_dir_all(&d).at("clean", &d)?;
        std::fs::create_dir_all(&d).at("mkdir", &d)?;
        Ok(())
    }

    /// Moves the TPM's state aside under `name` and gives the machine a factory-fresh one; the
    /// original comes back with [`Machine::restore_tpm`] (a TPM swapped and later put back).
    pub fn stash_tpm(&mut self, name: &str) -> Result<()> {
        self.require_off("swapping the TPM")?;
        let d = self.dir.join("tpm");
        let aside = self.dir.join(format!("tpm-{name}"));
        std::fs::rename(&d, &aside).at("rename", &d)?;
        std::fs::create_dir_all(&d).at("mkdir", &d)?;
        Ok(())
    }

    /// Puts back the TPM stashed under `name`; the one in use is discarded.
    pub fn restore_tpm(&mut self, name: &str) -> Result<()> {
        self.require_off("swapping the TPM")?;
        let d = self.dir.join("tpm");
        std::fs::remove_dir_all(&d).at("clean", &d)?;
        let aside = self.dir.join(format!("tpm-{name}"));
        std::fs::rename(&aside, &d).at("rename", &aside)?;
        Ok(())
    }

    /// Boots and returns as soon as the console shows `marker` (to cut power at that moment).
    pub fn boot_until_console(&mut self, marker: &str) -> Result<()> {
        self.start()?;
        let start = Instant::now();
        loop {
            let log = self.console_log();
            let text = std::fs::read(&log)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            if text.contains(marker) {
                return Ok(());
            }
            if let Some(m) = fatal_marker(&text) {
                return Err(Error::BootFailed {
                    machine: self.spec.name.clone(),
                    marker: m.into(),
                    log: log.clone(),
                    tail: tail(&log, 40),
                });
            }
            if start.elapsed() > self.spec.boot_timeout
                || self
                    .qemu
                    .as_mut()
                    .and_then(|q| q.try_wait().ok().flatten())
                    .is_some()
            {
                return Err(self.timeout(&format!("console line `{marker}`"), start));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Types `text` on the serial console, slowly (a UART without flow control drops bytes sent
    /// faster than the guest reads them).
    pub fn type_on_console(&mut self, text: &str) -> Result<()> {
        let f = self
            .console_in
            .as_mut()
            .ok_or_else(|| Error::Spec(format!("{}: no console input", self.spec.name)))?;
        for b in text.bytes() {
            f.write_all(&[b]).at("write", "console input")?;
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The current boot's console so far.
    pub fn console(&self) -> String {
        std::fs::read(self.console_log())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Whether the guest's agent answers a ping within `wait` (a production image has none).
    pub fn agent_answers(&mut self, wait: Duration) -> bool {
        let sock = self.dir.join("agent.sock");
        let Ok(stream) = UnixStream::connect(&sock) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let Ok(r) = stream.try_clone() else {
            return false;
        };
        self.agent = Some(Agent {
            stream,
            reader: BufReader::new(r),
            next_id: 1,
        });
        let start = Instant::now();
        while start.elapsed() < wait {
            if let Ok(Response::Pong { .. }) = self.request(Request::Ping, Duration::from_secs(3)) {
                return true;
            }
        }
        self.agent = None;
        false
    }

    /// Starts the machine with the console on this terminal (for `make run`); returns when qemu exits.
    pub fn run_interactive(&mut self) -> Result<i32> {
        self.interactive = true;
        self.start()?;
        let st = self
            .qemu
            .as_mut()
            .map(|q| q.wait())
            .transpose()
            .at("wait", "qemu")?;
        self.qemu = None;
        if let Some(mut t) = self.swtpm.take() {
            let _ = t.kill();
            let _ = t.wait();
        }
        Ok(st.and_then(|s| s.code()).unwrap_or(0))
    }

    pub fn boots(&self) -> u32 {
        self.boots
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        for c in [self.qemu.as_mut(), self.swtpm.as_mut()]
            .into_iter()
            .flatten()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The development image the tests boot (shell and agent): $EVE_IMAGE, else
/// out/eve-storage-dev.raw at the repository root.
pub fn image_path() -> PathBuf {
    std::env::var_os("EVE_IMAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../out/eve-storage-dev.raw"))
}

/// The production image: $EVE_PROD_IMAGE, else out/eve-storage.raw.
pub fn prod_image_path() -> PathBuf {
    std::env::var_os("EVE_PROD_IMAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../out/eve-storage.raw"))
}

/// The build manifest written beside an image (`x.raw` -> `x.build.json`).
pub fn build_manifest(image: &Path) -> serde_json::Value {
    let p = image.with_extension("build.json");
    let text = std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e} (build the image first)", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The development key the image's updates are signed with (the tests sign variants with it).
pub fn dev_signing_key(image: &Path) -> PathBuf {
    let m = build_manifest(image);
    PathBuf::from(
        m["signing"]["dev_key_file"]
            .as_str()
            .unwrap_or_else(|| panic!("{} is not dev-signed: {m}", image.display())),
    )
}

/// A program as `make binaries` built it for the image (an operator's CLI, run on the host).
pub fn host_tool(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/x86_64-unknown-linux-gnu/release")
        .join(name);
    assert!(
        p.exists(),
        "{}: missing; `make image` builds it",
        p.display()
    );
    p
}

/// What an operator on the host needs to call a box's management API: the development CA's
/// certificates (the build record names their directory) and the box's own certificate, read off
/// its forwarded port with `openssl s_client` (the console prints its fingerprint; the
/// production test compares the two).
#[derive(Debug, Clone)]
pub struct ApiAccess {
    pub url: String,
    pub dir: PathBuf,
    pub server_pem: PathBuf,
}

impl ApiAccess {
    /// Pins the certificate `m` serves on its forwarded port `guest_port` now (a box whose
    /// vault is locked makes a new one each start).
    pub fn pin(m: &Machine, image: &Path, guest_port: u16, dir: &Path) -> ApiAccess {
        let dev = PathBuf::from(
            build_manifest(image)["mgmt"]["dev_dir"]
                .as_str()
                .unwrap_or_else(|| panic!("{} has no development CA", image.display())),
        );
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let port = m.host_port(guest_port);
        let out = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{port}"),
                "-tls1_3",
            ])
            .arg("-cert")
            .arg(dev.join("admin.pem"))
            .arg("-key")
            .arg(dev.join("admin.key"))
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("openssl: {e}"));
        let shown = String::from_utf8_lossy(&out.stdout).into_owned();
        let begin = shown
            .find("-----BEGIN CERTIFICATE-----")
            .unwrap_or_else(|| panic!("no server certificate on port {port}: {out:?}"));
        let end = shown
            .find("-----END CERTIFICATE-----")
            .unwrap_or(shown.len())
            + "-----END CERTIFICATE-----".len();
        let server_pem = dir.join("server.pem");
        std::fs::write(
            &server_pem,
            format!("{}\n", &shown[begin..end.min(shown.len())]),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", server_pem.display()));
        for f in ["admin", "reader"] {
            for ext in ["pem", "key"] {
                let to = dir.join(format!("{f}.{ext}"));
                std::fs::copy(dev.join(format!("{f}.{ext}")), &to)
                    .unwrap_or_else(|e| panic!("{}: {e}", to.display()));
            }
        }
        ApiAccess {
            url: format!("https://127.0.0.1:{port}"),
            dir: dir.into(),
            server_pem,
        }
    }

    /// `--remote`, `--cert`, `--key`, `--ca` for `who` (`admin` or `reader`).
    pub fn args(&self, who: &str) -> Vec<String> {
        let f = |ext: &str| self.dir.join(format!("{who}.{ext}")).display().to_string();
        vec![
            "--remote".into(),
            self.url.clone(),
            "--cert".into(),
            f("pem"),
            "--key".into(),
            f("key"),
            "--ca".into(),
            self.server_pem.display().to_string(),
        ]
    }

    /// Runs the host's `tool` (`storagectl`, `abupdate`) as `who` against the box.
    pub fn run(&self, tool: &str, who: &str, args: &[&str]) -> Output {
        let out = Command::new(host_tool(tool))
            .args(self.args(who))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        let o = Output {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        eprintln!(
            "{tool} --remote ({who}) {args:?} -> {}\n{}{}",
            o.status, o.stdout, o.stderr
        );
        o
    }
}

/// Per-test output folder: $EVE_TEST_OUT/<name>, else target/vmtest/<name>.
pub fn test_dir(name: &str) -> PathBuf {
    std::env::var_os("EVE_TEST_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/vmtest"))
        .join(name)
}

/// A test's folder, removed when the test passes and kept (with the free space beside it)
/// when it fails. A full run keeps every machine's disks otherwise, about 11 GiB, which a CI
/// machine with little free disk cannot hold; a failing test's disks are what one reads to
/// find out why. `EVE_KEEP_TEST_DIRS=1` keeps them all.
#[derive(Debug)]
#[must_use = "the folder is removed when this is dropped"]
pub struct Scratch {
    dir: PathBuf,
}

/// The guard for [`test_dir`]`(name)`: bind it (`let _dir = scratch(..)`) for the whole test.
pub fn scratch(name: &str) -> Scratch {
    let dir = test_dir(name);
    if let Some(free) = free_bytes(dir.parent().unwrap_or(&dir)) {
        // Two tests at a time need about 4 GiB between them at their peak.
        if free < 3 << 30 {
            eprintln!(
                "warning: only {} MiB free for {}: VM tests may fail for want of disk",
                free >> 20,
                dir.display()
            );
        }
    }
    Scratch { dir }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let free = free_bytes(self.dir.parent().unwrap_or(&self.dir))
                .map_or_else(|| "unknown".to_string(), |b| format!("{} MiB", b >> 20));
            eprintln!(
                "kept {} for inspection (free space there: {free})",
                self.dir.display()
            );
            return;
        }
        if std::env::var_os("EVE_KEEP_TEST_DIRS").is_some() || !self.dir.exists() {
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("could not remove {}: {e}", self.dir.display());
        }
    }
}

/// Free bytes for an unprivileged writer on the file system holding `path` (its nearest
/// existing ancestor).
pub fn free_bytes(path: &Path) -> Option<u64> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let c = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `st` is written by statvfs before use.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

#[cfg(test)]
mod tests {
    #[test]
    fn fatal_console_markers_are_recognised() {
        assert_eq!(
            super::fatal_marker("...\nKernel panic - not syncing: VFS"),
            Some("Kernel panic - not syncing")
        );
        assert_eq!(
            super::fatal_marker("eve-init: FATAL: no partition"),
            Some("eve-init: FATAL:")
        );
        assert_eq!(super::fatal_marker("eve-init: up: 2 onboot steps"), None);
    }

    #[test]
    fn a_bound_socket_counts_only_once_it_listens() {
        let p = std::path::Path::new("/t/vm/agent.sock");
        let bound = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            000000006aead860: 00000002 00000000 00000000 0001 01 1058 /t/vm/agent.sock\n";
        let listening = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            000000006aead860: 00000003 00000000 00000000 0001 03  1058\n\
            000000007bea074a: 00000002 00000000 00010000 0001 01 1059 /t/vm/agent.sock\n";
        let other = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            000000007bea074a: 00000002 00000000 00010000 0001 01 1059 /t/vm/agent.sock.old\n";
        assert!(!super::unix_listening(bound, p));
        assert!(super::unix_listening(listening, p));
        assert!(!super::unix_listening(other, p));
        assert!(!super::unix_listening("", p));
    }
}
