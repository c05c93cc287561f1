//! The repository's real manifest, mapping, pkg/ tree and workspace agree (no image needed).

use std::path::Path;

#[test]
fn the_repository_manifest_validates() {
    let repo = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let opts = imgbuild::build::Options {
        repo: repo.into(),
        manifests: vec![
            repo.join("linuxkit/eve-storage.yml"),
            repo.join("linuxkit/dev.yml"),
        ],
        config: repo.join("rootfs/packages.toml"),
        bins: Default::default(),
        out: Default::default(),
        cache: Default::default(),
        apt_lists: Default::default(),
        version: String::new(),
        slot_size_mib: 0,
    };
    let (m, cfg) = imgbuild::build::load(&opts).unwrap();
    assert_eq!(
        m.onboot.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["sysctl", "modules", "storage-init"]
    );
    assert!(cfg.images.contains_key("eve-storage/eve-init"));
    for name in [
        "eve-init",
        "eve-agent",
        "zfs-tools",
        "storage-init",
        "abupdate",
    ] {
        assert!(repo.join("pkg").join(name).join("Dockerfile").is_file());
    }
}
