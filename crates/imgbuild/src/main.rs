//! eve-imgbuild: builds the appliance disk image from the LinuxKit manifest without Docker.

use clap::{Parser, Subcommand};
use imgbuild::build::{self, Options};
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
    /// Squash a root directory into an OS update artifact (`abupdate install` consumes it).
    PackUpdate {
        /// A root tree (squashed like a slot) or an existing squashfs file.
        #[arg(long)]
        rootfs: PathBuf,
        #[arg(long)]
        version: String,
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
    },
}

fn report(e: &dyn std::error::Error) {
    let mut msg = format!("eve-imgbuild: error: {e}");
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(&format!("\n  caused by: {s}"));
        src = s.source();
    }
    eprintln!("{msg}");
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Check { common } => {
            let opts = Options {
                repo: common.repo,
                manifests: common.manifests,
                config: common.config,
                bins: Vec::new(),
                out: PathBuf::new(),
                cache: PathBuf::new(),
                apt_lists: PathBuf::new(),
                version: String::new(),
                slot_size_mib: 0,
            };
            build::load(&opts).map(|(m, _)| {
                println!(
                    "ok: {} onboot steps, {} services",
                    m.onboot.len(),
                    m.services.len()
                );
            })
        }
        Cmd::PackUpdate {
            rootfs,
            version,
            out,
        } => {
            let sq = out.with_extension("squashfs");
            let squashed = if rootfs.is_dir() {
                imgbuild::update::squash(&rootfs, &sq).map(|_| sq.clone())
            } else {
                Ok(rootfs.clone())
            };
            let r = squashed
                .and_then(|s| imgbuild::update::pack(&s, &version, Default::default(), &out));
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
        } => {
            let opts = Options {
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
