//! The command line of `cli.rs` (its clap types, here so that the manuals and completions
//! built into the image are made from the same definitions the binary parses).

use crate::context::{Options, Profile};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Build the EVE storage appliance image from linuxkit/*.yml and Debian packages"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, clap::Args)]
pub struct Common {
    /// LinuxKit manifests, merged in order (as `linuxkit build a.yml b.yml`).
    #[arg(long = "manifest", required = true)]
    pub manifests: Vec<PathBuf>,
    /// The builder's mapping of images to Debian packages and binaries.
    #[arg(long, default_value = "rootfs/packages.toml")]
    pub config: PathBuf,
    /// Repository root (for pkg/ and the workspace's Cargo.toml files).
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
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

#[derive(Debug, clap::Args)]
pub struct PackUpdateArgs {
    /// A root tree (squashed like a slot) or an existing squashfs file.
    #[arg(long)]
    pub rootfs: PathBuf,
    #[arg(long)]
    pub version: String,
    #[arg(long)]
    pub out: PathBuf,
    /// The private key (PKCS#8 PEM) that signs the artifact.
    #[arg(long)]
    pub signing_key: PathBuf,
    /// `release` or `dev`, recorded in the manifest.
    #[arg(long, default_value = "release")]
    pub signing: String,
    /// The build profile of the root tree, `prod` or `dev`, signed into the manifest and the
    /// slot's descriptor (a production box installs and boots `prod` only). No default: a root
    /// tree's own `etc/eve/release.json` must say the same.
    #[arg(long, value_parser = ["prod", "dev"])]
    pub profile: String,
    #[arg(long, default_value_t = 0)]
    pub security_epoch: u32,
    /// A key rotation (from `rotate-keys`) for the box to take with this update.
    #[arg(long)]
    pub rotation: Option<PathBuf>,
    /// The vendor's whole chain of rotations, oldest first (a JSON array, as a box keeps it in
    /// `EFI/eve/keys.json`): a box whose stored copy was lost or damaged takes what it lacks and
    /// rewrites it. Boxes running releases from before this option refuse such an update.
    #[arg(long)]
    pub key_chain: Option<PathBuf>,
    /// With a root tree: sign its boot files (kernel, initrd, slot GRUB config) for GRUB with
    /// this boot key set first (`new-boot-keys`).
    #[arg(long)]
    pub boot_keys: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct RotateKeysArgs {
    /// A currently trusted private key.
    #[arg(long)]
    pub signing_key: PathBuf,
    /// Public keys of the new list (PEM or base64), one or more.
    #[arg(long = "key", required = true)]
    pub keys: Vec<PathBuf>,
    /// Must be above the serial of the list boxes trust now (images start at 1).
    #[arg(long)]
    pub serial: u32,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub common: Common,
    /// Directories holding the workspace's release binaries, searched in order.
    #[arg(long, required = true)]
    pub bins: Vec<PathBuf>,
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Downloaded packages and built ZFS modules, kept across builds.
    #[arg(long)]
    pub cache: PathBuf,
    #[arg(long, default_value = "/var/lib/apt/lists")]
    pub apt_lists: PathBuf,
    #[arg(long, default_value = "dev")]
    pub version: String,
    /// Size of each of IMGA and IMGB.
    #[arg(long, default_value_t = 512)]
    pub slot_size_mib: u64,
    /// `prod` (no shell, no agent, root locked) or `dev` (with linuxkit/dev.yml's additions).
    #[arg(long, value_enum)]
    pub profile: Profile,
    /// The vendor's update-signing key (PKCS#8 PEM); without it a development key in the
    /// cache signs and the image is marked dev-signed.
    #[arg(long)]
    pub signing_key: Option<PathBuf>,
    /// A release build: refuses to sign with development keys.
    #[arg(long)]
    pub release: bool,
    /// The vendor's Secure Boot key set (`new-boot-keys`); without it a development set in
    /// the cache signs.
    #[arg(long)]
    pub boot_keys: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    pub security_epoch: u32,
    /// More public keys the image trusts (the next key, before a rotation).
    #[arg(long = "trusted-key")]
    pub trusted_keys: Vec<PathBuf>,
    /// Serial of the image's key list.
    #[arg(long, default_value_t = 1)]
    pub key_serial: u32,
    /// A key rotation the update artifact carries.
    #[arg(long)]
    pub rotation: Option<PathBuf>,
    /// An older boot loader (.efi) this release revokes through a signed firmware dbx append
    /// (repeatable).
    #[arg(long = "revoke-loader")]
    pub revoke_loaders: Vec<PathBuf>,
    /// The management API's operator CAs: a directory with `admin-ca.pem` and `reader-ca.pem`;
    /// without it development CAs in the cache (refused with --release).
    #[arg(long)]
    pub mgmt_ca: Option<PathBuf>,
    /// A tree copied into the root file system as it is (repeatable): the man pages and
    /// completions `eve-manuals` wrote.
    #[arg(long = "overlay")]
    pub overlays: Vec<PathBuf>,
}

impl BuildArgs {
    /// The build's options, as `build::build` takes them.
    pub fn options(self) -> Options {
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
            overlays: self.overlays,
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
