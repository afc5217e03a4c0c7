//! A stock WireGuard peer: Debian's `wireguard-go` in a namespace, configured with `wg`.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::netns::{unique, wait_for, Netns, Proc};
use std::io::Write as _;

/// A key pair from `wg genkey` / `wg pubkey` (base64).
pub struct WgKey {
    pub private: String,
    pub public: String,
}

pub fn genkey() -> WgKey {
    let out = Command::new("wg")
        .arg("genkey")
        .output()
        .expect("wg genkey");
    assert!(out.status.success());
    let private = String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string();
    let mut child = Command::new("wg")
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("wg pubkey");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(private.as_bytes())
        .expect("write key");
    let out = child.wait_with_output().expect("wg pubkey");
    let public = String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string();
    WgKey { private, public }
}

/// A wireguard-go interface inside a namespace; the process dies with the guard, and its
/// control socket in /var/run/wireguard is removed.
pub struct WgPeer {
    pub interface: String,
    pub key: WgKey,
    proc: Proc,
}

impl WgPeer {
    /// Starts wireguard-go on a unique interface in `ns`, with `address` (CIDR) on it.
    pub fn start(ns: &Netns, address: &str, dir: &Path) -> WgPeer {
        let interface = unique("wg");
        let key = genkey();
        let log = dir.join(format!("{interface}.log"));
        let proc = ns.spawn("wireguard-go", &["-f", &interface], Some(&log));
        let sock = format!("/var/run/wireguard/{interface}.sock");
        assert!(
            wait_for(Duration::from_secs(30), || Path::new(&sock).exists()),
            "wireguard-go did not create {sock}"
        );
        let keyfile = dir.join(format!("{interface}.key"));
        std::fs::write(&keyfile, &key.private).expect("write key");
        ns.exec_ok(
            "wg",
            &[
                "set",
                &interface,
                "private-key",
                keyfile.to_str().expect("path"),
            ],
        );
        ns.ip(&["addr", "add", address, "dev", &interface]);
        ns.ip(&["link", "set", &interface, "up"]);
        WgPeer {
            interface,
            key,
            proc,
        }
    }

    /// Adds the gateway as the only peer, routing `allowed_ips` into the tunnel.
    pub fn set_peer(
        &self,
        ns: &Netns,
        public_key: &str,
        endpoint: &str,
        allowed_ips: &[&str],
        keepalive: u16,
    ) {
        let allowed = allowed_ips.join(",");
        ns.exec_ok(
            "wg",
            &[
                "set",
                &self.interface,
                "peer",
                public_key,
                "endpoint",
                endpoint,
                "allowed-ips",
                &allowed,
                "persistent-keepalive",
                &keepalive.to_string(),
            ],
        );
        for net in allowed_ips {
            ns.ip(&["route", "replace", net, "dev", &self.interface]);
        }
    }

    /// The UDP port wireguard-go listens on (`wg show IFACE listen-port`).
    pub fn listen_port(&self, ns: &Netns) -> u16 {
        let out = ns.exec("wg", &["show", &self.interface, "listen-port"]);
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("listen port")
    }

    /// `wg show IFACE latest-handshakes` → seconds since epoch of the last handshake (0: none).
    pub fn latest_handshake(&self, ns: &Netns) -> u64 {
        let out = ns.exec("wg", &["show", &self.interface, "latest-handshakes"]);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for WgPeer {
    fn drop(&mut self) {
        self.proc.kill();
        let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", self.interface));
    }
}
