//! Property tests: every parser of outside input in storage-init (the policy from CONFIG, tool
//! output, probe output, the sealed-key blob) returns a value or an error for any input, arbitrary
//! or a mutation of a valid one, and never panics.

#![allow(clippy::unwrap_used)]

use platform::testkit::mutated;
use proptest::prelude::*;
use std::path::Path;
use storage::policy::{Policy, BUILTIN};

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn policy_never_panics(text in any::<String>(), size in proptest::option::of(any::<u64>())) {
        let _ = Policy::parse(Path::new("/config/storage.toml"), &text, size);
    }

    #[test]
    fn mutated_policy_never_panics_and_errors_name_a_field(text in mutated(BUILTIN), size in proptest::option::of(1u64..(1 << 50))) {
        if let Err(e) = Policy::parse(Path::new("/config/storage.toml"), &text, size) {
            prop_assert!(!e.field.is_empty());
        }
    }

    #[test]
    fn tool_output_parsers_never_panic(text in any::<String>()) {
        let _ = storage::zfs::parse_get(&text);
        let _ = storage::zfs::parse_pool_list(&text);
        let _ = storage::zfs::parse_importable(&text);
        let _ = storage::status::parse_status_members(&text);
        let m = storage::probe::parse_export(&text);
        let _ = storage::probe::signatures(&m, std::slice::from_ref(&m));
        let _ = storage::tpm::parse_blob(&text);
    }

    #[test]
    fn tab_separated_output_never_panics(rows in proptest::collection::vec(proptest::collection::vec("[a-z0-9/@:.-]{0,12}", 0..9), 0..8)) {
        let text: String = rows.iter().map(|r| r.join("\t") + "\n").collect();
        let _ = storage::zfs::parse_get(&text);
        let _ = storage::zfs::parse_pool_list(&text);
    }
}
