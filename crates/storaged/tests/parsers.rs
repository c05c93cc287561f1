//! Property tests: the `zpool status -j` reader returns a value or an error for any input,
//! arbitrary or a mutation of real output, and the decision never panics on what it returns.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use storaged::maint::{decide, Schedule};
use storaged::pool::parse_status;
use storaged::record::Record;

const REAL: &str = include_str!("fixtures/status-scrubbed-trimmed.json");

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn status_never_panics(text in any::<String>()) {
        let _ = parse_status(&text, "persist");
    }

    #[test]
    fn mutated_status_never_panics_and_decides(at in 0..REAL.len(), byte in any::<u8>(), now in any::<u64>(), every in proptest::option::of(any::<u64>())) {
        let mut b = REAL.as_bytes().to_vec();
        b[at] = byte;
        let text = String::from_utf8_lossy(&b);
        if let Ok(p) = parse_status(&text, "persist") {
            let mut r = Record::default();
            let _ = r.observe(&p, now);
            let s = Schedule { scrub_every: every, trim_every: every };
            let v = decide(&p, &r, now / 2, &s, now);
            let _ = v.render();
        }
    }
}
