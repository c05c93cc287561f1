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
    PackUpdate {
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
        #[arg(long, default_value_t = 0)]
        security_epoch: u32,
        /// A key rotation (from `rotate-keys`) for the box to take with this update.
        #[arg(long)]
        rotation: Option<PathBuf>,
        /// With a root tree: sign its boot files (kernel, initrd, slot GRUB config) for GRUB with
        /// this boot key set first (`new-boot-keys`).
        #[arg(long)]
        boot_keys: Option<PathBuf>,
    },
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
    RotateKeys {
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
    },
    /// Build the disk image, its compressed copy and the build manifest into --out.
    Build {
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
    },
}

fn report(e: &dyn std::error::Error) {
    eprintln!("eve-imgbuild: error: {}", platform::chain(e));
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Check { common } => {
            let opts = Options {
                repo: common.repo,
                manifests: common.manifests,
                config: common.config,
                ..Default::default()
            };
            build::load(&opts).map(|(m, _)| {
                println!(
                    "ok: {} onboot steps, {} services",
                    m.onboot.len(),
                    m.services.len()
                );
            })
        }
        Cmd::NewBootKeys { out } => imgbuild::secureboot::generate(&out, "EVE storage").map(|_| {
            println!("{}", out.display());
            eprintln!(
                "boot keys written to {} (PK, KEK, db certificates to enroll in the firmware)",
                out.display()
            );
        }),
        Cmd::NewKey { out } => keys::generate(&out).map(|k| {
            println!(
                "{}",
                base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    k.public().as_bytes()
                )
            );
            eprintln!("key {} written to {}", k.id(), out.display());
        }),
        Cmd::RotateKeys {
            signing_key,
            keys: list,
            serial,
            out,
        } => keys::rotation(&signing_key, &list, serial).and_then(|r| {
            let text = serde_json::to_vec_pretty(&r).unwrap_or_default();
            std::fs::write(&out, text)
                .map_err(|source| {
                    imgbuild::error::Error::Io(platform::IoError {
                        op: "write",
                        path: out.clone(),
                        source,
                    })
                })
                .map(|_| {
                    eprintln!(
                        "rotation to list {serial} signed by key {}: {}",
                        r.key,
                        out.display()
                    )
                })
        }),
        Cmd::PackUpdate {
            rootfs,
            version,
            out,
            signing_key,
            signing,
            security_epoch,
            rotation,
            boot_keys,
        } => {
            let sq = out.with_extension("squashfs");
            let squashed = if rootfs.is_dir() {
                boot_keys
                    .as_deref()
                    .map(|d| imgbuild::build::sign_boot_files(d, &rootfs))
                    .transpose()
                    .and_then(|_| imgbuild::update::squash(&rootfs, &sq))
                    .map(|_| sq.clone())
            } else {
                Ok(rootfs.clone())
            };
            let r = squashed.and_then(|s| {
                let key = keys::load(&signing_key)?;
                let keys = rotation.as_deref().map(keys::read_rotation).transpose()?;
                let info = abupdate::artifact::BuildInfo {
                    security_epoch,
                    signing,
                    keys,
                    build: Default::default(),
                };
                imgbuild::update::pack(&s, &version, info, &key, &out)
            });
            if rootfs.is_dir() {
                let _ = std::fs::remove_file(&sq);
            }
            r.map(|m| {
                println!("{}", out.display());
                eprintln!(
                    "update {} version {} ({} MiB payload)",
                    out.display(),
                    m.version,
                    m.payload.size >> 20
                );
            })
        }
        Cmd::Build {
            common,
            bins,
            out,
            cache,
            apt_lists,
            version,
            slot_size_mib,
            profile,
            signing_key,
            release,
            boot_keys,
            security_epoch,
            trusted_keys,
            key_serial,
            rotation,
        } => {
            let opts = Options {
                profile,
                signing_key,
                release,
                boot_keys,
                security_epoch,
                trusted_keys,
                key_serial,
                rotation,
                repo: common.repo,
                manifests: common.manifests,
                config: common.config,
                bins,
                out,
                cache,
                apt_lists,
                version,
                slot_size_mib,
            };
            build::build(&opts).map(|bm| {
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
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}
