//! Property tests: reading nvmet and LIO configfs trees whose attribute files hold anything (a
//! kernel of another version, a hand-made object) gives a state or an error, never a panic, and
//! a diff against it is computed.

#![allow(clippy::unwrap_used)]

use ktarget::{lio, nvmet, HostFs};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn configfs_reads_never_panic(vals in proptest::collection::vec(".{0,40}", 12), names in proptest::collection::vec("[a-z0-9][a-z0-9:_-]{0,19}", 3)) {
        let d = tempfile::tempdir().unwrap();
        let cfs = d.path();
        let p = "nqn.2026-11.org.lfedge.eve:";
        let root = cfs.join("nvmet");
        let host = root.join("hosts").join(format!("{p}{}", names[0]));
        let sub = root.join("subsystems").join(format!("{p}{}", names[1]));
        let ns = sub.join("namespaces").join(&names[2]);
        let port = root.join("ports/2");
        for dir in [&host, &ns, &sub.join("allowed_hosts"), &port.join("subsystems")] {
            std::fs::create_dir_all(dir).unwrap();
        }
        let files = [
            host.join("dhchap_key"), host.join("dhchap_hash"),
            sub.join("attr_serial"), sub.join("attr_model"), sub.join("attr_allow_any_host"),
            ns.join("device_path"), ns.join("device_uuid"), ns.join("enable"),
            port.join("addr_trtype"), port.join("addr_traddr"), port.join("addr_trsvcid"), port.join("addr_adrfam"),
        ];
        for (f, v) in files.iter().zip(&vals) {
            std::fs::write(f, v).unwrap();
        }
        let t = nvmet::Tree::new(cfs);
        let scope = nvmet::Scope { nqn_prefix: p.into(), port_ids: [1, 2].into() };
        if let Ok(n) = nvmet::observe(&HostFs, &t, &scope) {
            let _ = nvmet::diff(&nvmet::Nvmet::default(), &n);
            let _ = ktarget::nvmetcli::to_json(&n);
        }
        let bs = cfs.join("target/core/iblock_100").join(&names[0]);
        std::fs::create_dir_all(bs.join("wwn")).unwrap();
        std::fs::create_dir_all(cfs.join("target/vhost/naa.5001405e00000001/tpgt_1/lun/lun_0")).unwrap();
        std::fs::write(bs.join("udev_path"), &vals[0]).unwrap();
        std::fs::write(bs.join("wwn/vpd_unit_serial"), &vals[1]).unwrap();
        std::fs::write(bs.join("enable"), &vals[2]).unwrap();
        std::fs::write(cfs.join("target/vhost/naa.5001405e00000001/tpgt_1/nexus"), &vals[3]).unwrap();
        let lt = lio::Tree::new(cfs, 100, "naa.5001405e");
        if let Ok(l) = lio::observe(&HostFs, &lt) {
            let _ = lio::diff(&lio::Lio::default(), &l);
        }
    }
}
