//! Fuzz target: volume specs (TOML and JSON) dropped into the spool, and the volume settings.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        for f in ["a.toml", "a.json"] {
            if let Ok(raw) = volumes::spec::RawSpec::parse(f, text) {
                let _ = raw.validate(f);
            }
        }
        let _ = volumes::config::Config::parse(std::path::Path::new("/etc/volumes.toml"), text);
        if let Ok(v) = serde_json::from_str::<volumes::ids::VolumeIds>(text) {
            let _ = v.check();
        }
    }
});
