//! Steps "bootloader" (shim and our GRUB, both signed with the project's db key, also put in the
//! slot's root so an update carries them) and "esp+config+firmware" (the ESP with those and the
//! factory slot state, the CONFIG partition's filesystem, and the firmware variables that enrol the
//! keys and revoke the distribution's shim certificate).

use crate::context::{deb_path, extract_plain, vfat, Options, Profile};
use crate::error::{Error, IoContext, Result};
use crate::grub;
use crate::secureboot::{self, BootKeys};
use crate::step::resolve::BootPackages;
use std::fs;
use std::path::Path;

/// The two partitions' images and the firmware's variable store, with their volume ids.
#[derive(Debug)]
pub struct Outputs<'a> {
    pub esp: &'a Path,
    pub esp_id: &'a str,
    pub config: &'a Path,
    pub config_id: &'a str,
    pub vars: &'a Path,
}

/// Where a slot's root keeps the boot loader it brings (`abupdate bootloader` copies it to the
/// ESP once the slot's boot was judged good).
pub const IN_ROOT: &str = "usr/lib/eve/efi";

/// The signed shim and GRUB, in `work` and in the root tree's [`IN_ROOT`].
#[derive(Debug)]
pub struct Loader {
    pub shim: std::path::PathBuf,
    pub grub: std::path::PathBuf,
}

/// The ESP's FAT volume id, which our GRUB searches for: derived from the db certificate, so every
/// build signed with one key set finds the ESP of a box made by any other (an update brings its
/// GRUB), while builds under other keys (development, another vendor) differ.
pub fn esp_id(boot: &BootKeys) -> Result<String> {
    use sha2::Digest;
    let crt = boot.cert("db");
    let b = fs::read(&crt).at("read", &crt)?;
    Ok(hex::encode(&sha2::Sha256::digest(&b)[..4]))
}

/// Builds and signs shim and GRUB for security epoch `security_epoch`, and puts copies in `root`.
#[allow(clippy::too_many_arguments)]
pub fn bootloader(
    opts: &Options,
    work: &Path,
    root: &Path,
    boot: &BootKeys,
    boot_pkgs: &BootPackages,
    epoch: u64,
    esp_id: &str,
) -> Result<Loader> {
    let bp = work.join("boot-pkgs");
    let _ = fs::remove_dir_all(&bp);
    extract_plain(&deb_path(&opts.cache, &boot_pkgs.shim), &bp)?;
    extract_plain(&deb_path(&opts.cache, &boot_pkgs.grub_signed), &bp)?;
    let shim_in = bp.join("usr/lib/shim/shimx64.efi");
    let distro_grub = bp.join("usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed");
    let sbat_path = work.join("sbat.csv");
    let distro_sbat = secureboot::sbat_text(&secureboot::pe_section(&distro_grub, ".sbat", work)?);
    fs::write(
        &sbat_path,
        grub::sbat(&distro_sbat, &boot_pkgs.host_grub, opts.security_epoch),
    )
    .at("write", &sbat_path)?;
    let cfg_text = grub::embedded_cfg(
        &grub::esp_label(esp_id),
        opts.profile == Profile::Prod,
        opts.security_epoch,
    );
    let cfgp = work.join("grub.cfg");
    fs::write(&cfgp, &cfg_text).at("write", &cfgp)?;
    let grub_raw = work.join("grubx64.unsigned.efi");
    grub::efi(&cfg_text, &boot.grub_public(), &sbat_path, &grub_raw)?;
    let grub_efi = work.join("grubx64.efi");
    boot.sign_pe(&grub_raw, &grub_efi, epoch)?;
    let shim = work.join("BOOTX64.EFI");
    boot.sign_pe(&shim_in, &shim, epoch)?;
    // The stock shim's vendor certificate, for the firmware variables (revoked in dbx).
    let vendor = work.join("shim-vendor.der");
    let cert =
        secureboot::shim_vendor_cert(&secureboot::pe_section(&shim_in, ".vendor_cert", work)?)
            .ok_or_else(|| Error::Parse {
                path: shim_in.clone(),
                msg: "no vendor certificate in .vendor_cert".into(),
            })?;
    fs::write(&vendor, cert).at("write", &vendor)?;
    let _ = fs::remove_dir_all(&bp);
    let dir = root.join(IN_ROOT);
    fs::create_dir_all(&dir).at("create", &dir)?;
    let id = dir.join("esp-id");
    fs::write(&id, format!("{}\n", grub::esp_label(esp_id))).at("write", &id)?;
    // The marker GRUB also finds the ESP by: signed like every file GRUB opens under
    // check_signatures=enforce (its search opens it).
    let marker = work.join("esp.marker");
    fs::write(&marker, format!("{}\n", grub::esp_label(esp_id))).at("write", &marker)?;
    let marker_sig = boot.gpg(work)?.sign(&marker, epoch)?;
    if !opts.revoke_loaders.is_empty() {
        revoke(
            boot,
            &opts.revoke_loaders,
            &[&shim, &grub_efi],
            opts.security_epoch,
            epoch,
            work,
            &dir,
        )?;
    }
    for (f, name) in [
        (&shim, "BOOTX64.EFI"),
        (&grub_efi, "grubx64.efi"),
        (&marker, "esp.marker"),
        (&marker_sig, "esp.marker.sig"),
    ] {
        let to = dir.join(name);
        fs::copy(f, &to).at("copy into the root", &to)?;
    }
    Ok(Loader {
        shim,
        grub: grub_efi,
    })
}

/// The signed `dbx` append revoking `files` (older boot loaders), as `dir`'s
/// [`platform::efisig::CARRIED`] name; never one that names this build's own loader (`ours`),
/// and never a GRUB built for `security_epoch` or later: a slot of that epoch could still boot
/// after the revocation (the rollback floor lets it) and would find its own loader refused.
pub fn revoke(
    boot: &BootKeys,
    files: &[std::path::PathBuf],
    ours: &[&Path],
    security_epoch: u32,
    epoch: u64,
    work: &Path,
    dir: &Path,
) -> Result<()> {
    let hash = |p: &Path| -> Result<[u8; 32]> {
        let b = fs::read(p).at("read (a boot loader to revoke)", p)?;
        abupdate::loader::image_hash(&b).map_err(|msg| Error::Parse {
            path: p.into(),
            msg,
        })
    };
    let own: Vec<[u8; 32]> = ours.iter().map(|p| hash(p)).collect::<Result<_>>()?;
    let mut hashes = Vec::new();
    for f in files {
        let b = fs::read(f).at("read (a boot loader to revoke)", f)?;
        if let Some(e) = platform::rollback::loader_epoch_in(&b).filter(|e| *e >= security_epoch) {
            return Err(Error::Parse {
                path: f.clone(),
                msg: format!(
                    "is a GRUB built for security epoch {e}, not below this build's {security_epoch}: raise SECURITY_EPOCH with the revocation, so no release that boots it can run after it"
                ),
            });
        }
        let h = hash(f)?;
        if own.contains(&h) {
            return Err(Error::Parse {
                path: f.clone(),
                msg: "is this build's own boot loader: revoking it would leave the box unbootable"
                    .into(),
            });
        }
        if !hashes.contains(&h) {
            hashes.push(h);
        }
    }
    let out = dir.join(
        Path::new(platform::efisig::CARRIED)
            .file_name()
            .unwrap_or_default(),
    );
    boot.dbx_append(&hashes, epoch, work, &out)
}

pub fn esp_config_firmware(
    opts: &Options,
    work: &Path,
    boot: &BootKeys,
    loader: &Loader,
    epoch: u64,
    out: &Outputs,
) -> Result<()> {
    let Outputs {
        esp,
        esp_id,
        config,
        config_id,
        vars,
    } = *out;
    let (shim, grub_efi) = (&loader.shim, &loader.grub);
    // The stock shim trusts its distribution's certificate by itself: revoke it in dbx so
    // nothing but the project's signatures boots.
    let vendor_path = work.join("shim-vendor.der");
    let vendor = fs::read(&vendor_path).at("read", &vendor_path)?;
    boot.ovmf_vars(vars, &[vendor], work)?;
    // The factory slot state: this build in A, proven by the build; B empty.
    let state = work.join("state.env");
    let block =
        abupdate::grubenv::serialize(&abupdate::state::Slots::factory(&opts.version).to_env())
            .map_err(|e| Error::Parse {
                path: state.clone(),
                msg: e.to_string(),
            })?;
    fs::write(&state, block).at("write", &state)?;
    let [env1, env2] = abupdate::esp::COPIES;
    let marker = grub::esp_marker(&grub::esp_label(esp_id));
    let marker_sig = format!("{marker}.sig");
    let (marker_src, marker_sig_src) = (work.join("esp.marker"), work.join("esp.marker.sig"));
    vfat(
        esp,
        32,
        "EFI",
        esp_id,
        epoch,
        &[
            (shim, "EFI/BOOT/BOOTX64.EFI"),
            (grub_efi, "EFI/BOOT/grubx64.efi"),
            (&state, env1),
            (&state, env2),
            (&marker_src, marker.as_str()),
            (&marker_sig_src, marker_sig.as_str()),
        ],
        &["EFI", "EFI/BOOT", "EFI/eve"],
    )?;
    let readme = work.join("config-readme.txt");
    fs::write(
        &readme,
        "Drop overrides here, e.g. storage.toml; the appliance reads this partition at boot.\n",
    )
    .at("write", &readme)?;
    vfat(
        config,
        16,
        "CONFIG",
        config_id,
        epoch,
        &[(&readme, "README.txt")],
        &[],
    )
}
