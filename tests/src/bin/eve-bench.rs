//! eve-bench (`make bench`): boots the appliance under qemu and measures, in one run, guest-disk
//! data paths side by side (zvol, nvmet loop and TCP, LIO through tcm_loop, a qcow2 served by
//! qemu's block layer), the same export paths on a RAM disk with ZFS out of the picture, scaling
//! with the number of disks, bring-up and control-plane times, and footprint. Each 4k cell is the
//! median of several runs, taken in turn across paths so drift hits them alike. Prints Markdown,
//! writes it with a JSON file under the results folder, compares every figure with the earlier
//! runs there, and can rewrite the latest-run part of BENCHMARKS.md. Figures, not assertions:
//! correctness of each path is checked by the VM tests.

use clap::Parser;
use eve_vmtest::bench::{self, median, FioResult, PathRun, Report, Sample, ScaleRun, Target};
use eve_vmtest::{build_manifest, test_dir, DiskKind, DiskSpec, Machine, MachineSpec};
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
    /// Seconds per fio run (after a half-second ramp).
    #[arg(long, default_value_t = 2)]
    runtime: u32,
    /// Runs per 4k cell; the table shows the median run with the lowest and highest.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// A Markdown file whose latest-run part (between the eve-bench markers) this run replaces.
    #[arg(long)]
    benchmarks: Option<PathBuf>,
    /// Volume counts for the control plane, each exported from scratch on top of the previous.
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    volumes: Vec<usize>,
    /// Sections to run (all by default).
    #[arg(long, value_delimiter = ',', value_enum)]
    only: Vec<SectionName>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SectionName {
    ExportOverhead,
    DataPaths,
    Scaling,
    ControlPlane,
    Api,
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

/// A LUN through tcm_loop on an LIO backstore (`<hba>/<name>` under core; a vhost-scsi volume's
/// is `iblock_100/<volume>`): the path vhost-scsi uses, seen on this host as a SCSI disk.
fn tcm_loop(m: &mut Machine, backstore: &str, i: usize) -> R<String> {
    let t = "/sys/kernel/config/target";
    let lb = format!("{t}/loopback/naa.50014050000001{i:02x}/tpgt_1");
    let link = backstore.rsplit('/').next().unwrap_or(backstore);
    let before = sh(m, "ls /sys/block | grep ^sd; true")?;
    sh(
        m,
        &format!(
            "mkdir -p {lb}/lun/lun_0 && echo naa.50014050000002{i:02x} > {lb}/nexus && ln -s {t}/core/{backstore} {lb}/lun/lun_0/{link}"
        ),
    )?;
    let t0 = Instant::now();
    loop {
        let now = sh(m, "ls /sys/block | grep ^sd; true")?;
        if let Some(d) = now.lines().find(|l| !before.lines().any(|b| b == *l)) {
            // Under TCG a command can wait out SCSI's 30 s default behind a ZFS sync; the abort
            // that follows can crash the 6.12 guest kernel in target_core_mod (seen in a run),
            // so give commands time instead.
            sh(m, &format!("echo 600 > /sys/block/{d}/device/timeout"))?;
            return Ok(format!("/dev/{d}"));
        }
        if t0.elapsed() > Duration::from_secs(60) {
            return Err(format!("no tcm_loop disk for {backstore}"));
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

/// A cell: name, fio's rw, block size, queue depth.
type Cell = (&'static str, &'static str, &'static str, u32);

/// The cells that matter for VM disks, each run `--runs` times.
const CELLS_4K: [Cell; 4] = [
    ("randread-4k", "randread", "4k", 1),
    ("randread-4k", "randread", "4k", 32),
    ("randwrite-4k", "randwrite", "4k", 1),
    ("randwrite-4k", "randwrite", "4k", 32),
];

/// Sequential throughput, one quick run each (marked so in the table).
const CELLS_QUICK: [Cell; 2] = [
    ("seqread-128k", "read", "128k", 32),
    ("seqwrite-128k", "write", "128k", 32),
];

/// Fills each device's first `span` so reads hit written blocks (a thin zvol or a RAM disk reads
/// holes for free).
fn precondition(m: &mut Machine, paths: &[(String, String)], span: &str) -> R<()> {
    for (name, dev) in paths {
        log(format!("{name}: {dev}: preconditioning {span}"));
        sh(m, &format!("fio --name=pre --filename={dev} --rw=write --bs=1M --size={span} --direct=1 --ioengine=libaio --iodepth=8 >/dev/null"))?;
    }
    Ok(())
}

/// Every cell on every path, `runs` times over. A round is one fio process running its jobs one
/// after another (`stonewall`), each job bracketed by the machine's CPU counters (fio's
/// `exec_prerun`/`exec_postrun`): fio and the libraries it loads take seconds to start under TCG,
/// once per round instead of once per figure. Each round takes the cells and paths in turn, so a
/// slow spell of the emulator spreads over all paths instead of one path's runs. Returns the
/// cells in table order (cell, then path).
fn measure(
    m: &mut Machine,
    cli: &Cli,
    paths: &[(String, String)],
    cells: &[Cell],
    runs: u32,
    span: &str,
) -> R<Vec<PathRun>> {
    let mut got: Vec<Vec<Sample>> = vec![Vec::new(); cells.len() * paths.len()];
    let global = format!(
        "--ioengine=libaio --direct=1 --size={span} --time_based --runtime={} --ramp_time=500ms \
         --norandommap --randrepeat=1",
        cli.runtime
    );
    for round in 1..=runs {
        let mut jobs = String::new();
        for (ci, (_, rw, bs, qd)) in cells.iter().enumerate() {
            for (pi, (_, dev)) in paths.iter().enumerate() {
                jobs.push_str(&format!(
                    " --name=c{ci}p{pi} --filename={dev} --rw={rw} --bs={bs} --iodepth={qd} --stonewall \
                     '--exec_prerun=head -1 /proc/stat' '--exec_postrun=head -1 /proc/stat'"
                ));
            }
        }
        let t0 = Instant::now();
        let out = sh(
            m,
            &format!(
                "rm -rf /run/fst && mkdir /run/fst && cd /run/fst && \
                 fio --output-format=json --output=/run/fio.json {global}{jobs} >/run/fio.err 2>&1 \
                 || {{ cat /run/fio.err; exit 1; }}; \
                 for f in *.txt; do printf '%s ' $f; head -1 $f; done; echo ===; cat /run/fio.json"
            ),
        )?;
        let (cpu, json) = out.split_once("===").ok_or("no fio output")?;
        let cpu = bench::cpu_by_job(cpu)?;
        for (job, fio) in bench::parse_fio_jobs(json)? {
            let idx = job
                .strip_prefix('c')
                .and_then(|x| x.split_once('p'))
                .and_then(|(c, p)| Some((c.parse::<usize>().ok()?, p.parse::<usize>().ok()?)))
                .filter(|&(c, p)| c < cells.len() && p < paths.len())
                .ok_or(format!("fio reported an unknown job `{job}`"))?;
            if fio.errors > 0 {
                return Err(format!(
                    "fio job {job} ({}): {} errors",
                    paths[idx.1].1, fio.errors
                ));
            }
            let cpu_s = *cpu.get(&job).ok_or(format!("job {job}: no CPU figure"))?;
            let (w, _, _, qd) = cells[idx.0];
            log(format!(
                "{} {w} qd{qd} run {round}/{runs}: {:.0} IOPS, {cpu_s:.2} CPU s",
                paths[idx.1].0, fio.iops
            ));
            got[idx.0 * paths.len() + idx.1].push(Sample { fio, cpu_s });
        }
        log(format!(
            "round {round}/{runs}: {} s",
            t0.elapsed().as_secs()
        ));
    }
    let mut out = Vec::new();
    for (ci, (w, _, _, qd)) in cells.iter().enumerate() {
        for (pi, (name, _)) in paths.iter().enumerate() {
            let s = &got[ci * paths.len() + pi];
            if s.len() != runs as usize {
                return Err(format!(
                    "{name} {w} qd{qd}: {} of {runs} runs reported",
                    s.len()
                ));
            }
            out.push(PathRun::from_samples(name, w, *qd, s));
        }
    }
    Ok(out)
}

/// Loads nbd once, with enough devices for the data-path, scaling and overhead sections.
const LOAD_NBD: &str = "lsmod | grep -q '^nbd ' || modprobe nbd nbds_max=32";

fn data_paths(m: &mut Machine, cli: &Cli, rep: &mut Report) -> R<()> {
    log("data paths: creating one volume per path");
    sh(m, LOAD_NBD)?;
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
        ("4 LIO tcm_loop".into(), tcm_loop(m, "iblock_100/bs", 0)?),
    ];
    paths.push(("5 qemu qcow2 (nbd)".into(), qemu_nbd(m, 0, "1G")?));
    precondition(m, &paths, "128M")?;
    rep.paths = measure(m, cli, &paths, &CELLS_4K, cli.runs, "128M")?;
    let mut quick = measure(m, cli, &paths, &CELLS_QUICK, 1, "128M")?;
    for q in &mut quick {
        q.quick = true;
    }
    rep.paths.append(&mut quick);
    Ok(())
}

/// The bench's own NVMe-oF names: outside volumed's NQN prefix and port ids, so its reconciler
/// leaves them alone.
const RAM_NQN: &str = "nqn.2026-12.io.eve-bench:ram";
const RAM_LOOP_ADDR: &str = "eve-bench-ram";
/// Its own host ID too: the kernel refuses a second host NQN under one host ID.
const RAM_HOST_ID: &str = "0e7e0000-0000-4000-8000-00000000b0b0";
const RAM_HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:0e7e0000-0000-4000-8000-00000000b0b0";

/// The guest commands that make the RAM-disk exports: brd's /dev/ram0 behind one nvmet subsystem
/// per transport (one host reaching one subsystem over two would be merged by multipath) and
/// /dev/ram1 as an LIO iblock backstore (which opens its device exclusively).
fn ram_setup() -> String {
    let n = "/sys/kernel/config/nvmet";
    let mut s = String::from("modprobe brd rd_nr=2 rd_size=131072 || exit 1; ");
    s.push_str(LOAD_NBD);
    s.push_str("; ");
    for (sub, port, ports) in [
        // nvme-loop hands a connect without an address to the first loop port it has: name ours,
        // or the connect lands on volumed's port, where this subsystem is not.
        (
            "loop",
            91,
            format!("echo loop > addr_trtype && echo {RAM_LOOP_ADDR} > addr_traddr"),
        ),
        (
            "tcp",
            92,
            "echo tcp > addr_trtype && echo ipv4 > addr_adrfam && echo 127.0.0.1 > addr_traddr && echo 4421 > addr_trsvcid"
                .to_string(),
        ),
    ] {
        let sd = format!("{n}/subsystems/{RAM_NQN}-{sub}");
        s.push_str(&format!(
            "mkdir {sd} && echo 1 > {sd}/attr_allow_any_host && mkdir {sd}/namespaces/1 && \
             echo /dev/ram0 > {sd}/namespaces/1/device_path && echo 1 > {sd}/namespaces/1/enable && \
             mkdir {n}/ports/{port} && (cd {n}/ports/{port} && {ports}) && \
             ln -s {sd} {n}/ports/{port}/subsystems/ || exit 1; "
        ));
    }
    let c = "/sys/kernel/config/target/core/iblock_200/ram";
    s.push_str(&format!(
        "modprobe tcm_loop; mkdir -p {c} && echo udev_path=/dev/ram1 > {c}/control && echo 1 > {c}/enable"
    ));
    s
}

/// Undoes `ram_setup` and the connections made on it, in the reverse order; best effort, so a
/// half-made setup is cleaned up too.
fn ram_teardown(m: &mut Machine) {
    let n = "/sys/kernel/config/nvmet";
    let t = "/sys/kernel/config/target";
    let lb = format!("{t}/loopback/naa.5001405000000140");
    let cmd = format!(
        "for s in loop tcp; do nvme disconnect -n {RAM_NQN}-$s; done; qemu-nbd -d /dev/nbd30; \
         umount /run/ramfs; rm -f {lb}/tpgt_1/lun/lun_0/ram; rmdir {lb}/tpgt_1/lun/lun_0 {lb}/tpgt_1 {lb}; \
         rmdir {t}/core/iblock_200/ram {t}/core/iblock_200; \
         for p in 91 92; do rm -f {n}/ports/$p/subsystems/*; rmdir {n}/ports/$p; done; \
         for s in loop tcp; do d={n}/subsystems/{RAM_NQN}-$s; echo 0 > $d/namespaces/1/enable; \
         rmdir $d/namespaces/1 $d; done; rmmod brd; true"
    );
    if let Err(x) = m.sh(&cmd) {
        log(format!("export overhead: teardown: {x}"));
    }
}

/// The export paths alone: the same 4k cells on a RAM disk, directly and through each export,
/// so what is measured is the wiring, not ZFS or the emulated disks under it.
fn export_overhead(m: &mut Machine, cli: &Cli, rep: &mut Report) -> R<()> {
    log("export overhead: RAM disks and their exports");
    let r = build_ram_paths(m).and_then(|paths| {
        precondition(m, &paths, "128M")?;
        measure(m, cli, &paths, &CELLS_4K, cli.runs, "128M")
    });
    ram_teardown(m);
    rep.overhead = r?;
    Ok(())
}

fn build_ram_paths(m: &mut Machine) -> R<Vec<(String, String)>> {
    sh(m, &ram_setup())?;
    let mut paths = vec![("1 RAM disk (brd)".to_string(), "/dev/ram0".to_string())];
    for (name, sub, how) in [
        (
            "2 nvmet loop",
            "loop",
            format!("-t loop -a {RAM_LOOP_ADDR}"),
        ),
        (
            "3 nvmet tcp",
            "tcp",
            "-t tcp -a 127.0.0.1 -s 4421".to_string(),
        ),
    ] {
        let nqn = format!("{RAM_NQN}-{sub}");
        sh(
            m,
            &format!("nvme connect {how} -n {nqn} -q {RAM_HOST} -I {RAM_HOST_ID} >/dev/null"),
        )?;
        let dev = wait_dev(m, &format!(
            "for s in /sys/class/nvme-subsystem/*; do [ \"$(cat $s/subsysnqn)\" = {nqn} ] && ls $s | grep -E '^nvme[0-9]+n[0-9]+$' | head -1; done; true"
        ))?;
        paths.push((name.into(), dev));
    }
    paths.push((
        "4 LIO tcm_loop".into(),
        tcm_loop(m, "iblock_200/ram", 0x40)?,
    ));
    // qemu's block layer on a raw file in RAM. O_DIRECT on tmpfs is refused by some kernels:
    // then the page cache is the RAM the file lives in anyway.
    let cache = sh(
        m,
        "mkdir -p /run/ramfs && mount -t tmpfs -o size=160m tmpfs /run/ramfs && \
         truncate -s 128M /run/ramfs/d.raw && \
         for c in none writeback; do qemu-nbd -c /dev/nbd30 -k /run/qemu-nbd30.sock -f raw --cache=$c \
         --aio=threads /run/ramfs/d.raw 2>/dev/null && echo $c && exit 0; done; exit 1",
    )?;
    paths.push((
        format!("5 qemu-nbd raw file in tmpfs (cache={})", cache.trim()),
        "/dev/nbd30".into(),
    ));
    Ok(paths)
}

fn scaling(m: &mut Machine, cli: &Cli, rep: &mut Report) -> R<()> {
    let ns = [1usize, 16];
    let max = 16;
    let args = format!(
        "--rw=randwrite --bs=4k --iodepth=4 --ioengine=libaio --direct=1 --size=64M --time_based \
         --runtime={} --ramp_time=500ms --norandommap",
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
        let (tag, transport) = match path {
            "zvol" => ("sz", Some("nvme-tcp")),
            "nvmet loop" => ("sl", Some("nvme-loop")),
            "nvmet tcp" => ("st", Some("nvme-tcp")),
            "LIO tcm_loop" => ("ss", Some("vhost-scsi")),
            _ => ("sq", None),
        };
        if let Some(t) = transport {
            // All sixteen specs, then one pass: `storagectl volume create` runs a whole pass
            // per volume, which made this section minutes longer than its fio runs.
            sh(
                m,
                &format!(
                    "cd /persist/config/volumes/specs && i=0; while [ $i -lt {max} ]; do \
                     printf 'name = \"{tag}%d\"\\nsize = \"256M\"\\nvm = \"s%d\"\\ntransport = \"{t}\"\\n' $i $i > {tag}$i.toml; \
                     i=$((i + 1)); done && storagectl volume reconcile >/dev/null"
                ),
            )?;
        }
        for i in 0..max {
            let name = format!("{tag}{i}");
            let dev = match path {
                "zvol" => format!("/dev/zvol/persist/vault/volumes/{name}"),
                "nvmet tcp" => connect_tcp(m, &name)?,
                "nvmet loop" => show(m, &name)?["host_device"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                "LIO tcm_loop" => tcm_loop(m, &format!("iblock_100/{name}"), i + 1)?,
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
        let list_ms = record_median(
            rep,
            format!("`zfs list -H -o name -t volume`, {all} volumes (median of 3)"),
            &list,
        );
        let pass_ms = record_median(
            rep,
            format!("no-op pass, daemon, {all} volumes (median of 3)"),
            &passes,
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
        // The physical limit of this box for the same work: a bare shell loop of `zfs create -V`
        // under the same encrypted vault, same size, one after another. It runs after the
        // figures above so their pool holds only our volumes; its zvols are destroyed (minutes
        // for a thousand) only when another round follows.
        let bare_ds = format!("persist/vault/bare{n}");
        sh(m, &format!("zfs create -o mountpoint=none {bare_ds}"))?;
        let bare = timed(
            m,
            &format!(
                "i=0; while [ $i -lt {n} ]; do zfs create -s -V 16M {bare_ds}/b$i || exit 1; i=$((i + 1)); done"
            ),
        )?;
        log(format!("control plane: bare loop of {n}: {bare} ms"));
        if cli.volumes.last() != Some(&n) {
            timed(m, &format!("zfs destroy -r {bare_ds}"))?;
        }
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
    }
    sh(m, "kill -CONT $(pidof volumed)")?;
    Ok(())
}

/// The management API beside the local CLI on the same box: `storagectl status` and `volume
/// list` run in the guest as they are, and through `--remote https://127.0.0.1:8443` (a TCP
/// connection, the TLS 1.3 handshake with client certificates, the request, and the box's
/// rendering of the same text); medians of 5, each run a new process as an operator's would be.
fn api(m: &mut Machine, cli: &Cli, rep: &mut Report) -> R<()> {
    let dev = PathBuf::from(
        build_manifest(&cli.image)["mgmt"]["dev_dir"]
            .as_str()
            .ok_or("the image has no development CA")?,
    );
    for ext in ["pem", "key"] {
        m.copy_in(
            &dev.join(format!("admin.{ext}")),
            &format!("/run/bench-admin.{ext}"),
        )
        .map_err(e)?;
    }
    // The server's own file holds its certificate (and key): the pin an operator would take.
    let remote = "--remote https://127.0.0.1:8443 --cert /run/bench-admin.pem --key /run/bench-admin.key --ca /persist/config/mgmt/server.pem";
    rep.footprint
        .insert("idle RSS KiB: mgmtd".into(), rss_kib(m, "mgmtd")?);
    for what in ["status", "volume list"] {
        let (mut local, mut api) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            local.push(timed(m, &format!("storagectl {what} >/dev/null"))?);
            api.push(timed(m, &format!("storagectl {remote} {what} >/dev/null"))?);
        }
        log(format!(
            "api: `storagectl {what}` local {local:?} ms, through the API {api:?} ms"
        ));
        let l = record_median(
            rep,
            format!("`storagectl {what}`, local (median of 5)"),
            &local,
        );
        let a = record_median(
            rep,
            format!("`storagectl --remote {what}` on the box (median of 5)"),
            &api,
        );
        rep.targets.push(Target {
            what: format!("`storagectl {what}` through the API"),
            ours_ms: a,
            baseline: format!("local `storagectl {what}`"),
            baseline_ms: l,
            // The target is what the API adds (50 ms), not a ratio.
            max_ratio: 100.0,
            max_ms: Some(l + 50),
        });
    }
    rep.footprint.insert(
        "RSS KiB after the API runs: mgmtd".into(),
        rss_kib(m, "mgmtd")?,
    );
    Ok(())
}

/// Records the median of `runs` under `key` with their lowest and highest; returns the median.
fn record_median(rep: &mut Report, key: String, runs: &[u64]) -> u64 {
    let m = median(runs);
    let lo = runs.iter().min().copied().unwrap_or(0);
    let hi = runs.iter().max().copied().unwrap_or(0);
    rep.spread_ms.insert(key.clone(), (lo, hi));
    rep.times_ms.insert(key, m);
    m
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
    for d in ["volumed", "storaged", "zed", "eve-agent"] {
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
        ("storaged", "x86_64-unknown-linux-gnu/release"),
        ("abupdate", "x86_64-unknown-linux-gnu/release"),
        ("mgmtd", "x86_64-unknown-linux-gnu/release"),
        ("eve-net", "x86_64-unknown-linux-gnu/release"),
    ] {
        if let Ok(md) = std::fs::metadata(bins.join(d).join(b)) {
            rep.footprint.insert(format!("binary bytes: {b}"), md.len());
        }
    }

    let steps: [(SectionName, &str, Section); 5] = [
        // Data paths first, on a fresh pool and a full-grown ARC: the RAM disks of the overhead
        // section press the ARC down, and it grows back slowly.
        (SectionName::DataPaths, "data paths", data_paths),
        (
            SectionName::ExportOverhead,
            "export overhead",
            export_overhead,
        ),
        (SectionName::Scaling, "scaling", scaling),
        (SectionName::ControlPlane, "control plane", control_plane),
        (SectionName::Api, "management API", api),
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
        rep.times_ms.insert(
            format!("bench section: {name}"),
            t0.elapsed().as_millis() as u64,
        );
    }
    let _ = m.poweroff();
    Ok(rep)
}

/// Earlier reports in the results folder, newest first, with their file stems; a file that does
/// not parse is skipped with a line saying so.
fn earlier_reports(dir: &Path) -> Vec<(String, Report)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| Some(e.ok()?.path()))
                .filter(|p| {
                    p.extension().is_some_and(|x| x == "json")
                        && p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("bench-"))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files.reverse();
    files
        .into_iter()
        .filter_map(|p| {
            let stem = p.file_stem()?.to_string_lossy().into_owned();
            match std::fs::read_to_string(&p)
                .map_err(e)
                .and_then(|t| serde_json::from_str::<Report>(&t).map_err(e))
            {
                Ok(r) => Some((stem, r)),
                Err(x) => {
                    log(format!("{}: not compared: {x}", p.display()));
                    None
                }
            }
        })
        .collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let t0 = Instant::now();
    let mut rep = match run(&cli) {
        Ok(rep) => rep,
        Err(x) => {
            log(x);
            return ExitCode::FAILURE;
        }
    };
    let stamp = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y%m%dT%H%M%SZ")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "run".into());
    rep.times_ms
        .insert("bench: whole run".into(), t0.elapsed().as_millis() as u64);
    rep.changes = bench::compare(&rep, &earlier_reports(&cli.out));
    let md = rep.markdown();
    print!("{md}");
    let _ = std::fs::create_dir_all(&cli.out);
    let run = format!("bench-{stamp}");
    let base = cli.out.join(&run);
    let json = serde_json::to_string_pretty(&rep).unwrap_or_default();
    if let Err(x) = std::fs::write(base.with_extension("md"), &md)
        .and_then(|_| std::fs::write(base.with_extension("json"), json))
    {
        log(format!("writing {}: {x}", base.display()));
        return ExitCode::FAILURE;
    }
    if let Some(doc) = &cli.benchmarks {
        let r = std::fs::read_to_string(doc)
            .map_err(e)
            .and_then(|d| bench::with_latest(&d, &md, &run))
            .and_then(|d| std::fs::write(doc, d).map_err(e));
        if let Err(x) = r {
            log(format!("{}: {x}", doc.display()));
            return ExitCode::FAILURE;
        }
        log(format!("{}: latest run replaced", doc.display()));
    }
    log(format!(
        "wrote {}.{{md,json}} in {} s",
        base.display(),
        t0.elapsed().as_secs()
    ));
    ExitCode::SUCCESS
}
