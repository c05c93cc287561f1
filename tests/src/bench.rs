//! Pure parts of the benchmark (`eve-bench`): fio's JSON, CPU time from /proc/stat, memory from
//! /proc/meminfo, repeated cells with their spread, ratios, the comparison with earlier runs, and
//! the report as Markdown and JSON. The orchestration (VM, guest
//! commands) is in `src/bin/eve-bench.rs`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One fio run's figures, summed over its jobs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FioResult {
    pub iops: f64,
    pub bw_bytes: f64,
    pub io_bytes: u64,
    /// I/Os completed (reads and writes).
    pub ios: u64,
    /// Mean completion latency, microseconds (weighted by I/Os across jobs).
    pub lat_mean_us: f64,
    /// The worst job's 99th percentile completion latency, microseconds.
    pub lat_p99_us: f64,
    pub errors: u64,
}

/// `fio --output-format=json`: reads and writes of every job, summed.
pub fn parse_fio(json: &str) -> Result<FioResult, String> {
    let jobs = parse_fio_jobs(json)?;
    let mut r = FioResult::default();
    let mut lat_weighted = 0.0;
    for (_, j) in &jobs {
        r.iops += j.iops;
        r.bw_bytes += j.bw_bytes;
        r.io_bytes += j.io_bytes;
        r.ios += j.ios;
        r.errors += j.errors;
        r.lat_p99_us = r.lat_p99_us.max(j.lat_p99_us);
        lat_weighted += j.lat_mean_us * j.ios as f64;
    }
    if r.ios > 0 {
        r.lat_mean_us = lat_weighted / r.ios as f64;
    }
    Ok(r)
}

/// `fio --output-format=json`: each job by name, its reads and writes together.
pub fn parse_fio_jobs(json: &str) -> Result<Vec<(String, FioResult)>, String> {
    // fio may print notes before the JSON document.
    let start = json.find('{').ok_or("no JSON in fio's output")?;
    let v: serde_json::Value =
        serde_json::from_str(&json[start..]).map_err(|e| format!("fio JSON: {e}"))?;
    let jobs = v["jobs"].as_array().ok_or("fio JSON has no jobs")?;
    let mut out = Vec::new();
    for j in jobs {
        let mut r = FioResult {
            errors: j["error"].as_u64().unwrap_or(0),
            ..FioResult::default()
        };
        let mut lat_weighted = 0.0;
        for dir in ["read", "write"] {
            let d = &j[dir];
            let n = d["total_ios"].as_u64().unwrap_or(0);
            if n == 0 {
                continue;
            }
            r.iops += d["iops"].as_f64().unwrap_or(0.0);
            r.bw_bytes += d["bw_bytes"].as_f64().unwrap_or(0.0);
            r.io_bytes += d["io_bytes"].as_u64().unwrap_or(0);
            lat_weighted += d["clat_ns"]["mean"].as_f64().unwrap_or(0.0) * n as f64;
            r.ios += n;
            let p99 = d["clat_ns"]["percentile"]["99.000000"]
                .as_f64()
                .unwrap_or(0.0);
            r.lat_p99_us = r.lat_p99_us.max(p99 / 1000.0);
        }
        if r.ios > 0 {
            r.lat_mean_us = lat_weighted / r.ios as f64 / 1000.0;
        }
        let name = j["jobname"].as_str().unwrap_or_default().to_string();
        out.push((name, r));
    }
    Ok(out)
}

/// Busy CPU seconds of each job from the `/proc/stat` line its `exec_prerun` and `exec_postrun`
/// printed, as fio leaves them (`<job>.prerun.txt`, `<job>.postrun.txt`), given here one per
/// line as `<file name> <its first line>`.
pub fn cpu_by_job(text: &str) -> Result<BTreeMap<String, f64>, String> {
    let mut pre = BTreeMap::new();
    let mut post = BTreeMap::new();
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        let (file, stat) = l.split_once(' ').ok_or(format!("bad CPU line `{l}`"))?;
        let ticks = busy_ticks(stat.trim_start())?;
        if let Some(job) = file.strip_suffix(".prerun.txt") {
            pre.insert(job.to_string(), ticks);
        } else if let Some(job) = file.strip_suffix(".postrun.txt") {
            post.insert(job.to_string(), ticks);
        } else {
            return Err(format!("unexpected file `{file}`"));
        }
    }
    pre.into_iter()
        .map(|(job, t0)| {
            let t1 = post
                .get(&job)
                .ok_or(format!("job {job}: no CPU figure after it"))?;
            Ok((job, t1.saturating_sub(t0) as f64 / 100.0))
        })
        .collect()
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

/// One run's headline figures, kept for every run of a cell so any of them has a spread.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunFigures {
    pub iops: f64,
    pub lat_mean_us: f64,
    pub cpu_s_per_gib: f64,
}

/// One cell of a data-path table (a path, a workload, a queue depth) over its runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PathRun {
    pub path: String,
    pub workload: String,
    pub qd: u32,
    /// The median run by IOPS (the upper middle for an even count).
    pub fio: FioResult,
    pub cpu_s: f64,
    pub cpu_s_per_gib: f64,
    /// Every run, in the order run; empty in reports from before cells were repeated.
    pub all: Vec<RunFigures>,
    /// A quick single run, shown but not a figure to judge by.
    pub quick: bool,
}

/// One fio run and the whole machine's busy CPU seconds around it.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub fio: FioResult,
    pub cpu_s: f64,
}

impl PathRun {
    pub fn from_samples(path: &str, workload: &str, qd: u32, samples: &[Sample]) -> PathRun {
        let mut order: Vec<usize> = (0..samples.len()).collect();
        order.sort_by(|&a, &b| samples[a].fio.iops.total_cmp(&samples[b].fio.iops));
        let mid = order
            .get(order.len() / 2)
            .map(|&i| samples[i].clone())
            .unwrap_or_default();
        PathRun {
            path: path.into(),
            workload: workload.into(),
            qd,
            cpu_s_per_gib: cpu_per_gib(mid.cpu_s, mid.fio.io_bytes),
            cpu_s: mid.cpu_s,
            fio: mid.fio,
            all: samples
                .iter()
                .map(|s| RunFigures {
                    iops: s.fio.iops,
                    lat_mean_us: s.fio.lat_mean_us,
                    cpu_s_per_gib: cpu_per_gib(s.cpu_s, s.fio.io_bytes),
                })
                .collect(),
            quick: false,
        }
    }

    /// Runs behind the cell (1 for reports that kept only one).
    pub fn runs(&self) -> usize {
        self.all.len().max(1)
    }

    /// The lowest and highest of one figure over the cell's runs.
    pub fn range(&self, f: Metric) -> (f64, f64) {
        let one = [RunFigures {
            iops: self.fio.iops,
            lat_mean_us: self.fio.lat_mean_us,
            cpu_s_per_gib: self.cpu_s_per_gib,
        }];
        let all = if self.all.is_empty() {
            &one[..]
        } else {
            &self.all
        };
        all.iter()
            .map(f)
            .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)))
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Report {
    pub env: BTreeMap<String, String>,
    pub paths: Vec<PathRun>,
    /// The same 4k cells on a RAM disk, ZFS out of the picture: what the export wiring costs.
    pub overhead: Vec<PathRun>,
    pub scale: Vec<ScaleRun>,
    /// Named wall times in milliseconds (bring-up, control plane).
    pub times_ms: BTreeMap<String, u64>,
    /// Lowest and highest of the runs behind a `times_ms` entry that is a median.
    pub spread_ms: BTreeMap<String, (u64, u64)>,
    /// Binary sizes (bytes) and idle RSS (KiB).
    pub footprint: BTreeMap<String, u64>,
    /// What did not run, and why.
    pub notes: Vec<String>,
    /// Figures measured against a baseline from the same run, with the ratio the issue allows.
    pub targets: Vec<Target>,
    /// Every figure beside the same figure in the newest earlier run that has it.
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// One figure of a report, with the spread of the runs behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub key: String,
    pub value: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
    /// Deterministic (a binary's size): any change is a change.
    pub exact: bool,
}

impl Figure {
    fn single(key: String, value: f64, exact: bool) -> Figure {
        Figure {
            key,
            value,
            min: value,
            max: value,
            runs: 1,
            exact,
        }
    }

    /// The run's own spread relative to its figure, when several runs stand behind it.
    pub fn spread(&self) -> Option<f64> {
        if self.exact {
            Some(0.0)
        } else if self.runs >= 2 && self.value != 0.0 {
            Some((self.max - self.min) / self.value.abs())
        } else {
            None
        }
    }
}

/// Picks one figure out of a run.
type Metric = fn(&RunFigures) -> f64;

/// Every figure a report holds, under a key that names it the same way in every run.
pub fn figures(r: &Report) -> Vec<Figure> {
    let mut out = Vec::new();
    let cells = [("data path", &r.paths), ("export overhead", &r.overhead)];
    for (section, rows) in cells {
        for c in rows {
            let metrics: [(&str, f64, Metric); 3] = [
                ("IOPS", c.fio.iops, |x| x.iops),
                ("mean µs", c.fio.lat_mean_us, |x| x.lat_mean_us),
                ("CPU s/GiB", c.cpu_s_per_gib, |x| x.cpu_s_per_gib),
            ];
            for (m, value, f) in metrics {
                let (min, max) = c.range(f);
                out.push(Figure {
                    key: format!("{section}: {} {} QD{}: {m}", c.path, c.workload, c.qd),
                    value,
                    min,
                    max,
                    runs: c.runs(),
                    exact: false,
                });
            }
        }
    }
    for s in &r.scale {
        out.push(Figure::single(
            format!("{} disks at once: {}: total IOPS", s.n, s.path),
            s.fio.iops,
            false,
        ));
        out.push(Figure::single(
            format!("{} disks at once: {}: CPU µs/IO", s.n, s.path),
            s.cpu_us_per_io,
            false,
        ));
    }
    for (k, &v) in &r.times_ms {
        let mut f = Figure::single(format!("{k}: ms"), v as f64, false);
        if let Some(&(lo, hi)) = r.spread_ms.get(k) {
            (f.min, f.max, f.runs) = (lo as f64, hi as f64, 3);
        }
        out.push(f);
    }
    for (k, &v) in &r.footprint {
        out.push(Figure::single(
            k.clone(),
            v as f64,
            k.starts_with("binary bytes"),
        ));
    }
    out
}

/// A figure beside the same figure in an earlier run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub key: String,
    /// The earlier run's name (its file stem).
    pub then_run: String,
    pub then: f64,
    pub now: f64,
    /// Relative change, percent.
    pub change_pct: f64,
    /// The larger of the two runs' own relative spreads, percent, when either is known.
    pub spread_pct: Option<f64>,
    /// Changed by more than that spread; `None` when no spread is known (single runs).
    pub beyond_spread: Option<bool>,
}

/// Each figure of `now` beside the newest of `earlier` (newest first, with their names) that
/// has it. A change is flagged when it is larger than the spread either run showed for that
/// figure; where neither run has a spread (single runs), it is shown and not judged.
pub fn compare(now: &Report, earlier: &[(String, Report)]) -> Vec<Change> {
    let then: Vec<(&str, BTreeMap<String, Figure>)> = earlier
        .iter()
        .map(|(n, r)| {
            (
                n.as_str(),
                figures(r).into_iter().map(|f| (f.key.clone(), f)).collect(),
            )
        })
        .collect();
    let mut out = Vec::new();
    for f in figures(now) {
        let Some((name, old)) = then.iter().find_map(|(n, m)| Some((*n, m.get(&f.key)?))) else {
            continue;
        };
        let spread = match (f.spread(), old.spread()) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let rel = if old.value != 0.0 {
            (f.value - old.value) / old.value.abs()
        } else if f.value == 0.0 {
            0.0
        } else {
            f64::INFINITY
        };
        out.push(Change {
            then_run: name.into(),
            then: old.value,
            now: f.value,
            change_pct: rel * 100.0,
            spread_pct: spread.map(|s| s * 100.0),
            beyond_spread: spread.map(|s| rel.abs() > s),
            key: f.key,
        });
    }
    out
}

fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 {
        "-".into()
    } else {
        format!("{:.2}", a / b)
    }
}

/// A figure for a table: no decimals from 100 up, one below.
fn num(x: f64) -> String {
    if x.abs() >= 100.0 || x == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// A table of cells, each with its ratios to two reference paths (by number prefix) for the same
/// workload and queue depth.
fn cell_table(s: &mut String, rows: &[PathRun], base: (&str, &str), qemu: (&str, &str)) {
    let _ = writeln!(
        s,
        "| path | workload | QD | runs | IOPS | IOPS min-max | MiB/s | mean µs | p99 µs | CPU s/GiB | IOPS vs {} | IOPS vs {} | CPU/GiB vs {} |",
        base.1, qemu.1, qemu.1
    );
    s.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let find = |p: &str, w: &str, qd: u32| {
        rows.iter()
            .find(|r| r.path.starts_with(p) && r.workload == w && r.qd == qd)
    };
    for r in rows {
        let b = find(base.0, &r.workload, r.qd);
        let q = find(qemu.0, &r.workload, r.qd);
        let (lo, hi) = r.range(|x| x.iops);
        let runs = if r.quick {
            "1 (quick)".to_string()
        } else {
            r.runs().to_string()
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {runs} | {:.0} | {:.0}-{:.0} | {:.1} | {:.0} | {:.0} | {:.2} | {} | {} | {} |",
            r.path,
            r.workload,
            r.qd,
            r.fio.iops,
            lo,
            hi,
            r.fio.bw_bytes / 1048576.0,
            r.fio.lat_mean_us,
            r.fio.lat_p99_us,
            r.cpu_s_per_gib,
            b.map_or("-".into(), |b| ratio(r.fio.iops, b.fio.iops)),
            q.map_or("-".into(), |q| ratio(r.fio.iops, q.fio.iops)),
            q.map_or("-".into(), |q| ratio(r.cpu_s_per_gib, q.cpu_s_per_gib)),
        );
    }
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut s = String::from("# eve-storage benchmark\n\n");
        for (k, v) in &self.env {
            let _ = writeln!(s, "- {k}: {v}");
        }
        if !self.paths.is_empty() {
            s.push_str(
                "\n## Data paths (same zvol-backed workload; median run of each cell, by IOPS)\n\n",
            );
            cell_table(&mut s, &self.paths, ("1", "zvol"), ("5", "qemu"));
        }
        if !self.overhead.is_empty() {
            s.push_str(
                "\n## Export overhead (a RAM disk, no ZFS: what each export path itself costs)\n\n",
            );
            cell_table(&mut s, &self.overhead, ("1", "RAM disk"), ("5", "qemu-nbd"));
        }
        if !self.scale.is_empty() {
            s.push_str("\n## Many disks at once (one fio job per volume, one run)\n\n");
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
                "\n## Bring-up and control plane (wall time)\n\n| what | ms | min-max |\n|---|---:|---:|\n",
            );
            for (k, v) in &self.times_ms {
                let spread = self
                    .spread_ms
                    .get(k)
                    .map_or("-".into(), |(lo, hi)| format!("{lo}-{hi}"));
                let _ = writeln!(s, "| {k} | {v} | {spread} |");
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
        self.changes_markdown(&mut s);
        for n in &self.notes {
            let _ = writeln!(s, "\nNote: {n}");
        }
        s
    }

    fn changes_markdown(&self, s: &mut String) {
        if self.changes.is_empty() {
            return;
        }
        let beyond: Vec<&Change> = self
            .changes
            .iter()
            .filter(|c| c.beyond_spread == Some(true))
            .collect();
        let judged = self
            .changes
            .iter()
            .filter(|c| c.beyond_spread.is_some())
            .count();
        let _ = write!(
            s,
            "\n## Against the previous run\n\n{} figures compared with the newest earlier run that has \
             them; {judged} have a spread to judge by (repeated runs, or an exact figure), and {} of \
             those moved by more than it.\n\
             A change is flagged when it exceeds the larger relative spread (max - min over median) of \
             the two runs; a figure from single runs on both sides is shown and not judged.\n\n\
             | figure | then | now | change | spread | verdict | then: run |\n\
             |---|---:|---:|---:|---:|---|---|\n",
            self.changes.len(),
            beyond.len()
        );
        for c in &self.changes {
            let verdict = match c.beyond_spread {
                Some(true) => "**beyond spread**",
                Some(false) => "within spread",
                None => "single runs",
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:+.0}% | {} | {verdict} | {} |",
                c.key,
                num(c.then),
                num(c.now),
                c.change_pct,
                c.spread_pct.map_or("-".into(), |p| format!("{p:.0}%")),
                c.then_run
            );
        }
    }
}

pub const BEGIN: &str = "<!-- eve-bench: latest run begins (written by `make bench`) -->";
pub const END: &str = "<!-- eve-bench: latest run ends -->";

/// `doc` with the part between the eve-bench markers replaced by this run's report, its
/// headings one level down.
pub fn with_latest(doc: &str, md: &str, run: &str) -> Result<String, String> {
    let (Some(b), Some(e)) = (doc.find(BEGIN), doc.find(END)) else {
        return Err(format!("no `{BEGIN}` ... `{END}` markers"));
    };
    if e < b {
        return Err("the end marker comes before the begin marker".into());
    }
    let body: String = md
        .lines()
        .skip_while(|l| l.starts_with("# ") || l.is_empty())
        .map(|l| {
            if l.starts_with('#') {
                format!("#{l}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    Ok(format!(
        "{}{BEGIN}\n\nRun `{run}` (`results/{run}.{{md,json}}`).\n\n{body}\n{}",
        &doc[..b],
        &doc[e..]
    ))
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
    fn jobs_are_read_one_by_one_with_their_own_cpu() {
        let j = parse_fio_jobs(FIO).unwrap();
        assert_eq!(j.len(), 2);
        assert_eq!(
            (j[1].0.as_str(), j[1].1.iops, j[1].1.ios),
            ("b", 384.0, 768)
        );
        assert_eq!(j[0].1.lat_mean_us, 2000.0);
        let cpu = cpu_by_job(
            "a.prerun.txt cpu  100 0 0 50 0 0 0 0 0 0\n\
             a.postrun.txt cpu  300 0 100 50 0 0 0 0 0 0\n\
             b.prerun.txt cpu  300 0 100 50 0 0 0 0 0 0\n\
             b.postrun.txt cpu  350 0 100 900 0 0 0 0 0 0\n",
        )
        .unwrap();
        assert_eq!(cpu["a"], 3.0);
        assert_eq!(cpu["b"], 0.5);
        let err = cpu_by_job("c.prerun.txt cpu  1 0 0 0 0 0 0 0\n").unwrap_err();
        assert!(err.contains("job c"), "{err}");
        assert!(cpu_by_job("x.log cpu  1 0 0 0 0 0 0 0\n").is_err());
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
            cpu_s_per_gib: cpu,
            ..Default::default()
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
        assert!(row.contains("| 1 | 800 | 800-800 |"), "{row}");
    }

    fn sample(iops: f64, cpu_s: f64) -> Sample {
        Sample {
            fio: FioResult {
                iops,
                io_bytes: 1 << 30,
                lat_mean_us: 1e6 / iops,
                ..Default::default()
            },
            cpu_s,
        }
    }

    #[test]
    fn a_cell_is_its_median_run_with_the_spread_of_all() {
        let c = PathRun::from_samples(
            "2 nvmet loop",
            "randread-4k",
            32,
            &[sample(300.0, 3.0), sample(100.0, 1.0), sample(200.0, 2.0)],
        );
        // The median by IOPS, and its own CPU figure, not a mix of runs.
        assert_eq!(c.fio.iops, 200.0);
        assert_eq!(c.cpu_s_per_gib, 2.0);
        assert_eq!(c.runs(), 3);
        assert_eq!(c.range(|x| x.iops), (100.0, 300.0));
        assert_eq!(c.range(|x| x.cpu_s_per_gib), (1.0, 3.0));
        let r = Report {
            paths: vec![c],
            ..Default::default()
        };
        let row = r.markdown();
        assert!(
            row.contains("| 2 nvmet loop | randread-4k | 32 | 3 | 200 | 100-300 |"),
            "{row}"
        );
    }

    /// A report as eve-bench wrote it before cells were repeated (no `all`, `overhead`, ...).
    const OLD: &str = r#"{"env":{},"paths":[{"path":"1 zvol","workload":"randread-4k","qd":1,
      "fio":{"iops":800.0,"bw_bytes":0,"io_bytes":0,"lat_mean_us":1000.0,"lat_p99_us":0,"errors":0},
      "cpu_s":1.0,"cpu_s_per_gib":300.0}],"scale":[],"times_ms":{"no-op pass":1000},
      "footprint":{"binary bytes: volumed":100,"idle RSS KiB: zed":5000},"notes":[]}"#;

    #[test]
    fn changes_are_judged_by_the_runs_own_spread() {
        let old: Report = serde_json::from_str(OLD).unwrap();
        let cell = |runs: &[f64]| {
            let s: Vec<Sample> = runs.iter().map(|&i| sample(i, 300.0)).collect();
            PathRun::from_samples("1 zvol", "randread-4k", 1, &s)
        };
        let mut now = Report {
            paths: vec![cell(&[900.0, 1000.0, 1100.0])],
            ..Default::default()
        };
        now.times_ms.insert("no-op pass".into(), 1500);
        now.spread_ms.insert("no-op pass".into(), (1400, 1600));
        now.footprint.insert("binary bytes: volumed".into(), 101);
        now.footprint.insert("idle RSS KiB: zed".into(), 9000);
        now.times_ms.insert("new figure".into(), 5);
        let ch = compare(&now, &[("bench-old".into(), old)]);
        let get = |k: &str| {
            ch.iter()
                .find(|c| c.key == k)
                .unwrap_or_else(|| panic!("{k}: {ch:?}"))
        };
        // 1000 against 800: +25%, spread 20% (900-1100 over 1000): beyond.
        let iops = get("data path: 1 zvol randread-4k QD1: IOPS");
        assert_eq!((iops.then, iops.now), (800.0, 1000.0));
        assert!((iops.change_pct - 25.0).abs() < 1e-9);
        assert!((iops.spread_pct.unwrap() - 20.0).abs() < 1e-9);
        assert_eq!(iops.beyond_spread, Some(true));
        assert_eq!(iops.then_run, "bench-old");
        // +50% against a 13% spread.
        assert_eq!(get("no-op pass: ms").beyond_spread, Some(true));
        // A binary's size is exact: one byte is a change.
        assert_eq!(get("binary bytes: volumed").beyond_spread, Some(true));
        // Single runs on both sides: shown, not judged.
        let rss = get("idle RSS KiB: zed");
        assert_eq!((rss.beyond_spread, rss.spread_pct), (None, None));
        assert!(!ch.iter().any(|c| c.key.starts_with("new figure")));
        now.changes = ch;
        let md = now.markdown();
        assert!(
            md.contains(
                "| no-op pass: ms | 1000 | 1500 | +50% | 13% | **beyond spread** | bench-old |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| idle RSS KiB: zed | 5000 | 9000 | +80% | - | single runs | bench-old |"),
            "{md}"
        );

        // Within the spread: 1,050 against 1,000 with runs of 900-1,100.
        let base = Report {
            paths: vec![cell(&[900.0, 1000.0, 1100.0])],
            ..Default::default()
        };
        let again = Report {
            paths: vec![cell(&[1040.0, 1050.0, 1060.0])],
            ..Default::default()
        };
        let ch = compare(&again, &[("newer".into(), base), ("older".into(), now)]);
        let c = &ch[0];
        assert_eq!(
            (c.then_run.as_str(), c.beyond_spread),
            ("newer", Some(false))
        );
    }

    #[test]
    fn the_latest_run_replaces_only_its_part_of_the_document() {
        let doc = format!("# Benchmarks\nkept\n{BEGIN}\nold\n{END}\ntail\n");
        let md = "# eve-storage benchmark\n\n- fio: 3\n\n## Data paths\n| a |\n";
        let out = with_latest(&doc, md, "bench-X").unwrap();
        assert_eq!(
            out,
            format!(
                "# Benchmarks\nkept\n{BEGIN}\n\nRun `bench-X` (`results/bench-X.{{md,json}}`).\n\n\
                 - fio: 3\n\n### Data paths\n| a |\n\n{END}\ntail\n"
            )
        );
        // Again on its own output: the same document, not a second copy.
        assert_eq!(with_latest(&out, md, "bench-X").unwrap(), out);
        let err = with_latest("no markers\n", md, "r").unwrap_err();
        assert!(err.contains("markers"), "{err}");
    }
}
