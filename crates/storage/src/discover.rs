//! Block device discovery from sysfs, and the verdict on each device with a human reason.
//!
//! Enumeration reads only sysfs; what is *on* a device (partition table, filesystem, ZFS label)
//! comes from a `Signatures` value the caller probes, so the verdict logic stays pure.

use platform::sysfs::{attr as read, attr_u64 as read_u64, names as list};
use platform::Roots;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    Nvme,
    Sata,
    Scsi,
    Virtio,
    Mmc,
    Usb,
    Virtual,
    Unknown,
}

/// One whole block device as sysfs describes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlockDev {
    pub name: String,
    pub dev: PathBuf,
    pub transport: Transport,
    pub size_bytes: u64,
    pub removable: bool,
    pub read_only: bool,
    pub rotational: bool,
    /// Bytes; drives with sectors above 4 KiB need a larger ashift.
    pub physical_block_size: u64,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub wwid: Option<String>,
    pub partitions: Vec<String>,
    pub holders: Vec<String>,
    /// NVMe: the controllers' transport when none is PCIe (`loop`, `tcp`, `rdma`, `fc`): a
    /// namespace reached over a fabric, such as one of our own volumes connected back to this
    /// box, and never a drive to pool.
    pub fabric: Option<String>,
}

/// What a probe found on a device.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Signatures {
    /// `gpt`, `dos`, ...
    pub partition_table: Option<String>,
    /// Filesystem or other content type on the whole device or any partition (`ext4`, `zfs_member`, ...).
    pub contents: Vec<String>,
    /// ZFS pool names (and GUIDs) found in labels.
    pub zfs_pools: Vec<(String, u64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    Eligible,
    BootMedia {
        reason: String,
    },
    Removable {
        reason: String,
    },
    ReadOnly {
        reason: String,
    },
    Virtual {
        reason: String,
    },
    TooSmall {
        reason: String,
    },
    ForeignData {
        reason: String,
    },
    PoolMember {
        pool: String,
        guid: u64,
    },
    OtherPool {
        pool: String,
        guid: u64,
    },
    /// The probe failed (no medium, an I/O error): never pooled, and bring-up goes on without it.
    Unreadable {
        reason: String,
    },
}

/// Names that are never physical drives (optical drives, `sr*`, are physical: their removable
/// flag keeps them out).
pub use platform::disk::is_virtual_name;

/// eMMC hardware partitions are exposed as separate block devices; they are never for data.
pub fn is_mmc_special(name: &str) -> bool {
    name.starts_with("mmcblk") && (name.contains("boot") || name.contains("rpmb"))
}

/// Transport from the device's name and its resolved sysfs path.
pub fn transport(name: &str, devpath: &str) -> Transport {
    // NVMe first: a multipath head node lives under /sys/devices/virtual/nvme-subsystem but is
    // the real namespace.
    if name.starts_with("nvme") {
        Transport::Nvme
    } else if is_virtual_name(name) || devpath.contains("/virtual/") {
        Transport::Virtual
    } else if devpath.contains("/usb") {
        Transport::Usb
    } else if name.starts_with("mmcblk") {
        Transport::Mmc
    } else if name.starts_with("vd") || (devpath.contains("/virtio") && !name.starts_with("sd")) {
        Transport::Virtio
    } else if devpath.contains("/ata") {
        Transport::Sata
    } else if name.starts_with("sd") {
        Transport::Scsi
    } else {
        Transport::Unknown
    }
}

/// SCSI and ATA (through libata's SCSI layer) give the unit serial in VPD page 0x80: a 4-byte
/// header, then the serial, space padded.
fn vpd_serial(dev_dir: &Path) -> Option<String> {
    let raw = std::fs::read(dev_dir.join("vpd_pg80")).ok()?;
    let s = String::from_utf8_lossy(raw.get(4..)?)
        .trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .to_string();
    (!s.is_empty()).then_some(s)
}

/// usb-storage puts the serial on the USB device, a few levels above the SCSI device.
fn usb_serial(dev_dir: &Path) -> Option<String> {
    let mut p = std::fs::canonicalize(dev_dir).ok()?;
    for _ in 0..8 {
        if p.join("idVendor").exists() {
            return read(&p.join("serial"));
        }
        p = p.parent()?.to_path_buf();
    }
    None
}

/// The transports of an NVMe namespace's controllers: its `device` is the controller, or (a
/// multipath head node) the subsystem, which links each of its controllers.
fn nvme_transports(dir: &Path) -> Vec<String> {
    let dev = dir.join("device");
    if let Some(t) = read(&dev.join("transport")) {
        return vec![t];
    }
    list(&dev)
        .into_iter()
        .filter(|c| c.starts_with("nvme"))
        .filter_map(|c| read(&dev.join(c).join("transport")))
        .collect()
}

/// All whole block devices, sorted by name. Hidden NVMe multipath paths (`nvme0c0n1`) are skipped:
/// the `nvme0n1` head node is the device.
pub fn enumerate(roots: &Roots) -> Vec<BlockDev> {
    let block = roots.sys.join("block");
    let mut out = Vec::new();
    for name in list(&block) {
        let dir = block.join(&name);
        if read(&dir.join("hidden")).as_deref() == Some("1") || is_mmc_special(&name) {
            continue;
        }
        let devpath = std::fs::canonicalize(&dir)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dev_dir = dir.join("device");
        let partitions = list(&dir)
            .into_iter()
            .filter(|p| dir.join(p).join("partition").exists())
            .collect();
        let fabric = if name.starts_with("nvme") {
            let t = nvme_transports(&dir);
            (!t.is_empty() && !t.iter().any(|t| t == "pcie")).then(|| t.join(","))
        } else {
            None
        };
        out.push(BlockDev {
            dev: roots.dev.join(&name),
            transport: if fabric.is_some() {
                Transport::Virtual
            } else {
                transport(&name, &devpath)
            },
            fabric,
            size_bytes: read_u64(&dir.join("size")).unwrap_or(0) * 512,
            removable: read(&dir.join("removable")).as_deref() == Some("1"),
            read_only: read(&dir.join("ro")).as_deref() == Some("1"),
            rotational: read(&dir.join("queue/rotational")).as_deref() == Some("1"),
            physical_block_size: read_u64(&dir.join("queue/physical_block_size")).unwrap_or(512),
            model: read(&dev_dir.join("model")),
            serial: read(&dev_dir.join("serial"))
                .or_else(|| read(&dir.join("serial")))
                .or_else(|| vpd_serial(&dev_dir))
                .or_else(|| usb_serial(&dev_dir)),
            wwid: read(&dir.join("wwid")).or_else(|| read(&dev_dir.join("wwid"))),
            partitions,
            holders: list(&dir.join("holders")),
            name,
        });
    }
    out
}

/// A stable identity: WWN/EUI/NGUID when the device has one, else model+serial, else the name
/// (flagged as unstable so reports say so).
pub fn stable_id(d: &BlockDev) -> (String, bool) {
    if let Some(w) = &d.wwid {
        return (w.split_whitespace().collect::<Vec<_>>().join("_"), true);
    }
    match (&d.model, &d.serial) {
        (Some(m), Some(s)) => (
            format!(
                "{}_{}",
                m.split_whitespace().collect::<Vec<_>>().join("_"),
                s
            ),
            true,
        ),
        (None, Some(s)) => (
            format!("{}-{s}", format!("{:?}", d.transport).to_lowercase()),
            true,
        ),
        _ => (d.name.clone(), false),
    }
}

/// Everything the verdict depends on besides the device itself.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// Whole-disk name holding the running image (from the root mount), if known.
    pub boot_disk: Option<&'a str>,
    pub min_size_bytes: u64,
    /// Our pool's name, and its GUID once it exists.
    pub pool: &'a str,
    pub pool_guid: Option<u64>,
}

/// The verdict for one device. Order matters: the reasons that make a device untouchable whatever
/// is on it come first, so e.g. a USB stick holding a ZFS label is still just "removable".
pub fn verdict(d: &BlockDev, sig: &Signatures, ctx: &Context) -> Verdict {
    if let Some(t) = &d.fabric {
        return Verdict::Virtual {
            reason: format!(
                "{} is an NVMe-oF namespace (transport {t}), not a drive in this box",
                d.name
            ),
        };
    }
    if d.transport == Transport::Virtual {
        return Verdict::Virtual {
            reason: format!("{} is a virtual device", d.name),
        };
    }
    if ctx.boot_disk == Some(d.name.as_str()) {
        return Verdict::BootMedia {
            reason: "holds the running image (its P3 partition is used instead)".into(),
        };
    }
    if d.transport == Transport::Usb || d.removable {
        return Verdict::Removable {
            reason: format!(
                "{} on {:?}",
                if d.removable {
                    "removable media"
                } else {
                    "USB device"
                },
                d.transport
            ),
        };
    }
    if d.read_only {
        return Verdict::ReadOnly {
            reason: "the kernel reports it read-only".into(),
        };
    }
    if let Some((pool, guid)) = sig.zfs_pools.first() {
        let ours = pool == ctx.pool && ctx.pool_guid.is_none_or(|g| g == *guid);
        return if ours {
            Verdict::PoolMember {
                pool: pool.clone(),
                guid: *guid,
            }
        } else {
            Verdict::OtherPool {
                pool: pool.clone(),
                guid: *guid,
            }
        };
    }
    if d.size_bytes < ctx.min_size_bytes {
        return Verdict::TooSmall {
            reason: format!(
                "{} MiB is under the {} MiB minimum",
                d.size_bytes >> 20,
                ctx.min_size_bytes >> 20
            ),
        };
    }
    if let Some(pt) = &sig.partition_table {
        return Verdict::ForeignData {
            reason: format!("has a {pt} partition table{}", describe(&sig.contents)),
        };
    }
    if !sig.contents.is_empty() || !d.partitions.is_empty() || !d.holders.is_empty() {
        let what = if sig.contents.is_empty() {
            " (partitions or holders present)".to_string()
        } else {
            describe(&sig.contents)
        };
        return Verdict::ForeignData {
            reason: format!("not blank{what}"),
        };
    }
    Verdict::Eligible
}

/// The verdict after what only storage-init knows: its own pending partitions are blank to it, and
/// the policy may name foreign drives for wiping, by stable id only: a kernel name (`sdb`) moves
/// between boots and could name another drive, so a match on one is refused and said why.
/// Nothing else overrides a verdict.
pub fn overridden(
    v: Verdict,
    ours_pending: bool,
    stable_id: &str,
    stable: bool,
    wipe: &[String],
) -> Verdict {
    match v {
        Verdict::ForeignData { .. } if ours_pending => Verdict::Eligible,
        Verdict::ForeignData { reason } if wipe.iter().any(|w| w == stable_id) => {
            if stable {
                Verdict::Eligible
            } else {
                Verdict::ForeignData {
                    reason: format!(
                        "{reason}; pool.wipe names it by `{stable_id}`, a kernel name and not a stable id, so it is not wiped"
                    ),
                }
            }
        }
        v => v,
    }
}

/// Whether a drive holding our pending partitions may be reused: only when nothing else about it
/// (removable, read-only, too small, another pool, unreadable) rules it out.
pub fn reusable(v: &Verdict) -> bool {
    matches!(v, Verdict::Eligible | Verdict::PoolMember { .. })
}

fn describe(contents: &[String]) -> String {
    if contents.is_empty() {
        String::new()
    } else {
        format!(" with {}", contents.join(", "))
    }
}

/// The whole disk among `devs` that `path` (`/dev/disk/by-partuuid/<x>`, or any device path) is
/// or is a partition of.
pub fn disk_holding<'a>(path: &str, devs: &'a [BlockDev]) -> Option<&'a BlockDev> {
    let real = std::fs::canonicalize(path).ok()?;
    let part = real.file_name()?.to_string_lossy().into_owned();
    devs.iter()
        .find(|d| d.partitions.contains(&part) || d.name == part)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Builds /sys/block/<name> -> ../devices/<devpath>/block/<name> with the given attributes.
    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("sys/block")).unwrap();
            Fixture { dir }
        }
        fn disk(&self, name: &str, devpath: &str, sectors: u64, attrs: &[(&str, &str)]) {
            let real = self
                .dir
                .path()
                .join("sys/devices")
                .join(devpath)
                .join("block")
                .join(name);
            std::fs::create_dir_all(real.join("queue")).unwrap();
            std::fs::create_dir_all(real.join("holders")).unwrap();
            std::fs::create_dir_all(real.join("device")).unwrap();
            std::fs::write(real.join("size"), format!("{sectors}\n")).unwrap();
            for (k, v) in attrs {
                let p = real.join(k);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, format!("{v}\n")).unwrap();
            }
            symlink(&real, self.dir.path().join("sys/block").join(name)).unwrap();
        }
        fn roots(&self) -> Roots {
            Roots::under(self.dir.path())
        }
    }

    const GIB: u64 = 2 * 1024 * 1024;

    fn fixture() -> Fixture {
        let f = Fixture::new();
        f.disk(
            "nvme0n1",
            "pci0000:00/0000:00:04.0/nvme/nvme0",
            8 * GIB,
            &[
                ("wwid", "eui.0123456789abcdef"),
                ("device/model", "Samsung SSD 980"),
                ("device/serial", "S1234"),
                ("device/transport", "pcie"),
            ],
        );
        f.disk(
            "nvme1c1n1",
            "pci0000:00/0000:00:05.0/nvme/nvme1",
            8 * GIB,
            &[("hidden", "1")],
        );
        f.disk(
            "nvme1n1",
            "virtual/nvme-subsystem/nvme-subsys1",
            8 * GIB,
            &[
                ("wwid", "nvme.1b36-4e564d45"),
                ("device/nvme1/transport", "pcie"),
            ],
        );
        // One of our volumes connected back over nvme-loop: a head node whose only controller's
        // transport is `loop`.
        f.disk(
            "nvme2n1",
            "virtual/nvme-subsystem/nvme-subsys2",
            3 * GIB,
            &[
                ("wwid", "uuid.984da7d1"),
                ("device/nvme2/transport", "loop"),
            ],
        );
        f.disk(
            "nvme3n1",
            "virtual/nvme-fabrics/ctl/nvme3",
            GIB,
            &[("device/transport", "tcp")],
        );
        f.disk(
            "sda",
            "pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0",
            4 * GIB,
            &[
                ("device/model", "QEMU HARDDISK"),
                ("device/serial", "SATA0"),
                ("queue/rotational", "1"),
            ],
        );
        f.disk(
            "sdb",
            "pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host1/target1:0:0/1:0:0:0",
            GIB,
            &[("removable", "1"), ("device/model", "Flash Disk")],
        );
        let usbdev = f
            .dir
            .path()
            .join("sys/devices/pci0000:00/0000:00:14.0/usb2/2-1");
        std::fs::write(usbdev.join("idVendor"), "46f4\n").unwrap();
        std::fs::write(usbdev.join("serial"), "USBSTICK1\n").unwrap();
        f.disk(
            "sdc",
            "pci0000:00/0000:00:06.0/virtio3/host2/target2:0:0/2:0:0:0",
            2 * GIB,
            &[
                ("device/wwid", "naa.6001405abcdef"),
                ("device/vpd_pg80", "\0\0\0\x08SCSI42  "),
            ],
        );
        f.disk(
            "vda",
            "pci0000:00/0000:00:03.0/virtio1",
            16 * GIB,
            &[("serial", "EVEBOOT")],
        );
        f.disk("vda1", "pci0000:00/0000:00:03.0/virtio1/vda", 1, &[]);
        f.disk(
            "mmcblk0",
            "platform/mmc0/mmc0:0001",
            32 * GIB,
            &[("device/serial", "0x1234")],
        );
        f.disk(
            "mmcblk0boot0",
            "platform/mmc0/mmc0:0001",
            8192,
            &[("ro", "1")],
        );
        f.disk("mmcblk0rpmb", "platform/mmc0/mmc0:0001", 8192, &[]);
        f.disk("loop0", "virtual/block/loop0", GIB, &[]);
        f.disk("zd0", "virtual/block/zd0", GIB, &[]);
        f.disk(
            "sr0",
            "pci0000:00/0000:00:1f.2/ata2/host1/target1:0:0/1:0:0:0",
            0,
            &[("ro", "1"), ("removable", "1")],
        );
        // vda has a partition directory inside it, as the kernel lays it out.
        let vda = f.dir.path().join("sys/block/vda");
        std::fs::create_dir_all(vda.join("vda1")).unwrap();
        std::fs::write(vda.join("vda1/partition"), "1\n").unwrap();
        f
    }

    fn by_name<'a>(devs: &'a [BlockDev], n: &str) -> &'a BlockDev {
        devs.iter()
            .find(|d| d.name == n)
            .unwrap_or_else(|| panic!("{n} not enumerated"))
    }

    #[test]
    fn enumerates_each_family_and_skips_hidden_paths_and_mmc_hardware_partitions() {
        let devs = enumerate(&fixture().roots());
        let names: Vec<&str> = devs.iter().map(|d| d.name.as_str()).collect();
        assert!(
            !names.contains(&"nvme1c1n1")
                && !names.contains(&"mmcblk0boot0")
                && !names.contains(&"mmcblk0rpmb"),
            "{names:?}"
        );
        let t = |n| by_name(&devs, n).transport;
        assert_eq!(t("nvme0n1"), Transport::Nvme);
        assert_eq!(t("sda"), Transport::Sata);
        assert_eq!(t("sdb"), Transport::Usb);
        assert_eq!(t("sdc"), Transport::Scsi);
        assert_eq!(t("vda"), Transport::Virtio);
        assert_eq!(t("mmcblk0"), Transport::Mmc);
        assert_eq!(t("loop0"), Transport::Virtual);
        assert_eq!(t("zd0"), Transport::Virtual);
        let nvme = by_name(&devs, "nvme0n1");
        assert_eq!(nvme.size_bytes, 8 << 30);
        assert_eq!(nvme.model.as_deref(), Some("Samsung SSD 980"));
        assert!(by_name(&devs, "sda").rotational);
        assert_eq!(
            by_name(&devs, "sdc").serial.as_deref(),
            Some("SCSI42"),
            "serial from VPD page 0x80"
        );
        assert!(by_name(&devs, "sdb").removable);
        assert_eq!(
            by_name(&devs, "sdb").serial.as_deref(),
            Some("USBSTICK1"),
            "USB serial from the USB device"
        );
        assert_eq!(by_name(&devs, "vda").partitions, ["vda1"]);
        assert_eq!(by_name(&devs, "vda").serial.as_deref(), Some("EVEBOOT"));
    }

    #[test]
    fn nvme_multipath_head_is_one_device_with_its_nguid() {
        let devs = enumerate(&fixture().roots());
        let head = by_name(&devs, "nvme1n1");
        // The subsystem head lives under /sys/devices/virtual but is a real NVMe namespace.
        assert_eq!(head.transport, Transport::Nvme);
        assert_eq!(head.wwid.as_deref(), Some("nvme.1b36-4e564d45"));
        assert_eq!(head.fabric, None);
    }

    #[test]
    fn namespaces_reached_over_a_fabric_are_never_drives() {
        let devs = enumerate(&fixture().roots());
        for (n, t) in [("nvme2n1", "loop"), ("nvme3n1", "tcp")] {
            let d = by_name(&devs, n);
            assert_eq!(
                (d.transport, d.fabric.as_deref()),
                (Transport::Virtual, Some(t))
            );
            let ctx = Context {
                boot_disk: None,
                min_size_bytes: 0,
                pool: "persist",
                pool_guid: None,
            };
            match verdict(d, &Signatures::default(), &ctx) {
                Verdict::Virtual { reason } => {
                    assert!(reason.contains("NVMe-oF") && reason.contains(t), "{reason}")
                }
                v => panic!("{n}: {v:?}"),
            }
        }
        assert_eq!(by_name(&devs, "nvme0n1").fabric, None);
    }

    #[test]
    fn stable_ids_prefer_wwn_then_model_serial_then_name() {
        let devs = enumerate(&fixture().roots());
        assert_eq!(
            stable_id(by_name(&devs, "nvme0n1")),
            ("eui.0123456789abcdef".into(), true)
        );
        assert_eq!(
            stable_id(by_name(&devs, "sdc")),
            ("naa.6001405abcdef".into(), true)
        );
        assert_eq!(
            stable_id(by_name(&devs, "sda")),
            ("QEMU_HARDDISK_SATA0".into(), true)
        );
        assert_eq!(
            stable_id(by_name(&devs, "vda")),
            ("virtio-EVEBOOT".into(), true)
        );
        assert_eq!(stable_id(by_name(&devs, "loop0")), ("loop0".into(), false));
    }

    #[test]
    fn only_our_pending_partitions_and_listed_ids_override_foreign_data() {
        let foreign = Verdict::ForeignData {
            reason: "ext4".into(),
        };
        let wipe = vec!["eui.01".to_string()];
        assert_eq!(
            overridden(foreign.clone(), false, "eui.01", true, &wipe),
            Verdict::Eligible
        );
        assert_eq!(
            overridden(foreign.clone(), true, "eui.02", true, &[]),
            Verdict::Eligible
        );
        assert_eq!(
            overridden(foreign.clone(), false, "eui.02", true, &wipe),
            foreign
        );
        // A kernel name in the wipe list is refused, with the reason in the verdict.
        match overridden(foreign.clone(), false, "sdb", false, &["sdb".to_string()]) {
            Verdict::ForeignData { reason } => {
                assert!(reason.contains("not a stable id"), "{reason}")
            }
            v => panic!("{v:?}"),
        }
        assert!(!reusable(&Verdict::Removable {
            reason: "usb".into()
        }));
        assert!(!reusable(&Verdict::Unreadable {
            reason: "EIO".into()
        }));
        assert!(reusable(&Verdict::Eligible));
        let other = Verdict::OtherPool {
            pool: "tank".into(),
            guid: 1,
        };
        assert_eq!(
            overridden(other.clone(), false, "eui.01", true, &wipe),
            other,
            "another pool is never wiped"
        );
        let usb = Verdict::Removable {
            reason: "usb".into(),
        };
        assert_eq!(overridden(usb.clone(), true, "eui.01", true, &wipe), usb);
    }

    #[test]
    fn every_verdict_with_its_reason() {
        let devs = enumerate(&fixture().roots());
        let ctx = Context {
            boot_disk: Some("vda"),
            min_size_bytes: 2 << 30,
            pool: "persist",
            pool_guid: Some(42),
        };
        let blank = Signatures::default();
        let v = |n: &str, s: &Signatures| verdict(by_name(&devs, n), s, &ctx);
        assert_eq!(v("nvme0n1", &blank), Verdict::Eligible);
        assert!(matches!(v("vda", &blank), Verdict::BootMedia { .. }));
        assert!(matches!(v("sdb", &blank), Verdict::Removable { .. }));
        assert!(matches!(v("loop0", &blank), Verdict::Virtual { .. }));
        assert!(matches!(v("zd0", &blank), Verdict::Virtual { .. }));
        let mut ro = by_name(&devs, "sda").clone();
        ro.read_only = true;
        assert!(matches!(
            verdict(&ro, &blank, &ctx),
            Verdict::ReadOnly { .. }
        ));
        let mut small = by_name(&devs, "sda").clone();
        small.size_bytes = 1 << 30;
        match verdict(&small, &blank, &ctx) {
            Verdict::TooSmall { reason } => assert!(
                reason.contains("1024 MiB") && reason.contains("2048 MiB"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
        let ext4 = Signatures {
            contents: vec!["ext4".into()],
            ..Default::default()
        };
        match v("sda", &ext4) {
            Verdict::ForeignData { reason } => assert!(reason.contains("ext4"), "{reason}"),
            other => panic!("{other:?}"),
        }
        let gpt = Signatures {
            partition_table: Some("gpt".into()),
            contents: vec!["ntfs".into()],
            ..Default::default()
        };
        assert!(
            matches!(v("sda", &gpt), Verdict::ForeignData { reason } if reason.contains("gpt") && reason.contains("ntfs"))
        );
        let ours = Signatures {
            zfs_pools: vec![("persist".into(), 42)],
            contents: vec!["zfs_member".into()],
            ..Default::default()
        };
        assert_eq!(
            v("sda", &ours),
            Verdict::PoolMember {
                pool: "persist".into(),
                guid: 42
            }
        );
        let same_name_other_guid = Signatures {
            zfs_pools: vec![("persist".into(), 7)],
            ..Default::default()
        };
        assert!(matches!(
            v("sda", &same_name_other_guid),
            Verdict::OtherPool { guid: 7, .. }
        ));
        let other = Signatures {
            zfs_pools: vec![("tank".into(), 9)],
            ..Default::default()
        };
        assert!(matches!(v("nvme0n1", &other), Verdict::OtherPool { .. }));
        // A USB stick with our label is still removable: it is never pooled.
        assert!(matches!(v("sdb", &ours), Verdict::Removable { .. }));
    }

    #[test]
    fn a_partition_link_leads_to_its_whole_disk() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("sdb1"), b"").unwrap();
        std::os::unix::fs::symlink(t.path().join("sdb1"), t.path().join("link")).unwrap();
        let mut sdb = crate::observe::fixtures::bd("sdb", 512);
        sdb.partitions = vec!["sdb1".into()];
        let devs = [crate::observe::fixtures::bd("sda", 512), sdb];
        let link = t.path().join("link").display().to_string();
        assert_eq!(
            disk_holding(&link, &devs).map(|d| d.name.as_str()),
            Some("sdb")
        );
        assert!(disk_holding("/nonexistent/x", &devs).is_none());
    }
}
