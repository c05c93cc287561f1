//! storagectl: the operator's view of the appliance's storage (pool status) and guest volumes.

use clap::{Args, Parser, Subcommand};
use platform::Roots;
use std::path::PathBuf;
use std::process::ExitCode;
use storage::host::RealHost;
use storage::status::{self, Member, Status};
use storage::{discover, zfs};
use volumes::config::Config;
use volumes::reconcile::Env;
use volumes::spec::{Format, RawSpec, Source, Transport};

#[derive(Parser)]
#[command(
    version,
    about = "Inspect the appliance's storage and manage guest volumes"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Pool health, members, capacity, datasets against their quotas, encryption and keys.
    Status {
        #[arg(long)]
        json: bool,
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
    Health {
        #[arg(long)]
        json: bool,
        /// Sizes in bytes instead of human units.
        #[arg(long)]
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
    /// The live nvmet configuration.
    Export {
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        cmd: ExportCmd,
    },
}

#[derive(Subcommand)]
enum VaultCmd {
    /// Unlock a locked vault with its recovery key (read from stdin: after a board or TPM change),
    /// then seal its key to this box's TPM so the next boot unlocks by itself.
    Recover {
        #[arg(long)]
        json: bool,
    },
    /// Make a new recovery key for the unlocked vault (the old one stops working) and print it
    /// once.
    RecoveryKey,
}

#[derive(Subcommand)]
enum DiskCmd {
    /// Every drive with its verdict, pool role, state, error counters and health; missing
    /// members; risks and alerts.
    List {
        #[arg(long)]
        json: bool,
        #[arg(long)]
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
    },
    /// Grow the pool with blank drives, within its layout: a stripe by any number, a mirror or
    /// raidz pool by whole groups as wide as its own (`disk add vdc vdd` adds a 2-way mirror).
    Add {
        #[arg(required = true)]
        drives: Vec<String>,
    },
    /// Take a member offline (it stops being read and written; a mirror keeps working).
    Offline { member: String },
    /// Bring an offline member back (ZFS resilvers what it missed).
    Online { member: String },
}

#[derive(Subcommand)]
enum ExportCmd {
    /// Write it in nvmetcli's JSON layout (to FILE, or stdout).
    Save { file: Option<PathBuf> },
}

#[derive(Subcommand)]
enum VolCmd {
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
    },
    /// Every volume with its size, space used (and by its snapshots), provisioning and state.
    List {
        #[arg(long)]
        json: bool,
        /// Sizes in bytes instead of human units.
        #[arg(long)]
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
        #[arg(long)]
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
    /// What a VM needs to connect: qemu arguments or the NVMe/TCP address, NQNs, secret reference.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// One reconcile pass now (`--dry-run` prints the plan only).
    Reconcile {
        #[arg(long)]
        dry_run: bool,
    },
    /// Accept the spool as it is now (after restoring or moving it): volumes whose spec files are
    /// missing from it are then deleted. Until then a lost or older spool deletes nothing.
    AdoptSpool,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct SnapshotArgs {
    #[command(subcommand)]
    cmd: Option<SnapCmd>,
    /// The volume.
    name: Option<String>,
    /// The snapshot's name [default: the UTC time, like 20261204T010203Z].
    snap: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum SnapCmd {
    /// Destroy a snapshot; refused while a clone depends on it.
    Delete { name: String, snapshot: String },
}

fn transport_arg(s: &str) -> Transport {
    match s {
        "nvme-tcp" => Transport::NvmeTcp,
        "nvme-loop" => Transport::NvmeLoop,
        "vhost-scsi" => Transport::VhostScsi,
        _ => Transport::VhostNvme,
    }
}

#[derive(Args)]
struct CreateArgs {
    /// A spec file; the options below are used when it is not given.
    #[arg(long, conflicts_with_all = ["name", "size", "vm", "transport"])]
    spec: Option<PathBuf>,
    name: Option<String>,
    #[arg(long)]
    size: Option<String>,
    #[arg(long)]
    vm: Option<String>,
    #[arg(long, value_parser = ["nvme-tcp", "nvme-loop", "vhost-scsi", "vhost-nvme"])]
    transport: Option<String>,
    #[arg(long)]
    thick: bool,
    /// Under persist/clear instead of the encrypted vault.
    #[arg(long)]
    clear: bool,
    #[arg(long, default_value = "16k")]
    volblocksize: String,
    #[arg(long)]
    vcpus: Option<u32>,
    /// Initial content: an image file (qcow2, raw, vmdk) or a zfs send stream.
    #[arg(long)]
    import: Option<PathBuf>,
    #[arg(long, value_parser = ["qcow2", "raw", "vmdk", "zfs-stream"], default_value = "qcow2")]
    format: String,
    #[arg(long)]
    json: bool,
}

fn raw_from_args(a: &CreateArgs) -> Result<(RawSpec, String), String> {
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

/// /dev/disk/by-partuuid/<x> -> (whole disk, its stable id).
fn disk_of(path: &str, devs: &[discover::BlockDev]) -> (Option<String>, Option<String>) {
    let Ok(real) = std::fs::canonicalize(path) else {
        return (None, None);
    };
    let part = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let disk = devs
        .iter()
        .find(|d| d.partitions.contains(&part) || d.name == part);
    (
        disk.map(|d| d.name.clone()),
        disk.map(|d| discover::stable_id(d).0),
    )
}

fn gather(pool: &str) -> Result<Status, storage::cmd::CmdError> {
    // No such pool is a status ("none imported"), not an error.
    let Ok(pools) = zfs::list_pools(Some(pool)) else {
        return Ok(Status {
            pool: None,
            members: vec![],
            datasets: vec![],
            vault: None,
            boot: Some(storage::vault::gather_binding(
                &mut RealHost::new(Roots::host()),
                pool,
            )),
        });
    };
    let info = pools.into_iter().next();
    let devs = discover::enumerate(&Roots::host());
    let st = storage::cmd::run(
        zfs::ZPOOL,
        &["status".into(), "-P".into(), pool.into()],
        None,
    )?;
    let members = status::parse_status_members(&st)
        .into_iter()
        .map(|(path, state)| {
            let (disk, stable_id) = disk_of(&path, &devs);
            Member {
                path,
                disk,
                stable_id,
                state,
            }
        })
        .collect();
    let props = zfs::get_recursive(pool, status::DATASET_PROPS)?;
    let datasets = status::datasets(&props);
    Ok(Status {
        pool: info,
        members,
        vault: Some(status::vault_view(pool, &datasets)),
        boot: Some(storage::vault::gather_binding(
            &mut RealHost::new(Roots::host()),
            pool,
        )),
        datasets,
    })
}

/// `storagectl status`: the pool's state with its maintenance schedule.
#[derive(serde::Serialize)]
struct FullStatus {
    #[serde(flatten)]
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    maintenance: Option<storaged::maint::View>,
    /// Why the maintenance view could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    maintenance_error: Option<String>,
    /// The alerts storaged's last health look left in the journal on the pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    alerts: Option<Vec<storaged::journal::Active>>,
}

/// Prints a result as JSON or as text, or its error chain; the exit code follows.
fn emit<T: serde::Serialize, E: std::error::Error>(
    r: Result<T, E>,
    json: bool,
    text: impl Fn(&T) -> String,
) -> ExitCode {
    match r {
        Ok(v) if json => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(v) => {
            print!("{}", text(&v));
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn vault(pool: &str, cmd: VaultCmd) -> ExitCode {
    use storage::vault;
    match cmd {
        VaultCmd::Recover { json } => {
            let mut line = zeroize::Zeroizing::new(String::new());
            if let Err(e) = std::io::stdin().read_line(&mut line) {
                eprintln!("storagectl: reading the recovery key on stdin: {e}");
                return ExitCode::FAILURE;
            }
            let rk = match vault::RecoveryKey::parse(&line) {
                Ok(k) => k,
                Err(e) => return fail(&e),
            };
            // The policy in force on this pool (its PCRs), as storage-init last kept it.
            let enc = storage::config::last_good_policy(pool)
                .map(|p| p.encryption)
                .unwrap_or_else(|| storage::policy::Policy::builtin().encryption);
            let mut host = RealHost::new(Roots::host());
            let sb = vault::secure_boot(&host.roots.sys);
            let r = vault::recover(&mut host, pool, &rk, &enc, sb);
            if let Ok(v) = &r {
                if v.unlocked {
                    storage::config::record_vault_state(&Roots::host(), pool, "unlocked");
                }
            }
            emit(r, json, |v| {
                if !v.unlocked {
                    format!("{}: already unlocked; nothing changed\n", v.vault)
                } else {
                    format!(
                        "{}: unlocked with the recovery key; {}\n",
                        v.vault,
                        match &v.sealed_to {
                            Some(b) => format!(
                                "its key is now sealed to {b}: the next boot unlocks by itself"
                            ),
                            None =>
                                "no TPM here: the next boot needs the recovery key again".into(),
                        }
                    )
                }
            })
        }
        VaultCmd::RecoveryKey => {
            match vault::new_recovery_key(&mut RealHost::new(Roots::host()), pool) {
                Ok(rk) => {
                    println!("{}", rk.display());
                    eprintln!("storagectl: new recovery key for {pool}/vault (the old one no longer works); it is not stored anywhere");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
    }
}

fn fail(e: &dyn std::error::Error) -> ExitCode {
    eprintln!("storagectl: {}", platform::chain(e));
    ExitCode::FAILURE
}

/// The volume settings (layered, see `Config::load_layered`) on this host's kernel trees.
fn host_env(config: Option<&std::path::Path>) -> volumes::Result<Env<'static>> {
    Ok(Env {
        roots: platform::Roots::host(),
        cfg: Config::load_layered(config)?,
        fs: &ktarget::HostFs,
        // Every CLI pass is a full re-read.
        cache: None,
    })
}

fn volume(config: Option<&std::path::Path>, cmd: VolCmd) -> ExitCode {
    let env = match host_env(config) {
        Ok(e) => e,
        Err(e) => return fail(&e),
    };
    let shown = |r: volumes::Result<volumes::ops::Shown>, json: bool| emit(r, json, |s| s.render());
    match cmd {
        VolCmd::Create(a) => match raw_from_args(&a) {
            Ok((raw, label)) => shown(volumes::ops::create(&env, &raw, &label), a.json),
            Err(m) => {
                eprintln!("storagectl: {m}");
                ExitCode::from(2)
            }
        },
        VolCmd::Resize { name, size, json } => {
            shown(volumes::ops::resize(&env, &name, &size), json)
        }
        VolCmd::Show { name, json } => shown(volumes::ops::show(&env, &name), json),
        VolCmd::Iostat {
            names,
            interval,
            json,
        } => iostat(&env.cfg.pool, &names, interval, json),
        VolCmd::Delete { name, force } => match volumes::ops::delete(&env, &name, force) {
            Ok(()) => {
                println!("deleted {name}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        VolCmd::List { json, bytes } => emit(volumes::ops::list(&env), json, |l| l.render(bytes)),
        VolCmd::Snapshot(SnapshotArgs {
            cmd: Some(SnapCmd::Delete { name, snapshot }),
            ..
        }) => match volumes::ops::snapshot_delete(&env, &name, &snapshot) {
            Ok(()) => {
                println!("deleted {name}@{snapshot}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        VolCmd::Snapshot(SnapshotArgs {
            name: Some(name),
            snap,
            json,
            ..
        }) => emit(
            volumes::ops::snapshot(&env, &name, snap.as_deref()),
            json,
            |s| format!("{name}@{}\n", s.name),
        ),
        VolCmd::Snapshot(_) => {
            eprintln!("storagectl: volume snapshot needs a volume name (or `delete NAME SNAP`)");
            ExitCode::from(2)
        }
        VolCmd::Snapshots { name, json, bytes } => {
            emit(volumes::ops::snapshots(&env, &name), json, |l| {
                l.render(bytes)
            })
        }
        VolCmd::Rollback {
            name,
            snapshot,
            destroy_newer,
            force,
        } => match volumes::ops::rollback(&env, &name, &snapshot, destroy_newer, force) {
            Ok(_) => {
                println!("{name} rolled back to {snapshot}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        VolCmd::Clone {
            new,
            from,
            vm,
            transport,
            json,
        } => shown(
            volumes::ops::clone(
                &env,
                &new,
                &from,
                vm.as_deref(),
                transport.as_deref().map(transport_arg),
            ),
            json,
        ),
        VolCmd::AdoptSpool => match volumes::ops::adopt_spool(&env) {
            Ok(m) => {
                println!("{m}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        VolCmd::Reconcile { dry_run } => {
            let r = env
                .check_vault()
                .and_then(|_| volumes::reconcile::lock(&env.roots))
                .and_then(|_l| volumes::reconcile::pass(&env, dry_run));
            match r {
                Ok((p, rep)) => {
                    if dry_run {
                        print!("{}", p.render());
                    } else {
                        println!("{} steps, {} changed", rep.steps.len(), rep.changed());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
    }
}

#[derive(serde::Serialize)]
struct VolumeRates {
    volume: String,
    dataset: String,
    device: String,
    #[serde(flatten)]
    rates: storaged::iostat::Rates,
}

fn iostat(pool: &str, names: &[String], interval: f64, json: bool) -> ExitCode {
    use storaged::iostat;
    if !(0.1..=3600.0).contains(&interval) {
        eprintln!("storagectl: --interval {interval}: give 0.1 to 3600 seconds");
        return ExitCode::from(2);
    }
    let roots = Roots::host();
    let pick = |v: &iostat::VolumeIo| names.is_empty() || names.contains(&v.volume);
    let a: Vec<_> = iostat::volumes(&roots, pool)
        .into_iter()
        .filter(pick)
        .collect();
    if let Some(n) = names.iter().find(|n| !a.iter().any(|v| &v.volume == *n)) {
        eprintln!("storagectl: {n}: no such volume with a device in pool {pool}");
        return ExitCode::FAILURE;
    }
    let t0 = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_secs_f64(interval));
    let b = iostat::volumes(&roots, pool);
    let secs = t0.elapsed().as_secs_f64();
    let rows: Vec<VolumeRates> = a
        .iter()
        .filter_map(|x| {
            let y = b
                .iter()
                .find(|y| y.dataset == x.dataset && y.device == x.device)?;
            Some(VolumeRates {
                volume: x.volume.clone(),
                dataset: x.dataset.clone(),
                device: x.device.clone(),
                rates: iostat::rates(&x.stat, &y.stat, secs),
            })
        })
        .collect();
    emit(Ok::<_, storaged::Error>(rows), json, |rows| {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        let mut s = format!(
            "{:<20} {:<6} {:>9} {:>9} {:>10} {:>10} {:>9} {:>9} {:>5}\n",
            "VOLUME",
            "DEVICE",
            "READ/s",
            "WRITE/s",
            "READ B/s",
            "WRITE B/s",
            "R-LAT ms",
            "W-LAT ms",
            "BUSY"
        );
        for r in rows {
            let x = &r.rates;
            s.push_str(&format!(
                "{:<20} {:<6} {:>9.1} {:>9.1} {:>10} {:>10} {:>9} {:>9} {:>4.0}%\n",
                r.volume,
                r.device,
                x.read_iops,
                x.write_iops,
                storage::policy::human(x.read_bytes_per_sec as u64),
                storage::policy::human(x.write_bytes_per_sec as u64),
                ms(x.read_latency_ms),
                ms(x.write_latency_ms),
                x.busy_pct
            ));
        }
        s.push_str(&format!("over {secs:.1} s\n"));
        s
    })
}

/// Waits for a resilver of `pool` to finish, its progress on stderr.
fn wait_resilver(pool: &str) -> Result<(), storaged::Error> {
    let mut last = String::new();
    loop {
        let st = storaged::cmd::status(pool)?;
        match st.scan.as_ref().filter(|s| s.running()) {
            Some(s) => {
                let line = format!("{} {:.0}%", s.function.to_lowercase(), s.percent());
                if line != last {
                    eprintln!("storagectl: {pool}: {line}");
                    last = line;
                }
            }
            None => {
                let r = st
                    .scan
                    .map(|s| format!("{} {}", s.function.to_lowercase(), s.state.to_lowercase()));
                eprintln!(
                    "storagectl: {pool}: {} ({})",
                    st.state,
                    r.unwrap_or_else(|| "no scan".into())
                );
                return Ok(());
            }
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}

fn disk(pool: &str, cmd: DiskCmd) -> ExitCode {
    use storaged::disks;
    match cmd {
        DiskCmd::List { json, bytes } => emit(disks::list(pool), json, |l| l.render(bytes)),
        DiskCmd::Replace { old, new, no_wait } => {
            let r = disks::replace(pool, &old, &new).and_then(|part| {
                println!("{old} is being replaced by {new} ({part})");
                if no_wait {
                    Ok(())
                } else {
                    wait_resilver(pool)
                }
            });
            match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
        DiskCmd::Add { drives } => match disks::add(pool, &drives) {
            Ok(parts) => {
                println!(
                    "pool {pool} grew by {} ({})",
                    drives.join(", "),
                    parts.join(", ")
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        DiskCmd::Offline { member } => match disks::set_online(pool, &member, false) {
            Ok(n) => {
                println!("{n} is offline");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        DiskCmd::Online { member } => match disks::set_online(pool, &member, true) {
            Ok(n) => {
                println!("{n} is online");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
    }
}

fn main() -> ExitCode {
    match Cli::parse().cmd {
        Cmd::Disk { pool, cmd } => disk(&pool, cmd),
        Cmd::Health { json, bytes, pool } => {
            let v = storaged::health_view(&pool, std::path::Path::new("/"));
            emit(Ok::<_, storaged::Error>(v), json, |v| v.render(bytes))
        }
        Cmd::Status { json, pool } => {
            let r = gather(&pool).map(|status| {
                // Maintenance is shown once the pool is there; a failure to read it is said.
                let m = status
                    .pool
                    .as_ref()
                    .map(|_| storaged::view(&pool, std::path::Path::new("/")));
                let (maintenance, maintenance_error) = match m {
                    Some(Ok(v)) => (Some(v), None),
                    Some(Err(e)) => (None, Some(platform::chain(&e))),
                    None => (None, None),
                };
                let alerts = status.pool.as_ref().and_then(|_| {
                    storaged::journal::Journal::load(&storaged::journal::path(
                        std::path::Path::new("/"),
                        &pool,
                    ))
                    .ok()
                    .map(|j| j.active)
                });
                FullStatus {
                    status,
                    maintenance,
                    maintenance_error,
                    alerts,
                }
            });
            emit(r, json, |s| {
                let mut t = status::render(&s.status);
                if let Some(v) = &s.maintenance {
                    t.push_str(&v.render());
                }
                if let Some(e) = &s.maintenance_error {
                    t.push_str(&format!("maintenance: unknown ({e})\n"));
                }
                if let Some(a) = &s.alerts {
                    use storaged::health::Severity::*;
                    let n = |sev| a.iter().filter(|x| x.alert.severity == sev).count();
                    t.push_str(&if a.is_empty() {
                        "health: no alerts recorded (storagectl health looks now)\n".to_string()
                    } else {
                        format!(
                            "health: {} critical, {} warning, {} notice at storaged's last look (storagectl health)\n",
                            n(Critical),
                            n(Warning),
                            n(Notice)
                        )
                    });
                }
                t
            })
        }
        Cmd::Volume { config, cmd } => volume(config.as_deref(), cmd),
        Cmd::Vault { pool, cmd } => vault(&pool, cmd),
        Cmd::Export {
            config,
            cmd: ExportCmd::Save { file },
        } => {
            let env = match host_env(config.as_deref()) {
                Ok(e) => e,
                Err(e) => return fail(&e),
            };
            match volumes::ops::export_save(&env) {
                Ok(j) => {
                    let text = serde_json::to_string_pretty(&j).unwrap_or_default() + "\n";
                    match file {
                        Some(f) => match volumes::ids::write_private(&f, text.as_bytes()) {
                            Ok(()) => ExitCode::SUCCESS,
                            Err(e) => fail(&e),
                        },
                        None => {
                            print!("{text}");
                            ExitCode::SUCCESS
                        }
                    }
                }
                Err(e) => fail(&e),
            }
        }
    }
}
