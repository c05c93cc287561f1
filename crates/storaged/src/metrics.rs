//! The Prometheus text exposition of one look, for node_exporter's textfile collector: pool
//! space and state, member errors, dataset quotas, drive health, per-volume I/O counters (named
//! as node_exporter names disk counters, so the same `rate()` queries work) and the active
//! alerts. Written whole by rename, as the collector expects.

use crate::health::{Observed, Severity};
use crate::journal::Journal;
use std::fmt::Write;

/// A label value as the format wants it: backslash, double quote and newline escaped.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out {
    s: String,
    last: String,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        if self.last != name {
            let _ = writeln!(self.s, "# HELP {name} {help}\n# TYPE {name} {kind}");
            self.last = name.into();
        }
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        let l: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
            .collect();
        let _ = if l.is_empty() {
            writeln!(self.s, "{name} {v}")
        } else {
            writeln!(self.s, "{name}{{{}}} {v}", l.join(","))
        };
    }
    fn one(&mut self, name: &str, kind: &str, help: &str, labels: &[(&str, &str)], v: f64) {
        self.family(name, kind, help);
        self.sample(name, labels, v);
    }
}

/// The whole file for `o`, with the journal's active alerts.
pub fn render(o: &Observed, j: &Journal) -> String {
    let mut w = Out {
        s: String::new(),
        last: String::new(),
    };
    pool_section(&mut w, o);
    quota_section(&mut w, o);
    disk_section(&mut w, o);
    volume_section(&mut w, o);
    alert_section(&mut w, j);
    w.s
}

/// The pool's state, members and space.
fn pool_section(w: &mut Out, o: &Observed) {
    let pool = o.pool_name.as_str();
    let p = [("pool", pool)];
    w.one(
        "eve_storage_health_last_look_timestamp_seconds",
        "gauge",
        "When storaged last looked at the drives and the pool.",
        &[],
        o.at as f64,
    );
    w.one(
        "eve_storage_pool_up",
        "gauge",
        "1 when the pool is imported.",
        &p,
        if o.imported { 1.0 } else { 0.0 },
    );
    if let Some(st) = o.pool.as_ref().filter(|_| o.imported) {
        for s in ["ONLINE", "DEGRADED", "FAULTED", "SUSPENDED", "UNAVAIL"] {
            w.one(
                "eve_storage_pool_state",
                "gauge",
                "1 for the pool's current state.",
                &[("pool", pool), ("state", s)],
                if st.state == s { 1.0 } else { 0.0 },
            );
        }
        w.one(
            "eve_storage_pool_data_errors",
            "gauge",
            "Data errors (unrecoverable blocks) the pool knows of.",
            &p,
            st.error_count as f64,
        );
        for l in &st.leaves {
            let guid = l.guid.to_string();
            let group = l.group.clone().unwrap_or_else(|| "stripe".into());
            let lab = [
                ("pool", pool),
                ("member", l.name.as_str()),
                ("guid", guid.as_str()),
                ("group", group.as_str()),
            ];
            w.one(
                "eve_storage_member_online",
                "gauge",
                "1 when the pool member is ONLINE.",
                &lab,
                if l.state == "ONLINE" { 1.0 } else { 0.0 },
            );
        }
        for (kind, f) in [
            (
                "read",
                (|l: &crate::pool::Leaf| l.read_errors) as fn(&crate::pool::Leaf) -> u64,
            ),
            ("write", |l| l.write_errors),
            ("checksum", |l| l.checksum_errors),
        ] {
            for l in &st.leaves {
                let guid = l.guid.to_string();
                w.one(
                    "eve_storage_member_errors",
                    "gauge",
                    "I/O and checksum errors ZFS counted on the member since import or clear.",
                    &[
                        ("pool", pool),
                        ("member", l.name.as_str()),
                        ("guid", guid.as_str()),
                        ("kind", kind),
                    ],
                    f(l) as f64,
                );
            }
        }
    }
    if let Some(s) = &o.space {
        for (name, help, v) in [
            ("eve_storage_pool_size_bytes", "Pool size.", s.size as f64),
            (
                "eve_storage_pool_allocated_bytes",
                "Pool space allocated.",
                s.allocated as f64,
            ),
            (
                "eve_storage_pool_free_bytes",
                "Pool space free.",
                s.free as f64,
            ),
            (
                "eve_storage_pool_capacity_ratio",
                "Share of the pool allocated (0-1).",
                s.capacity_pct as f64 / 100.0,
            ),
        ] {
            w.one(name, "gauge", help, &p, v);
        }
        if let Some(f) = s.fragmentation_pct {
            w.one(
                "eve_storage_pool_fragmentation_ratio",
                "gauge",
                "Free-space fragmentation (0-1).",
                &p,
                f as f64 / 100.0,
            );
        }
    }
}

fn quota_section(w: &mut Out, o: &Observed) {
    for q in &o.quotas {
        w.one(
            "eve_storage_dataset_used_bytes",
            "gauge",
            "Space a dataset with a quota uses.",
            &[("dataset", q.dataset.as_str())],
            q.used as f64,
        );
    }
    for q in &o.quotas {
        w.one(
            "eve_storage_dataset_quota_bytes",
            "gauge",
            "A dataset's quota.",
            &[("dataset", q.dataset.as_str())],
            q.quota as f64,
        );
    }
}

/// Each drive's report, one family at a time.
fn disk_section(w: &mut Out, o: &Observed) {
    type Get = fn(&crate::smart::DriveHealth) -> Option<f64>;
    let disk: [(&str, &str, &str, Get); 9] = [
        (
            "eve_storage_disk_temperature_celsius",
            "gauge",
            "Drive temperature.",
            |h| h.temperature_c.map(|v| v as f64),
        ),
        (
            "eve_storage_disk_critical_warning",
            "gauge",
            "NVMe critical-warning bits (0: none).",
            |h| h.critical_warning.map(f64::from),
        ),
        (
            "eve_storage_disk_smart_passed",
            "gauge",
            "1 when the drive's SMART self-assessment passes.",
            |h| h.smart_passed.map(|b| if b { 1.0 } else { 0.0 }),
        ),
        (
            "eve_storage_disk_wear_ratio",
            "gauge",
            "Share of rated endurance used (NVMe percentage used / 100; may pass 1).",
            |h| h.percentage_used.map(|v| v as f64 / 100.0),
        ),
        (
            "eve_storage_disk_available_spare_ratio",
            "gauge",
            "NVMe available spare (0-1).",
            |h| h.available_spare_pct.map(|v| v as f64 / 100.0),
        ),
        (
            "eve_storage_disk_media_errors_total",
            "counter",
            "NVMe media and data integrity errors.",
            |h| h.media_errors.map(|v| v as f64),
        ),
        (
            "eve_storage_disk_reallocated_sectors",
            "gauge",
            "ATA reallocated sectors.",
            |h| h.reallocated_sectors.map(|v| v as f64),
        ),
        (
            "eve_storage_disk_pending_sectors",
            "gauge",
            "ATA sectors pending reallocation.",
            |h| h.pending_sectors.map(|v| v as f64),
        ),
        (
            "eve_storage_disk_power_on_seconds_total",
            "counter",
            "Power-on time the drive reports.",
            |h| h.power_on_hours.map(|v| v as f64 * 3600.0),
        ),
    ];
    for (name, kind, help, get) in disk {
        for d in &o.devices {
            if let Some(v) = d.data().and_then(get) {
                w.one(
                    name,
                    kind,
                    help,
                    &[
                        ("device", d.name.as_str()),
                        ("id", d.stable_id.as_str()),
                        ("bus", d.bus.as_str()),
                    ],
                    v,
                );
            }
        }
    }
    for d in &o.devices {
        w.one(
            "eve_storage_disk_health_readable",
            "gauge",
            "1 when the drive gave a health report, 0 when it could not be read, -1 when it has none.",
            &[("device", d.name.as_str()), ("id", d.stable_id.as_str()), ("bus", d.bus.as_str())],
            match d.reading {
                crate::smart::Reading::Data(_) => 1.0,
                crate::smart::Reading::Unreadable { .. } => 0.0,
                crate::smart::Reading::NoData { .. } => -1.0,
            },
        );
    }
}

/// Each volume's counters, named as node_exporter names a disk's.
fn volume_section(w: &mut Out, o: &Observed) {
    type Io = fn(&crate::iostat::IoStat) -> f64;
    let io: [(&str, &str, &str, Io); 8] = [
        (
            "eve_storage_volume_reads_completed_total",
            "counter",
            "Reads completed on the volume's zvol.",
            |s| s.reads as f64,
        ),
        (
            "eve_storage_volume_read_bytes_total",
            "counter",
            "Bytes read from the volume.",
            |s| s.read_sectors as f64 * 512.0,
        ),
        (
            "eve_storage_volume_read_time_seconds_total",
            "counter",
            "Time spent on reads (rate over reads: mean read latency).",
            |s| s.read_ms as f64 / 1000.0,
        ),
        (
            "eve_storage_volume_writes_completed_total",
            "counter",
            "Writes completed on the volume's zvol.",
            |s| s.writes as f64,
        ),
        (
            "eve_storage_volume_written_bytes_total",
            "counter",
            "Bytes written to the volume.",
            |s| s.write_sectors as f64 * 512.0,
        ),
        (
            "eve_storage_volume_write_time_seconds_total",
            "counter",
            "Time spent on writes (rate over writes: mean write latency).",
            |s| s.write_ms as f64 / 1000.0,
        ),
        (
            "eve_storage_volume_io_now",
            "gauge",
            "I/Os in flight.",
            |s| s.in_flight as f64,
        ),
        (
            "eve_storage_volume_io_time_seconds_total",
            "counter",
            "Time the volume had I/O in flight.",
            |s| s.io_ms as f64 / 1000.0,
        ),
    ];
    for (name, kind, help, get) in io {
        for v in &o.volumes {
            w.one(
                name,
                kind,
                help,
                &[
                    ("volume", v.volume.as_str()),
                    ("dataset", v.dataset.as_str()),
                    ("device", v.device.as_str()),
                ],
                get(&v.stat),
            );
        }
    }
}

fn alert_section(w: &mut Out, j: &Journal) {
    let counts = j.counts();
    for s in [Severity::Notice, Severity::Warning, Severity::Critical] {
        w.one(
            "eve_storage_alerts",
            "gauge",
            "Active alerts by severity.",
            &[("severity", s.as_str())],
            counts[s as usize] as f64,
        );
    }
    for a in &j.active {
        w.one(
            "eve_storage_alert_active",
            "gauge",
            "One series per active alert; `since` is when it was raised.",
            &[
                ("key", a.alert.key.as_str()),
                ("severity", a.alert.severity.as_str()),
                ("since", a.since.to_string().as_str()),
            ],
            1.0,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{Alert, Device, Space};
    use crate::iostat::{IoStat, VolumeIo};
    use crate::smart::{DriveHealth, Reading};

    fn observed() -> Observed {
        Observed {
            at: 1_800_000_000,
            pool_name: "persist".into(),
            pool: Some(
                crate::pool::parse_status(
                    &std::fs::read_to_string(format!(
                        "{}/tests/fixtures/status-new.json",
                        env!("CARGO_MANIFEST_DIR")
                    ))
                    .unwrap(),
                    "persist",
                )
                .unwrap(),
            ),
            imported: true,
            space: Some(Space {
                size: 1000,
                allocated: 820,
                free: 180,
                capacity_pct: 82,
                fragmentation_pct: None,
            }),
            devices: vec![
                Device {
                    name: "nvme0n1".into(),
                    stable_id: "nvme.1b36-\"odd\"\\id".into(),
                    bus: "nvme".into(),
                    size: 1 << 30,
                    reading: Reading::Data(Box::new(DriveHealth {
                        temperature_c: Some(50),
                        critical_warning: Some(4),
                        media_errors: Some(2),
                        ..DriveHealth::default()
                    })),
                },
                Device {
                    name: "vda".into(),
                    stable_id: "virtio-X".into(),
                    bus: "virtio".into(),
                    size: 1 << 30,
                    reading: Reading::NoData {
                        reason: "virtual".into(),
                    },
                },
            ],
            volumes: vec![VolumeIo {
                dataset: "persist/clear/volumes/db".into(),
                volume: "db".into(),
                device: "zd0".into(),
                stat: IoStat {
                    reads: 51,
                    read_sectors: 2112,
                    read_ms: 28,
                    writes: 8,
                    write_sectors: 16384,
                    write_ms: 88,
                    in_flight: 0,
                    io_ms: 112,
                },
            }],
            ..Observed::default()
        }
    }

    #[test]
    fn the_export_has_one_header_per_family_escaped_labels_and_the_figures() {
        let mut j = Journal::default();
        j.update(
            &[Alert {
                key: "disk:X:critical-warning".into(),
                severity: Severity::Critical,
                message: "m".into(),
            }],
            &[],
            7,
        );
        let t = render(&observed(), &j);
        for line in [
            "eve_storage_pool_up{pool=\"persist\"} 1",
            "eve_storage_pool_state{pool=\"persist\",state=\"ONLINE\"} 1",
            "eve_storage_pool_state{pool=\"persist\",state=\"DEGRADED\"} 0",
            "eve_storage_pool_capacity_ratio{pool=\"persist\"} 0.82",
            "eve_storage_disk_critical_warning{device=\"nvme0n1\",id=\"nvme.1b36-\\\"odd\\\"\\\\id\",bus=\"nvme\"} 4",
            "eve_storage_disk_media_errors_total{device=\"nvme0n1\"",
            "eve_storage_disk_health_readable{device=\"vda\",id=\"virtio-X\",bus=\"virtio\"} -1",
            "eve_storage_volume_written_bytes_total{volume=\"db\",dataset=\"persist/clear/volumes/db\",device=\"zd0\"} 8388608",
            "eve_storage_volume_write_time_seconds_total{volume=\"db\",dataset=\"persist/clear/volumes/db\",device=\"zd0\"} 0.088",
            "eve_storage_alerts{severity=\"critical\"} 1",
            "eve_storage_alert_active{key=\"disk:X:critical-warning\",severity=\"critical\",since=\"7\"} 1",
        ] {
            assert!(t.contains(line), "missing {line}\n{t}");
        }
        // Each family's HELP and TYPE once, before its samples; every other line a sample.
        let mut seen = std::collections::BTreeSet::new();
        for l in t.lines() {
            if let Some(r) = l.strip_prefix("# TYPE ") {
                let name = r.split(' ').next().unwrap();
                assert!(seen.insert(name.to_string()), "{name} declared twice");
            } else if !l.starts_with("# HELP ") {
                let name = l.split(['{', ' ']).next().unwrap();
                assert!(seen.contains(name), "{name} sampled before its TYPE");
                let v = l.rsplit(' ').next().unwrap();
                assert!(v.parse::<f64>().is_ok(), "{l}");
            }
        }
        // No temperature for the virtio disk, which has no report.
        assert!(!t.contains("eve_storage_disk_temperature_celsius{device=\"vda\""));
    }
}
