//! eve-bench (`make bench`): boots the appliance under qemu and measures, in one run, guest-disk
//! data paths side by side (zvol, nvmet loop and TCP, LIO through tcm_loop, a qcow2 served by
//! qemu's block layer), scaling with the number of disks, bring-up and control-plane times, and
//! footprint. Prints a Markdown table and writes it with a JSON file under the results folder.
//! Figures, not assertions: correctness of each path is checked by the VM tests.

use clap::Parser;
use eve_vmtest::bench::{self, median, FioResult, PathRun, Report, ScaleRun, Target};
use eve_vmtest::{test_dir, DiskKind, DiskSpec, Machine, MachineSpec};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Benchmark the appliance's guest-disk paths and control plane")]
struct Cli {
    #[arg(long, default_value = "out/eve-storage-dev.raw")]
    image: PathBuf,
    #[arg(long, default_value = "results")]
    out: PathBuf,
    /// Seconds per fio run.
    #[arg(long, default_value_t = 4)]
    runtime: u32,
    /// Volume counts for the control plane, each exported from scratch on top of the previous.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    volumes: Vec<usize>,
    /// Sections to run (all by default).
    #[arg(long, value_delimiter = ',', value_enum)]
    only: Vec<SectionName>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SectionName {
    DataPaths,
    Scaling,
    ControlPlane,
}

type R<T> = Result<T, String>;
/// One section of the benchmark.
type Section = fn(&mut Machine, &Cli, &mut Report) -> R<()>;

fn e<E: std::fmt::Display>(x: E) -> String {
    x.to_string()
}

fn sh(m: &mut Machine, cmd: &str) -> R<String> {
    m.ok(cmd).map_err(e)
}

/// Wall time of a guest command, from the kernel's uptime (busybox `date` has no %N); fails with
/// the command's output when it fails.
fn timed(m: &mut Machine, cmd: &str) -> R<u64> {
    let out = sh(
        m,
        &format!(
            "cut -d' ' -f1 /proc/uptime; ( {cmd} ) >/run/timed.log 2>&1; rc=$?; cut -d' ' -f1 /proc/uptime; \
             [ $rc = 0 ] || {{ cat /run/timed.log; echo rc=$rc; }}"
        ),
    )?;
    let lines: Vec<&str> = out.lines().collect();
    if lines.len() != 2 {
        return Err(format!("`{cmd}` failed: {}", lines[1..].join("\n")));
    }
    let t: Vec<f64> = lines
        .iter()
        .map(|l| l.trim().parse::<f64>().map_err(e))
        .collect::<R<_>>()?;
    Ok(((t[1] - t[0]) * 1000.0).round() as u64)
}

fn log(msg: impl std::fmt::Display) {
    eprintln!("eve-bench: {msg}");
}

fn onboot_ms(m: &mut Machine, step: &str) -> R<u64> {
    let st: Value = serde_json::from_str(&sh(m, "eve-init status --json")?).map_err(e)?;
    st["onboot"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == step))
        .and_then(|s| Some(s["finished_ms"].as_u64()? - s["started_ms"].as_u64()?))
        .ok_or(format!("no onboot step {step} in eve-init status"))
}

fn rss_kib(m: &mut Machine, proc_name: &str) -> R<u64> {
    let out = sh(
        m,
        &format!("for p in $(pidof {proc_name}); do grep VmRSS /proc/$p/status; done | awk '{{s+=$2}} END {{print s+0}}'"),
    )?;
    out.trim().parse().map_err(e)
}

fn meminfo(m: &mut Machine, field: &str) -> R<u64> {
    bench::meminfo_kib(&sh(m, "cat /proc/meminfo")?, field).ok_or(format!("no {field}"))
}

/// One fio run with the whole machine's busy CPU time around it.
fn fio(m: &mut Machine, jobs: &[String], args: &str) -> R<(FioResult, f64)> {
    let files: String = jobs
        .iter()
        .enumerate()
        .map(|(i, f)| format!(" --name=j{i} --filename={f}"))
        .collect();
    let out = sh(
        m,
        &format!(
            "head -1 /proc/stat > /run/s0; fio --output-format=json --output=/run/fio.json {args}{files} \
             >/run/fio.err 2>&1; rc=$?; head -1 /proc/stat > /run/s1; [ $rc = 0 ] || cat /run/fio.err; \
             cat /run/s0 /run/s1; echo ===; cat /run/fio.json"
        ),
    )?;
    let (stats, json) = out.split_once("===").ok_or("no fio output")?;
    let lines: Vec<&str> = stats.lines().filter(|l| l.starts_with("cpu ")).collect();
    if lines.len() != 2 {
        return Err(format!("fio failed: {stats}"));
    }
    let t0 = bench::busy_ticks(lines[0])?;
    let t1 = bench::busy_ticks(lines[1])?;
    let r = bench::parse_fio(json)?;
    if r.errors > 0 {
        return Err(format!("fio reported {} errors", r.errors));
    }
    Ok((r, (t1 - t0) as f64 / 100.0))
}

fn show(m: &mut Machine, name: &str) -> R<Value> {
    serde_json::from_str(&sh(m, &format!("storagectl volume show {name} --json"))?).map_err(e)
}

/// Connects this host to a volume's NVMe/TCP export as its VM; returns the block device.
fn connect_tcp(m: &mut Machine, name: &str) -> R<String> {
    let s = show(m, name)?;
    let vm = s["vm"].as_str().unwrap_or_default();
    let h: Value = serde_json::from_slice(
        &m.read_file(&format!("/persist/config/volumes/state/hosts/{vm}.json"))
            .map_err(e)?,
    )
    .map_err(e)?;
    let nqn = s["subsystem_nqn"].as_str().unwrap_or_default().to_string();
    sh(
        m,
        &format!(
            "nvme connect -t tcp -a 127.0.0.1 -s 4420 -n {nqn} -q {} -I {} --dhchap-secret={} --dhchap-ctrl-secret={} >/dev/null",
            s["host_nqn"].as_str().unwrap_or_default(),
            s["host_id"].as_str().unwrap_or_default(),
            h["key"].as_str().unwrap_or_default(),
            h["ctrl_key"].as_str().unwrap_or_default()
        ),
    )?;
    wait_dev(m, &format!(
        "for s in /sys/class/nvme-subsystem/*; do [ \"$(cat $s/subsysnqn)\" = {nqn} ] && ls $s | grep -E '^nvme[0-9]+n[0-9]+$' | head -1; done; true"
    ))
}

fn wait_dev(m: &mut Machine, find: &str) -> R<String> {
    let t0 = Instant::now();
    loop {
        let d = sh(m, find)?.trim().to_string();
        if !d.is_empty() {
            return Ok(format!("/dev/{d}"));
        }
        if t0.elapsed() > Duration::from_secs(60) {
            return Err(format!("no device from `{find}`"));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A LUN through tcm_loop on a vhost-scsi volume's backstore: the path vhost-scsi uses, seen on
/// this host as a SCSI disk.
fn tcm_loop(m: &mut Machine, name: &str, i: usize) -> R<String> {
    let t = "/sys/kernel/config/target";
    let lb = format!("{t}/loopback/naa.50014050000001{i:02x}/tpgt_1");
    let before = sh(m, "ls /sys/block | grep ^sd; true")?;
    sh(
        m,
        &format!(
            "mkdir -p {lb}/lun/lun_0 && echo naa.50014050000002{i:02x} > {lb}/nexus && ln -s {t}/core/iblock_100/{name} {lb}/lun/lun_0/{name}"
        ),
    )?;
    let t0 = Instant::now();
    loop {
        let now = sh(m, "ls /sys/block | grep ^sd; true")?;
        if let Some(d) = now.lines().find(|l| !before.lines().any(|b| b == *l)) {
            return Ok(format!("/dev/{d}"));
        }
        if t0.elapsed() > Duration::from_secs(60) {
            return Err(format!("no tcm_loop disk for {name}"));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A qcow2 on a ZFS dataset served by qemu's block layer (qemu-nbd) to the kernel's NBD client:
/// one qemu block layer per disk, as today's design has one per VM.
fn qemu_nbd(m: &mut Machine, i: usize, size: &str) -> R<String> {
    sh(
        m,
        &format!(
            "zfs list -H persist/bench >/dev/null 2>&1 || zfs create -o mountpoint=/persist/bench persist/bench; \
             qemu-img create -q -f qcow2 /persist/bench/d{i}.qcow2 {size} && \
             qemu-nbd -c /dev/nbd{i} -k /run/qemu-nbd{i}.sock -f qcow2 --cache=none --aio=threads /persist/bench/d{i}.qcow2"
        ),
    )?;
    Ok(format!("/dev/nbd{i}"))
}

const WORKLOADS: [(&str, &str, &str); 4] = [
    ("randread-4k", "randread", "4k"),
    ("randwrite-4k", "randwrite", "4k"),
    ("seqread-128k", "read", "128k"),
    ("seqwrite-128k", "write", "128k"),
];

fn data_paths(m: &mut Machine, cli: &Cli, rep: &mut Report) -> R<()> {
    log("data paths: creating one volume per path");
    // Enough NBD devices for the scaling section too.
    sh(m, "modprobe nbd nbds_max=32")?;
    for (n, t) in [
        ("bz", "nvme-tcp"),
        ("bl", "nvme-loop"),
        ("bt", "nvme-tcp"),
        ("bs", "vhost-scsi"),
    ] {
        sh(
            m,
            &format!(
                "storagectl volume create {n} --size 1G --vm bench --transport {t} >/dev/null"
            ),
        )?;
    }
    let mut paths = vec![
        (
            "1 zvol".to_string(),
            "/dev/zvol/persist/vault/volumes/bz".to_string(),
        ),
        (
            "2 nvmet loop".into(),
            show(m, "bl")?["host_device"]
                .as_str()
                .unwrap_or_default()
                .into(),
        ),
        ("3 nvmet tcp".into(), connect_tcp(m, "bt")?),
        ("4 LIO tcm_loop".into(), tcm_loop(m, "bs", 0)?),
    ];
    paths.push(("5 qemu qcow2 (nbd)".into(), qemu_nbd(m, 0, "1G")?));
    for (name, dev) in &paths {
        log(format!("{name}: {dev}: preconditioning"));
        sh(m, &format!("fio --name=pre --filename={dev} --rw=write --bs=1M --size=256M --direct=1 --ioengine=libaio --iodepth=8 >/dev/null"))?;
    }
    for (w, rw, bs) in WORKLOADS {
        for qd in [1u32, 32] {
            for (name, dev) in &paths {
                let args = format!(
                    "--rw={rw} --bs={bs} --iodepth={qd} --ioengine=libaio --direct=1 --size=256M \
                     --time_based --runtime={} --ramp_time=1 --norandommap --randrepeat=1",
                    cli.runtime
                );
                let (f, cpu) = fio(m, std::slice::from_ref(dev), &args)?;
                log(format!(
                    "{name} {w} qd{qd}: {:.0} IOPS, {cpu:.2} CPU s",
                    f.iops
                ));
                rep.paths.push(PathRun {
                    path: name.clone(),
                    workload: w.into(),
                    qd,
                    cpu_s_per_gib: bench::cpu_per_gib(cpu, f.io_bytes),
                    fio: f,
                    cpu_s: cpu,
                });
            }
        }
    }
    Ok(())
}

fn scaling(m: &mut Machine, cli: &Cli, rep: &mut Report) -> R<()> {
    let ns = [1usize, 4, 16];
    let max = 16;
    let args = format!(
        "--rw=randwrite --bs=4k --iodepth=4 --ioengine=libaio --direct=1 --size=64M --time_based \
         --runtime={} --ramp_time=1 --norandommap",
        cli.runtime
    );
    for path in [
        "zvol",
        "nvmet loop",
        "nvmet tcp",
        "LIO tcm_loop",
        "qemu qcow2 (nbd)",
    ] {
        log(format!("scaling: {path}: attaching {max} disks"));
        let slab0 = meminfo(m, "Slab")?;
        let vd0 = rss_kib(m, "volumed")?;
        let mut devs = Vec::new();
        for i in 0..max {
            let tag = match path {
                "zvol" => "sz",
                "nvmet loop" => "sl",
                "nvmet tcp" => "st",
                "LIO tcm_loop" => "ss",
                _ => "sq",
            };
            let name = format!("{tag}{i}");
            let dev = match path {
                "zvol" | "nvmet tcp" => {
                    sh(m, &format!("storagectl volume create {name} --size 256M --vm s{i} --transport nvme-tcp >/dev/null"))?;
                    if path == "zvol" {
                        format!("/dev/zvol/persist/vault/volumes/{name}")
                    } else {
                        connect_tcp(m, &name)?
                    }
                }
                "nvmet loop" => {
                    sh(m, &format!("storagectl volume create {name} --size 256M --vm s{i} --transport nvme-loop >/dev/null"))?;
                    show(m, &name)?["host_device"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                }
                "LIO tcm_loop" => {
                    sh(m, &format!("storagectl volume create {name} --size 256M --vm s{i} --transport vhost-scsi >/dev/null"))?;
                    tcm_loop(m, &name, i + 1)?
                }
                _ => qemu_nbd(m, i + 1, "256M")?,
            };
            devs.push(dev);
        }
        let slab1 = meminfo(m, "Slab")?;
        let mem = if path.starts_with("qemu") {
            rss_kib(m, "qemu-nbd")? as f64 / max as f64
        } else {
            (slab1.saturating_sub(slab0) + rss_kib(m, "volumed")?.saturating_sub(vd0)) as f64
                / max as f64
        };
        for n in ns {
            let (f, cpu) = fio(m, &devs[..n], &args)?;
            let ios = f.iops * cli.runtime as f64;
            log(format!("scaling: {path} N={n}: {:.0} IOPS", f.iops));
            rep.scale.push(ScaleRun {
                path: path.into(),
                n,
                cpu_us_per_io: if ios > 0.0 { cpu * 1e6 / ios } else { 0.0 },
                mem_kib_per_disk: if n == max { mem } else { 0.0 },
                fio: f,
                cpu_s: cpu,
            });
        }
    }
    Ok(())
}

/// One daemon pass on request: SIGUSR1, then wait for its record in `/run/volumed.json` to
/// move on. Returns the record.
fn daemon_pass(m: &mut Machine) -> R<Value> {
    let seq = r#"sed -n 's/.*"seq":\([0-9]*\).*/\1/p' /run/volumed.json"#;
    let out = sh(
        m,
        &format!(
            "s=$({seq}); kill -USR1 $(pidof volumed); i=0; \
             while n=$({seq}); [ \"$n\" -le \"$s\" ]; do i=$((i+1)); [ $i -lt 3000 ] || exit 1; sleep 0.1; done; \
             cat /run/volumed.json"
        ),
    )?;
    serde_json::from_str(out.trim()).map_err(|x| format!("/run/volumed.json: {x}: {out}"))
}

/// Stops the daemon between passes (holding the pass lock), or the CLI would wait for a lock a
/// stopped daemon holds.
fn hold_daemon(m: &mut Machine) -> R<()> {
    sh(
        m,
        "/usr/bin/flock /run/volumes.lock sh -c 'kill -STOP $(pidof volumed)'",
    )
    .map(|_| ())
}

fn control_plane(m: &mut Machine, cli: &Cli, rep: &mut Report) -> R<()> {
    // Hold the daemon still so the CLI's passes are measured alone.
    hold_daemon(m)?;
    let mut have = 0;
    for &n in &cli.volumes {
        log(format!("control plane: {n} volumes"));
        // The physical limit of this box for the same work: a bare shell loop of `zfs create -V`
        // under the same encrypted vault, same size, one after another; then gone again.
        sh(m, "zfs create -o mountpoint=none persist/vault/bare")?;
        let bare = timed(
            m,
            &format!(
                "i=0; while [ $i -lt {n} ]; do zfs create -s -V 16M persist/vault/bare/b$i || exit 1; i=$((i + 1)); done"
            ),
        )?;
        sh(m, "zfs destroy -r persist/vault/bare")?;
        // A loop in the guest: a thousand specs would not fit one console command.
        sh(
            m,
            &format!(
                "cd /persist/config/volumes/specs && i={have}; while [ $i -lt {} ]; do \
                 printf 'name = \"c%d\"\\nsize = \"16M\"\\nvm = \"c%d\"\\ntransport = \"nvme-tcp\"\\n' $i $((i % 10)) > c$i.toml; \
                 i=$((i + 1)); done",
                have + n
            ),
        )?;
        let ms = timed(m, "storagectl volume reconcile")?;
        rep.times_ms
            .insert(format!("export {n} new volumes (zvol + nvmet)"), ms);
        rep.times_ms
            .insert(format!("bare `zfs create -s -V` loop, {n} zvols"), bare);
        rep.targets.push(Target {
            what: format!("export {n} new volumes"),
            ours_ms: ms,
            baseline: format!("bare `zfs create -s -V` loop of {n}"),
            baseline_ms: bare,
            max_ratio: 1.5,
            max_ms: None,
        });
        have += n;
        // The sections before leave their volumes too; the pass covers them all.
        let all = sh(m, "ls /persist/config/volumes/specs | wc -l")?;
        let all = all.trim();
        let full = timed(m, "storagectl volume reconcile")?;
        rep.times_ms.insert(
            format!("no-op pass, CLI (full re-read), {have} volumes ({all} in all)"),
            full,
        );
        // The pass's own breakdown (logged when it takes over 2 s): where the time grows.
        let why = sh(m, "grep -o 'pass: .*' /run/timed.log || true")?;
        if !why.trim().is_empty() {
            rep.notes
                .push(format!("no-op CLI pass with {all} volumes: {}", why.trim()));
        }
        let mut list = Vec::new();
        for _ in 0..3 {
            list.push(timed(m, "zfs list -H -o name -t volume >/dev/null")?);
        }
        // The daemon as it runs on the box: its first passes after the CLI's work read
        // everything again (links changed); the next three are what an idle pass costs.
        sh(m, "kill -CONT $(pidof volumed)")?;
        let mut passes = Vec::new();
        let mut last = Value::Null;
        for i in 0..5 {
            let r = daemon_pass(m)?;
            if i >= 2 {
                passes.push(r["ms"].as_u64().ok_or("volumed.json: no ms")?);
            }
            last = r;
        }
        hold_daemon(m)?;
        let (list_ms, pass_ms) = (median(&list), median(&passes));
        rep.times_ms.insert(
            format!("`zfs list -H -o name -t volume`, {all} volumes (median of 3)"),
            list_ms,
        );
        rep.times_ms.insert(
            format!("no-op pass, daemon, {all} volumes (median of 3)"),
            pass_ms,
        );
        rep.notes.push(format!(
            "idle daemon pass with {all} volumes: {:?} ms; the last: {}",
            passes,
            last["breakdown"].as_str().unwrap_or("-")
        ));
        rep.targets.push(Target {
            what: format!("no-op daemon pass, {all} volumes"),
            ours_ms: pass_ms,
            baseline: format!("`zfs list -H -o name -t volume`, {all} volumes"),
            baseline_ms: list_ms,
            max_ratio: 2.0,
            max_ms: Some(2000),
        });
    }
    sh(m, "kill -CONT $(pidof volumed)")?;
    Ok(())
}

fn storage_policy(no_new_drives: bool) -> Vec<u8> {
    let base = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../rootfs/etc/storage.toml"),
    )
    .unwrap_or_default();
    base.replace(
        "[pool]\n",
        &format!("[pool]\nadd_new_drives = {}\n", !no_new_drives),
    )
    .into_bytes()
}

fn run(cli: &Cli) -> R<Report> {
    let mut rep = Report::default();
    let dir = test_dir("bench");
    std::fs::create_dir_all(&dir).map_err(e)?;
    let mut spec = MachineSpec::new("bench", &cli.image);
    spec.disks = (1..=4)
        .map(|i| DiskSpec::blank(DiskKind::Nvme, 2048, &format!("BENCH{i}")))
        .collect();
    spec.memory_mib = 3072;
    spec.command_timeout = Duration::from_secs(900);
    // Keep the fifth disk (added later) out of the pool: it gets today's ext4 /persist.
    spec.config_files = vec![("storage.toml".into(), storage_policy(true))];
    let mut m = Machine::create(spec, &dir.join("vm")).map_err(e)?;
    log("first boot (storage-init creates the pool on 4 disks)");
    m.boot().map_err(e)?;
    rep.times_ms.insert(
        "storage-init, first boot, 4 disks".into(),
        onboot_ms(&mut m, "storage-init")?,
    );
    m.poweroff().map_err(e)?;
    m.attach_disk(&DiskSpec::blank(DiskKind::Nvme, 2048, "EXT4"))
        .map_err(e)?;
    log("second boot (import)");
    m.boot().map_err(e)?;
    rep.times_ms.insert(
        "storage-init, later boot, 4 disks".into(),
        onboot_ms(&mut m, "storage-init")?,
    );
    sh(&mut m, "modprobe ext4")?;
    let ext = wait_dev(
        &mut m,
        // Namespace heads only (nvmeXnY), not the hidden per-path nvmeXcYnZ.
        "for d in $(ls /sys/block | grep -E '^nvme[0-9]+n1$'); do grep -q EXT4 /sys/block/$d/device/serial && echo $d; done; true",
    )?;
    let ms = timed(
        &mut m,
        &format!("mkfs.ext4 -q -F {ext} && mkdir -p /run/ext4 && mount -t ext4 {ext} /run/ext4"),
    )?;
    rep.times_ms
        .insert("today: mkfs.ext4 + mount one disk".into(), ms);
    sh(&mut m, "umount /run/ext4")?;
    let ms = timed(&mut m, &format!("mount -t ext4 {ext} /run/ext4"))?;
    rep.times_ms
        .insert("today: mount ext4 (later boot)".into(), ms);

    for (k, p) in [
        ("kernel", "uname -r"),
        ("zfs", "cat /sys/module/zfs/version"),
        ("qemu", "qemu-img --version | head -1"),
        ("fio", "fio --version"),
        ("guest CPUs", "nproc"),
    ] {
        rep.env.insert(k.into(), sh(&mut m, p)?.trim().to_string());
    }
    rep.env.insert(
        "accelerator".into(),
        "TCG (no KVM): absolute numbers mean little, ratios do".into(),
    );
    for d in ["volumed", "zed", "eve-agent"] {
        rep.footprint
            .insert(format!("idle RSS KiB: {d}"), rss_kib(&mut m, d)?);
    }
    rep.footprint.insert(
        "idle RSS KiB: eve-init (PID 1)".into(),
        sh(&mut m, "grep VmRSS /proc/1/status | awk '{print $2}'")?
            .trim()
            .parse()
            .map_err(e)?,
    );
    let bins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    for (b, d) in [
        ("eve-init", "static/x86_64-unknown-linux-gnu/release"),
        ("eve-agent", "static/x86_64-unknown-linux-gnu/release"),
        ("storage-init", "x86_64-unknown-linux-gnu/release"),
        ("storagectl", "x86_64-unknown-linux-gnu/release"),
        ("volumed", "x86_64-unknown-linux-gnu/release"),
        ("abupdate", "x86_64-unknown-linux-gnu/release"),
    ] {
        if let Ok(md) = std::fs::metadata(bins.join(d).join(b)) {
            rep.footprint.insert(format!("binary bytes: {b}"), md.len());
        }
    }

    let steps: [(SectionName, &str, Section); 3] = [
        (SectionName::DataPaths, "data paths", data_paths),
        (SectionName::Scaling, "scaling", scaling),
        (SectionName::ControlPlane, "control plane", control_plane),
    ];
    for (id, name, f) in steps {
        if !cli.only.is_empty() && !cli.only.contains(&id) {
            continue;
        }
        let t0 = Instant::now();
        if let Err(x) = f(&mut m, cli, &mut rep) {
            log(format!("{name} failed: {x}"));
            rep.notes.push(format!("{name} did not finish: {x}"));
        }
        log(format!("{name}: {} s", t0.elapsed().as_secs()));
    }
    let _ = m.poweroff();
    Ok(rep)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let t0 = Instant::now();
    match run(&cli) {
        Ok(rep) => {
            let md = rep.markdown();
            print!("{md}");
            let stamp = std::process::Command::new("date")
                .arg("-u")
                .arg("+%Y%m%dT%H%M%SZ")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_else(|_| "run".into());
            let _ = std::fs::create_dir_all(&cli.out);
            let base = cli.out.join(format!("bench-{stamp}"));
            let json = serde_json::to_string_pretty(&rep).unwrap_or_default();
            if let Err(x) = std::fs::write(base.with_extension("md"), &md)
                .and_then(|_| std::fs::write(base.with_extension("json"), json))
            {
                log(format!("writing {}: {x}", base.display()));
                return ExitCode::FAILURE;
            }
            log(format!(
                "wrote {}.{{md,json}} in {} s",
                base.display(),
                t0.elapsed().as_secs()
            ));
            ExitCode::SUCCESS
        }
        Err(x) => {
            log(x);
            ExitCode::FAILURE
        }
    }
}
