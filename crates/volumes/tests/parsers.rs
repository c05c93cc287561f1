//! Property tests: every parser of outside input in the volume service (spec files dropped into
//! the spool, settings, stored identities and spool markers, mountinfo, qemu-img and zfs output,
//! zfs send stream headers) returns a value or an error for any input and never panics.

#![allow(clippy::unwrap_used)]

use platform::testkit::mutated;
use proptest::prelude::*;
use std::path::Path;
use volumes::spec::RawSpec;

const SPEC: &str = "name = \"db\"\nsize = \"10G\"\nvm = \"vm1\"\ntransport = \"vhost-scsi\"\nvcpus = 2\nprovisioning = \"thick\"\nvolblocksize = \"16k\"\nencrypted = false\nsource = { path = \"/persist/import/a.qcow2\", format = \"qcow2\" }\n";
const SPEC_SNAP: &str = "name = \"web2\"\nsize = \"1G\"\nvm = \"vm1\"\ntransport = \"nvme-tcp\"\norigin = \"web@s1\"\n[[snapshots]]\nevery = \"1h\"\nkeep = 24\n[[snapshots]]\nevery = \"1d\"\nkeep = 7\n";
const SPEC_JSON: &str = r#"{"name":"db","size":"10G","vm":"vm1","transport":"nvme-tcp","source":{"path":"/x/s.zstream","format":"zfs-stream"}}"#;

fn spec_checked(file: &str, text: &str) {
    if let Ok(raw) = RawSpec::parse(file, text) {
        if let Ok(v) = raw.validate(file) {
            // A validated spec is safe to use as a name, a path component and an NQN.
            assert!(volumes::spec::check_name(&v.name).is_ok());
            assert!(!v.name.contains('/') && !v.name.contains(".."));
            assert!(v.size % v.volblocksize == 0 && v.size >= 1 << 20);
            if let Some(s) = &v.source {
                assert!(s.path.is_absolute());
                assert!(volumes::import::denied(&s.path, &[]).is_none());
            }
            // A clone's origin names a dataset and a snapshot safely; schedules are sane.
            if let Some(o) = &v.origin {
                assert!(volumes::spec::check_name(&o.volume).is_ok() && o.volume != v.name);
                assert!(volumes::spec::check_name(&o.snapshot).is_ok());
            }
            for s in &v.snapshots {
                assert!(s.every >= volumes::snap::MIN_EVERY && (1..=1000).contains(&s.keep));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn specs_never_panic(text in any::<String>()) {
        spec_checked("a.toml", &text);
        spec_checked("a.json", &text);
    }

    #[test]
    fn mutated_specs_never_panic(t in mutated(SPEC), j in mutated(SPEC_JSON), n in mutated(SPEC_SNAP)) {
        spec_checked("db.toml", &t);
        spec_checked("db.json", &j);
        spec_checked("web2.toml", &n);
    }

    #[test]
    fn settings_and_state_never_panic(text in any::<String>()) {
        let _ = volumes::config::Config::parse(Path::new("/etc/volumes.toml"), &text);
        if let Ok(v) = serde_json::from_str::<volumes::ids::VolumeIds>(&text) {
            let _ = v.check();
        }
        if let Ok(h) = serde_json::from_str::<volumes::ids::HostIds>(&text) {
            let _ = h.check("vm1");
        }
        let _ = serde_json::from_str::<volumes::guard::SpoolId>(&text);
    }

    #[test]
    fn stored_ids_with_any_strings_are_checked_not_trusted(serial in ".{0,30}", wwpn in ".{0,24}", uuid in ".{0,40}") {
        let v = volumes::ids::VolumeIds { serial, uuid: uuid.clone(), nguid: uuid, wwpn: wwpn.clone() };
        if v.check().is_ok() {
            // Only a well-formed WWPN gets as far as the planner, which slices it.
            let _ = volumes::target::initiator_wwn(&v.wwpn);
            prop_assert_eq!(v.wwpn.len(), 20);
        }
        let _ = volumes::target::initiator_wwn(&wwpn);
    }

    #[test]
    fn tool_and_kernel_output_never_panics(text in any::<String>(), own in ".{0,20}") {
        let m = volumes::guard::parse_mountinfo(&text);
        let _ = volumes::guard::vault_dataset(&m, Path::new("/persist/config/volumes/specs"), "persist");
        let _ = volumes::import::check_info(&text, &own);
        let i = volumes::zvol::Intent { at: 0, datasets: ["persist/vault/volumes/a".to_string()].into() };
        let _ = volumes::zvol::parse_list(&text, "persist", None);
        let _ = volumes::zvol::parse_list(&text, "persist", Some(&i));
        if let Ok(s) = volumes::snap::parse_list(&text) {
            let v = vec![("persist/vault/volumes/a".to_string(), vec![volumes::snap::Schedule { every: 60, keep: 2 }])];
            let _ = volumes::snap::decide(&v, &s, 1_000_000);
        }
    }

    #[test]
    fn stream_headers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        if let Ok(h) = volumes::import::parse_stream_head(&bytes) {
            let inner = volumes::import::parse_stream_head(bytes.get(312..).unwrap_or(&[])).ok();
            let _ = volumes::import::check_stream(&h, inner.as_ref());
        }
    }
}
