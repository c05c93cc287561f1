//! The spool: the directory of volume specs (`*.toml`, `*.json`) that says which volumes should
//! exist. Read whole each pass (through the daemon's memo, parsing only files that changed); a
//! spec that does not validate is kept as an error naming its file and field, never dropped.

use crate::error::{Result, SpecError};
use crate::memo::{Found, Memo};
use crate::spec::{self, Volume};
use platform::IoContext;
use std::collections::BTreeMap;
use std::path::Path;

/// A spec file as read: the volume, or why it does not validate.
pub type SpecResult = std::result::Result<Volume, SpecError>;

#[derive(Debug, Default)]
pub struct Spool {
    pub volumes: BTreeMap<String, Volume>,
    pub invalid: Vec<SpecError>,
}

/// Every `*.toml` / `*.json` in the spool; the rest (editor backups, temporaries) is ignored.
pub fn read_spool(dir: &Path) -> Result<Spool> {
    read_spool_with(dir, None)
}

/// [`read_spool`], parsing only the files that changed since `memo` saw them.
pub fn read_spool_with(dir: &Path, memo: Option<&Memo<SpecResult>>) -> Result<Spool> {
    let rd = std::fs::read_dir(dir).at("read spool directory", dir)?;
    let mut paths: Vec<_> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("toml") | Some("json")
            )
        })
        .collect();
    paths.sort();
    if let Some(m) = memo {
        m.retain(&paths.iter().cloned().collect());
    }
    let mut s = Spool::default();
    for p in paths {
        let loaded = match memo.map(|m| m.get(&p)) {
            Some(Ok(Found::Cached(r))) => r,
            Some(Ok(Found::Changed(k))) => {
                let r = spec::load_file(&p);
                if let Some(m) = memo {
                    m.put(&p, k, r.clone());
                }
                r
            }
            // Gone since the directory was read, or not stat-able: read as without a memo.
            _ => spec::load_file(&p),
        };
        match loaded {
            Ok(v) if s.volumes.contains_key(&v.name) => s.invalid.push(SpecError {
                file: p.display().to_string(),
                field: "name".into(),
                msg: format!("`{}` is declared by another file too", v.name),
            }),
            Ok(v) => {
                s.volumes.insert(v.name.clone(), v);
            }
            Err(e) => s.invalid.push(e),
        }
    }
    Ok(s)
}
