//! A slot image: the squashfs, its signed verity descriptor and the dm-verity hash tree, in the
//! layout `abupdate::verity` defines. Both the disk image's slot A and every update artifact carry
//! exactly this.

use crate::cmd;
use crate::error::{Error, IoContext, Result};
use abupdate::trust::Signer25519;
use abupdate::verity::{self, Descriptor, BLOCK};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

/// The root hash from `veritysetup format` output (`Root hash: <hex>`).
pub fn root_hash(stdout: &str) -> Option<String> {
    stdout.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "Root hash").then(|| v.trim().to_string())
    })
}

/// Writes `out` from `squashfs` and returns its descriptor; the descriptor is signed by `key`.
pub fn slot_image(
    squashfs: &Path,
    out: &Path,
    key: &Signer25519,
    version: &str,
    security_epoch: u32,
    profile: &str,
) -> Result<Descriptor> {
    let data = fs::read(squashfs).at("read", squashfs)?;
    let data_size = verity::align(data.len() as u64);
    // The salt only has to be fixed per image: a digest of the content keeps builds reproducible.
    let salt = hex::encode(Sha256::digest(&data));
    let hash_offset = data_size + BLOCK;
    let _ = fs::remove_file(out);
    {
        let mut f = fs::File::create(out).at("create", out)?;
        f.write_all(&data).at("write", out)?;
        f.set_len(hash_offset).at("extend", out)?;
    }
    let text = cmd::run(
        cmd::VERITYSETUP,
        &[
            "format".as_ref(),
            "--no-superblock".as_ref(),
            "--hash=sha256".as_ref(),
            "--data-block-size=4096".as_ref(),
            "--hash-block-size=4096".as_ref(),
            format!("--data-blocks={}", data_size / BLOCK).as_ref(),
            format!("--hash-offset={hash_offset}").as_ref(),
            format!("--salt={salt}").as_ref(),
            out.as_os_str(),
            out.as_os_str(),
        ],
        None,
    )?;
    let root = root_hash(&String::from_utf8_lossy(&text)).ok_or_else(|| Error::Parse {
        path: out.into(),
        msg: "veritysetup printed no root hash".into(),
    })?;
    let total = fs::metadata(out).at("stat", out)?.len();
    let d = Descriptor {
        version: version.into(),
        security_epoch,
        profile: profile.into(),
        data_size,
        hash_offset,
        hash_size: total - hash_offset,
        algorithm: "sha256".into(),
        block_size: BLOCK,
        salt,
        root_hash: root,
    };
    let block = verity::block(&d, key).map_err(|e| Error::Parse {
        path: out.into(),
        msg: e.to_string(),
    })?;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(out)
        .at("open", out)?;
    f.seek(SeekFrom::Start(data_size)).at("seek", out)?;
    f.write_all(&block).at("write", out)?;
    f.sync_all().at("fsync", out)?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_hash_is_read_from_veritysetup_output() {
        let out = "VERITY header information for s.img\nUUID:            \t\nHash type:       \t1\n\
                   Salt:            \tabcd\nRoot hash:      \t26db94753b36b20b34f2c8ce04d813f7ca0974295f5815de0afd4f07e92dc9ec\n";
        assert_eq!(
            root_hash(out).as_deref(),
            Some("26db94753b36b20b34f2c8ce04d813f7ca0974295f5815de0afd4f07e92dc9ec")
        );
        assert_eq!(root_hash("Hash type: 1\n"), None);
    }
}
