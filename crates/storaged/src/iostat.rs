//! Per-volume I/O figures from the kernel: each zvol's `/sys/block/zdN/stat` counters (the
//! layout of Documentation/block/stat.rst), found through udev's `/dev/zvol/<dataset>` links.
//! Counters go to the Prometheus export as they are; rates (IOPS, throughput, mean latency)
//! come from two samples.

use platform::Roots;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The cumulative counters of one block device. Sectors are always 512 bytes here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct IoStat {
    pub reads: u64,
    pub read_sectors: u64,
    /// Milliseconds spent on reads, summed over requests.
    pub read_ms: u64,
    pub writes: u64,
    pub write_sectors: u64,
    pub write_ms: u64,
    pub in_flight: u64,
    /// Milliseconds the device had I/O in flight.
    pub io_ms: u64,
}

/// One `stat` line; `None` when it has fewer than the 11 fields every kernel since 2.6 gives.
pub fn parse_stat(line: &str) -> Option<IoStat> {
    let f: Vec<u64> = line
        .split_whitespace()
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    (f.len() >= 11).then(|| IoStat {
        reads: f[0],
        read_sectors: f[2],
        read_ms: f[3],
        writes: f[4],
        write_sectors: f[6],
        write_ms: f[7],
        in_flight: f[8],
        io_ms: f[9],
    })
}

/// A volume's device and counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct VolumeIo {
    /// The zvol's dataset, `persist/clear/volumes/db`.
    pub dataset: String,
    /// Its last component, the name `storagectl volume` uses.
    pub volume: String,
    /// `zd16`.
    pub device: String,
    pub stat: IoStat,
}

/// Every zvol of `pool` with a device node, sorted by dataset. Snapshot devices (`vol@snap`)
/// and partitions of a volume (`vol-part1`) are not volumes.
pub fn volumes(roots: &Roots, pool: &str) -> Vec<VolumeIo> {
    let mut out = Vec::new();
    walk(roots, &roots.dev.join("zvol").join(pool), pool, &mut out);
    out.sort_by(|a, b| a.dataset.cmp(&b.dataset));
    out
}

fn walk(roots: &Roots, dir: &Path, dataset: &str, out: &mut Vec<VolumeIo>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        let child = format!("{dataset}/{name}");
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_dir() => walk(roots, &path, &child, out),
            Ok(m) if m.file_type().is_symlink() => {
                if name.contains('@') || is_partition_link(&name) {
                    continue;
                }
                let Some(dev) = std::fs::read_link(&path)
                    .ok()
                    .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
                else {
                    continue;
                };
                let Some(stat) =
                    std::fs::read_to_string(roots.sys.join("block").join(&dev).join("stat"))
                        .ok()
                        .and_then(|s| parse_stat(&s))
                else {
                    continue;
                };
                out.push(VolumeIo {
                    dataset: child,
                    volume: name,
                    device: dev,
                    stat,
                });
            }
            _ => {}
        }
    }
}

/// udev names a zvol's partitions `<vol>-part<N>`.
fn is_partition_link(name: &str) -> bool {
    name.rsplit_once("-part")
        .is_some_and(|(_, n)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

/// Rates between two samples `secs` apart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    pub read_iops: f64,
    pub write_iops: f64,
    pub read_bytes_per_sec: f64,
    pub write_bytes_per_sec: f64,
    /// Mean time per completed request in the interval; `None` when there was none.
    pub read_latency_ms: Option<f64>,
    pub write_latency_ms: Option<f64>,
    /// Share of the interval the device was busy, 0-100.
    pub busy_pct: f64,
}

pub fn rates(a: &IoStat, b: &IoStat, secs: f64) -> Rates {
    let d = |x: u64, y: u64| y.saturating_sub(x) as f64;
    let secs = secs.max(0.001);
    let (r, w) = (d(a.reads, b.reads), d(a.writes, b.writes));
    let lat = |n: f64, ms: f64| (n > 0.0).then(|| ms / n);
    Rates {
        read_iops: r / secs,
        write_iops: w / secs,
        read_bytes_per_sec: d(a.read_sectors, b.read_sectors) * 512.0 / secs,
        write_bytes_per_sec: d(a.write_sectors, b.write_sectors) * 512.0 / secs,
        read_latency_ms: lat(r, d(a.read_ms, b.read_ms)),
        write_latency_ms: lat(w, d(a.write_ms, b.write_ms)),
        busy_pct: (d(a.io_ms, b.io_ms) / (secs * 10.0)).min(100.0),
    }
}

/// One volume's rates over a sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeRates {
    pub volume: String,
    pub dataset: String,
    pub device: String,
    #[serde(flatten)]
    pub rates: Rates,
}

/// Every volume's rates over about `secs` seconds (`interval_secs`: as measured).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub interval_secs: f64,
    pub volumes: Vec<VolumeRates>,
}

/// Two reads of every volume's counters `secs` apart (blocks meanwhile).
pub fn sample(roots: &Roots, pool: &str, secs: f64) -> Sample {
    let a = volumes(roots, pool);
    let t0 = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_secs_f64(secs));
    let b = volumes(roots, pool);
    let interval_secs = t0.elapsed().as_secs_f64();
    let volumes = a
        .iter()
        .filter_map(|x| {
            let y = b
                .iter()
                .find(|y| y.dataset == x.dataset && y.device == x.device)?;
            Some(VolumeRates {
                volume: x.volume.clone(),
                dataset: x.dataset.clone(),
                device: x.device.clone(),
                rates: rates(&x.stat, &y.stat, interval_secs),
            })
        })
        .collect();
    Sample {
        interval_secs,
        volumes,
    }
}

/// The table `storagectl volume iostat` prints.
pub fn render(rows: &[VolumeRates], secs: f64) -> String {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_stat_line_is_read_and_a_short_or_bad_one_is_not() {
        // What a zvol showed after `dd bs=1M count=8 oflag=direct` in the guest.
        let s = parse_stat("      51        0     2112       28        8        0    16384       88        0      112      116        0        0        0        0        0        0\n").unwrap();
        assert_eq!(
            (
                s.reads,
                s.read_sectors,
                s.read_ms,
                s.writes,
                s.write_sectors,
                s.write_ms,
                s.io_ms
            ),
            (51, 2112, 28, 8, 16384, 88, 112)
        );
        assert!(parse_stat("1 2 3").is_none());
        assert!(parse_stat("1 2 3 4 5 6 7 8 9 x 11").is_none());
        assert!(parse_stat("").is_none());
    }

    #[test]
    fn rates_come_from_two_samples_and_never_go_negative() {
        let a = IoStat {
            reads: 100,
            read_sectors: 800,
            read_ms: 50,
            writes: 10,
            write_sectors: 80,
            write_ms: 10,
            in_flight: 0,
            io_ms: 100,
        };
        let b = IoStat {
            reads: 300,
            read_sectors: 800 + 2 * 2048,
            read_ms: 450,
            writes: 10,
            write_sectors: 80,
            write_ms: 10,
            in_flight: 1,
            io_ms: 600,
        };
        let r = rates(&a, &b, 2.0);
        assert_eq!((r.read_iops, r.write_iops), (100.0, 0.0));
        assert_eq!(r.read_bytes_per_sec, 1024.0 * 1024.0);
        assert_eq!((r.read_latency_ms, r.write_latency_ms), (Some(2.0), None));
        assert_eq!(r.busy_pct, 25.0);
        // A device recreated between samples (counters reset) reads as idle, not negative.
        let r = rates(&b, &a, 2.0);
        assert_eq!((r.read_iops, r.read_bytes_per_sec), (0.0, 0.0));
    }

    #[test]
    fn volumes_are_found_through_udev_links_without_snapshots_or_partitions() {
        let t = tempfile::tempdir().unwrap();
        let roots = Roots::under(t.path());
        let z = roots.dev.join("zvol/persist/clear/volumes");
        std::fs::create_dir_all(&z).unwrap();
        std::fs::create_dir_all(roots.dev.join("zvol/persist/vault/volumes")).unwrap();
        for (n, stat) in [
            ("zd0", "1 0 8 1 2 0 16 3 0 4 4"),
            ("zd16", "5 0 40 2 0 0 0 0 0 2 2"),
        ] {
            let d = roots.sys.join("block").join(n);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("stat"), stat).unwrap();
        }
        symlink("../../../../zd0", z.join("db")).unwrap();
        symlink("../../../../zd1", z.join("db-part1")).unwrap();
        symlink("../../../../zd2", z.join("db@daily")).unwrap();
        symlink("../../../../zd9", z.join("gone")).unwrap();
        symlink(
            "../../../../zd16",
            roots.dev.join("zvol/persist/vault/volumes/web"),
        )
        .unwrap();
        let v = volumes(&roots, "persist");
        let got: Vec<(&str, &str, &str, u64)> = v
            .iter()
            .map(|x| {
                (
                    x.dataset.as_str(),
                    x.volume.as_str(),
                    x.device.as_str(),
                    x.stat.reads,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("persist/clear/volumes/db", "db", "zd0", 1),
                ("persist/vault/volumes/web", "web", "zd16", 5)
            ]
        );
        assert!(volumes(&roots, "other").is_empty());
    }
}
