//! Helpers of the agent's journeys: the `sesame-agent` binary, small parsers of the agent's files.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The `sesame-agent` binary of this workspace: `SESAME_AGENT_BIN` when set (CI points it at the
/// one `cargo test --workspace` built), else built once per test process with the same profile
/// and target directory as the running test (Cargo only builds the root package's binaries for
/// the root package's tests). That build resolves features for the agent alone, so it compiles
/// the agent's dependencies a second time next to a workspace build: CI avoids it.
pub fn agent_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("SESAME_AGENT_BIN") {
            let bin = PathBuf::from(bin);
            assert!(bin.exists(), "SESAME_AGENT_BIN={} missing", bin.display());
            return bin;
        }
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
        let target_dir = profile_dir.parent().unwrap().to_path_buf();
        let cargo = std::env::var("CARGO")
            .ok()
            .or(option_env!("CARGO").map(str::to_string))
            .unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .args([
                "build",
                "--quiet",
                "-p",
                "sesame-agent",
                "--bin",
                "sesame-agent",
                "--target-dir",
            ])
            .arg(&target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().unwrap();
        assert!(status.success(), "cargo build -p sesame-agent failed");
        let bin = profile_dir.join("sesame-agent");
        assert!(bin.exists(), "{} missing", bin.display());
        bin
    })
    .clone()
}

/// The value of `Key = value` in a wg-quick file.
pub fn conf_value(conf: &str, key: &str) -> String {
    conf.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| panic!("{key} not in {conf}"))
}

/// The value of `key = value` in a flat TOML file, quotes removed.
pub fn toml_value(text: &str, key: &str) -> String {
    conf_value(text, key).trim_matches('"').to_string()
}

/// `wg pubkey` of a base64 private key.
pub fn wg_pubkey(private: &str) -> String {
    let mut child = Command::new("wg")
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(private.as_bytes())
        .unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string()
}
