//! Property tests: the update header (from a file anyone may hand the box), the GRUB environment
//! blocks and the slot state read from them return a value or an error for any input, arbitrary
//! or a mutation of a valid one, and never panic.

#![allow(clippy::unwrap_used)]

use abupdate::artifact::{self, Expect, Running};
use abupdate::trust::{KeyList, Signer25519, Trust};
use abupdate::{grubenv, state};
use platform::testkit::replaced;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn key() -> Signer25519 {
    Signer25519::from_seed(&[3; 32])
}

fn valid_header() -> (Vec<u8>, artifact::Manifest) {
    let mut payload = b"hsqs".to_vec();
    payload.extend_from_slice(&[7u8; 64]);
    // A production build, as the production box in `parse` takes (anything else is refused for
    // its profile, and every mutation would then pass for a refusal).
    let info = artifact::BuildInfo {
        profile: "prod".into(),
        ..Default::default()
    };
    let m = artifact::manifest_for("1.2.3", "x86_64", &payload, info).unwrap();
    let mut a = artifact::header(&m, &key()).unwrap();
    a.extend_from_slice(&payload);
    (a, m)
}

fn parse(b: &[u8], len: Option<u64>) -> Result<artifact::Checked, artifact::ArtifactError> {
    let trust = Trust::from_list(&KeyList::new(1, &[key().public()])).unwrap();
    let running = Running {
        profile: "prod".into(),
        version: "1.0".into(),
        security_epoch: 0,
    };
    let want = Expect {
        arch: "x86_64",
        trust: &trust,
        key_floor: artifact::KeyFloor::none(),
        running: &running,
        allow_downgrade: false,
    };
    artifact::parse_header(b, &want, len)
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

#[test]
fn the_unmutated_header_is_accepted() {
    let (a, m) = valid_header();
    let c = parse(&a[..4096], Some(a.len() as u64)).unwrap();
    assert_eq!(c.manifest, m);
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn update_headers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..5000), len in proptest::option::of(any::<u64>())) {
        let _ = parse(&bytes, len);
    }

    #[test]
    fn mutated_update_headers_are_refused_or_unchanged(b in replaced(valid_header().0, 4096)) {
        // Any change to a signed header is refused; the only headers accepted are those whose
        // bytes did not change (an edit that wrote the byte already there).
        let (a, m) = valid_header();
        match parse(&b[..4096], Some(b.len() as u64)) {
            Ok(c) => {
                prop_assert_eq!(&b[..4096], &a[..4096]);
                prop_assert_eq!(c.manifest, m);
            }
            Err(_) => prop_assert_ne!(&b[..4096], &a[..4096]),
        }
    }

    #[test]
    fn env_blocks_and_slot_state_never_panic(bytes in proptest::collection::vec(any::<u8>(), 1024..=1024), env in replaced(valid_env(), 1024)) {
        for b in [bytes, env] {
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
