//! Property tests: the update header (from a file anyone may hand the box), the GRUB environment
//! blocks and the slot state read from them return a value or an error for any input, arbitrary
//! or a mutation of a valid one, and never panic.

#![allow(clippy::unwrap_used)]

use abupdate::{artifact, grubenv, state};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn valid_header() -> Vec<u8> {
    let mut payload = b"hsqs".to_vec();
    payload.extend_from_slice(&[7u8; 64]);
    let m = artifact::manifest_for("1.2.3", "x86_64", &payload, BTreeMap::new()).unwrap();
    let mut a = artifact::header(&m).unwrap();
    a.extend_from_slice(&payload);
    a
}

fn valid_env() -> Vec<u8> {
    let vars: BTreeMap<String, String> = [
        ("EVE_ORDER", "A B"),
        ("A_STATE", "good"),
        ("A_TRIES", "0"),
        ("A_VER", "1.0"),
        ("B_STATE", "trial"),
        ("B_TRIES", "3"),
        ("B_VER", "1.1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    grubenv::serialize(&vars).unwrap()
}

fn mutate(mut b: Vec<u8>, edits: Vec<(usize, u8)>) -> Vec<u8> {
    for (at, v) in edits {
        if !b.is_empty() {
            let i = at % b.len();
            b[i] = v;
        }
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn update_headers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..5000), len in proptest::option::of(any::<u64>())) {
        let _ = artifact::parse_header(&bytes, "x86_64", len);
    }

    #[test]
    fn mutated_update_headers_are_refused_or_unchanged(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4), len in proptest::option::of(any::<u64>())) {
        let a = valid_header();
        let m = mutate(a.clone(), edits);
        let _ = artifact::parse_header(&m[..m.len().min(4096)], "x86_64", len);
    }

    #[test]
    fn env_blocks_and_slot_state_never_panic(bytes in proptest::collection::vec(any::<u8>(), 1024..=1024), edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        for b in [bytes, mutate(valid_env(), edits)] {
            if let Ok(vars) = grubenv::parse(&b) {
                let _ = state::Slots::from_env(&vars);
            }
        }
    }

    #[test]
    fn any_variables_give_a_state_or_an_error(vars in proptest::collection::btree_map("[A-Z_]{1,10}", ".{0,12}", 0..12)) {
        let _ = state::Slots::from_env(&vars);
        let _ = grubenv::serialize(&vars);
    }
}
