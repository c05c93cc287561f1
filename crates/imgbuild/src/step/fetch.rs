//! Step "fetch": every resolved package's .deb in the cache, checked against the index's sha256;
//! only what is missing is downloaded.

use crate::apt::Package;
use crate::cmd;
use crate::context::*;
use crate::error::{Error, IoContext, Result};
use std::collections::BTreeMap;
use std::fs;

/// Ensures each package's .deb is in the cache with the index's sha256.
pub(crate) fn fetch(opts: &Options, pkgs: &[Package]) -> Result<()> {
    let debs = opts.cache.join("debs");
    fs::create_dir_all(&debs).at("mkdir", &debs)?;
    let mut missing = Vec::new();
    for p in pkgs {
        let path = deb_path(&opts.cache, p);
        if !path.exists() || sha256_file(&path)? != p.sha256 {
            missing.push(p);
        }
    }
    eprintln!(
        "      {} packages, {} cached, {} to download",
        pkgs.len(),
        pkgs.len() - missing.len(),
        missing.len()
    );
    if missing.is_empty() {
        return Ok(());
    }
    let tmp = tempfile_dir(&debs, "download")?;
    for chunk in missing.chunks(50) {
        let mut args: Vec<String> = vec![
            "download".into(),
            "-q".into(),
            "-o".into(),
            "APT::Sandbox::User=root".into(),
        ];
        args.extend(chunk.iter().map(|p| format!("{}={}", p.name, p.version)));
        cmd::run(cmd::APT_GET, &args, Some(&tmp))?;
    }
    let by_name: BTreeMap<&str, &&Package> = missing.iter().map(|p| (p.name.as_str(), p)).collect();
    for e in fs::read_dir(&tmp).at("list", &tmp)?.filter_map(|e| e.ok()) {
        let f = e.file_name().to_string_lossy().into_owned();
        let Some(p) = f.split('_').next().and_then(|n| by_name.get(n)) else {
            continue;
        };
        let actual = sha256_file(&e.path())?;
        if actual != p.sha256 {
            return Err(Error::Checksum {
                path: e.path(),
                expected: p.sha256.clone(),
                actual,
            });
        }
        let dest = deb_path(&opts.cache, p);
        fs::rename(e.path(), &dest).at("rename", &dest)?;
    }
    let _ = fs::remove_dir_all(&tmp);
    for p in missing {
        if !deb_path(&opts.cache, p).exists() {
            return Err(Error::Resolve(format!(
                "apt-get download did not produce {} {}",
                p.name, p.version
            )));
        }
    }
    Ok(())
}
