//! VM test for the production image (`make image`): it boots with disks and a TPM and brings the
//! pool, the vault and the services up, which the console shows; and it opens nothing: no shell
//! answers on the serial console, no agent answers on its port, root cannot log in.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic with context on failure

use eve_vmtest::{
    build_manifest, prod_image_path, test_dir, DiskKind, DiskSpec, Machine, MachineSpec,
};
use std::process::Command;
use std::time::{Duration, Instant};

/// A file of the production image's root, read from its update artifact's squashfs.
fn image_file(rel: &str) -> String {
    let upd = prod_image_path().with_extension("update");
    let art = std::fs::read(&upd).unwrap();
    let dir = test_dir("production");
    std::fs::create_dir_all(&dir).unwrap();
    let sq = dir.join("slot.squashfs");
    std::fs::write(&sq, &art[abupdate::artifact::PAYLOAD_OFFSET as usize..]).unwrap();
    let out = Command::new("/usr/bin/unsquashfs")
        .args(["-cat"])
        .arg(&sq)
        .arg(rel)
        .output()
        .unwrap();
    assert!(out.status.success(), "unsquashfs -cat {rel}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_production_image_boots_to_a_working_box_and_opens_nothing() {
    let img = prod_image_path();
    // The image says what it is.
    let bm = build_manifest(&img);
    assert_eq!(bm["profile"], "prod", "{}", bm["profile"]);
    assert!(
        !bm["services"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "getty" || s == "agent"),
        "{}",
        bm["services"]
    );
    let release: serde_json::Value =
        serde_json::from_str(&image_file("etc/eve/release.json")).unwrap();
    assert_eq!(release["profile"], "prod");
    assert!(
        image_file("etc/shadow").starts_with("root:!"),
        "root is locked"
    );

    let mut spec = MachineSpec::new("production", &img);
    spec.disks = vec![
        DiskSpec::blank(DiskKind::Nvme, 1024, "PROD1"),
        DiskSpec::blank(DiskKind::Virtio, 1024, "PROD2"),
    ];
    spec.console_input = true;
    // As shipped: Secure Boot on with the project's keys enrolled.
    spec.secure_boot = true;
    let mut m = Machine::create(spec, &test_dir("production").join("vm")).unwrap();

    // The console shows the box coming up: storage, services, the status summary and the health
    // check's verdict.
    m.boot_until_console("is healthy").unwrap();
    let start = Instant::now();
    while !m.console().contains("[status]") {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no status summary"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let console = m.console();
    for want in [
        "storage-init",
        "storage-init: Secure Boot: on\r\n",
        "slot A verified: ",
        "key sealed to this TPM and PCR 7",
        "[status] pool: persist",
        "[status] vault: persist/vault",
        "volumed",
        "zed",
    ] {
        assert!(console.contains(want), "console lacks {want:?}:\n{console}");
    }
    assert!(!console.contains("getty"), "{console}");

    // Nothing answers on the console: typed commands are never run.
    // Typed twice, 10 s apart, well after every service is up (as the dev image's check does).
    for _ in 0..2 {
        m.type_on_console("\n\necho PWN$((6*7))ED\n").unwrap();
        std::thread::sleep(Duration::from_secs(10));
    }
    let after = m.console();
    assert!(
        !after.contains("PWN42ED"),
        "a shell ran a typed command:\n{after}"
    );
    // And no agent answers on the virtio-serial port the dev image's agent uses.
    assert!(
        !m.agent_answers(Duration::from_secs(20)),
        "an agent answered"
    );
    m.power_cut().unwrap();
}
