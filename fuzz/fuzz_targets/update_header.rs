//! Fuzz target: the OS update artifact's header, from a file anyone may hand the box. The input
//! is read as a header as it is, and as edits (position, byte) to a valid signed header, which
//! gets the fuzzer past the magic into the manifest, signature and rotation parsing. A changed
//! header that still verifies is a finding.
#![no_main]
use abupdate::artifact::{self, Expect, Running};
use abupdate::trust::{KeyList, Signer25519, Trust};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let key = Signer25519::from_seed(&[3; 32]);
    let Ok(trust) = Trust::from_list(&KeyList::new(1, &[key.public()])) else {
        return;
    };
    let running = Running {
        version: "1.0".into(),
        security_epoch: 0,
    };
    let want = Expect {
        arch: "x86_64",
        trust: &trust,
        running: &running,
        allow_downgrade: false,
    };
    let _ = artifact::parse_header(data, &want, Some(data.len() as u64));
    let _ = artifact::parse_header(data, &want, None);
    let mut payload = b"hsqs".to_vec();
    payload.resize(64, 7);
    let Ok(m) = artifact::manifest_for("1.2.3", "x86_64", &payload, Default::default()) else {
        return;
    };
    let Ok(orig) = artifact::header(&m, &key) else { return };
    let mut h = orig.clone();
    for e in data.chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([e[0], e[1]])) % h.len();
        h[at] = e[2];
    }
    let len = data.first().map(|&b| u64::from(b) * 977).unwrap_or(0) + h.len() as u64;
    if artifact::parse_header(&h, &want, None).is_ok() {
        assert_eq!(h, orig, "an edited header verified");
    }
    let _ = artifact::parse_header(&h, &want, Some(len));
});
