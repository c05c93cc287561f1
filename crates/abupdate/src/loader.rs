//! The boot loader an image brings (shim and our GRUB, signed, in its `/usr/lib/eve/efi`) and the
//! one on the ESP, which both slots share. Once the running slot's boot was judged good, its loader
//! goes on the ESP (`abupdate bootloader`), never over a newer one; the TPM's rollback floor never
//! rises above the ESP loader's epoch, and stage 1 keeps the vault locked when a loader below the
//! floor started the boot, so a GRUB put back from an older release opens nothing and is replaced
//! at the next good boot.

use crate::error::{IoContext, Result};
use platform::rollback::loader_epoch_in;
use serde::Serialize;
use std::path::Path;

/// Under the image's `/usr`.
pub const IN_USR: &str = "lib/eve/efi";

/// GRUB first: it is the file whose epoch counts, and shim only starts whatever `grubx64.efi` is.
pub const FILES: [(&str, &str); 2] = [
    ("grubx64.efi", "EFI/BOOT/grubx64.efi"),
    ("BOOTX64.EFI", "EFI/BOOT/BOOTX64.EFI"),
];

/// What `abupdate bootloader` found, or did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// The ESP's loader is the running image's.
    Current { epoch: u32 },
    /// The running image's loader goes on the ESP (`from`: the ESP's epoch; `None`: a loader
    /// without one, from before loaders carried it, or not ours).
    Install { from: Option<u32>, to: u32 },
    /// The ESP holds a newer release's loader: left alone.
    Newer { esp: u32, ours: u32 },
    /// The running slot is not good (on trial, or it has nothing proven): the ESP stays.
    NotGood { state: String },
    /// The running image's loader is among the images the firmware's `dbx` forbids (an older
    /// release, fallen back to after a newer one revoked its loader): putting it on the ESP
    /// would leave the box unable to boot, so the ESP keeps the loader it has.
    Revoked { file: String },
}

impl Action {
    pub fn text(&self, done: bool) -> String {
        match self {
            Action::Current { epoch } => {
                format!("boot loader on the ESP is this release's (epoch {epoch}): unchanged")
            }
            Action::Install { from, to } => format!(
                "boot loader on the ESP (epoch {}) {} this release's (epoch {to})",
                from.map_or_else(|| "unknown".to_string(), |e| e.to_string()),
                if done { "replaced by" } else { "would be replaced by" }
            ),
            Action::Newer { esp, ours } => format!(
                "boot loader on the ESP is a newer release's (epoch {esp}, this release's is {ours}): unchanged"
            ),
            Action::NotGood { state } => format!(
                "the running slot is {state}, not good: the boot loader on the ESP stays until it is"
            ),
            Action::Revoked { file } => format!(
                "this release's {file} is revoked by the firmware's dbx: the boot loader on the ESP stays"
            ),
        }
    }
}

/// Pure: what to do with the ESP's files `esp` given the image's `ours` (same order as [`FILES`]);
/// `booted`: the epoch of the loader that started this boot (from the kernel command line). A
/// newer loader on the ESP is left alone only when it is the one that booted: bytes on the ESP
/// that merely name a higher epoch are not trusted to keep this release's loader off.
pub fn decide(
    esp: &[Option<Vec<u8>>; 2],
    ours: &[Vec<u8>; 2],
    booted: u32,
) -> std::result::Result<Action, String> {
    let to = loader_epoch_in(&ours[0]).ok_or_else(|| {
        format!(
            "this image's {} names no epoch ({}): a build from before boot loaders carried theirs",
            FILES[0].0,
            platform::rollback::LOADER_ARG
        )
    })?;
    let from = esp[0].as_deref().and_then(loader_epoch_in);
    match from {
        Some(e) if e > to && e == booted => Ok(Action::Newer { esp: e, ours: to }),
        _ if esp[0].as_deref() == Some(&ours[0][..]) && esp[1].as_deref() == Some(&ours[1][..]) => {
            Ok(Action::Current { epoch: to })
        }
        _ => Ok(Action::Install { from, to }),
    }
}

/// The Authenticode SHA-256 of a PE image: what firmware compares with the hashes in `dbx` (the
/// signature and the header fields that carry it are left out, so a signed and an unsigned copy
/// of one image hash alike).
pub fn image_hash(pe: &[u8]) -> std::result::Result<[u8; 32], String> {
    use object::read::pe::{PeFile32, PeFile64};
    use sha2::Digest as _;
    let kind = object::FileKind::parse(pe).map_err(|e| format!("not a PE image: {e}"))?;
    let mut h = sha2::Sha256::new();
    let r = match kind {
        object::FileKind::Pe64 => PeFile64::parse(pe)
            .map_err(|e| format!("not a PE image: {e}"))
            .and_then(|f| authenticode::authenticode_digest(&f, &mut h).map_err(|e| e.to_string())),
        object::FileKind::Pe32 => PeFile32::parse(pe)
            .map_err(|e| format!("not a PE image: {e}"))
            .and_then(|f| authenticode::authenticode_digest(&f, &mut h).map_err(|e| e.to_string())),
        other => Err(format!("not a PE image ({other:?})")),
    };
    r.map(|()| h.finalize().into())
}

/// Every EFI program on the ESP `esp` (files ending in `.efi`, any case, under `EFI/`), relative
/// paths in order, with their image hashes (or why none could be computed).
pub fn esp_programs(esp: &Path) -> Vec<(String, std::result::Result<[u8; 32], String>)> {
    let mut out = Vec::new();
    let mut dirs = vec![esp.join("EFI")];
    while let Some(d) = dirs.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("efi")) {
                let rel = p.strip_prefix(esp).unwrap_or(&p).display().to_string();
                let h = std::fs::read(&p)
                    .map_err(|e| format!("{}: {e}", p.display()))
                    .and_then(|b| image_hash(&b));
                out.push((rel, h));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Pure: whether writing a `dbx` that forbids `revoked` leaves the ESP bootable. The files of
/// the boot path ([`FILES`]) must not be among them and must have been hashed (fwupd refuses a
/// `dbx` update for the same reason); any other program on the ESP that is among them only
/// stops booting, which is the point: the warnings name them. A copy of an old loader put
/// anywhere else on the ESP cannot hold a revocation back.
pub fn check_revocable(
    programs: &[(String, std::result::Result<[u8; 32], String>)],
    revoked: &[[u8; 32]],
) -> std::result::Result<Vec<String>, String> {
    let mut warnings = Vec::new();
    for (_, rel) in FILES {
        if !programs.iter().any(|(p, _)| p == rel) {
            return Err(format!("{rel} is not on the ESP"));
        }
    }
    for (rel, h) in programs {
        let boot_path = FILES.iter().any(|(_, f)| f == rel);
        match h {
            Ok(h) if revoked.contains(h) && boot_path => {
                return Err(format!(
                    "{rel} on the ESP is among the images the update revokes (SHA-256 {}): the box would not boot",
                    platform::efisig::short(h)
                ))
            }
            Ok(h) if revoked.contains(h) => warnings.push(format!(
                "{rel} on the ESP is among the images the update revokes (SHA-256 {}): it will not boot any more",
                platform::efisig::short(h)
            )),
            Ok(_) => {}
            Err(e) if boot_path => {
                return Err(format!("{rel} on the ESP could not be hashed ({e})"))
            }
            Err(_) => {}
        }
    }
    Ok(warnings)
}

/// Pure: the first of the image's loader files (`ours`, as [`FILES`]) whose image hash is in
/// `forbidden` (the firmware's `dbx`), by its ESP name.
pub fn revoked_file(ours: &[Vec<u8>; 2], forbidden: &[[u8; 32]]) -> Option<String> {
    ours.iter()
        .zip(FILES)
        .find(|(b, _)| image_hash(b).is_ok_and(|h| forbidden.contains(&h)))
        .map(|(_, (_, rel))| rel.to_string())
}

pub fn read_ours(usr: &Path) -> Result<[Vec<u8>; 2]> {
    let one = |name: &str| {
        let p = usr.join(IN_USR).join(name);
        std::fs::read(&p).at("read (the image's boot loader)", &p)
    };
    Ok([one(FILES[0].0)?, one(FILES[1].0)?])
}

/// The ESP volume id our GRUB looks for (`XXXX-XXXX`), as the build wrote it beside the loader.
pub fn read_esp_label(usr: &Path) -> Result<String> {
    let p = usr.join(IN_USR).join("esp-id");
    let t = std::fs::read_to_string(&p).at("read (the ESP id the image's GRUB looks for)", &p)?;
    let t = t.trim();
    if t.len() != 9 || !t.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()) {
        return Err(crate::error::Error::Device(format!(
            "{}: {t:?} is not a FAT volume id",
            p.display()
        )));
    }
    Ok(t.to_string())
}

/// The marker by which our GRUB also finds the ESP, and its detached signature (GRUB opens it
/// under `check_signatures=enforce`), as the build left them beside the loader.
pub fn read_marker(usr: &Path) -> Result<[Vec<u8>; 2]> {
    let one = |name: &str| {
        let p = usr.join(IN_USR).join(name);
        std::fs::read(&p).at("read (the ESP marker the image's GRUB looks for)", &p)
    };
    Ok([one("esp.marker")?, one("esp.marker.sig")?])
}

/// Makes sure the ESP carries the file by which our GRUB also finds it (`EFI/eve/<id>.esp`,
/// with its `.sig`): a box made by a build from before ids were derived from the keys has
/// another volume id.
pub fn write_marker(esp: &Path, label: &str, marker: &[Vec<u8>; 2]) -> Result<bool> {
    let p = esp.join("EFI/eve").join(format!("{label}.esp"));
    let sig = esp.join("EFI/eve").join(format!("{label}.esp.sig"));
    let mut changed = false;
    for (path, want) in [(&p, &marker[0]), (&sig, &marker[1])] {
        if std::fs::read(path).ok().as_deref() != Some(&want[..]) {
            crate::release::write_file(path, want)?;
            changed = true;
        }
    }
    Ok(changed)
}

pub fn read_esp(esp: &Path) -> [Option<Vec<u8>>; 2] {
    FILES.map(|(_, rel)| std::fs::read(esp.join(rel)).ok())
}

/// Writes the files of `ours` that differ, each whole beside the old one and renamed over it
/// ([`crate::release::write_file`]), GRUB first.
pub fn write(esp: &Path, current: &[Option<Vec<u8>>; 2], ours: &[Vec<u8>; 2]) -> Result<()> {
    for (i, (_, rel)) in FILES.iter().enumerate() {
        if current[i].as_deref() != Some(&ours[i][..]) {
            crate::release::write_file(&esp.join(rel), &ours[i])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grub(epoch: u32, tail: &str) -> Vec<u8> {
        format!("MZ.. linux /boot/vmlinuz eve.slot=$1 eve.bootepoch={epoch} $eve_extra {tail}")
            .into_bytes()
    }

    #[test]
    fn the_esp_takes_this_releases_loader_unless_it_holds_a_newer_one() {
        let ours = [grub(2, "v3"), b"shim".to_vec()];
        let same = [Some(ours[0].clone()), Some(ours[1].clone())];
        assert_eq!(decide(&same, &ours, 2), Ok(Action::Current { epoch: 2 }));
        // An older GRUB put back; a same-epoch one that differs; one that names no epoch; none.
        for (esp, from) in [
            ([Some(grub(1, "v2")), Some(b"shim".to_vec())], Some(1)),
            ([Some(grub(2, "other")), Some(b"shim".to_vec())], Some(2)),
            (
                [Some(b"MZ old grub".to_vec()), Some(b"shim".to_vec())],
                None,
            ),
            ([None, None], None),
        ] {
            assert_eq!(decide(&esp, &ours, 0), Ok(Action::Install { from, to: 2 }));
        }
        // The same GRUB with another shim: replaced too.
        let shim = [Some(ours[0].clone()), Some(b"old shim".to_vec())];
        assert_eq!(
            decide(&shim, &ours, 2),
            Ok(Action::Install {
                from: Some(2),
                to: 2
            })
        );
        // A newer release's loader, which started this boot: left alone. Bytes that only claim
        // a newer epoch (this boot was started by another loader): replaced.
        let newer = [Some(grub(3, "v4")), Some(b"shim".to_vec())];
        assert_eq!(
            decide(&newer, &ours, 3),
            Ok(Action::Newer { esp: 3, ours: 2 })
        );
        assert_eq!(
            decide(&newer, &ours, 1),
            Ok(Action::Install {
                from: Some(3),
                to: 2
            })
        );
        assert!(decide(&same, &[b"MZ".to_vec(), b"shim".to_vec()], 2).is_err());
    }

    #[test]
    fn a_revocation_is_refused_only_when_it_names_the_boot_path() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("EFI/BOOT")).unwrap();
        std::fs::create_dir_all(t.path().join("EFI/eve/old")).unwrap();
        std::fs::write(t.path().join("EFI/eve/state1.env"), b"# not a program").unwrap();
        std::fs::write(t.path().join("EFI/eve/old/Grub.EFI"), b"MZ not a real one").unwrap();
        let p = esp_programs(t.path());
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, "EFI/eve/old/Grub.EFI");
        assert!(p[0].1.is_err());
        let e = check_revocable(&p, &[[1; 32]]).unwrap_err();
        assert!(e.contains("EFI/BOOT/grubx64.efi is not on the ESP"), "{e}");
        let mut esp = vec![
            ("EFI/BOOT/BOOTX64.EFI".to_string(), Ok([3u8; 32])),
            ("EFI/BOOT/grubx64.efi".to_string(), Ok([2u8; 32])),
            ("EFI/BOOT/old.efi".to_string(), Ok([1u8; 32])),
            (
                "EFI/eve/junk.efi".to_string(),
                Err("not a PE image".to_string()),
            ),
        ];
        assert_eq!(
            check_revocable(&esp, &[[9; 32]]).unwrap(),
            Vec::<String>::new()
        );
        // A revoked copy elsewhere: written, with a warning naming it.
        let w = check_revocable(&esp, &[[1; 32]]).unwrap();
        assert!(w.len() == 1 && w[0].contains("EFI/BOOT/old.efi"), "{w:?}");
        // The boot path revoked, or not readable: refused.
        for revoked in [[2u8; 32], [3u8; 32]] {
            let e = check_revocable(&esp, &[revoked]).unwrap_err();
            assert!(e.contains("the box would not boot"), "{e}");
        }
        esp[1].1 = Err("short read".into());
        let e = check_revocable(&esp, &[[9; 32]]).unwrap_err();
        assert!(
            e.contains("EFI/BOOT/grubx64.efi") && e.contains("could not be hashed"),
            "{e}"
        );
        assert!(image_hash(b"MZ").is_err());
        // Not PE images: never found revoked (a real loader's hash is checked in the VM tier).
        assert_eq!(
            revoked_file(&[b"MZ".to_vec(), b"x".to_vec()], &[[1; 32]]),
            None
        );
    }

    #[test]
    fn only_differing_files_are_replaced_and_the_epoch_is_read_back() {
        let t = tempfile::tempdir().unwrap();
        let ours = [grub(4, "v5"), b"shim5".to_vec()];
        assert_eq!(read_esp(t.path()), [None, None]);
        // What an earlier release's writer left after a cut write.
        std::fs::create_dir_all(t.path().join("EFI/BOOT")).unwrap();
        std::fs::write(t.path().join("EFI/BOOT/grubx64.new"), b"half").unwrap();
        write(t.path(), &read_esp(t.path()), &ours).unwrap();
        assert_eq!(
            read_esp(t.path()),
            [Some(ours[0].clone()), Some(ours[1].clone())]
        );
        assert_eq!(
            loader_epoch_in(&std::fs::read(t.path().join(FILES[0].1)).unwrap()),
            Some(4)
        );
        let left: Vec<_> = std::fs::read_dir(t.path().join("EFI/BOOT"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("grubx64") && n != "grubx64.efi")
            .collect();
        assert!(left.is_empty(), "temporaries left: {left:?}");
        let m = [b"9526-C040\n".to_vec(), b"sig".to_vec()];
        assert!(write_marker(t.path(), "9526-C040", &m).unwrap());
        assert!(!write_marker(t.path(), "9526-C040", &m).unwrap(), "once");
        assert_eq!(
            std::fs::read(t.path().join("EFI/eve/9526-C040.esp.sig")).unwrap(),
            b"sig"
        );
        assert_eq!(
            decide(&read_esp(t.path()), &ours, 0),
            Ok(Action::Current { epoch: 4 })
        );
    }
}
