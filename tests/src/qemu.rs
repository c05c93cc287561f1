//! Pure construction of qemu and swtpm command lines from a machine spec.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const QEMU: &str = "/usr/bin/qemu-system-x86_64";
pub const QEMU_IMG: &str = "/usr/bin/qemu-img";
pub const SWTPM: &str = "/usr/bin/swtpm";
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// OVMF's Secure Boot build (needs SMM); its variables come from the image build, with the
/// project's keys enrolled (`<image>.vars.fd`).
pub const OVMF_CODE_SECBOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
pub const AGENT_PORT: &str = "org.eve.agent";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiskKind {
    Nvme,
    Virtio,
    Sata,
    Scsi,
    Usb,
    /// An empty CD drive on a SATA port: removable media with no medium in it.
    Cdrom,
}

impl std::str::FromStr for DiskKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "nvme" => DiskKind::Nvme,
            "virtio" => DiskKind::Virtio,
            "sata" => DiskKind::Sata,
            "scsi" => DiskKind::Scsi,
            "usb" => DiskKind::Usb,
            "cdrom" => DiskKind::Cdrom,
            _ => {
                return Err(format!(
                    "unknown disk type `{s}` (nvme, virtio, sata, scsi, usb, cdrom)"
                ))
            }
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Format {
    Raw,
    Qcow2,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
        }
    }
}

/// A disk attached to the machine; `file` is created by the harness.
#[derive(Debug, Clone, PartialEq)]
pub struct Disk {
    pub kind: DiskKind,
    pub serial: String,
    pub file: PathBuf,
    pub format: Format,
    /// Every read fails with EIO (qemu's blkdebug): a dying drive.
    pub io_errors: bool,
    /// NVMe: SMART critical-warning bits reported from power-on.
    pub nvme_critical_warning: u8,
}

#[derive(Debug, Clone)]
pub struct Invocation {
    pub name: String,
    pub memory_mib: u32,
    pub cpus: u32,
    pub boot: Disk,
    pub disks: Vec<Disk>,
    pub vars: PathBuf,
    /// OVMF's Secure Boot build with `vars` holding enrolled keys, or the plain build.
    pub secure_boot: bool,
    pub agent_sock: PathBuf,
    pub tpm_sock: Option<PathBuf>,
    /// Where the serial console goes: a log file (tests) or the terminal plus a log (`make run`).
    pub console_log: PathBuf,
    /// A FIFO the harness writes to: keys typed on the serial console (tests only).
    pub console_input: Option<PathBuf>,
    pub interactive: bool,
    /// TCP ports forwarded from the host's loopback to the guest (host, guest): a user-mode
    /// network on a virtio NIC, restricted so the guest reaches nothing outside. None: no NIC.
    pub hostfwd: Vec<(u16, u16)>,
    /// A second NIC on a private wire to another machine's.
    pub wire: Option<Wire>,
    /// qemu's QMP socket, for drives unplugged and plugged while the guest runs.
    pub qmp_sock: Option<PathBuf>,
}

/// A private Ethernet wire between two machines: a second virtio NIC on each, joined by a TCP
/// socket on the host's loopback (qemu's `socket` netdev). The listening end must be started
/// first. The NIC sits at PCI slot 0x10 (`enp0s16` in the guest) with a MAC of its end's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Listen(u16),
    Connect(u16),
}

impl Wire {
    /// The guest's name for the wire's NIC.
    pub const IFACE: &'static str = "enp0s16";
}

fn device(d: &Disk, id: &str, sata_port: &mut u32, boot: bool) -> Vec<String> {
    let bootindex = if boot { ",bootindex=0" } else { "" };
    let dev = match d.kind {
        DiskKind::Nvme if d.nvme_critical_warning != 0 => format!(
            "nvme,drive={id},serial={},smart_critical_warning={}{bootindex}",
            d.serial, d.nvme_critical_warning
        ),
        DiskKind::Nvme => format!("nvme,drive={id},serial={}{bootindex}", d.serial),
        DiskKind::Virtio => format!("virtio-blk-pci,drive={id},serial={}{bootindex}", d.serial),
        DiskKind::Sata => {
            // q35's built-in ICH9 AHCI has six ports, ide.0 .. ide.5.
            let p = *sata_port;
            *sata_port += 1;
            format!(
                "ide-hd,drive={id},bus=ide.{p},serial={}{bootindex}",
                d.serial
            )
        }
        // The id names the drive for a live unplug (QMP device_del); a SCSI bus takes them.
        DiskKind::Scsi => format!(
            "scsi-hd,drive={id},bus=scsi0.0,serial={0},id=disk-{0}{bootindex}",
            d.serial
        ),
        DiskKind::Usb => format!(
            "usb-storage,drive={id},bus=xhci.0,serial={},removable=on{bootindex}",
            d.serial
        ),
        DiskKind::Cdrom => {
            let p = *sata_port;
            *sata_port += 1;
            return vec![
                "-drive".into(),
                format!("if=none,id={id},media=cdrom"),
                "-device".into(),
                format!("ide-cd,drive={id},bus=ide.{p},serial={}", d.serial),
            ];
        }
    };
    if d.io_errors {
        // blkdebug sits under the format driver: the format's read announces `read_aio` to its
        // file child, which then fails every read it is given.
        let node = serde_json::json!({
            "driver": d.format.as_str(),
            "node-name": id,
            "file": {
                "driver": "blkdebug",
                "inject-error": [{ "event": "read_aio", "errno": 5 }],
                "image": { "driver": "file", "filename": d.file.display().to_string() },
            },
        });
        return vec!["-blockdev".into(), node.to_string(), "-device".into(), dev];
    }
    vec![
        "-drive".into(),
        format!(
            "file={},if=none,id={id},format={},cache=unsafe,discard=unmap",
            d.file.display(),
            d.format.as_str()
        ),
        "-device".into(),
        dev,
    ]
}

/// The qemu argv (without the program) for one boot.
pub fn qemu_args(inv: &Invocation) -> Result<Vec<String>, String> {
    let all: Vec<&Disk> = std::iter::once(&inv.boot).chain(&inv.disks).collect();
    if all
        .iter()
        .filter(|d| matches!(d.kind, DiskKind::Sata | DiskKind::Cdrom))
        .count()
        > 6
    {
        return Err(format!(
            "{}: at most 6 sata disks (q35 AHCI ports)",
            inv.name
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for d in &all {
        if d.nvme_critical_warning != 0 && d.kind != DiskKind::Nvme {
            return Err(format!(
                "{}: disk `{}`: only NVMe drives report a critical warning",
                inv.name, d.serial
            ));
        }
        if !seen.insert(&d.serial) {
            return Err(format!(
                "{}: disk serial `{}` used twice",
                inv.name, d.serial
            ));
        }
        if d.serial.is_empty()
            || d.serial.len() > 20
            || !d
                .serial
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(format!(
                "{}: disk serial `{}` must be 1-20 of [A-Za-z0-9-]",
                inv.name, d.serial
            ));
        }
    }
    let mut a: Vec<String> = [
        "-name",
        &inv.name,
        "-machine",
        if inv.secure_boot { "q35,smm=on" } else { "q35" },
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "max",
        "-smp",
        &inv.cpus.to_string(),
        "-m",
        &inv.memory_mib.to_string(),
        "-no-reboot",
        "-display",
        "none",
        "-device",
        "virtio-rng-pci",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if inv.hostfwd.is_empty() {
        a.extend(["-nic".into(), "none".into()]);
    } else {
        let fwd: String = inv
            .hostfwd
            .iter()
            .map(|(h, g)| format!(",hostfwd=tcp:127.0.0.1:{h}-:{g}"))
            .collect();
        a.extend([
            "-netdev".into(),
            format!("user,id=n0,restrict=on{fwd}"),
            "-device".into(),
            "virtio-net-pci,netdev=n0".into(),
        ]);
    }
    if let Some(w) = inv.wire {
        let (end, mac) = match w {
            Wire::Listen(p) => (format!("listen=127.0.0.1:{p}"), "52:54:00:e7:00:01"),
            Wire::Connect(p) => (format!("connect=127.0.0.1:{p}"), "52:54:00:e7:00:02"),
        };
        a.extend([
            "-netdev".into(),
            format!("socket,id=w0,{end}"),
            "-device".into(),
            format!("virtio-net-pci,netdev=w0,addr=0x10,mac={mac}"),
        ]);
    }
    let code = if inv.secure_boot {
        // The variable store may only be written from SMM, so the OS cannot change the keys.
        a.extend([
            "-global".into(),
            "driver=cfi.pflash01,property=secure,value=on".into(),
        ]);
        OVMF_CODE_SECBOOT
    } else {
        OVMF_CODE
    };
    a.extend([
        "-drive".into(),
        format!("if=pflash,format=raw,unit=0,readonly=on,file={code}"),
    ]);
    a.extend([
        "-drive".into(),
        format!("if=pflash,format=raw,unit=1,file={}", inv.vars.display()),
    ]);
    if inv.interactive {
        a.extend([
            "-chardev".into(),
            format!(
                "stdio,id=ser0,mux=on,signal=off,logfile={}",
                inv.console_log.display()
            ),
            "-serial".into(),
            "chardev:ser0".into(),
            "-mon".into(),
            "chardev=ser0".into(),
        ]);
    } else {
        let input = inv
            .console_input
            .as_ref()
            .map(|p| format!(",input-path={}", p.display()))
            .unwrap_or_default();
        a.extend([
            "-chardev".into(),
            format!("file,id=ser0,path={}{input}", inv.console_log.display()),
            "-serial".into(),
            "chardev:ser0".into(),
            "-monitor".into(),
            "none".into(),
        ]);
    }
    a.extend([
        "-device".into(),
        "virtio-serial-pci,id=vser0".into(),
        "-chardev".into(),
        format!(
            "socket,id=agent,path={},server=on,wait=off",
            inv.agent_sock.display()
        ),
        "-device".into(),
        format!("virtserialport,bus=vser0.0,chardev=agent,name={AGENT_PORT}"),
    ]);
    if let Some(t) = &inv.tpm_sock {
        a.extend([
            "-chardev".into(),
            format!("socket,id=chrtpm,path={}", t.display()),
            "-tpmdev".into(),
            "emulator,id=tpm0,chardev=chrtpm".into(),
            "-device".into(),
            "tpm-tis,tpmdev=tpm0".into(),
        ]);
    }
    if let Some(q) = &inv.qmp_sock {
        a.extend([
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", q.display()),
        ]);
    }
    if all.iter().any(|d| d.kind == DiskKind::Scsi) {
        a.extend(["-device".into(), "virtio-scsi-pci,id=scsi0".into()]);
    }
    if all.iter().any(|d| d.kind == DiskKind::Usb) {
        a.extend(["-device".into(), "qemu-xhci,id=xhci".into()]);
    }
    let mut port = 0;
    a.extend(device(&inv.boot, "boot", &mut port, true));
    for (i, d) in inv.disks.iter().enumerate() {
        a.extend(device(d, &format!("d{i}"), &mut port, false));
    }
    Ok(a)
}

/// swtpm argv: state in `state_dir` survives across boots of the same machine.
pub fn swtpm_args(state_dir: &Path, sock: &Path, log: &Path) -> Vec<String> {
    vec![
        "socket".into(),
        "--tpm2".into(),
        "--tpmstate".into(),
        format!("dir={}", state_dir.display()),
        "--ctrl".into(),
        format!("type=unixio,path={}", sock.display()),
        "--log".into(),
        format!("file={},level=1", log.display()),
        "--terminate".into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(kind: DiskKind, serial: &str) -> Disk {
        Disk {
            kind,
            serial: serial.into(),
            file: PathBuf::from(format!("/t/{serial}.img")),
            format: Format::Raw,
            io_errors: false,
            nvme_critical_warning: 0,
        }
    }

    fn inv() -> Invocation {
        Invocation {
            name: "m".into(),
            memory_mib: 2048,
            cpus: 2,
            boot: Disk {
                format: Format::Qcow2,
                io_errors: false,
                ..disk(DiskKind::Nvme, "EVEBOOT")
            },
            disks: vec![
                disk(DiskKind::Nvme, "N1"),
                disk(DiskKind::Virtio, "V1"),
                disk(DiskKind::Sata, "S1"),
                disk(DiskKind::Sata, "S2"),
                disk(DiskKind::Usb, "U1"),
                disk(DiskKind::Scsi, "C1"),
            ],
            vars: "/t/vars.fd".into(),
            secure_boot: false,
            agent_sock: "/t/agent.sock".into(),
            tpm_sock: Some("/t/tpm.sock".into()),
            console_log: "/t/console.log".into(),
            console_input: None,
            interactive: false,
            hostfwd: vec![],
            qmp_sock: None,
            wire: None,
        }
    }

    #[test]
    fn no_nic_unless_ports_are_forwarded_and_then_a_restricted_one() {
        let a = qemu_args(&inv()).unwrap().join(" ");
        assert!(a.contains("-nic none") && !a.contains("netdev"), "{a}");
        let a = qemu_args(&Invocation {
            hostfwd: vec![(40001, 8443)],
            ..inv()
        })
        .unwrap()
        .join(" ");
        assert!(!a.contains("-nic none"), "{a}");
        assert!(a.contains("-netdev user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:40001-:8443 -device virtio-net-pci,netdev=n0"), "{a}");
    }

    #[test]
    fn a_qmp_socket_when_asked_and_scsi_drives_named_for_a_live_unplug() {
        let a = qemu_args(&inv()).unwrap().join(" ");
        assert!(!a.contains("-qmp"), "{a}");
        assert!(
            a.contains("scsi-hd,drive=d5,bus=scsi0.0,serial=C1,id=disk-C1"),
            "{a}"
        );
        let a = qemu_args(&Invocation {
            qmp_sock: Some("/t/qmp.sock".into()),
            ..inv()
        })
        .unwrap()
        .join(" ");
        assert!(
            a.contains("-qmp unix:/t/qmp.sock,server=on,wait=off"),
            "{a}"
        );
    }

    #[test]
    fn a_wire_is_a_second_nic_each_end_with_its_own_mac() {
        let a = qemu_args(&Invocation {
            wire: Some(Wire::Listen(40002)),
            ..inv()
        })
        .unwrap()
        .join(" ");
        assert!(a.contains("-nic none -"), "no user network: {a}");
        assert!(a.contains("-netdev socket,id=w0,listen=127.0.0.1:40002 -device virtio-net-pci,netdev=w0,addr=0x10,mac=52:54:00:e7:00:01"), "{a}");
        let b = qemu_args(&Invocation {
            wire: Some(Wire::Connect(40002)),
            ..inv()
        })
        .unwrap()
        .join(" ");
        assert!(
            b.contains("socket,id=w0,connect=127.0.0.1:40002")
                && b.contains("mac=52:54:00:e7:00:02"),
            "{b}"
        );
    }

    #[test]
    fn every_disk_kind_maps_to_its_controller() {
        let a = qemu_args(&inv()).unwrap().join(" ");
        assert!(
            a.contains("-device nvme,drive=boot,serial=EVEBOOT,bootindex=0"),
            "{a}"
        );
        assert!(
            a.contains("file=/t/EVEBOOT.img,if=none,id=boot,format=qcow2"),
            "{a}"
        );
        assert!(a.contains("-device nvme,drive=d0,serial=N1 "));
        assert!(a.contains("virtio-blk-pci,drive=d1,serial=V1"));
        assert!(a.contains("ide-hd,drive=d2,bus=ide.0,serial=S1"));
        assert!(a.contains("ide-hd,drive=d3,bus=ide.1,serial=S2"));
        assert!(a.contains("usb-storage,drive=d4,bus=xhci.0,serial=U1,removable=on"));
        assert!(a.contains("scsi-hd,drive=d5,bus=scsi0.0,serial=C1"));
        assert!(a.contains("qemu-xhci,id=xhci") && a.contains("virtio-scsi-pci,id=scsi0"));
        assert!(a.contains("tpm-tis,tpmdev=tpm0"));
        assert!(a.contains("-no-reboot") && a.contains("tcg,thread=multi"));
        assert!(a.contains("virtserialport,bus=vser0.0,chardev=agent,name=org.eve.agent"));
        assert!(a.contains("file,id=ser0,path=/t/console.log"));
    }

    #[test]
    fn secure_boot_uses_the_smm_firmware_and_its_own_variables() {
        let a = qemu_args(&inv()).unwrap().join(" ");
        assert!(a.contains("-machine q35 ") && a.contains(OVMF_CODE) && !a.contains("smm"));
        let mut i = inv();
        i.secure_boot = true;
        let a = qemu_args(&i).unwrap().join(" ");
        assert!(a.contains("-machine q35,smm=on"), "{a}");
        assert!(a.contains("driver=cfi.pflash01,property=secure,value=on"));
        assert!(a.contains(&format!("readonly=on,file={OVMF_CODE_SECBOOT}")));
        assert!(a.contains("unit=1,file=/t/vars.fd"));
    }

    #[test]
    fn interactive_console_is_muxed_with_the_monitor_and_logged() {
        let mut i = inv();
        i.interactive = true;
        i.tpm_sock = None;
        let a = qemu_args(&i).unwrap().join(" ");
        assert!(a.contains("stdio,id=ser0,mux=on,signal=off,logfile=/t/console.log"));
        assert!(a.contains("-mon chardev=ser0"));
        assert!(!a.contains("tpm"));
    }

    #[test]
    fn bad_specs_are_refused_with_the_reason() {
        let mut i = inv();
        i.disks.push(disk(DiskKind::Nvme, "N1"));
        assert!(qemu_args(&i).unwrap_err().contains("`N1` used twice"));
        let mut i = inv();
        i.disks = (0..7)
            .map(|n| disk(DiskKind::Sata, &format!("S{n}")))
            .collect();
        assert!(qemu_args(&i).unwrap_err().contains("6 sata"));
        let mut i = inv();
        i.disks = vec![disk(DiskKind::Nvme, "bad serial")];
        assert!(qemu_args(&i).unwrap_err().contains("bad serial"));
        assert!("floppy".parse::<DiskKind>().unwrap_err().contains("floppy"));
        let mut i = inv();
        i.disks[1].nvme_critical_warning = 4;
        assert!(qemu_args(&i).unwrap_err().contains("only NVMe"));
    }

    #[test]
    fn an_nvme_drive_can_report_a_critical_warning_from_power_on() {
        let mut i = inv();
        i.disks[0].nvme_critical_warning = 4;
        let a = qemu_args(&i).unwrap().join(" ");
        assert!(
            a.contains("-device nvme,drive=d0,serial=N1,smart_critical_warning=4 "),
            "{a}"
        );
    }
}
