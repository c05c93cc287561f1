//! eve-imgbuild: builds the appliance disk image from the LinuxKit manifest without Docker.

use clap::Parser;
use imgbuild::build;
use imgbuild::cli::{BuildArgs, Cli, Cmd, Common, PackUpdateArgs, RotateKeysArgs};
use imgbuild::context::Options;
use imgbuild::error::IoContext;
use imgbuild::keys;
use std::process::ExitCode;

fn report(e: &dyn std::error::Error) {
    eprintln!("eve-imgbuild: error: {}", platform::chain(e));
}

type Result<T> = imgbuild::error::Result<T>;

fn check(common: Common) -> Result<()> {
    let opts = Options {
        repo: common.repo,
        manifests: common.manifests,
        config: common.config,
        ..Default::default()
    };
    let (m, _) = build::load(&opts)?;
    println!(
        "ok: {} onboot steps, {} services",
        m.onboot.len(),
        m.services.len()
    );
    Ok(())
}

fn new_boot_keys(out: &std::path::Path) -> Result<()> {
    imgbuild::secureboot::generate(out, "EVE storage")?;
    println!("{}", out.display());
    eprintln!(
        "boot keys written to {} (PK, KEK, db certificates to enroll in the firmware)",
        out.display()
    );
    Ok(())
}

fn new_key(out: &std::path::Path) -> Result<()> {
    let k = keys::generate(out)?;
    println!(
        "{}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            k.public().as_bytes()
        )
    );
    eprintln!("key {} written to {}", k.id(), out.display());
    Ok(())
}

fn rotate_keys(a: RotateKeysArgs) -> Result<()> {
    let r = keys::rotation(&a.signing_key, &a.keys, a.serial)?;
    let text = serde_json::to_vec_pretty(&r).unwrap_or_default();
    std::fs::write(&a.out, text).at("write", &a.out)?;
    eprintln!(
        "rotation to list {} signed by key {}: {}",
        a.serial,
        r.key,
        a.out.display()
    );
    Ok(())
}

fn pack_update(a: PackUpdateArgs) -> Result<()> {
    use imgbuild::error::IoContext;
    if a.rootfs.is_dir() {
        let rel = a.rootfs.join("etc").join(abupdate::release::RELEASE);
        let text = std::fs::read(&rel).at("read", &rel)?;
        let r: abupdate::release::Release =
            serde_json::from_slice(&text).map_err(|e| imgbuild::error::Error::Parse {
                path: rel.clone(),
                msg: e.to_string(),
            })?;
        if r.profile != a.profile {
            return Err(imgbuild::error::Error::Parse {
                path: rel,
                msg: format!(
                    "the tree is a {} build; --profile {} would sign it as another",
                    r.profile, a.profile
                ),
            });
        }
        if r.security_epoch != a.security_epoch {
            return Err(imgbuild::error::Error::Parse {
                path: rel,
                msg: format!(
                    "the tree is a build of security epoch {}; --security-epoch {} would sign it as another",
                    r.security_epoch, a.security_epoch
                ),
            });
        }
        // The boot loader the box puts on its ESP after this slot's good boot: built for another
        // epoch, it would keep the rollback floor below this release (or lock the vault).
        let grub = a
            .rootfs
            .join("usr")
            .join(abupdate::loader::IN_USR)
            .join(abupdate::loader::FILES[0].0);
        let text = std::fs::read(&grub).at("read (the tree's boot loader)", &grub)?;
        let loader = platform::rollback::loader_epoch_in(&text);
        if loader != Some(a.security_epoch) {
            return Err(imgbuild::error::Error::Parse {
                path: grub,
                msg: format!(
                    "the tree's GRUB was built for security epoch {}, not {}: build the image with SECURITY_EPOCH={}",
                    loader.map_or_else(|| "(none)".to_string(), |e| e.to_string()),
                    a.security_epoch,
                    a.security_epoch
                ),
            });
        }
    }
    let sq = a.out.with_extension("squashfs");
    let squashed = if a.rootfs.is_dir() {
        a.boot_keys
            .as_deref()
            .map(|d| imgbuild::build::sign_boot_files(d, &a.rootfs))
            .transpose()
            .and_then(|_| imgbuild::update::squash(&a.rootfs, &sq))
            .map(|_| sq.clone())
    } else {
        Ok(a.rootfs.clone())
    };
    let r = squashed.and_then(|s| {
        let key = keys::load(&a.signing_key)?;
        let keys = a.rotation.as_deref().map(keys::read_rotation).transpose()?;
        let key_chain = a
            .key_chain
            .as_deref()
            .map(keys::read_chain)
            .transpose()?
            .unwrap_or_default();
        let info = abupdate::artifact::BuildInfo {
            security_epoch: a.security_epoch,
            signing: a.signing.clone(),
            profile: a.profile.clone(),
            keys,
            key_chain,
            build: Default::default(),
        };
        imgbuild::update::pack(&s, &a.version, info, &key, &a.out)
    });
    if a.rootfs.is_dir() {
        let _ = std::fs::remove_file(&sq);
    }
    let m = r?;
    println!("{}", a.out.display());
    eprintln!(
        "update {} version {} ({} MiB payload)",
        a.out.display(),
        m.version,
        m.payload.size >> 20
    );
    Ok(())
}

fn build_image(a: BuildArgs) -> Result<()> {
    let bm = build::build(&a.options())?;
    println!("{}", bm.image.path);
    eprintln!(
        "image {} ({} MiB raw, {} MiB allocated, {} MiB zstd); kernel {}; zfs {}",
        bm.image.path,
        bm.image.size >> 20,
        bm.image.allocated >> 20,
        bm.image.compressed_size >> 20,
        bm.kernel.release,
        bm.zfs.version
    );
    Ok(())
}

fn main() -> ExitCode {
    let result = match Cli::parse().cmd {
        Cmd::Check { common } => check(common),
        Cmd::NewBootKeys { out } => new_boot_keys(&out),
        Cmd::NewKey { out } => new_key(&out),
        Cmd::RotateKeys(a) => rotate_keys(a),
        Cmd::PackUpdate(a) => pack_update(a),
        Cmd::Build(a) => build_image(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgbuild::context::Profile;
    use std::path::PathBuf;

    #[test]
    fn build_options_come_from_the_command_line_with_their_defaults() {
        let cli = Cli::try_parse_from([
            "eve-imgbuild",
            "build",
            "--manifest",
            "a.yml",
            "--manifest",
            "b.yml",
            "--bins",
            "t/release",
            "--cache",
            "/c",
            "--profile",
            "prod",
            "--trusted-key",
            "k1.pem",
            "--trusted-key",
            "k2.pem",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let Cmd::Build(a) = cli.cmd else {
            panic!("not a build")
        };
        let o = a.options();
        assert_eq!(
            o.manifests,
            [PathBuf::from("a.yml"), PathBuf::from("b.yml")]
        );
        assert_eq!(o.trusted_keys.len(), 2);
        assert_eq!((o.key_serial, o.slot_size_mib, o.release), (1, 512, false));
        assert_eq!(o.profile, Profile::Prod);
        assert!(Cli::try_parse_from(["eve-imgbuild", "build", "--cache", "/c"]).is_err());
    }
}
