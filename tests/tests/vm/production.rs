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

/// A copy of the production image (and its enrolled firmware variables) whose slot A holds
/// `slot` (bytes from offset 0 of the partition); slot B stays empty.
fn prod_with_slot_a(dir: &std::path::Path, name: &str, slot: &[u8]) -> std::path::PathBuf {
    let src = prod_image_path();
    let out = dir.join(format!("{name}.raw"));
    crate::common::copy_image(&src, &out);
    let (a_off, a_len) = eve_vmtest::partition_of(&out, "IMGA").unwrap();
    assert!(slot.len() as u64 <= a_len);
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(&out).unwrap();
    f.seek(SeekFrom::Start(a_off)).unwrap();
    f.write_all(slot).unwrap();
    out
}

/// Slot A of a built image, as the build wrote it.
fn slot_a(img: &std::path::Path) -> Vec<u8> {
    let len = build_manifest(img)["image"]["slot_size"].as_u64().unwrap() as usize;
    let (off, _) = eve_vmtest::partition_of(img, "IMGA").unwrap();
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(img).unwrap();
    f.seek(SeekFrom::Start(off)).unwrap();
    let mut b = vec![0u8; len];
    f.read_exact(&mut b).unwrap();
    b
}

#[test]
fn a_development_build_written_to_a_production_box_never_runs() {
    let dir = test_dir("prod-dev-slot");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let dev = eve_vmtest::image_path();
    // The two profiles are signed with different keys.
    let (pm, dm) = (build_manifest(&prod_image_path()), build_manifest(&dev));
    assert_ne!(
        pm["signing"]["key_id"], dm["signing"]["key_id"],
        "{pm} {dm}"
    );
    assert_ne!(pm["signing"]["dev_key_file"], dm["signing"]["dev_key_file"]);
    let boot = |name: &str, img: &std::path::Path| {
        let mut spec = MachineSpec::new(name, img);
        spec.disks = vec![DiskSpec::blank(DiskKind::Virtio, 1024, "DATA1")];
        spec.secure_boot = true;
        let mut m = Machine::create(spec, &dir.join(name)).unwrap();
        m.boot_until_console("this box stops here").unwrap();
        let c = m.console();
        m.power_cut().unwrap();
        c
    };

    // The development image's whole slot: GRUB refuses its kernel (the dev boot key is not the
    // production one) and no kernel runs.
    let img = prod_with_slot_a(&dir, "whole", &slot_a(&dev));
    let c = boot("whole", &img);
    // GRUB checks the slot's config, then its initrd and kernel: the first it meets is refused.
    assert!(
        c.contains("EVE: slot A REFUSED: /boot/")
            && c.contains("is missing or not signed by the project's key"),
        "{c}"
    );
    assert!(!c.contains("eve-init: stage 1"), "a kernel ran: {c}");

    // The development root with the production kernel, initrd and GRUB config put in, sealed
    // again with the development update key (which is no secret): GRUB accepts the production
    // boot files, and the production initramfs refuses the root.
    let sq = dir.join("dev.squashfs");
    std::fs::write(&sq, slot_a(&dev)).unwrap();
    let root = dir.join("dev.root");
    crate::common::unsquash(&sq, &root);
    let psq = dir.join("prod.squashfs");
    std::fs::write(&psq, slot_a(&prod_image_path())).unwrap();
    let proot = dir.join("prod.root");
    crate::common::unsquash(&psq, &proot);
    let st = Command::new("/bin/cp")
        .arg("-a")
        .arg(proot.join("boot/."))
        .arg(root.join("boot"))
        .status()
        .unwrap();
    assert!(st.success());
    imgbuild::update::squash_quick(&root, &sq).unwrap();
    let key = imgbuild::keys::load(&eve_vmtest::dev_signing_key(&dev)).unwrap();
    let slot = dir.join("mixed.slot");
    imgbuild::verity::slot_image(&sq, &slot, &key, "dev", 0, "dev").unwrap();
    let img = prod_with_slot_a(&dir, "mixed", &std::fs::read(&slot).unwrap());
    let c = boot("mixed", &img);
    assert!(
        c.contains("eve-init: stage 1") && c.contains("SLOT A REFUSED"),
        "{c}"
    );
    assert!(!c.contains("stage 2"), "the development root ran: {c}");
    for p in [&root, &proot] {
        std::fs::remove_dir_all(p).unwrap();
    }
}
