//! Fuzz target: the GRUB environment blocks holding the A/B slot state.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut block = data.to_vec();
    block.resize(abupdate::grubenv::BLOCK_SIZE, b'#');
    if let Ok(vars) = abupdate::grubenv::parse(&block) {
        let _ = abupdate::state::Slots::from_env(&vars);
    }
});
