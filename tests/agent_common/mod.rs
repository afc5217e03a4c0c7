//! Helpers of the agent's journeys: the `sesame-agent` binary, a thread moved into a namespace,
//! a TCP listener standing for internal servers, small parsers of the agent's files.
#![allow(dead_code, clippy::unwrap_used)]

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::common::netns::{wait_for, Netns, Proc};

/// The `sesame-agent` binary of this workspace, built once per test process with the same
/// profile and target directory as the running test (Cargo only builds the root package's
/// binaries for the root package's tests).
pub fn agent_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
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

/// The calling thread moved into a namespace (so slapd, curl and the `sesame` CLI run there);
/// back on drop.
pub struct ThreadNetns {
    orig: File,
}

pub fn enter(ns_name: &str) -> ThreadNetns {
    let orig = File::open("/proc/thread-self/ns/net").unwrap();
    let target = File::open(format!("/var/run/netns/{ns_name}")).unwrap();
    // SAFETY: setns(2) on valid namespace fds, affecting only this thread.
    let rc = unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
    ThreadNetns { orig }
}

impl Drop for ThreadNetns {
    fn drop(&mut self) {
        // SAFETY: back to the namespace this thread started in.
        unsafe { libc::setns(self.orig.as_raw_fd(), libc::CLONE_NEWNET) };
    }
}

/// The TCP servers of the internal hosts (`bulk.py serve ADDR...`), shared with the other e2e tests.
const LISTENER: &str = include_str!("../common/bulk.py");

/// TCP listeners on `addrs` (`ip:port`) inside `ns`: the internal servers.
pub fn tcp_listener(ns: &Netns, dir: &Path, addrs: &[&str]) -> Proc {
    let script = dir.join("listener.py");
    std::fs::write(&script, LISTENER).unwrap();
    let log = dir.join("listener.log");
    let mut args = vec![script.to_str().unwrap(), "serve"];
    args.extend_from_slice(addrs);
    let proc = ns.spawn("python3", &args, Some(&log));
    assert!(wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("ready")
    }));
    proc
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
