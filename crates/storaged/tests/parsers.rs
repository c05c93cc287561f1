//! Property tests: the `zpool status -j` reader and the drive-report readers (nvme-cli, smartctl,
//! the kernel's stat lines, zpool/zfs script output) return a value or an error for any input,
//! arbitrary or a mutation of real output, and the decisions never panic on what they return.

#![allow(clippy::unwrap_used)]

use platform::testkit::mutated;
use proptest::prelude::*;
use storaged::maint::{decide, Schedule};
use storaged::pool::parse_status;
use storaged::record::Record;

const REAL: &str = include_str!("fixtures/status-scrubbed-trimmed.json");
const NVME: &str = include_str!("fixtures/nvme-smart-log-reliability.json");
const SATA: &str = include_str!("fixtures/smartctl-sata.json");

fn judge(reading: storaged::smart::Reading) {
    let d = storaged::health::Device {
        name: "x".into(),
        stable_id: "x".into(),
        bus: "nvme".into(),
        size: 1,
        reading,
    };
    let mut a = Vec::new();
    storaged::health::device_alerts(&d, &mut a);
    let _ = d.summary(&a);
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn status_never_panics(text in any::<String>()) {
        let _ = parse_status(&text, "persist");
    }

    #[test]
    fn mutated_status_never_panics_and_decides(text in mutated(REAL), now in any::<u64>(), every in proptest::option::of(any::<u64>())) {
        if let Ok(p) = parse_status(&text, "persist") {
            let mut r = Record::default();
            let _ = r.observe(&p, now);
            let s = Schedule { scrub_every: every, trim_every: every, ..Schedule::default() };
            let v = decide(&p, &r, now / 2, &s, now);
            let _ = v.render();
        }
    }

    #[test]
    fn drive_reports_never_panic(text in any::<String>(), nvme in mutated(NVME), sata in mutated(SATA)) {
        let _ = storaged::smart::parse_nvme(&text, Some(&text));
        judge(storaged::smart::parse_smartctl(&text));
        if let Ok(h) = storaged::smart::parse_nvme(&nvme, None) {
            judge(storaged::smart::Reading::Data(Box::new(h)));
        }
        judge(storaged::smart::parse_smartctl(&sata));
        let _ = storaged::iostat::parse_stat(&text);
        let _ = storaged::gather::parse_space(&text);
        let _ = storaged::gather::parse_quotas(&text);
    }
}
