//! The Prometheus text exposition of one look, for node_exporter's textfile collector: pool
//! space and state, member errors, dataset quotas, drive health, per-volume I/O counters (named
//! as node_exporter names disk counters, so the same `rate()` queries work), the vault, the last
//! scrub and trim, and the active alerts. Written whole by rename, as the collector expects.
//! Names follow Prometheus' conventions (a unit suffix, `_total` on counters only); no label
//! holds a time or a count, so a series lives as long as what it describes, and a state is one
//! 0/1 series per possible value.

use crate::health::{Observed, Severity};
use crate::journal::Journal;
use platform::prom::Writer as Out;

/// The whole file for `o`, with the journal's active alerts and the maintenance schedule's view
/// (when the pool is there to hold it).
pub fn render(o: &Observed, j: &Journal, m: Option<&crate::maint::View>) -> String {
    let mut w = Out::default();
    pool_section(&mut w, o);
    quota_section(&mut w, o);
    disk_section(&mut w, o);
    volume_section(&mut w, o);
    vault_section(&mut w, o);
    maintenance_section(&mut w, o, m);
    alert_section(&mut w, j);
    w.finish()
}

/// The vault as storage-init left it this boot: one 0/1 series per state.
fn vault_section(w: &mut Out, o: &Observed) {
    let Some(v) = &o.vault else {
        return;
    };
    for s in ["unlocked", "unencrypted", "locked", "absent"] {
        w.one(
            "eve_storage_vault_state",
            "gauge",
            "1 for the vault's state this boot (storage-init's outcome).",
            &[("pool", o.pool_name.as_str()), ("state", s)],
            if v.state == s { 1.0 } else { 0.0 },
        );
    }
}

/// When the last scrub and trim completed, and what the last scrub found.
fn maintenance_section(w: &mut Out, o: &Observed, m: Option<&crate::maint::View>) {
    let p = [("pool", o.pool_name.as_str())];
    if let Some(m) = m {
        for (op, v) in [
            ("scrub", &m.scrub),
            ("trim", &m.trim),
            ("selftest", &m.selftest),
        ] {
            if let Some(t) = v.last {
                w.one(
                    "eve_storage_maintenance_last_completed_timestamp_seconds",
                    "gauge",
                    "When the last scrub or trim of the pool completed, or the drives' self-tests were last started.",
                    &[("pool", o.pool_name.as_str()), ("op", op)],
                    t as f64,
                );
            }
        }
    }
    if let Some(s) = o
        .pool
        .as_ref()
        .and_then(|p| p.scan.as_ref())
        .filter(|s| s.function == "SCRUB" && s.state == "FINISHED")
    {
        w.one(
            "eve_storage_scrub_errors",
            "gauge",
            "Errors the last completed scrub found (repaired or not).",
            &p,
            s.errors as f64,
        );
    }
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
    let disk: [(&str, &str, &str, Get); 11] = [
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
            "eve_storage_disk_selftest_failed",
            "gauge",
            "1 when the drive's last self-test failed (a drive that offers self-tests).",
            |h| {
                let t = h.selftest.as_ref()?;
                if matches!(t, crate::selftest::SelfTest::Unsupported { .. }) {
                    return None;
                }
                Some(match t.last().map(|l| l.outcome) {
                    Some(crate::selftest::Outcome::Failed) => 1.0,
                    _ => 0.0,
                })
            },
        ),
        (
            "eve_storage_disk_selftest_running",
            "gauge",
            "1 while the drive runs a self-test (a drive that offers self-tests).",
            |h| match h.selftest.as_ref()? {
                crate::selftest::SelfTest::Unsupported { .. } => None,
                crate::selftest::SelfTest::Running { .. } => Some(1.0),
                crate::selftest::SelfTest::Idle { .. } => Some(0.0),
            },
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
        let now = match d.reading {
            crate::smart::Reading::Data(_) => "report",
            crate::smart::Reading::Unreadable { .. } => "unreadable",
            crate::smart::Reading::NoData { .. } => "none",
        };
        for state in ["report", "unreadable", "none"] {
            w.one(
                "eve_storage_disk_health_report",
                "gauge",
                "1 for whether the drive gave a health report (report), could not be read (unreadable) or has none to give (none).",
                &[
                    ("device", d.name.as_str()),
                    ("id", d.stable_id.as_str()),
                    ("bus", d.bus.as_str()),
                    ("state", state),
                ],
                if now == state { 1.0 } else { 0.0 },
            );
        }
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
    let labels = |a: &crate::journal::Active| {
        [
            ("key", a.alert.key.clone()),
            ("severity", a.alert.severity.as_str().to_string()),
        ]
    };
    for a in &j.active {
        let l = labels(a);
        w.one(
            "eve_storage_alert_active",
            "gauge",
            "One series per active alert.",
            &[(l[0].0, l[0].1.as_str()), (l[1].0, l[1].1.as_str())],
            1.0,
        );
    }
    for a in &j.active {
        let l = labels(a);
        w.one(
            "eve_storage_alert_since_timestamp_seconds",
            "gauge",
            "When each active alert was raised.",
            &[(l[0].0, l[0].1.as_str()), (l[1].0, l[1].1.as_str())],
            a.since as f64,
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
                        selftest: Some(crate::selftest::SelfTest::Idle {
                            last: Some(crate::selftest::Last {
                                kind: "short".into(),
                                outcome: crate::selftest::Outcome::Failed,
                                result: "failed in segment 3".into(),
                                hours_ago: Some(2),
                            }),
                        }),
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
            vault: Some(crate::health::VaultSeen {
                state: "unlocked".into(),
                ..Default::default()
            }),
            ..Observed::default()
        }
    }

    fn view() -> crate::maint::View {
        let op = |last| crate::maint::OpView {
            every: Some(86_400),
            last,
            last_result: None,
            next: None,
            note: None,
        };
        crate::maint::View {
            pool: "persist".into(),
            running: None,
            scrub: op(Some(1_799_000_000)),
            trim: op(None),
            selftest: op(Some(1_799_000_100)),
            start: None,
            held: None,
            at: 1_799_000_200,
        }
    }

    fn text() -> String {
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
        render(&observed(), &j, Some(&view()))
    }

    #[test]
    fn the_export_has_one_header_per_family_escaped_labels_and_the_figures() {
        let t = text();
        for line in [
            "eve_storage_pool_up{pool=\"persist\"} 1",
            "eve_storage_pool_state{pool=\"persist\",state=\"ONLINE\"} 1",
            "eve_storage_pool_state{pool=\"persist\",state=\"DEGRADED\"} 0",
            "eve_storage_pool_capacity_ratio{pool=\"persist\"} 0.82",
            "eve_storage_disk_critical_warning{device=\"nvme0n1\",id=\"nvme.1b36-\\\"odd\\\"\\\\id\",bus=\"nvme\"} 4",
            "eve_storage_disk_media_errors_total{device=\"nvme0n1\"",
            "eve_storage_disk_selftest_failed{device=\"nvme0n1\",id=\"nvme.1b36-\\\"odd\\\"\\\\id\",bus=\"nvme\"} 1",
            "eve_storage_disk_selftest_running{device=\"nvme0n1\",id=\"nvme.1b36-\\\"odd\\\"\\\\id\",bus=\"nvme\"} 0",
            "eve_storage_disk_health_report{device=\"vda\",id=\"virtio-X\",bus=\"virtio\",state=\"none\"} 1",
            "eve_storage_disk_health_report{device=\"vda\",id=\"virtio-X\",bus=\"virtio\",state=\"report\"} 0",
            "eve_storage_vault_state{pool=\"persist\",state=\"unlocked\"} 1",
            "eve_storage_vault_state{pool=\"persist\",state=\"locked\"} 0",
            "eve_storage_maintenance_last_completed_timestamp_seconds{pool=\"persist\",op=\"scrub\"} 1799000000",
            "eve_storage_maintenance_last_completed_timestamp_seconds{pool=\"persist\",op=\"selftest\"} 1799000100",
            "eve_storage_volume_written_bytes_total{volume=\"db\",dataset=\"persist/clear/volumes/db\",device=\"zd0\"} 8388608",
            "eve_storage_volume_write_time_seconds_total{volume=\"db\",dataset=\"persist/clear/volumes/db\",device=\"zd0\"} 0.088",
            "eve_storage_alerts{severity=\"critical\"} 1",
            "eve_storage_alert_active{key=\"disk:X:critical-warning\",severity=\"critical\"} 1",
            "eve_storage_alert_since_timestamp_seconds{key=\"disk:X:critical-warning\",severity=\"critical\"} 7",
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
        // No temperature for the virtio disk, which has no report; no trim has completed yet.
        assert!(!t.contains("eve_storage_disk_temperature_celsius{device=\"vda\""));
        assert!(!t.contains("op=\"trim\""), "{t}");
    }

    /// Read back by a parser of the text format, every sample is there with its type, and the
    /// names keep Prometheus' conventions (units as suffixes, `_total` on counters only, no
    /// time in a label).
    #[test]
    fn a_prometheus_parser_reads_it_all_and_the_names_keep_the_conventions() {
        let t = text();
        assert_eq!(platform::prom::check(&t), Vec::<String>::new(), "{t}");
        let lines = t.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
        let samples = t.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(scrape.samples.len(), samples);
        for s in &scrape.samples {
            let counter = matches!(s.value, prometheus_parse::Value::Counter(_));
            assert_eq!(counter, s.metric.ends_with("_total"), "{}", s.metric);
            assert!(
                !matches!(s.value, prometheus_parse::Value::Untyped(_)),
                "{} has no TYPE",
                s.metric
            );
            assert!(
                scrape.docs.contains_key(&s.metric),
                "{} has no HELP",
                s.metric
            );
        }
        let up = scrape
            .samples
            .iter()
            .find(|s| s.metric == "eve_storage_pool_up")
            .unwrap();
        assert_eq!(up.labels.get("pool"), Some("persist"));
        assert_eq!(up.value, prometheus_parse::Value::Gauge(1.0));
    }
}
