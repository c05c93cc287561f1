//! The boot disk's GPT partition names: the ESP, two OS slots and the CONFIG partition. The image
//! builder writes them, abupdate and eve-init find slots by them, storage-init reads CONFIG.

pub const EFI: &str = "EFI";
pub const IMGA: &str = "IMGA";
pub const IMGB: &str = "IMGB";
pub const CONFIG: &str = "CONFIG";

/// The partitions in disk order.
pub const ALL: [&str; 4] = [EFI, IMGA, IMGB, CONFIG];
