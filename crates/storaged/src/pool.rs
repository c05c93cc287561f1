//! The parts of `zpool status -j --json-int -p -t POOL` that maintenance needs, read by a pure
//! function: the pool's state, its last (or current) scan, and each leaf device's errors and trim.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The last or current scan (scrub or resilver) as the pool records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Scan {
    /// `SCRUB` or `RESILVER`.
    pub function: String,
    /// `SCANNING`, `FINISHED`, `CANCELED`.
    pub state: String,
    pub start: u64,
    /// 0 while scanning.
    pub end: u64,
    pub examined: u64,
    pub to_examine: u64,
    pub errors: u64,
    /// Paused by hand (`zpool scrub -p`).
    pub paused: bool,
}

impl Scan {
    pub fn is_scrub(&self) -> bool {
        self.function == "SCRUB"
    }
    pub fn running(&self) -> bool {
        self.state == "SCANNING"
    }
    pub fn percent(&self) -> f64 {
        if self.to_examine == 0 {
            0.0
        } else {
            (self.examined as f64 * 100.0 / self.to_examine as f64).min(100.0)
        }
    }

    /// How a running scan goes at `now`: `45% at 120M/s, 3 min left` (the rate over its whole
    /// run; no rate or time before it has run a second or examined a byte).
    pub fn progress(&self, now: u64) -> String {
        let pct = format!("{:.0}%", self.percent());
        let secs = now.saturating_sub(self.start);
        if secs == 0 || self.examined == 0 {
            return pct;
        }
        let rate = self.examined / secs;
        if rate == 0 {
            return pct;
        }
        let left = self.to_examine.saturating_sub(self.examined);
        format!(
            "{pct} at {}/s, {} left",
            platform::units::human(rate),
            platform::units::duration_text(left / rate)
        )
    }
}

/// A leaf device (a disk partition, or a file) of the pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Leaf {
    pub name: String,
    /// The ZFS guid: a missing device is named by it.
    pub guid: u64,
    /// The redundancy group it is in (`mirror-0`, `raidz1-0`), or `None` for a top-level device
    /// (a stripe member, with no redundancy).
    pub group: Option<String>,
    /// The group's state (a top-level device's own).
    pub group_state: String,
    /// Bytes of the device ZFS uses (a replacement must be at least this big).
    pub size: u64,
    pub path: Option<String>,
    pub state: String,
    pub read_errors: u64,
    pub write_errors: u64,
    pub checksum_errors: u64,
    /// `UNTRIMMED`, `ACTIVE`, `SUSPENDED`, `CANCELED`, `COMPLETE`.
    pub trim_state: String,
    /// When its last trim completed (0: never).
    pub trim_time: u64,
    pub trimmed: u64,
    pub to_trim: u64,
    /// The device does not support trim.
    pub trim_notsup: bool,
    pub trim_errors: u64,
}

impl Leaf {
    pub fn trimming(&self) -> bool {
        self.trim_state == "ACTIVE"
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PoolState {
    pub name: String,
    /// `ONLINE`, `DEGRADED`, `FAULTED`, `SUSPENDED`, `UNAVAIL`.
    pub state: String,
    pub scan: Option<Scan>,
    pub leaves: Vec<Leaf>,
    /// Data errors the pool knows of (files with unrecoverable blocks).
    pub error_count: u64,
}

fn num(v: &Value, k: &str) -> u64 {
    match &v[k] {
        Value::Number(n) => n.as_u64().unwrap_or(0),
        Value::String(s) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

fn text(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_string()
}

fn leaves(v: &Value, group: Option<&Value>, out: &mut Vec<Leaf>) {
    let Some(children) = v["vdevs"].as_object() else {
        if v["vdev_type"] != "root" {
            out.push(Leaf {
                name: text(v, "name"),
                guid: num(v, "guid"),
                group: group.map(|g| text(g, "name")),
                group_state: text(group.unwrap_or(v), "state"),
                size: num(v, "phys_space").max(num(v, "rep_dev_size")),
                path: v["path"].as_str().map(String::from),
                state: text(v, "state"),
                read_errors: num(v, "read_errors"),
                write_errors: num(v, "write_errors"),
                checksum_errors: num(v, "checksum_errors"),
                trim_state: text(v, "trim_state"),
                trim_time: num(v, "trim_time"),
                trimmed: num(v, "trimmed"),
                to_trim: num(v, "to_trim"),
                trim_notsup: num(v, "trim_notsup") != 0,
                trim_errors: num(v, "trim_errors"),
            });
        }
        return;
    };
    // Below the root, a vdev with children is a redundancy group (mirror, raidz) or a
    // replacing/spare pair inside one; the outermost group is the one that says the risk.
    let top = v["vdev_type"] != "root";
    for c in children.values() {
        leaves(c, if top { group.or(Some(v)) } else { None }, out);
    }
}

/// Reads `pool` from `zpool status -j --json-int -p -t` output.
pub fn parse_status(json: &str, pool: &str) -> Result<PoolState, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let p = &v["pools"][pool];
    if !p.is_object() {
        return Err(format!("pool `{pool}` is not in the output"));
    }
    let scan = p.get("scan_stats").filter(|s| s.is_object()).map(|s| Scan {
        function: text(s, "function"),
        state: text(s, "state"),
        start: num(s, "start_time"),
        end: num(s, "end_time"),
        examined: num(s, "examined"),
        to_examine: num(s, "to_examine"),
        errors: num(s, "errors"),
        paused: num(s, "scrub_pause") != 0,
    });
    let mut ls = Vec::new();
    if let Some(root) = p["vdevs"].as_object() {
        for r in root.values() {
            leaves(r, None, &mut ls);
        }
    }
    Ok(PoolState {
        name: pool.into(),
        state: text(p, "state"),
        scan,
        leaves: ls,
        error_count: num(p, "error_count"),
    })
}

/// A pool that is not imported, as `zpool import` describes it (it has no JSON form): its state
/// and the tree under `config:`, enough to say which member is missing and what that risks.
/// `None` when `pool` is not in the listing.
pub fn parse_import(out: &str, pool: &str) -> Option<PoolState> {
    let mut lines = out.lines();
    // The block of this pool.
    loop {
        let l = lines.next()?;
        if l.trim().strip_prefix("pool:").map(str::trim) == Some(pool) {
            break;
        }
    }
    let mut state = String::new();
    let mut tree: Vec<(usize, String, String)> = Vec::new();
    let mut in_config = false;
    for l in lines {
        let t = l.trim();
        if t.starts_with("pool:") {
            break;
        }
        if let Some(st) = t.strip_prefix("state:") {
            state = st.trim().to_string();
        } else if t == "config:" {
            in_config = true;
        } else if in_config && !t.is_empty() && l.starts_with('\t') {
            let indent = l.trim_start_matches('\t');
            let depth = (indent.len() - indent.trim_start().len()) / 2;
            let mut f = t.split_whitespace();
            if let (Some(name), Some(st)) = (f.next(), f.next()) {
                tree.push((depth, name.to_string(), st.to_string()));
            }
        } else if in_config && t.is_empty() && !tree.is_empty() {
            break;
        }
    }
    let mut leaves = Vec::new();
    for (i, (depth, name, st)) in tree.iter().enumerate() {
        let has_children = tree.get(i + 1).is_some_and(|(d, _, _)| d > depth);
        if *depth == 0 || has_children {
            continue;
        }
        let group = (*depth >= 2)
            .then(|| tree[..i].iter().rev().find(|(d, _, _)| *d == 1))
            .flatten();
        leaves.push(Leaf {
            name: name.clone(),
            guid: name.parse().unwrap_or(0),
            group: group.map(|g| g.1.clone()),
            group_state: group.map_or(st.clone(), |g| g.2.clone()),
            size: 0,
            path: None,
            state: st.clone(),
            read_errors: 0,
            write_errors: 0,
            checksum_errors: 0,
            trim_state: String::new(),
            trim_time: 0,
            trimmed: 0,
            to_trim: 0,
            trim_notsup: false,
            trim_errors: 0,
        });
    }
    Some(PoolState {
        name: pool.into(),
        state,
        scan: None,
        leaves,
        error_count: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(n: &str) -> String {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(n),
        )
        .unwrap_or_default()
    }

    #[test]
    fn a_new_pool_has_no_scan_and_untrimmed_leaves() {
        let p = parse_status(&fixture("status-new.json"), "persist").unwrap();
        assert_eq!(p.state, "ONLINE");
        assert_eq!(p.scan, None);
        assert_eq!(p.leaves.len(), 4);
        assert!(p
            .leaves
            .iter()
            .all(|l| l.trim_state == "UNTRIMMED" && l.trim_time == 0 && !l.trim_notsup));
        assert!(p
            .leaves
            .iter()
            .all(|l| l.group.is_none() && l.size > 0 && l.guid > 0));
        assert!(p.leaves[0]
            .path
            .as_deref()
            .is_some_and(|x| x.starts_with("/dev/disk/by-partuuid/")));
    }

    #[test]
    fn a_finished_scrub_and_a_complete_trim_read_with_their_times() {
        let p = parse_status(&fixture("status-scrubbed-trimmed.json"), "persist").unwrap();
        let s = p.scan.unwrap();
        assert!(s.is_scrub() && !s.running());
        assert_eq!((s.start, s.end, s.errors), (1796346249, 1796346250, 0));
        assert!(p
            .leaves
            .iter()
            .all(|l| l.trim_state == "COMPLETE" && l.trim_time == 1796346251));
    }

    #[test]
    fn a_running_scrub_reads_as_running_with_its_progress() {
        let p = parse_status(&fixture("status-scrubbing.json"), "persist").unwrap();
        let s = p.scan.unwrap();
        assert!(s.running() && s.end == 0);
        assert!(
            s.percent() > 99.0 && s.percent() <= 100.0,
            "{}",
            s.percent()
        );
    }

    #[test]
    fn nested_vdevs_are_walked_to_their_leaves_and_bad_output_is_an_error() {
        let j = r#"{"pools":{"p":{"state":"DEGRADED","error_count":"2","vdevs":{"p":{"vdev_type":"root","vdevs":{
            "mirror-0":{"name":"mirror-0","vdev_type":"mirror","state":"DEGRADED","vdevs":{
              "a":{"name":"a","vdev_type":"disk","state":"ONLINE","read_errors":0},
              "b":{"name":"b","vdev_type":"disk","state":"FAULTED","read_errors":7,"trim_notsup":1}}}}}}}}}"#;
        let p = parse_status(j, "p").unwrap();
        assert_eq!(p.leaves.len(), 2);
        assert_eq!(p.error_count, 2);
        let b = p.leaves.iter().find(|l| l.name == "b").unwrap();
        assert!(b.trim_notsup && b.read_errors == 7 && b.state == "FAULTED");
        assert_eq!(b.group.as_deref(), Some("mirror-0"));
        assert_eq!(b.group_state, "DEGRADED");
        assert!(parse_status(j, "other").is_err());
        assert!(parse_status("zpool: no such pool", "p").is_err());
    }

    #[test]
    fn a_pool_that_cannot_be_imported_is_read_from_the_import_listing() {
        // As the guest printed it with a stripe member pulled.
        let out = "  pool: persist\n    id: 747367351290284001\n state: UNAVAIL\nstatus: One or more devices contains corrupted data.\naction: The pool cannot be imported due to damaged devices or data.\n   see: https://openzfs.github.io/openzfs-docs/msg/ZFS-8000-5E\nconfig:\n\n\tpersist                                 UNAVAIL  insufficient replicas\n\t  c62e4966-adad-405d-990a-5ae221417ce2  ONLINE\n\t  fdcec447-0d37-4d61-8e01-cb8682c18bfd  ONLINE\n\t  2b9e355f-6f2a-49bf-8efa-6bf4a4ff1692  UNAVAIL\n";
        let p = parse_import(out, "persist").unwrap();
        assert_eq!(p.state, "UNAVAIL");
        let l: Vec<(&str, Option<&str>, &str)> = p
            .leaves
            .iter()
            .map(|l| (l.name.as_str(), l.group.as_deref(), l.state.as_str()))
            .collect();
        assert_eq!(
            l,
            [
                ("c62e4966-adad-405d-990a-5ae221417ce2", None, "ONLINE"),
                ("fdcec447-0d37-4d61-8e01-cb8682c18bfd", None, "ONLINE"),
                ("2b9e355f-6f2a-49bf-8efa-6bf4a4ff1692", None, "UNAVAIL")
            ]
        );
        let mirror = "   pool: tank\n     id: 1\n  state: ONLINE\n config:\n\n\ttank  ONLINE\n\t  a  ONLINE\n\n   pool: persist\n     id: 2\n  state: DEGRADED\n config:\n\n\tpersist          DEGRADED\n\t  mirror-0       DEGRADED\n\t    aaaa         ONLINE\n\t    12345678     UNAVAIL\n\t  bbbb           ONLINE\n";
        let p = parse_import(mirror, "persist").unwrap();
        assert_eq!(p.state, "DEGRADED");
        assert_eq!(p.leaves.len(), 3);
        assert_eq!(
            (
                p.leaves[1].guid,
                p.leaves[1].group.as_deref(),
                p.leaves[1].group_state.as_str()
            ),
            (12345678, Some("mirror-0"), "DEGRADED")
        );
        assert_eq!(p.leaves[2].group, None);
        assert!(parse_import(mirror, "other").is_none());
        assert!(parse_import("", "persist").is_none());
    }
}
