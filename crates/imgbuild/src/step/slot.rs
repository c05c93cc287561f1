//! Step "sign+squashfs+verity": the slot's GRUB config written and every file GRUB checks signed
//! with the boot key, the root squashed, and the slot image with its signed dm-verity descriptor.

use crate::context::Options;
use crate::error::{IoContext, Result};
use crate::{grub, update, verity};
use std::fs;
use std::path::Path;

pub fn slot(
    opts: &Options,
    work: &Path,
    keys: &crate::step::Keys,
    cmdline: &str,
    epoch: u64,
    (sqfs, slot_img): (&Path, &Path),
) -> Result<abupdate::verity::Descriptor> {
    let (boot, signing) = (keys.boot, keys.signing);
    let root = work.join("rootfs");
    let slot_cfg = root.join(grub::SIGNED_FILES[0]);
    fs::write(&slot_cfg, grub::slot_cfg(&opts.version, cmdline)?).at("write", &slot_cfg)?;
    let gpg = boot.gpg(work)?;
    for f in grub::SIGNED_FILES {
        gpg.sign(&root.join(f), epoch)?;
    }
    update::squash(&root, sqfs)?;
    verity::slot_image(
        sqfs,
        slot_img,
        &signing.key,
        &opts.version,
        opts.security_epoch,
        opts.profile.name(),
    )
}
