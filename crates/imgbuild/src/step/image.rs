//! Step "disk": the GPT image: the ESP, slot A with this build, an empty slot B and CONFIG, laid
//! out from a seed so the same inputs give the same bytes.

use crate::context::Options;
use crate::disk;
use crate::error::Result;
use platform::layout;
use std::path::{Path, PathBuf};

pub fn disk_image(
    opts: &Options,
    seed: &str,
    esp: &Path,
    slot_img: &Path,
    config: &Path,
    image: &Path,
) -> Result<()> {
    let (esp, slot_img, config) = (
        esp.to_path_buf(),
        slot_img.to_path_buf(),
        config.to_path_buf(),
    );
    let slot = opts.slot_size_mib << 20;
    let spec = |name: &str, t: &str, size: u64, c: Option<&PathBuf>| disk::PartSpec {
        name: name.into(),
        type_guid: t.into(),
        size,
        content: c.cloned(),
    };
    let specs = [
        spec(layout::EFI, disk::EFI_TYPE, 32 << 20, Some(&esp)),
        spec(layout::IMGA, disk::LINUX_TYPE, slot, Some(&slot_img)),
        spec(layout::IMGB, disk::LINUX_TYPE, slot, None),
        spec(
            layout::CONFIG,
            disk::BASIC_DATA_TYPE,
            16 << 20,
            Some(&config),
        ),
    ];
    let (parts, total) = disk::layout(&specs, seed)?;
    disk::assemble(image, &parts, disk::disk_guid(seed), total)
}
