//! `storagectl --remote` end to end against a management API server over its recording fake:
//! what is printed, which request each command makes, and the exit codes.

#![allow(clippy::unwrap_used)]

use mgmt::api::Op;
use mgmt::testing::{Ca, FakeBox};
use std::process::Command;

fn storagectl(remote: &[String], args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_storagectl"))
        .args(remote)
        .args(args)
        .env_remove("EVE_REMOTE")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn remote_commands_print_what_the_box_renders_and_exit_as_on_the_box() {
    let dir = tempfile::tempdir().unwrap();
    let (admin_ca, reader_ca) = (Ca::new("admins"), Ca::new("readers"));
    let b = FakeBox::start(&admin_ca, &reader_ca, dir.path());
    let admin = b.remote_args(&admin_ca.issue("ops-admin"), dir.path(), "admin");
    let reader = b.remote_args(&reader_ca.issue("ops-reader"), dir.path(), "reader");

    // Text is the box's rendering (the fake's stands in for it), JSON the box's JSON; a report
    // exits as it would on the box (the fake's pool is degraded: 7), `-x` prints what is wrong.
    let (code, out, _) = storagectl(&reader, &["status"]);
    assert_eq!(code, 7);
    assert!(
        out.starts_with("text of {") && out.contains("DEGRADED"),
        "{out}"
    );
    for cmd in ["status", "health"] {
        let (code, out, _) = storagectl(&reader, &[cmd, "-x"]);
        assert_eq!(
            (code, out.as_str()),
            (7, "pool persist: DEGRADED\n"),
            "{cmd}"
        );
    }
    let (code, out, _) = storagectl(&reader, &["volume", "list", "--json", "--bytes"]);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["op"],
        "Volumes"
    );
    // Maintenance by hand: the box's answer in the line printed here.
    let (code, out, err) = storagectl(&admin, &["scrub", "now"]);
    assert_eq!(
        (code, out.as_str()),
        (
            0,
            "persist: scrub started (storagectl status shows its progress)\n"
        ),
        "{err}"
    );
    let (code, out, _) = storagectl(&admin, &["trim", "now", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["op"],
        "trim-now"
    );
    let (code, _, _) = storagectl(&reader, &["scrub", "stop"]);
    assert_eq!(code, 4, "a reader is refused");
    let (code, _, _) = storagectl(&admin, &["scrub", "later"]);
    assert_eq!(code, 2, "a usage error");
    // A change prints the line it prints on the box.
    let (code, out, _) = storagectl(&admin, &["volume", "delete", "web", "--force"]);
    assert_eq!((code, out.as_str()), (0, "deleted web\n"));
    let (code, out, _) = storagectl(&admin, &["volume", "rollback", "web", "before"]);
    assert_eq!((code, out.as_str()), (0, "web rolled back to before\n"));
    // With --json a change prints what the box answered, as JSON.
    for args in [
        &["volume", "delete", "web", "--force", "--json"][..],
        &["volume", "rollback", "web", "before", "--json"],
        &["volume", "snapshot", "delete", "web", "before", "--json"],
        &["disk", "offline", "nvme0n1", "--json"],
        &["volume", "reconcile", "--json"],
    ] {
        let (code, out, err) = storagectl(&admin, args);
        assert_eq!(code, 0, "{args:?}: {err}");
        let v: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"));
        assert!(v["op"].is_string(), "{args:?}: {v}");
    }
    // A name cannot reach another endpoint.
    let (code, _, _) = storagectl(&reader, &["volume", "show", "../../v1/audit"]);
    assert_eq!(code, 0);
    let calls = b.fake.calls.lock().unwrap().clone();
    let shown: Vec<_> = calls.iter().filter(|c| c.0 == Op::VolumeShow).collect();
    assert_eq!(shown.len(), 1, "{calls:?}");
    assert_eq!(
        shown[0].1,
        vec![("name", "..%2F..%2Fv1%2Faudit".to_string())]
    );

    // Failures: the box's message, exit 1; a reader changing is refused and nothing runs.
    let (code, _, err) = storagectl(&reader, &["volume", "delete", "db"]);
    assert_eq!(code, 4, "refused");
    assert!(
        err.contains("needs the admin role") && err.contains("403 forbidden"),
        "{err}"
    );
    let (code, _, err) = storagectl(&reader, &["volume", "show", "missing"]);
    assert_eq!(code, 3, "not found");
    assert!(err.contains("404 not_found"), "{err}");
    // With --json the error is JSON on stdout too, with the box's code.
    let (code, out, _) = storagectl(&reader, &["volume", "show", "missing", "--json"]);
    assert_eq!(code, 3);
    let e: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(e["error"]["code"], "not_found", "{out}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("missing"),
        "{out}"
    );
    assert!(!b
        .fake
        .calls
        .lock()
        .unwrap()
        .iter()
        .any(|c| c.0 == Op::VolumeDelete && c.1 == vec![("name", "db".to_string())]));
    // Usage errors are the CLI's own (2), before anything is sent.
    let (code, _, err) = storagectl(&admin, &["volume", "clone", "c", "--from", "nosnap"]);
    assert_eq!(code, 2, "{err}");
    let (code, out, _) = storagectl(&admin, &["volume", "reconcile", "--dry-run"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "text of {\"op\":\"Reconcile\"}\n")
    );
    // A box whose certificate is not the pinned one: refused, nothing is sent.
    let other = FakeBox::start(&admin_ca, &reader_ca, dir.path());
    let mut wrong = admin.clone();
    wrong[1] = format!("https://{}", other.addr);
    let (code, _, err) = storagectl(&wrong, &["volume", "delete", "web"]);
    assert_eq!(code, 1);
    assert!(err.contains("not the one in --ca"), "{err}");
    assert!(other.fake.calls.lock().unwrap().is_empty());
    // Bad flags are named.
    let (code, _, err) = storagectl(&["--remote".into(), "http://box".into()], &["status"]);
    assert_eq!(code, 2, "a bad flag is a usage error");
    assert!(err.contains("not an https:// URL"), "{err}");
}

/// `volume connect` through the API: the box sends the VM's secrets to an admin; the CLI writes
/// them to a private file and prints none of them.
#[test]
fn remote_connect_writes_the_secrets_to_a_file_and_never_prints_them() {
    let dir = tempfile::tempdir().unwrap();
    let (admin_ca, reader_ca) = (Ca::new("admins"), Ca::new("readers"));
    let b = FakeBox::start(&admin_ca, &reader_ca, dir.path());
    let admin = b.remote_args(&admin_ca.issue("ops-admin"), dir.path(), "admin");
    let reader = b.remote_args(&reader_ca.issue("ops-reader"), dir.path(), "reader");
    let out_dir = dir.path().join("vm1");
    let out_s = out_dir.to_str().unwrap();

    let (code, out, err) = storagectl(&admin, &["volume", "connect", "web"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains("DHHC-1") && out.contains("add --out DIR"),
        "{out}"
    );
    assert!(out.contains("traddr 10.0.2.15 trsvcid 4420"), "{out}");
    let (code, out, err) = storagectl(
        &admin,
        &["volume", "connect", "web", "--out", out_s, "--json"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("DHHC-1"), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let f = out_dir.join("web.nvmf");
    assert_eq!(v["options_file"], f.to_str().unwrap());
    let opts = std::fs::read_to_string(&f).unwrap();
    assert!(
        opts.starts_with("transport=tcp,traddr=10.0.2.15,trsvcid=4420,nqn=nqn.x:vol:web,")
            && opts.ends_with(
                ",dhchap_secret=DHHC-1:00:aG9zdA==:,dhchap_ctrl_secret=DHHC-1:00:Y3RybA==:"
            ),
        "{opts}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // A reader gets nothing, and nothing is written.
    std::fs::remove_file(&f).unwrap();
    let (code, _, err) = storagectl(&reader, &["volume", "connect", "web", "--out", out_s]);
    assert_eq!(code, 4);
    assert!(err.contains("403 forbidden"), "{err}");
    assert!(!f.exists());
}
