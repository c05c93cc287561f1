//! Fuzz target: the OS update artifact's header, from a file anyone may hand the box. The input
//! is read as a header as it is, and as edits (position, byte) to a valid header, which gets the
//! fuzzer past the magic and the checksum into the manifest's fields.
#![no_main]
use abupdate::artifact;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = artifact::parse_header(data, "x86_64", Some(data.len() as u64));
    let _ = artifact::parse_header(data, "x86_64", None);
    let mut payload = b"hsqs".to_vec();
    payload.resize(64, 7);
    let Ok(m) = artifact::manifest_for("1.2.3", "x86_64", &payload, Default::default()) else {
        return;
    };
    let Ok(mut h) = artifact::header(&m) else { return };
    for e in data.chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([e[0], e[1]])) % h.len();
        h[at] = e[2];
    }
    let len = data.first().map(|&b| u64::from(b) * 977).unwrap_or(0) + h.len() as u64;
    let _ = artifact::parse_header(&h, "x86_64", Some(len));
    let _ = artifact::parse_header(&h, "x86_64", None);
});
