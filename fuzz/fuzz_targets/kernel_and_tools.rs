//! Fuzz target: mountinfo, zfs/zpool/qemu-img output and zfs send stream headers.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = volumes::import::parse_stream_head(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let m = volumes::guard::parse_mountinfo(text);
        let _ = volumes::guard::vault_dataset(&m, std::path::Path::new("/persist/config"), "persist");
        let _ = volumes::import::check_info(text, "/proc/1/fd/3");
        let _ = volumes::zvol::parse_list(text, "persist", None);
        let _ = storage::zfs::parse_get(text);
        let _ = storage::zfs::parse_pool_list(text);
        let _ = storage::zfs::parse_importable(text);
        let _ = storage::status::parse_status_members(text);
        let _ = storage::tpm::parse_blob(text);
    }
});
