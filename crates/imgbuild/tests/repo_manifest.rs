//! The repository's real manifest, mapping, pkg/ tree and workspace agree (no image needed).

use std::path::Path;

#[test]
fn the_repository_manifest_validates() {
    let repo = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let opts = imgbuild::context::Options {
        repo: repo.into(),
        manifests: vec![
            repo.join("linuxkit/eve-storage.yml"),
            repo.join("linuxkit/dev.yml"),
        ],
        config: repo.join("rootfs/packages.toml"),
        ..Default::default()
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

#[test]
fn the_production_manifest_alone_validates_and_opens_nothing() {
    let repo = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let opts = imgbuild::context::Options {
        repo: repo.into(),
        manifests: vec![repo.join("linuxkit/eve-storage.yml")],
        config: repo.join("rootfs/packages.toml"),
        profile: imgbuild::context::Profile::Prod,
        ..Default::default()
    };
    let (m, cfg) = imgbuild::build::load(&opts).unwrap();
    imgbuild::build::check_profile(&m, &cfg, imgbuild::context::Profile::Prod).unwrap();
    // The development set is refused as a production image.
    let mut dev = opts.clone();
    dev.manifests.push(repo.join("linuxkit/dev.yml"));
    let (m, cfg) = imgbuild::build::load(&dev).unwrap();
    let e = imgbuild::build::check_profile(&m, &cfg, imgbuild::context::Profile::Prod).unwrap_err();
    assert!(e.to_string().contains("dev profile"), "{e}");
}
