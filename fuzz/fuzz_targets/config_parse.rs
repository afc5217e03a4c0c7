//! Fuzz the configuration loader (TOML → validated `Config`): any text must give a config or
//! an error naming a key, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sesame::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(Path::new("/etc/sesame/sesame.toml"), text) {
        Ok(c) => {
            std::hint::black_box(c.policy.resources().count());
        }
        Err(e) => {
            // The error names the file; rendering it must not panic either.
            assert!(e.to_string().contains("sesame.toml"));
        }
    }
});
