//! Fuzz target: the storage policy, as read from the CONFIG partition.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = storage::policy::Policy::parse(std::path::Path::new("/config/storage.toml"), text, Some(1 << 40));
        let _ = storage::policy::Policy::parse(std::path::Path::new("/config/storage.toml"), text, None);
    }
});
