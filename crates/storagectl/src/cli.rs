//! storagectl's command line: every command and option, as clap parses them, and the volume
//! spec the create options stand for.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use volumes::spec::{Format, RawSpec, Source, Transport};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Inspect the appliance's storage and manage guest volumes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
    #[command(flatten)]
    pub remote: mgmt_client::Flags,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Pool health, members, capacity, datasets against their quotas, encryption and keys.
    ///
    /// Exits 0 when all is well, 5 when the vault is locked, 6 when the pool is not imported, 7
    /// when it is degraded (the pool or a member not ONLINE, a critical alert).
    Status {
        #[arg(long)]
        json: bool,
        /// Print only what is wrong (like `zpool status -x`).
        #[arg(short = 'x', long)]
        quiet: bool,
        #[arg(long, default_value = "persist")]
        pool: String,
    },
    /// Guest volumes: zvols exported over NVMe/TCP, NVMe loop or vhost-scsi.
    Volume {
        /// Settings file [default: /persist/config/volumes.toml if present, else /etc/volumes.toml]
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        cmd: VolCmd,
    },
    /// The vault's key: unlock with the recovery key, or make a new recovery key.
    Vault {
        #[arg(long, default_value = "persist")]
        pool: String,
        #[command(subcommand)]
        cmd: VaultCmd,
    },
    /// Alerts from the drives' own reports, pool state, capacity and quotas; each drive's
    /// temperature, wear and errors; the last events.
    ///
    /// Exits 0 when all is well, 6 when the pool is not imported, 7 when it is degraded or an
    /// alert is critical.
    Health {
        #[arg(long)]
        json: bool,
        /// Print only what is wrong: the pool's state and critical alerts.
        #[arg(short = 'x', long)]
        quiet: bool,
        /// Sizes in bytes instead of human units.
        #[arg(long, short = 'p')]
        bytes: bool,
        #[arg(long, default_value = "persist")]
        pool: String,
    },
    /// The pool's drives: list them with their health and risks; replace, add, offline or
    /// online members.
    Disk {
        #[arg(long, default_value = "persist")]
        pool: String,
        #[command(subcommand)]
        cmd: DiskCmd,
    },
    /// Scrub the pool now, or stop the running scrub (storaged also scrubs on the policy's
    /// schedule). Refused while a resilver runs, or a scrub already does; `status` shows the
    /// progress with its rate and the time left.
    Scrub {
        action: NowOrStop,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "persist")]
        pool: String,
    },
    /// TRIM the pool's members now (storaged also trims on the policy's schedule).
    Trim {
        action: Now,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "persist")]
        pool: String,
    },
    /// A support bundle: one .tar.gz with the status, health, drives, maintenance, `zpool
    /// status`, history and events, the volumes and their nvmet export, the logs and the
    /// versions. Never a key, a CHAP secret or a recovery key (left out, and redacted wherever
    /// one could appear). Written owner-only to --out (default ./eve-bundle-<UTC>.tar.gz).
    Bundle {
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "persist")]
        pool: String,
    },
    /// The management API's audit journal: every change asked through it, who asked, and what
    /// came of it (the newest last).
    Audit {
        #[arg(long)]
        json: bool,
        /// How many entries, the newest.
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: usize,
        #[arg(long, default_value = "persist")]
        pool: String,
    },
    /// The live nvmet configuration.
    Export {
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        cmd: ExportCmd,
    },
}

#[derive(Debug, Subcommand)]
pub enum VaultCmd {
    /// Unlock a locked vault with its recovery key (read from stdin: after a board or TPM change),
    /// then seal its key to this box's TPM so the next boot unlocks by itself.
    Recover {
        #[arg(long)]
        json: bool,
        /// Open a vault that carries no proof it is the one this recovery key was made for (made
        /// by an earlier release): only when nobody can have changed this box's disks.
        #[arg(long)]
        accept_unproven: bool,
    },
    /// Make a new recovery key for the unlocked vault (the old one stops working) and print it
    /// once.
    RecoveryKey {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DiskCmd {
    /// Every drive with its verdict, pool role, state, error counters and health; missing
    /// members; risks and alerts.
    List {
        #[arg(long)]
        json: bool,
        #[arg(long, short = 'p')]
        bytes: bool,
    },
    /// Replace member OLD (its name, guid or disk as `disk list` shows) with the blank drive NEW,
    /// partitioned as at first boot; waits for the resilver unless --no-wait. A power cut during
    /// the resilver is safe: ZFS resumes it at the next import.
    Replace {
        old: String,
        new: String,
        #[arg(long)]
        no_wait: bool,
        #[arg(long)]
        json: bool,
    },
    /// Grow the pool with blank drives, within its layout: a stripe by any number, a mirror or
    /// raidz pool by whole groups as wide as its own (`disk add vdc vdd` adds a 2-way mirror).
    Add {
        #[arg(required = true)]
        drives: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Take a member offline (it stops being read and written; a mirror keeps working).
    Offline {
        member: String,
        #[arg(long)]
        json: bool,
    },
    /// Bring an offline member back (ZFS resilvers what it missed).
    Online {
        member: String,
        #[arg(long)]
        json: bool,
    },
    /// Start the drives' own self-test (SMART on SATA, Device Self-test on NVMe) on the pool's
    /// drives, or on the DRIVES named; `disk list` shows progress and the last result. A drive
    /// that runs a test already, or offers none, is skipped with the reason. Exits 0 when every
    /// drive that can test started, 4 when none could, 1 when a start failed.
    Selftest {
        drives: Vec<String>,
        /// The extended test (reads the whole medium: hours) instead of the short one.
        #[arg(long)]
        long: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ExportCmd {
    /// Write it in nvmetcli's JSON layout (to FILE, or stdout).
    Save {
        file: Option<PathBuf>,
        /// With FILE: say what was written as JSON (without FILE the export is JSON already).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum VolCmd {
    /// Create a volume from a spec file (TOML or JSON) or from options.
    Create(CreateArgs),
    /// Grow a volume; connected NVMe hosts are told the new size.
    Resize {
        name: String,
        /// New size, like 20G.
        size: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete a volume and its zvol; refused while a host is connected unless --force.
    Delete {
        name: String,
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Every volume with its size, space used (and by its snapshots), provisioning and state.
    List {
        #[arg(long)]
        json: bool,
        /// Sizes in bytes instead of human units.
        #[arg(long, short = 'p')]
        bytes: bool,
    },
    /// Take a snapshot of a volume (named SNAP, or after the UTC time); `snapshot delete NAME
    /// SNAP` destroys one. Snapshots taken by hand are never pruned by a schedule.
    Snapshot(SnapshotArgs),
    /// A volume's snapshots, oldest first, with the space each holds and its clones.
    Snapshots {
        name: String,
        #[arg(long)]
        json: bool,
        #[arg(long, short = 'p')]
        bytes: bool,
    },
    /// Put a volume back to a snapshot; refused while a host is connected. Newer snapshots are
    /// destroyed only with --destroy-newer, and never one with a clone.
    Rollback {
        name: String,
        snapshot: String,
        #[arg(long)]
        destroy_newer: bool,
        /// Roll back even though a host is connected (its view of the disk becomes wrong).
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// A new volume from a snapshot: its own identity and export, sharing unchanged blocks.
    Clone {
        /// The new volume's name.
        new: String,
        /// VOLUME@SNAPSHOT
        #[arg(long)]
        from: String,
        /// The VM it is for [default: the origin's].
        #[arg(long)]
        vm: Option<String>,
        /// [default: the origin's]
        #[arg(long, value_parser = ["nvme-tcp", "nvme-loop", "vhost-scsi", "vhost-nvme"])]
        transport: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// I/O per volume over --interval seconds: IOPS, throughput, mean latency and how busy its
    /// zvol was (the kernel's counters; storaged exports them for Prometheus as well).
    Iostat {
        /// Volumes to show (all when none).
        names: Vec<String>,
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        #[arg(long)]
        json: bool,
    },
    /// The volume, its identity and export: NQNs, NVMe/TCP address, where the secrets are kept.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
        /// The size in bytes instead of human units.
        #[arg(long, short = 'p')]
        bytes: bool,
    },
    /// What the VM's launcher needs, ready to paste: qemu arguments (vhost-scsi, nvme-loop) or
    /// the NVMe/TCP connection, with a warning when a VM cannot reach it. The VM's secrets are
    /// never printed: `--out DIR` writes the connect options, secrets included, to
    /// DIR/NAME.nvmf (mode 0600) for `cat DIR/NAME.nvmf > /dev/nvme-fabrics`.
    Connect {
        name: String,
        /// Write the NVMe/TCP connect options (secrets included) here.
        #[arg(long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// One reconcile pass now (`--dry-run` prints the plan only).
    Reconcile {
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Accept the spool as it is now (after restoring or moving it): volumes whose spec files are
    /// missing from it are then deleted. Until then a lost or older spool deletes nothing.
    AdoptSpool {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    pub cmd: Option<SnapCmd>,
    /// The volume.
    pub name: Option<String>,
    /// The snapshot's name [default: the UTC time, like 20261204T010203Z].
    pub snap: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SnapCmd {
    /// Destroy a snapshot; refused while a clone depends on it.
    Delete {
        name: String,
        snapshot: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn transport_arg(s: &str) -> Transport {
    match s {
        "nvme-tcp" => Transport::NvmeTcp,
        "nvme-loop" => Transport::NvmeLoop,
        "vhost-scsi" => Transport::VhostScsi,
        _ => Transport::VhostNvme,
    }
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// A spec file; the options below are used when it is not given.
    #[arg(long, conflicts_with_all = ["name", "size", "vm", "transport"])]
    pub spec: Option<PathBuf>,
    pub name: Option<String>,
    #[arg(long)]
    pub size: Option<String>,
    #[arg(long)]
    pub vm: Option<String>,
    #[arg(long, value_parser = ["nvme-tcp", "nvme-loop", "vhost-scsi", "vhost-nvme"])]
    pub transport: Option<String>,
    #[arg(long)]
    pub thick: bool,
    /// Under persist/clear instead of the encrypted vault.
    #[arg(long)]
    pub clear: bool,
    #[arg(long, default_value = "16k")]
    pub volblocksize: String,
    #[arg(long)]
    pub vcpus: Option<u32>,
    /// Initial content: an image file (qcow2, raw, vmdk) or a zfs send stream.
    #[arg(long)]
    pub import: Option<PathBuf>,
    #[arg(long, value_parser = ["qcow2", "raw", "vmdk", "zfs-stream"], default_value = "qcow2")]
    pub format: String,
    #[arg(long)]
    pub json: bool,
}

pub fn raw_from_args(a: &CreateArgs) -> Result<(RawSpec, String), String> {
    if let Some(p) = &a.spec {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let label = p.display().to_string();
        return RawSpec::parse(&label, &text)
            .map(|r| (r, label))
            .map_err(|e| e.to_string());
    }
    let need =
        |v: &Option<String>, f: &str| v.clone().ok_or(format!("--{f} is required (or --spec)"));
    let transport = transport_arg(&need(&a.transport, "transport")?);
    let format = match a.format.as_str() {
        "raw" => Format::Raw,
        "vmdk" => Format::Vmdk,
        "zfs-stream" => Format::ZfsStream,
        _ => Format::Qcow2,
    };
    Ok((
        RawSpec {
            name: need(&a.name, "name")?,
            size: need(&a.size, "size")?,
            vm: need(&a.vm, "vm")?,
            transport,
            provisioning: if a.thick { "thick" } else { "thin" }.into(),
            volblocksize: a.volblocksize.clone(),
            encrypted: !a.clear,
            vcpus: a.vcpus,
            source: a.import.clone().map(|path| Source { path, format }),
            origin: None,
            snapshots: Vec::new(),
        },
        "command line".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(args: &[&str]) -> Result<(RawSpec, String), String> {
        let cli = Cli::try_parse_from(["storagectl", "volume", "create"].iter().chain(args))
            .map_err(|e| e.to_string())?;
        match cli.cmd {
            Cmd::Volume {
                cmd: VolCmd::Create(a),
                ..
            } => raw_from_args(&a),
            _ => Err("not a create".into()),
        }
    }

    #[test]
    fn create_options_become_a_spec_and_a_missing_one_is_named() {
        let (raw, label) = create(&[
            "db",
            "--size",
            "8G",
            "--vm",
            "vm1",
            "--transport",
            "nvme-tcp",
            "--clear",
            "--thick",
        ])
        .unwrap();
        assert_eq!(label, "command line");
        assert_eq!((raw.name.as_str(), raw.size.as_str()), ("db", "8G"));
        assert_eq!(raw.transport, Transport::NvmeTcp);
        assert!(!raw.encrypted && raw.provisioning == "thick");
        let e = create(&["db", "--vm", "vm1", "--transport", "nvme-tcp"]).unwrap_err();
        assert!(e.contains("--size is required"), "{e}");
        // clap refuses what it cannot mean: an unknown transport, a spec with options.
        assert!(create(&["db", "--transport", "iscsi"]).is_err());
        assert!(create(&["--spec", "/x.toml", "--size", "1G"]).is_err());
    }

    #[test]
    fn a_spec_file_that_cannot_be_read_is_named() {
        let e = create(&["--spec", "/nonexistent/vol.toml"]).unwrap_err();
        assert!(e.starts_with("/nonexistent/vol.toml: "), "{e}");
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NowOrStop {
    Now,
    Stop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Now {
    Now,
}

impl Cmd {
    /// The maintenance a `scrub` or `trim` command asks for.
    pub fn ask(&self) -> Option<storaged::maint::Ask> {
        use storaged::maint::Ask;
        match self {
            Cmd::Scrub {
                action: NowOrStop::Now,
                ..
            } => Some(Ask::ScrubNow),
            Cmd::Scrub {
                action: NowOrStop::Stop,
                ..
            } => Some(Ask::ScrubStop),
            Cmd::Trim { .. } => Some(Ask::TrimNow),
            _ => None,
        }
    }
}
