//! Block device names that are never a physical drive: made by the kernel from memory, files,
//! other block devices, the network or our own zvols. Every crate that looks for drives asks here.

/// Prefixes of kernel block device names that are never a physical drive. (Optical drives,
/// `sr*`, are physical; whether one may be used is the caller's judgement.)
pub const VIRTUAL_PREFIXES: [&str; 7] = ["loop", "ram", "zram", "dm-", "md", "nbd", "zd"];

pub fn is_virtual_name(name: &str) -> bool {
    VIRTUAL_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Optical drives: physical, but never a disk we partition or boot from.
pub fn is_optical_name(name: &str) -> bool {
    name.starts_with("sr")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_made_devices_are_virtual_and_drives_are_not() {
        for n in ["loop0", "ram1", "zram0", "dm-3", "md127", "nbd0", "zd16"] {
            assert!(is_virtual_name(n), "{n}");
        }
        for n in ["sda", "vdb", "nvme0n1", "mmcblk0", "sr0", "xvda"] {
            assert!(!is_virtual_name(n), "{n}");
        }
        assert!(is_optical_name("sr0") && !is_optical_name("sda"));
    }
}
