//! The JSON Schema of every object `storagectl --json` prints, generated from the Rust types
//! that make it and committed under docs/json/ (one file per command). A type that changes
//! without its committed schema fails here; `UPDATE_SCHEMAS=1 cargo test -p storagectl --test
//! json_schemas` rewrites them. Every object also carries `output_version` (added when printed),
//! which each schema requires.

use schemars::{schema_for, Schema};
use std::path::Path;

fn schemas() -> Vec<(&'static str, &'static str, Schema)> {
    vec![
        (
            "status",
            "storagectl status",
            schema_for!(storaged::status::FullStatus),
        ),
        (
            "health",
            "storagectl health",
            schema_for!(storaged::health::HealthView),
        ),
        (
            "disk-list",
            "storagectl disk list",
            schema_for!(storaged::disks::DiskList),
        ),
        (
            "disk-selftest",
            "storagectl disk selftest",
            schema_for!(Selftested),
        ),
        (
            "volume-list",
            "storagectl volume list",
            schema_for!(volumes::ops::Listing),
        ),
        (
            "volume-show",
            "storagectl volume show",
            schema_for!(volumes::ops::Shown),
        ),
        (
            "volume-snapshots",
            "storagectl volume snapshots",
            schema_for!(volumes::ops::Snapshots),
        ),
        (
            "volume-connect",
            "storagectl volume connect",
            schema_for!(volumes::connect::Connect),
        ),
        (
            "audit",
            "storagectl audit",
            schema_for!(Vec<storaged::audit::Entry>),
        ),
    ]
}

/// What `disk selftest --json` prints.
#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
struct Selftested {
    kind: storaged::selftest::Kind,
    drives: Vec<storaged::disks::SelftestRow>,
}

/// The schema with `output_version` among the object's required properties.
fn with_version(command: &str, s: Schema) -> serde_json::Value {
    let mut v = s.to_value();
    if v["type"] == "object" {
        v["properties"]["output_version"] = serde_json::json!({
            "description": "The command and the version of this schema (as OpenZFS's `-j` output).",
            "type": "object",
            "required": ["command", "vers_major", "vers_minor"],
            "properties": {
                "command": {"const": command},
                "vers_major": {"const": storagectl::JSON_MAJOR},
                "vers_minor": {"type": "integer", "minimum": storagectl::JSON_MINOR},
            },
        });
        match v["required"].as_array_mut() {
            Some(r) => r.push("output_version".into()),
            None => v["required"] = serde_json::json!(["output_version"]),
        }
    }
    v
}

#[test]
fn every_json_object_has_its_schema_committed_and_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/json");
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    let mut stale = Vec::new();
    for (name, command, schema) in schemas() {
        let text = serde_json::to_string_pretty(&with_version(command, schema)).unwrap() + "\n";
        let path = dir.join(format!("{name}.schema.json"));
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &text).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "out of date (UPDATE_SCHEMAS=1 cargo test -p storagectl --test json_schemas): {stale:?}"
    );
}

#[test]
fn a_printed_object_validates_its_own_output_version_shape() {
    // The stamp json_text adds is what the schemas require.
    let v = storagectl::stamped(serde_json::json!({"a": 1}), "storagectl status");
    let o = &v["output_version"];
    assert_eq!(o["command"], "storagectl status");
    assert_eq!(o["vers_major"], storagectl::JSON_MAJOR);
    assert_eq!(o["vers_minor"], storagectl::JSON_MINOR);
}
