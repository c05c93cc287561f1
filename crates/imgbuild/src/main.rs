//! eve-imgbuild: builds the appliance disk image from the LinuxKit manifest without Docker.

use clap::{Parser, Subcommand};
use imgbuild::build::{self, Options, Profile};
use imgbuild::keys;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    version,
    about = "Build the EVE storage appliance image from linuxkit/*.yml and Debian packages"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args)]
struct Common {
    /// LinuxKit manifests, merged in order (as `linuxkit build a.yml b.yml`).
    #[arg(long = "manifest", required = true)]
    manifests: Vec<PathBuf>,
    /// The builder's mapping of images to Debian packages and binaries.
    #[arg(long, default_value = "rootfs/packages.toml")]
    config: PathBuf,
    /// Repository root (for pkg/ and the workspace's Cargo.toml files).
    #[arg(long, default_value = ".")]
    repo: PathBuf,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate the manifests against pkg/, the mapping and the workspace; change nothing.
    Check {
        #[command(flatten)]
        common: Common,
    },
    /// Squash a root directory into a signed OS update artifact (`abupdate install` consumes it).
    PackUpdate(PackUpdateArgs),
    /// Make a new Secure Boot key set in a new directory: firmware PK, KEK and db (X.509), and
    /// the OpenPGP key GRUB checks the slot's files with. Enroll PK/KEK/db in the box's firmware.
    NewBootKeys {
        #[arg(long)]
        out: PathBuf,
    },
    /// Make a new ed25519 signing key (PKCS#8 PEM, mode 0600) and print its public key (base64).
    NewKey {
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a new list of trusted update keys with a key boxes trust now; an update carries it
    /// with `--rotation` (or `make image ROTATION=`).
    RotateKeys(RotateKeysArgs),
    /// Build the disk image, its compressed copy and the build manifest into --out.
    Build(BuildArgs),
}

#[derive(clap::Args)]
struct PackUpdateArgs {
    /// A root tree (squashed like a slot) or an existing squashfs file.
    #[arg(long)]
    rootfs: PathBuf,
    #[arg(long)]
    version: String,
    #[arg(long)]
    out: PathBuf,
    /// The private key (PKCS#8 PEM) that signs the artifact.
    #[arg(long)]
    signing_key: PathBuf,
    /// `release` or `dev`, recorded in the manifest.
    #[arg(long, default_value = "release")]
    signing: String,
    /// The build profile of the root tree, `prod` or `dev`, signed into the manifest and the
    /// slot's descriptor (a production box installs and boots `prod` only). No default: a root
    /// tree's own `etc/eve/release.json` must say the same.
    #[arg(long, value_parser = ["prod", "dev"])]
    profile: String,
    #[arg(long, default_value_t = 0)]
    security_epoch: u32,
    /// A key rotation (from `rotate-keys`) for the box to take with this update.
    #[arg(long)]
    rotation: Option<PathBuf>,
    /// The vendor's whole chain of rotations, oldest first (a JSON array, as a box keeps it in
    /// `EFI/eve/keys.json`): a box whose stored copy was lost or damaged takes what it lacks and
    /// rewrites it. Boxes running releases from before this option refuse such an update.
    #[arg(long)]
    key_chain: Option<PathBuf>,
    /// With a root tree: sign its boot files (kernel, initrd, slot GRUB config) for GRUB with
    /// this boot key set first (`new-boot-keys`).
    #[arg(long)]
    boot_keys: Option<PathBuf>,
}

#[derive(clap::Args)]
struct RotateKeysArgs {
    /// A currently trusted private key.
    #[arg(long)]
    signing_key: PathBuf,
    /// Public keys of the new list (PEM or base64), one or more.
    #[arg(long = "key", required = true)]
    keys: Vec<PathBuf>,
    /// Must be above the serial of the list boxes trust now (images start at 1).
    #[arg(long)]
    serial: u32,
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct BuildArgs {
    #[command(flatten)]
    common: Common,
    /// Directories holding the workspace's release binaries, searched in order.
    #[arg(long, required = true)]
    bins: Vec<PathBuf>,
    #[arg(long, default_value = "out")]
    out: PathBuf,
    /// Downloaded packages and built ZFS modules, kept across builds.
    #[arg(long)]
    cache: PathBuf,
    #[arg(long, default_value = "/var/lib/apt/lists")]
    apt_lists: PathBuf,
    #[arg(long, default_value = "dev")]
    version: String,
    /// Size of each of IMGA and IMGB.
    #[arg(long, default_value_t = 512)]
    slot_size_mib: u64,
    /// `prod` (no shell, no agent, root locked) or `dev` (with linuxkit/dev.yml's additions).
    #[arg(long, value_enum)]
    profile: Profile,
    /// The vendor's update-signing key (PKCS#8 PEM); without it a development key in the
    /// cache signs and the image is marked dev-signed.
    #[arg(long)]
    signing_key: Option<PathBuf>,
    /// A release build: refuses to sign with development keys.
    #[arg(long)]
    release: bool,
    /// The vendor's Secure Boot key set (`new-boot-keys`); without it a development set in
    /// the cache signs.
    #[arg(long)]
    boot_keys: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    security_epoch: u32,
    /// More public keys the image trusts (the next key, before a rotation).
    #[arg(long = "trusted-key")]
    trusted_keys: Vec<PathBuf>,
    /// Serial of the image's key list.
    #[arg(long, default_value_t = 1)]
    key_serial: u32,
    /// A key rotation the update artifact carries.
    #[arg(long)]
    rotation: Option<PathBuf>,
    /// An older boot loader (.efi) this release revokes through a signed firmware dbx append
    /// (repeatable).
    #[arg(long = "revoke-loader")]
    revoke_loaders: Vec<PathBuf>,
    /// The management API's operator CAs: a directory with `admin-ca.pem` and `reader-ca.pem`;
    /// without it development CAs in the cache (refused with --release).
    #[arg(long)]
    mgmt_ca: Option<PathBuf>,
}

fn report(e: &dyn std::error::Error) {
    eprintln!("eve-imgbuild: error: {}", platform::chain(e));
}

impl BuildArgs {
    fn options(self) -> Options {
        Options {
            profile: self.profile,
            signing_key: self.signing_key,
            release: self.release,
            boot_keys: self.boot_keys,
            security_epoch: self.security_epoch,
            trusted_keys: self.trusted_keys,
            key_serial: self.key_serial,
            rotation: self.rotation,
            revoke_loaders: self.revoke_loaders,
            mgmt_ca: self.mgmt_ca,
            repo: self.common.repo,
            manifests: self.common.manifests,
            config: self.common.config,
            bins: self.bins,
            out: self.out,
            cache: self.cache,
            apt_lists: self.apt_lists,
            version: self.version,
            slot_size_mib: self.slot_size_mib,
        }
    }
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
    std::fs::write(&a.out, text).map_err(|source| {
        imgbuild::error::Error::Io(platform::IoError {
            op: "write",
            path: a.out.clone(),
            source,
        })
    })?;
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
