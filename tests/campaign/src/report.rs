//! A run's record (`results/campaign-<time>.json`) and its summary in RELIABILITY.md, beside the
//! previous run's figures.

use crate::model::Ack;
use crate::plan::{Fault, Op};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioRecord {
    pub index: usize,
    pub op: Op,
    /// None: a replay's lead-in, run without a fault.
    pub fault: Option<Fault>,
    pub instant_ms: u64,
    pub seed: u64,
    /// What was done, in words (which volume, block, member, daemon).
    pub detail: String,
    pub ack: Ack,
    pub invariants: u32,
    pub violations: Vec<String>,
    pub notes: Vec<String>,
    pub boots: u32,
    pub secs: f64,
    /// How long the operation ran in the guest, when it returned.
    #[serde(default)]
    pub op_ms: Option<u64>,
    /// Whether the fault struck before the operation had returned (its boot included, for
    /// one that ends in a boot); None without a fault.
    #[serde(default)]
    pub during: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub seed: u64,
    pub started: String,
    pub image: String,
    /// The disks the box was given (kind, size, role).
    pub disks: Vec<String>,
    pub scenarios: Vec<ScenarioRecord>,
    /// Seconds spent booting (first boot and every reboot) and running scenarios otherwise.
    pub secs_booting: f64,
    pub secs_total: f64,
    /// Set when the run ended early, and why.
    pub stopped: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub scenarios: usize,
    pub faults: BTreeMap<String, usize>,
    pub ops: BTreeMap<String, usize>,
    pub invariants: u64,
    pub violations: usize,
    pub acked: usize,
    /// Operations that returned non-zero (refused or failed), each with why.
    pub failed: Vec<String>,
    pub minutes: f64,
    pub boot_share: f64,
    /// Faults that struck before their operation had returned, of those where it was recorded.
    pub during: (usize, usize),
    /// How long each operation ran, ms, where it returned.
    pub op_ms: BTreeMap<String, Vec<u64>>,
}

impl Figures {
    /// The operation's count, and its median duration when this run recorded one.
    fn op_cell(&self, op: &str) -> String {
        let n = self.ops.get(op).copied().unwrap_or(0);
        match self.op_ms.get(op).filter(|v| !v.is_empty()) {
            Some(v) => {
                let mut v = v.clone();
                v.sort_unstable();
                format!("{n} (median {:.1} s)", v[v.len() / 2] as f64 / 1000.0)
            }
            None => n.to_string(),
        }
    }
}

impl Run {
    pub fn figures(&self) -> Figures {
        let mut f = Figures {
            scenarios: self.scenarios.len(),
            minutes: self.secs_total / 60.0,
            boot_share: if self.secs_total > 0.0 {
                self.secs_booting / self.secs_total
            } else {
                0.0
            },
            ..Figures::default()
        };
        for s in &self.scenarios {
            let fault = s
                .fault
                .map(|x| x.to_string())
                .unwrap_or_else(|| "none".into());
            *f.faults.entry(fault).or_default() += 1;
            *f.ops.entry(s.op.to_string()).or_default() += 1;
            f.invariants += u64::from(s.invariants);
            f.violations += s.violations.len();
            f.acked += usize::from(s.ack == Ack::Acked);
            if let Some(d) = s.during {
                f.during.0 += usize::from(d);
                f.during.1 += 1;
            }
            if let Some(ms) = s.op_ms {
                f.op_ms.entry(s.op.to_string()).or_default().push(ms);
            }
            if let Ack::Failed { status, msg } = &s.ack {
                f.failed.push(format!(
                    "scenario {} ({}, {}): exit {status}: {msg}",
                    s.index,
                    s.detail,
                    s.fault
                        .map(|x| x.to_string())
                        .unwrap_or_else(|| "no fault".into())
                ));
            }
        }
        f
    }

    pub fn file_name(&self) -> String {
        format!("campaign-{}.json", self.started.replace([':', '-'], ""))
    }
}

/// The newest `campaign-*.json` in `dir` other than `except`.
pub fn previous(dir: &Path, except: &str) -> Option<Run> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            n.starts_with("campaign-") && n.ends_with(".json") && n != except
        })
        .collect();
    files.sort();
    files
        .iter()
        .rev()
        .find_map(|p| serde_json::from_slice(&std::fs::read(p).ok()?).ok())
}

pub const BEGIN: &str = "<!-- campaign: latest run (eve-campaign replaces this section) -->";
pub const END: &str = "<!-- campaign: end of latest run -->";

/// The latest-run section: figures beside the previous run's, every violation with its
/// reproduction.
pub fn section(run: &Run, prev: Option<&Run>) -> String {
    let f = run.figures();
    let p = prev.map(Run::figures);
    let col = |get: &dyn Fn(&Figures) -> String| {
        format!(
            "{} | {}",
            get(&f),
            p.as_ref().map(get).unwrap_or_else(|| "–".into())
        )
    };
    let mut s = String::new();
    s.push_str(BEGIN);
    s.push_str("\n## Latest run\n\n");
    s.push_str(&format!(
        "Seed **{}**, started {}, image `{}`; disks: {}.{}\n\n",
        run.seed,
        run.started,
        run.image,
        run.disks.join(", "),
        run.stopped
            .as_ref()
            .map(|w| format!(" Stopped early: {w}."))
            .unwrap_or_default()
    ));
    s.push_str(&format!(
        "| | this run | previous run{} |\n|---|---:|---:|\n",
        prev.map(|r| format!(" (seed {}, {})", r.seed, r.started))
            .unwrap_or_default()
    ));
    type Row<'a> = (&'a str, &'a dyn Fn(&Figures) -> String);
    let rows: [Row; 8] = [
        ("scenarios", &|f| f.scenarios.to_string()),
        ("acknowledged operations", &|f| f.acked.to_string()),
        ("operations refused or failed", &|f| {
            f.failed.len().to_string()
        }),
        ("invariants checked", &|f| f.invariants.to_string()),
        ("violations", &|f| f.violations.to_string()),
        ("minutes", &|f| format!("{:.1}", f.minutes)),
        ("share of the time spent booting", &|f| {
            format!("{:.0} %", f.boot_share * 100.0)
        }),
        (
            "faults that struck while their operation ran",
            &|f| match f.during {
                (_, 0) => "not recorded".into(),
                (d, k) => format!("{d} of {k}"),
            },
        ),
    ];
    for (label, get) in rows {
        s.push_str(&format!("| {label} | {} |\n", col(get)));
    }
    let kinds = |f: &Figures, faults: bool| -> Vec<String> {
        (if faults { &f.faults } else { &f.ops })
            .keys()
            .cloned()
            .collect()
    };
    let mut fault_names = kinds(&f, true);
    let mut op_names = kinds(&f, false);
    if let Some(p) = &p {
        fault_names.extend(kinds(p, true));
        op_names.extend(kinds(p, false));
    }
    fault_names.sort();
    fault_names.dedup();
    op_names.sort();
    op_names.dedup();
    for k in &fault_names {
        s.push_str(&format!(
            "| fault: {k} | {} |\n",
            col(&|f| f.faults.get(k).copied().unwrap_or(0).to_string())
        ));
    }
    for k in &op_names {
        s.push_str(&format!(
            "| operation: {k} | {} |\n",
            col(&|f| f.op_cell(k))
        ));
    }
    s.push_str("\n### Violations\n\n");
    let mut any = false;
    for sc in &run.scenarios {
        for v in &sc.violations {
            any = true;
            s.push_str(&format!(
                "- scenario {} ({} under {}): {v}. Reproduce: `make campaign SEED={} SCENARIO={}`\n",
                sc.index,
                sc.op,
                sc.fault.map(|x| x.to_string()).unwrap_or_else(|| "no fault".into()),
                run.seed,
                sc.index
            ));
        }
    }
    if !any {
        s.push_str("None.\n");
    }
    // Not violations (nothing acknowledged was lost), but each is a refusal to read: under its
    // fault, or one the box should not have made.
    s.push_str("\n### Operations refused or failed\n\n");
    if f.failed.is_empty() {
        s.push_str("None.\n");
    }
    for l in &f.failed {
        s.push_str(&format!("- {}\n", l.replace('\n', " ")));
    }
    s.push('\n');
    s.push_str(END);
    s.push('\n');
    s
}

/// `doc` with its latest-run section replaced by `section` (appended when it has none).
pub fn replace_section(doc: &str, section: &str) -> String {
    match (doc.find(BEGIN), doc.find(END)) {
        (Some(a), Some(b)) if b > a => {
            let mut end = b + END.len();
            if doc[end..].starts_with('\n') {
                end += 1;
            }
            format!("{}{}{}", &doc[..a], section, &doc[end..])
        }
        _ => format!("{}\n{}", doc.trim_end(), "\n".to_owned() + section),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seed: u64, violations: usize) -> Run {
        Run {
            seed,
            started: "2026-12-07T14:00:00Z".into(),
            image: "out/eve-storage-dev.raw".into(),
            disks: vec!["scsi 1024M member".into()],
            scenarios: vec![ScenarioRecord {
                index: 3,
                op: Op::Write,
                fault: Some(Fault::PowerCut),
                instant_ms: 10,
                seed: 1,
                detail: "v1 block 2".into(),
                ack: Ack::Unknown,
                invariants: 9,
                violations: (0..violations).map(|i| format!("lost {i}")).collect(),
                notes: vec![],
                boots: 1,
                secs: 60.0,
                op_ms: Some(1500),
                during: Some(true),
            }],
            secs_booting: 45.0,
            secs_total: 90.0,
            stopped: None,
        }
    }

    #[test]
    fn the_section_puts_this_run_beside_the_last_and_names_each_violation() {
        let s = section(&run(7, 1), Some(&run(6, 0)));
        assert!(s.contains("| violations | 1 | 0 |"), "{s}");
        assert!(s.contains("| fault: power-cut | 1 | 1 |"), "{s}");
        assert!(
            s.contains("| operation: write | 1 (median 1.5 s) | 1 (median 1.5 s) |"),
            "{s}"
        );
        assert!(
            s.contains("| faults that struck while their operation ran | 1 of 1 | 1 of 1 |"),
            "{s}"
        );
        assert!(
            s.contains("| share of the time spent booting | 50 % | 50 % |"),
            "{s}"
        );
        assert!(s.contains("`make campaign SEED=7 SCENARIO=3`"), "{s}");
        assert!(section(&run(7, 0), None).contains("None.\n"));
        let mut r = run(8, 0);
        r.scenarios[0].ack = Ack::Failed {
            status: 4,
            msg: "too small".into(),
        };
        let s = section(&r, None);
        assert!(
            s.contains("| operations refused or failed | 1 | – |"),
            "{s}"
        );
        assert!(
            s.contains("- scenario 3 (v1 block 2, power-cut): exit 4: too small"),
            "{s}"
        );
    }

    #[test]
    fn only_the_latest_section_is_replaced() {
        let doc = format!("# R\n\nintro\n\n{}\nafter\n", section(&run(1, 0), None));
        let new = replace_section(&doc, &section(&run(2, 1), None));
        assert!(
            new.starts_with("# R\n\nintro\n\n") && new.ends_with("\nafter\n"),
            "{new}"
        );
        assert!(new.contains("Seed **2**") && !new.contains("Seed **1**"));
        let appended = replace_section("# R\n", &section(&run(3, 0), None));
        assert!(appended.starts_with("# R\n\n") && appended.contains("Seed **3**"));
    }

    #[test]
    fn figures_count_kinds_and_acknowledgements() {
        let f = run(1, 2).figures();
        assert_eq!(f.scenarios, 1);
        assert_eq!(f.violations, 2);
        assert_eq!(f.acked, 0);
        assert_eq!(f.ops["write"], 1);
    }
}
