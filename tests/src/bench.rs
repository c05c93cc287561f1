//! Pure parts of the benchmark (`eve-bench`): fio's JSON, CPU time from /proc/stat, memory from
//! /proc/meminfo, ratios, and the report as Markdown and JSON. The orchestration (VM, guest
//! commands) is in `src/bin/eve-bench.rs`.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One fio run's figures, summed over its jobs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FioResult {
    pub iops: f64,
    pub bw_bytes: f64,
    pub io_bytes: u64,
    /// Mean completion latency, microseconds (weighted by I/Os across jobs).
    pub lat_mean_us: f64,
    /// The worst job's 99th percentile completion latency, microseconds.
    pub lat_p99_us: f64,
    pub errors: u64,
}

/// `fio --output-format=json`: reads and writes of every job.
pub fn parse_fio(json: &str) -> Result<FioResult, String> {
    // fio may print notes before the JSON document.
    let start = json.find('{').ok_or("no JSON in fio's output")?;
    let v: serde_json::Value =
        serde_json::from_str(&json[start..]).map_err(|e| format!("fio JSON: {e}"))?;
    let jobs = v["jobs"].as_array().ok_or("fio JSON has no jobs")?;
    let mut r = FioResult::default();
    let mut lat_weighted = 0.0;
    let mut ios = 0.0;
    for j in jobs {
        r.errors += j["error"].as_u64().unwrap_or(0);
        for dir in ["read", "write"] {
            let d = &j[dir];
            let n = d["total_ios"].as_f64().unwrap_or(0.0);
            if n == 0.0 {
                continue;
            }
            r.iops += d["iops"].as_f64().unwrap_or(0.0);
            r.bw_bytes += d["bw_bytes"].as_f64().unwrap_or(0.0);
            r.io_bytes += d["io_bytes"].as_u64().unwrap_or(0);
            lat_weighted += d["clat_ns"]["mean"].as_f64().unwrap_or(0.0) * n;
            ios += n;
            let p99 = d["clat_ns"]["percentile"]["99.000000"]
                .as_f64()
                .unwrap_or(0.0);
            r.lat_p99_us = r.lat_p99_us.max(p99 / 1000.0);
        }
    }
    if ios > 0.0 {
        r.lat_mean_us = lat_weighted / ios / 1000.0;
    }
    Ok(r)
}

/// Busy CPU time in the first `cpu ` line of /proc/stat, in clock ticks: everything but idle and
/// iowait (guest time is already inside user).
pub fn busy_ticks(stat: &str) -> Result<u64, String> {
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or("no `cpu` line in /proc/stat")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().map_err(|_| format!("bad /proc/stat field `{x}`")))
        .collect::<Result<_, _>>()?;
    if f.len() < 8 {
        return Err(format!("short /proc/stat line: `{line}`"));
    }
    // user nice system idle iowait irq softirq steal
    Ok(f[0] + f[1] + f[2] + f[5] + f[6] + f[7])
}

/// A /proc/meminfo field in KiB.
pub fn meminfo_kib(meminfo: &str, field: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == field).then(|| v.split_whitespace().next()?.parse().ok())?
    })
}

/// CPU seconds per GiB moved (0 when nothing moved).
pub fn cpu_per_gib(cpu_s: f64, bytes: u64) -> f64 {
    if bytes == 0 {
        0.0
    } else {
        cpu_s / (bytes as f64 / (1u64 << 30) as f64)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PathRun {
    pub path: String,
    pub workload: String,
    pub qd: u32,
    pub fio: FioResult,
    pub cpu_s: f64,
    pub cpu_s_per_gib: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScaleRun {
    pub path: String,
    pub n: usize,
    pub fio: FioResult,
    pub cpu_s: f64,
    /// CPU microseconds per I/O.
    pub cpu_us_per_io: f64,
    /// Memory per attached disk, KiB: process RSS for qemu, kernel slab plus daemon RSS otherwise.
    pub mem_kib_per_disk: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub env: BTreeMap<String, String>,
    pub paths: Vec<PathRun>,
    pub scale: Vec<ScaleRun>,
    /// Named wall times in milliseconds (bring-up, control plane).
    pub times_ms: BTreeMap<String, u64>,
    /// Binary sizes (bytes) and idle RSS (KiB).
    pub footprint: BTreeMap<String, u64>,
    /// What did not run, and why.
    pub notes: Vec<String>,
    /// Figures measured against a baseline from the same run, with the ratio the issue allows.
    pub targets: Vec<Target>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub what: String,
    pub ours_ms: u64,
    pub baseline: String,
    pub baseline_ms: u64,
    /// The largest ours/baseline ratio that meets the target.
    pub max_ratio: f64,
    /// An absolute ceiling as well, when the target has one.
    pub max_ms: Option<u64>,
}

impl Target {
    pub fn ratio(&self) -> f64 {
        self.ours_ms as f64 / (self.baseline_ms.max(1)) as f64
    }
    pub fn met(&self) -> bool {
        self.ratio() <= self.max_ratio && self.max_ms.is_none_or(|m| self.ours_ms <= m)
    }
}

/// The median of a few timings (the upper middle for an even count); 0 for none.
pub fn median(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 {
        "-".into()
    } else {
        format!("{:.2}", a / b)
    }
}

impl Report {
    /// The data-path table: each row with its ratios to the zvol (path 1) and to qemu (path 5)
    /// for the same workload and queue depth.
    pub fn markdown(&self) -> String {
        let mut s = String::from("# eve-storage benchmark\n\n");
        for (k, v) in &self.env {
            let _ = writeln!(s, "- {k}: {v}");
        }
        s.push_str("\n## Data paths (same zvol-backed workload, one run)\n\n");
        s.push_str("| path | workload | QD | IOPS | MiB/s | mean µs | p99 µs | CPU s/GiB | IOPS vs zvol | IOPS vs qemu | CPU/GiB vs qemu |\n");
        s.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        let find = |p: &str, w: &str, qd: u32| {
            self.paths
                .iter()
                .find(|r| r.path.starts_with(p) && r.workload == w && r.qd == qd)
        };
        for r in &self.paths {
            let base = find("1", &r.workload, r.qd);
            let qemu = find("5", &r.workload, r.qd);
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.0} | {:.1} | {:.0} | {:.0} | {:.2} | {} | {} | {} |",
                r.path,
                r.workload,
                r.qd,
                r.fio.iops,
                r.fio.bw_bytes / 1048576.0,
                r.fio.lat_mean_us,
                r.fio.lat_p99_us,
                r.cpu_s_per_gib,
                base.map_or("-".into(), |b| ratio(r.fio.iops, b.fio.iops)),
                qemu.map_or("-".into(), |q| ratio(r.fio.iops, q.fio.iops)),
                qemu.map_or("-".into(), |q| ratio(r.cpu_s_per_gib, q.cpu_s_per_gib)),
            );
        }
        if !self.scale.is_empty() {
            s.push_str("\n## Many disks at once (one fio job per volume)\n\n");
            s.push_str("| path | N | total IOPS | CPU µs/IO | memory KiB/disk |\n|---|---:|---:|---:|---:|\n");
            for r in &self.scale {
                // Memory is measured once, with every disk attached.
                let mem = if r.mem_kib_per_disk > 0.0 {
                    format!("{:.0}", r.mem_kib_per_disk)
                } else {
                    "-".into()
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.0} | {:.1} | {mem} |",
                    r.path, r.n, r.fio.iops, r.cpu_us_per_io
                );
            }
        }
        if !self.times_ms.is_empty() {
            s.push_str(
                "\n## Bring-up and control plane (wall time)\n\n| what | ms |\n|---|---:|\n",
            );
            for (k, v) in &self.times_ms {
                let _ = writeln!(s, "| {k} | {v} |");
            }
        }
        if !self.targets.is_empty() {
            s.push_str(
                "\n## Targets (each measured beside its baseline in this run)\n\n\
                 | target | ours ms | baseline | baseline ms | ratio | allowed | met |\n\
                 |---|---:|---|---:|---:|---|---|\n",
            );
            for t in &self.targets {
                let allowed = match t.max_ms {
                    Some(m) => format!("<= {:.1}x and <= {m} ms", t.max_ratio),
                    None => format!("<= {:.1}x", t.max_ratio),
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {:.2} | {allowed} | {} |",
                    t.what,
                    t.ours_ms,
                    t.baseline,
                    t.baseline_ms,
                    t.ratio(),
                    if t.met() { "yes" } else { "**no**" }
                );
            }
        }
        if !self.footprint.is_empty() {
            s.push_str("\n## Footprint\n\n| what | value |\n|---|---:|\n");
            for (k, v) in &self.footprint {
                let _ = writeln!(s, "| {k} | {v} |");
            }
        }
        for n in &self.notes {
            let _ = writeln!(s, "\nNote: {n}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_needs_both_its_ratio_and_its_ceiling() {
        assert_eq!(median(&[30, 10, 20]), 20);
        assert_eq!(median(&[]), 0);
        let t = |ours, max_ms| Target {
            what: "no-op pass".into(),
            ours_ms: ours,
            baseline: "zfs list".into(),
            baseline_ms: 1000,
            max_ratio: 2.0,
            max_ms,
        };
        assert!(t(2000, Some(2000)).met());
        assert!(!t(2001, None).met(), "over the ratio");
        assert!(!t(1500, Some(1000)).met(), "over the ceiling");
        let r = Report {
            targets: vec![t(2500, Some(2000))],
            ..Report::default()
        };
        let md = r.markdown();
        assert!(
            md.contains(
                "| no-op pass | 2500 | zfs list | 1000 | 2.50 | <= 2.0x and <= 2000 ms | **no** |"
            ),
            "{md}"
        );
    }

    const FIO: &str = r#"note: both iodepth >= 1 and synchronous I/O engine are selected
{
  "fio version" : "fio-3.33",
  "jobs" : [
    { "jobname" : "a", "error" : 0,
      "read" : { "io_bytes" : 1048576, "bw_bytes" : 524288, "iops" : 128.0, "total_ios" : 256,
                 "clat_ns" : { "mean" : 2000000.0, "percentile" : { "99.000000" : 5000000 } } },
      "write" : { "io_bytes" : 0, "bw_bytes" : 0, "iops" : 0.0, "total_ios" : 0,
                  "clat_ns" : { "mean" : 0.0 } } },
    { "jobname" : "b", "error" : 0,
      "read" : { "io_bytes" : 3145728, "bw_bytes" : 1572864, "iops" : 384.0, "total_ios" : 768,
                 "clat_ns" : { "mean" : 1000000.0, "percentile" : { "99.000000" : 9000000 } } },
      "write" : { "total_ios" : 0 } }
  ]
}"#;

    #[test]
    fn fio_jobs_are_summed_and_latency_is_weighted_by_ios() {
        let r = parse_fio(FIO).unwrap();
        assert_eq!(r.iops, 512.0);
        assert_eq!(r.io_bytes, 4 << 20);
        assert_eq!(r.bw_bytes, 2097152.0);
        // (256 * 2000 + 768 * 1000) / 1024 µs
        assert_eq!(r.lat_mean_us, 1250.0);
        assert_eq!(r.lat_p99_us, 9000.0);
        assert!(parse_fio("no json").is_err());
        assert!(parse_fio("{\"x\":1}").is_err());
    }

    #[test]
    fn busy_cpu_excludes_idle_and_iowait() {
        let stat = "cpu  100 5 50 1000 40 3 2 1 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(busy_ticks(stat).unwrap(), 161);
        assert!(busy_ticks("intr 1 2\n").is_err());
        assert_eq!(cpu_per_gib(2.0, 1 << 29), 4.0);
        assert_eq!(cpu_per_gib(2.0, 0), 0.0);
        let mi = "MemTotal:        2000 kB\nSlab:   1234 kB\n";
        assert_eq!(meminfo_kib(mi, "Slab"), Some(1234));
        assert_eq!(meminfo_kib(mi, "Nope"), None);
    }

    #[test]
    fn the_table_shows_ratios_to_the_zvol_and_to_qemu() {
        let run = |p: &str, iops: f64, cpu: f64| PathRun {
            path: p.into(),
            workload: "randread-4k".into(),
            qd: 1,
            fio: FioResult {
                iops,
                ..Default::default()
            },
            cpu_s: 0.0,
            cpu_s_per_gib: cpu,
        };
        let r = Report {
            paths: vec![
                run("1 zvol", 1000.0, 1.0),
                run("2 nvme-loop", 800.0, 2.0),
                run("5 qemu-nbd", 400.0, 4.0),
            ],
            ..Default::default()
        };
        let md = r.markdown();
        let row = md.lines().find(|l| l.starts_with("| 2 nvme-loop")).unwrap();
        assert!(row.ends_with("| 0.80 | 2.00 | 0.50 |"), "{row}");
    }
}
