//! The workspace's binaries, read from its Cargo.toml files (pure TOML reading, no cargo call).

use crate::error::{Error, IoContext, Result};
use std::collections::BTreeSet;
use std::path::Path;

/// Names of every `[[bin]]` (or implicit src/main.rs binary) of every workspace member.
pub fn binaries(root: &Path) -> Result<BTreeSet<String>> {
    let read = |p: &Path| -> Result<toml::Value> {
        let text = std::fs::read_to_string(p).at("read", p)?;
        toml::from_str(&text).map_err(|e| Error::Parse {
            path: p.into(),
            msg: e.to_string(),
        })
    };
    let top = read(&root.join("Cargo.toml"))?;
    let members = top
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(|m| m.as_array())
        .cloned()
        .unwrap_or_default();
    let mut out = BTreeSet::new();
    for m in members.iter().filter_map(|m| m.as_str()) {
        let dir = root.join(m);
        let t = read(&dir.join("Cargo.toml"))?;
        let bins = t
            .get("bin")
            .and_then(|b| b.as_array())
            .cloned()
            .unwrap_or_default();
        if bins.is_empty() && dir.join("src/main.rs").exists() {
            if let Some(n) = t
                .get("package")
                .and_then(|p| p.get("name"))
                .and_then(|n| n.as_str())
            {
                out.insert(n.to_string());
            }
        }
        for b in bins {
            if let Some(n) = b.get("name").and_then(|n| n.as_str()) {
                out.insert(n.to_string());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_explicit_and_implicit_binaries() {
        let t = tempfile::tempdir().unwrap();
        let w = |p: &str, s: &str| {
            let f = t.path().join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, s).unwrap();
        };
        w(
            "Cargo.toml",
            "[workspace]\nmembers = [\"a\", \"b\", \"c\"]\n",
        );
        w(
            "a/Cargo.toml",
            "[package]\nname = \"a\"\n[[bin]]\nname = \"a-tool\"\npath = \"src/main.rs\"\n",
        );
        w("b/Cargo.toml", "[package]\nname = \"bee\"\n");
        w("b/src/main.rs", "fn main(){}");
        w("c/Cargo.toml", "[package]\nname = \"libonly\"\n");
        let got: Vec<String> = binaries(t.path()).unwrap().into_iter().collect();
        assert_eq!(got, ["a-tool", "bee"]);
        w("c/Cargo.toml", "[package\n");
        assert!(binaries(t.path())
            .unwrap_err()
            .to_string()
            .contains("c/Cargo.toml"));
    }
}
