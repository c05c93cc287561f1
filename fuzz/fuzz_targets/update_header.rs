//! Fuzz target: the OS update artifact's header, from a file anyone may hand the box.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = abupdate::artifact::parse_header(data, "x86_64", Some(data.len() as u64));
    let _ = abupdate::artifact::parse_header(data, "x86_64", None);
});
