//! GRUB: the signed EFI binary (monolithic, its config on a memdisk, the project's OpenPGP key
//! built in) and the two configs it runs.
//!
//! The embedded config picks a slot from the slot state on the ESP (mirroring
//! `abupdate::state::grub_pick`) and boots it with `check_signatures=enforce`: the slot's own
//! `/boot/grub.cfg` (its kernel command line), kernel and initrd must each carry a detached
//! signature by the project's key, or GRUB refuses the slot, says which file, and tries the other
//! slot (passing `eve.refused=<slot>`, so the booted system records it). With no slot left it
//! stops with the reason on the console. The slot state itself is read with `--skip-sig`: it is
//! data, compared against fixed words only.

use crate::cmd;
use crate::error::{Error, IoContext, Result};
use std::fs;
use std::path::Path;

/// GRUB modules built into the EFI binary: everything the configs use, nothing loaded from disk
/// (under Secure Boot GRUB's lockdown refuses to load modules anyway).
pub const GRUB_MODULES: &[&str] = &[
    "normal",
    "configfile",
    "memdisk",
    "tar",
    "echo",
    "test",
    "regexp",
    "probe",
    "search",
    "search_fs_uuid",
    "search_fs_file",
    "part_gpt",
    "fat",
    "squash4",
    "gzio",
    "loadenv",
    "linuxefi",
    "serial",
    "terminal",
    "all_video",
    "boot",
    "halt",
    "reboot",
    "sleep",
    "pgp",
    "gcry_sha256",
    "gcry_rsa",
];

/// The files of a slot GRUB loads, each with a `.sig` beside it.
pub const SIGNED_FILES: [&str; 3] = ["boot/grub.cfg", "boot/vmlinuz", "boot/initrd.img"];

/// The slot's own config: the kernel command line, nothing else.
pub fn slot_cfg(version: &str, cmdline: &str) -> Result<String> {
    if cmdline
        .chars()
        .any(|c| matches!(c, '"' | '$' | '\\' | '\n' | '\r' | ';' | '\''))
    {
        return Err(Error::Manifest {
            path: "kernel.cmdline".into(),
            msg: format!("`{cmdline}`: quotes, `$`, `;`, `\\` and newlines are not allowed"),
        });
    }
    if cmdline.contains(platform::rollback::LOADER_ARG.trim_end_matches('=')) {
        return Err(Error::Manifest {
            path: "kernel.cmdline".into(),
            msg: format!(
                "`{cmdline}`: {} is the boot loader's to write",
                platform::rollback::LOADER_ARG
            ),
        });
    }
    Ok(format!(
        "# EVE storage {version}: this slot's kernel command line (signed: grub.cfg.sig)\nset eve_cmdline=\"{cmdline}\"\n"
    ))
}

/// The embedded config. A standalone GRUB has no usable $cmdpath, so it finds its own disk by
/// the ESP's volume id, unique per build (`esp_id`, as GRUB prints FAT ids: `XXXX-XXXX`).
/// `locked` (production): no GRUB command line for anyone (an empty superuser list). `epoch`: the
/// security epoch this GRUB is built for, passed to the kernel (stage 1 keeps the vault locked
/// when it is below the box's rollback floor: an older GRUB put back on the ESP).
pub fn embedded_cfg(esp_id: &str, locked: bool, epoch: u32) -> String {
    let [env1, env2] = abupdate::esp::COPIES;
    let vars = "EVE_FMT EVE_ORDER A_STATE A_TRIES B_STATE B_TRIES";
    let refused = |what: &str| {
        format!(
            "echo \"EVE: slot $1 REFUSED: {what} is missing or not signed by the project's key\""
        )
    };
    format!(
        r#"set check_signatures=enforce
{}set timeout=0
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
insmod part_gpt
insmod fat
insmod squash4
insmod probe
insmod regexp
insmod search_fs_uuid
insmod loadenv
insmod test
insmod pgp
search --no-floppy --fs-uuid --set=esp {esp_id}
if [ -z "$esp" ]; then search --no-floppy --file --set=esp /{marker}; fi
regexp --set=1:bootdisk '^([^,]+),' "$esp"
set EVE_FMT=""
set EVE_ORDER="A B"
set A_STATE="good"
set B_STATE="good"
set A_TRIES="0"
set B_TRIES="0"
load_env --skip-sig --file "($esp)/{env1}" {vars}
if [ "$EVE_FMT" != "1" ]; then
  echo "EVE: slot state copy 1 unreadable, using copy 2"
  load_env --skip-sig --file "($esp)/{env2}" {vars}
fi
set eve_slot=""
for s in $EVE_ORDER; do
  if [ -z "$eve_slot" ]; then
    if [ "$s" = "A" ]; then set st="$A_STATE"; set tr="$A_TRIES"; else set st="$B_STATE"; set tr="$B_TRIES"; fi
    if [ "$st" = "good" ]; then
      set eve_slot="$s"
    elif [ "$st" = "trial" ]; then
      set left=""
      if [ "$tr" = "3" ]; then set left="2"; elif [ "$tr" = "2" ]; then set left="1"; elif [ "$tr" = "1" ]; then set left="0"; fi
      if [ -n "$left" ]; then
        if [ "$s" = "A" ]; then set A_TRIES="$left"; else set B_TRIES="$left"; fi
        save_env --file "($esp)/{env1}" A_TRIES B_TRIES
        save_env --file "($esp)/{env2}" A_TRIES B_TRIES
        echo "EVE: trying slot $s, $left tries left after this one"
        set eve_slot="$s"
      fi
    fi
  fi
done
if [ -z "$eve_slot" ]; then
  for s in $EVE_ORDER; do
    if [ -z "$eve_slot" ]; then
      if [ "$s" = "A" ]; then set st="$A_STATE"; else set st="$B_STATE"; fi
      if [ "$st" != "empty" ]; then set eve_slot="$s"; fi
    fi
  done
  echo "EVE: no good slot and none on trial; last resort: slot $eve_slot"
fi
if [ "$eve_slot" != "B" ]; then set eve_slot="A"; set eve_other="B"; set ost="$B_STATE"; else set eve_other="A"; set ost="$A_STATE"; fi
set eve_refused=""
function eve_boot {{
  if [ "$1" = "A" ]; then set eve_part="gpt2"; else set eve_part="gpt3"; fi
  set root="($bootdisk,$eve_part)"
  probe --set=partuuid --part-uuid "($bootdisk,$eve_part)"
  unset eve_cmdline
  source "($bootdisk,$eve_part)/boot/grub.cfg"
  if [ -z "$eve_cmdline" ]; then
    {}
  else
    set eve_extra=""
    if [ -n "$eve_refused" ]; then set eve_extra="eve.refused=$eve_refused"; fi
    echo "EVE: booting slot $1"
    # The initrd is checked before the kernel is loaded: a kernel left loaded by a slot refused
    # at its initrd would be in the way of the other slot's. linuxefi starts the kernel through
    # its EFI stub, which hands the firmware's TPM event log on to the kernel.
    if verify_detached /boot/initrd.img /boot/initrd.img.sig; then
      if linuxefi /boot/vmlinuz root=PARTUUID=$partuuid eve.slot=$1 {loader}{epoch} $eve_extra $eve_cmdline; then
        if initrdefi /boot/initrd.img; then
          boot
          echo "EVE: slot $1 did not start"
        else
          {}
        fi
      else
        {}
      fi
    else
      {}
    fi
  fi
  set eve_refused="$1"
}}
eve_boot "$eve_slot"
if [ "$ost" != "empty" ]; then
  echo "EVE: falling back to slot $eve_other"
  eve_boot "$eve_other"
fi
echo "EVE: no slot holds an image signed by the project's key; this box stops here"
while true; do sleep 3600; done
"#,
        if locked { "set superusers=\"\"\n" } else { "" },
        refused("/boot/grub.cfg"),
        refused("/boot/initrd.img"),
        refused("/boot/vmlinuz"),
        refused("/boot/initrd.img"),
        loader = platform::rollback::LOADER_ARG,
        marker = esp_marker(esp_id),
    )
}

/// The file that also names the ESP to our GRUB (`EFI/eve/<id>.esp`, signed with the GRUB key like
/// every file GRUB opens), for a box whose ESP got its volume id from an older build (ids were once
/// per build): `abupdate bootloader` writes it before it puts a GRUB on the ESP, and the build puts
/// it on every new ESP.
pub fn esp_marker(esp_label: &str) -> String {
    format!("EFI/eve/{esp_label}.esp")
}

/// `9526c040` -> `9526-C040`, the form GRUB's search uses for FAT volume ids.
pub fn esp_label(id: &str) -> String {
    let up = id.to_uppercase();
    format!("{}-{}", &up[..4], &up[4..8])
}

/// The SBAT metadata of our GRUB: the distribution's lines for this GRUB build (the revocation
/// generations its signed package declares) plus our own component line, whose generation is the
/// security epoch plus one (generations start at 1): a release that raises the epoch raises it.
pub fn sbat(distro: &str, grub_version: &str, epoch: u32) -> String {
    let mut s = distro.trim_end().to_string();
    s.push_str(&format!(
        "\ngrub.eve-storage,{},LF Edge EVE storage,grub2,{grub_version},https://github.com/lf-edge/eve\n",
        u64::from(epoch) + 1
    ));
    s
}

/// The unsigned EFI GRUB: one binary with its modules built in, `cfg` on a memdisk (written here
/// with fixed times and owners, so the binary is the same for the same config), the OpenPGP
/// `pubkey` and the SBAT `sbat` file.
pub fn efi(cfg: &str, pubkey: &Path, sbat: &Path, out: &Path) -> Result<()> {
    let md = out.with_extension("memdisk.tar");
    {
        let f = fs::File::create(&md).at("create", &md)?;
        let mut t = tar::Builder::new(f);
        t.mode(tar::HeaderMode::Deterministic);
        for d in ["boot/", "boot/grub/"] {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            h.set_mtime(0);
            t.append_data(&mut h, d, std::io::empty())
                .at("write", &md)?;
        }
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(cfg.len() as u64);
        h.set_mtime(0);
        t.append_data(&mut h, "boot/grub/grub.cfg", cfg.as_bytes())
            .at("write", &md)?;
        t.into_inner().and_then(|f| f.sync_all()).at("write", &md)?;
    }
    let mut args = vec![
        "-O".to_string(),
        "x86_64-efi".into(),
        "-p".into(),
        "(memdisk)/boot/grub".into(),
        "-m".into(),
        md.to_string_lossy().into_owned(),
        "--pubkey".into(),
        pubkey.to_string_lossy().into_owned(),
        "--sbat".into(),
        sbat.to_string_lossy().into_owned(),
        "-o".into(),
        out.to_string_lossy().into_owned(),
    ];
    args.extend(GRUB_MODULES.iter().map(|m| m.to_string()));
    cmd::run(cmd::GRUB_MKIMAGE, &args, None)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_config_enforces_signatures_and_falls_back() {
        assert_eq!(esp_label("9526c040"), "9526-C040");
        let c = embedded_cfg("9526-C040", false, 3);
        assert!(
            c.starts_with("set check_signatures=enforce\n"),
            "first, before any file is read"
        );
        assert!(!c.contains("superusers"));
        assert!(c.contains("search --no-floppy --fs-uuid --set=esp 9526-C040"));
        assert!(c.contains(
            "if [ -z \"$esp\" ]; then search --no-floppy --file --set=esp /EFI/eve/9526-C040.esp; fi"
        ));
        assert!(c.contains(r#"load_env --skip-sig --file "($esp)/EFI/eve/state1.env""#));
        assert!(!c.contains("load_env --file"), "the state has no signature");
        assert!(c.contains(r#"save_env --file "($esp)/EFI/eve/state2.env" A_TRIES B_TRIES"#));
        assert!(c.contains(r#"source "($bootdisk,$eve_part)/boot/grub.cfg""#));
        assert!(c.contains(
            "root=PARTUUID=$partuuid eve.slot=$1 eve.bootepoch=3 $eve_extra $eve_cmdline"
        ));
        assert_eq!(platform::rollback::loader_epoch_in(c.as_bytes()), Some(3));
        assert!(c.contains(r#"set eve_extra="eve.refused=$eve_refused""#));
        assert!(c.contains("eve_boot \"$eve_other\""));
        assert!(c.contains("if verify_detached /boot/initrd.img /boot/initrd.img.sig; then"));
        assert!(c.contains("this box stops here"));
        let p = embedded_cfg("9526-C040", true, 0);
        assert!(p.contains("\nset superusers=\"\"\n"));
        for line in p.lines().filter_map(|l| l.trim().strip_prefix("insmod ")) {
            assert!(
                GRUB_MODULES.contains(&line.trim()),
                "{line} is not built in"
            );
        }
    }

    #[test]
    fn the_slot_config_sets_only_the_command_line() {
        let s = slot_cfg("v2", "console=ttyS0,115200 panic=10").unwrap();
        assert!(s.ends_with("set eve_cmdline=\"console=ttyS0,115200 panic=10\"\n"));
        for bad in [
            "a\"; linux /x",
            "a $x",
            "a\nb",
            "a;b",
            "quiet eve.bootepoch=9",
        ] {
            assert!(slot_cfg("v2", bad).is_err(), "{bad:?}");
        }
        let s = sbat(
            "sbat,1,SBAT Version,sbat,1,x\ngrub,5,FSF,grub,2.06,u\n",
            "2.06-13",
            1,
        );
        assert!(s.starts_with("sbat,1,"));
        assert!(s.ends_with(
            "grub.eve-storage,2,LF Edge EVE storage,grub2,2.06-13,https://github.com/lf-edge/eve\n"
        ));
    }
}
