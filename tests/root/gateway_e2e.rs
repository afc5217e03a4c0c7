//! End to end: the real `sesame gateway` binary between stock WireGuard laptops (wireguard-go)
//! and resource hosts, each in its own network namespace. Needs root (CI runs as root).
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use crate::common;
use crate::common::cli;
use crate::common::config::{resource_sections, TestConfig};
use crate::require_root;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::netns::{wait_for, Netns, Proc};
use common::wg::WgPeer;
use common::world::{self, keygen, tcp_servers, APP_PORT, GW_PORT, PAIE, RH};

const TUN: &str = "sg0";
const LAPTOP1: &str = "100.64.0.2";
const LAPTOP2: &str = "100.64.0.3";
const SPOOFED: &str = "100.64.0.9";
/// Port with a listener on paie that no grant allows.
const OTHER_PORT: u16 = 9000;
/// Listener on laptop1 that resource hosts must not reach.
const LAPTOP_PORT: u16 = 7000;

/// Sends N datagrams of junk to HOST:PORT (bounded count).
const FLOOD: &str = r#"
import socket, sys, os
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(n):
    size = 1 + (i * 37) % 300
    s.sendto(bytes([9]) + os.urandom(size), (host, port))
"#;

struct Topology {
    // Processes first: dropped before their namespaces.
    gateway: Proc,
    _listeners: Vec<Proc>,
    wg1: WgPeer,
    wg2: WgPeer,
    gw: Netns,
    l1: Netns,
    l2: Netns,
    res: Netns,
    dir: tempfile::TempDir,
    config: PathBuf,
    log: PathBuf,
    gateway_public: String,
}

fn start_gateway(gw: &Netns, config: &Path, log: &Path) -> Proc {
    let p = gw.spawn(
        cli::BIN,
        &["gateway", "--config", config.to_str().unwrap()],
        Some(log),
    );
    assert!(
        wait_for(Duration::from_secs(15), || {
            gw.exec("ip", &["link", "show", TUN, "up"])
                .stdout
                .windows(2)
                .any(|w| w == b"UP")
        }),
        "gateway did not bring {TUN} up; log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    p
}

fn setup() -> Topology {
    let dir = tempfile::tempdir().unwrap();
    let world::Topology { gw, laptops, res } = world::Topology::new("sg", 2);
    let mut laptops = laptops.into_iter();
    let (l1, l2) = (laptops.next().unwrap(), laptops.next().unwrap());
    // Servers on the resource hosts (one port no grant allows) and on laptop1; `bulk.py`, also
    // the bulk client, is left in `dir`.
    let listeners = vec![
        tcp_servers(
            &res,
            dir.path(),
            "res-listener",
            &[
                &format!("{PAIE}:{APP_PORT}"),
                &format!("{PAIE}:{OTHER_PORT}"),
                &format!("{RH}:{APP_PORT}"),
            ],
        ),
        tcp_servers(
            &l1,
            dir.path(),
            "laptop-listener",
            &[&format!("0.0.0.0:{LAPTOP_PORT}")],
        ),
    ];

    // The gateway key, written by `sesame keygen` (mode 0600).
    let key_path = dir.path().join("gateway.key");
    let gateway_public = keygen(&key_path);

    let wg1 = WgPeer::start(&l1, &format!("{LAPTOP1}/32"), dir.path());
    let wg2 = WgPeer::start(&l2, &format!("{LAPTOP2}/32"), dir.path());
    let config = TestConfig::new()
        .gateway(&format!(
            "listen = \"0.0.0.0:{GW_PORT}\"\nendpoint = \"198.18.1.1:{GW_PORT}\"\ninterface = \"{TUN}\"\n\
             tunnel_network = \"100.64.0.0/16\"\nprivate_key_file = \"{key}\"\nthreads = 2\n\
             flow_idle_timeout = \"60s\"",
            key = key_path.display(),
        ))
        .table("audit", "flow_window = \"1s\"")
        .sections(&resource_sections())
        .sections(&format!(
            r#"[[peer]]
name = "laptop1"
public_key = "{k1}"
address = "{LAPTOP1}"
resources = ["paie"]

[[peer]]
name = "laptop2"
public_key = "{k2}"
address = "{LAPTOP2}"
resources = ["rh"]"#,
            k1 = wg1.key.public,
            k2 = wg2.key.public,
        ))
        .write(&dir.path().join("sesame.toml"));
    let log = dir.path().join("gateway.log");
    let gateway = start_gateway(&gw, &config, &log);

    // Laptops route both resource hosts into the tunnel (the gateway decides what passes).
    let allowed = ["198.18.10.0/24", "198.18.20.0/24"];
    wg1.set_peer(
        &l1,
        &gateway_public,
        &format!("198.18.1.1:{GW_PORT}"),
        &allowed,
        1,
    );
    wg2.set_peer(
        &l2,
        &gateway_public,
        &format!("198.18.2.1:{GW_PORT}"),
        &allowed,
        1,
    );
    Topology {
        gateway,
        _listeners: listeners,
        wg1,
        wg2,
        gw,
        l1,
        l2,
        res,
        dir,
        config,
        log,
        gateway_public,
    }
}

impl Topology {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Asks the gateway for its counters (SIGUSR1) and returns the last `drops:` line's value
    /// for `reason`.
    fn drop_count(&self, reason: &str) -> u64 {
        let before = self.log_text().matches("drops:").count();
        let pid = self.gateway.child.as_ref().unwrap().id() as i32;
        // SAFETY: kill(2) on our own child process.
        unsafe { libc::kill(pid, libc::SIGUSR1) };
        assert!(
            wait_for(Duration::from_secs(5), || self
                .log_text()
                .matches("drops:")
                .count()
                > before),
            "no stats in the gateway log"
        );
        let text = self.log_text();
        let line = text.lines().rev().find(|l| l.contains("drops:")).unwrap();
        line.split_whitespace()
            .filter_map(|t| t.split_once('='))
            .find(|(k, _)| *k == reason)
            .map_or(0, |(_, v)| v.parse().unwrap())
    }

    fn until_connected(&self, ns: &Netns, ip: &str) -> bool {
        wait_for(Duration::from_secs(40), || ns.tcp_connects(ip, APP_PORT, 2))
    }
}

#[test]
fn granted_traffic_passes_and_everything_else_is_dropped() {
    require_root!("network namespaces, TUN, wireguard-go");
    let t = setup();
    // Granted TCP and ICMP, each laptop to its own resource.
    assert!(
        t.until_connected(&t.l1, PAIE),
        "laptop1 cannot reach paie; gateway log:\n{}",
        t.log_text()
    );
    assert!(t.l1.pings(PAIE, 2), "laptop1 cannot ping paie");
    assert!(t.until_connected(&t.l2, RH), "laptop2 cannot reach rh");
    assert!(t.l2.pings(RH, 2), "laptop2 cannot ping rh");
    assert!(t.wg1.latest_handshake(&t.l1) > 0);

    // Not granted: the other laptop's host, a port with a listener, a ping.
    let denied_before = t.drop_count("policy_denied");
    assert!(!t.l1.tcp_connects(RH, APP_PORT, 2), "laptop1 reached rh");
    assert!(!t.l1.tcp_connects(PAIE, OTHER_PORT, 2), "port 9000 reached");
    assert!(
        !t.l2.tcp_connects(PAIE, APP_PORT, 2),
        "laptop2 reached paie"
    );
    assert!(!t.l2.pings(PAIE, 1), "laptop2 pinged paie");
    assert!(t.drop_count("policy_denied") >= denied_before + 4);

    // The listener on laptop1 is there (reachable inside its namespace)…
    assert!(t.l1.tcp_connects(LAPTOP1, LAPTOP_PORT, 2));
    // …but a resource host cannot open a connection to a laptop, nor ping it.
    let no_flow_before = t.drop_count("no_flow_for_reply");
    assert!(!t.res.tcp_connects(LAPTOP1, LAPTOP_PORT, 2));
    assert!(!t.res.pings(LAPTOP1, 1));
    assert!(t.drop_count("no_flow_for_reply") > no_flow_before);

    // A second address on the laptop's tunnel interface: its packets are spoofed.
    t.l1.ip(&[
        "addr",
        "add",
        &format!("{SPOOFED}/32"),
        "dev",
        &t.wg1.interface,
    ]);
    let spoofed_before = t.drop_count("spoofed_source");
    let out = t.l1.exec(
        "ping",
        &["-n", "-q", "-c", "2", "-W", "1", "-I", SPOOFED, PAIE],
    );
    assert!(!out.status.success(), "a spoofed ping got an answer");
    assert!(t.drop_count("spoofed_source") >= spoofed_before + 2);
    // The real address still works.
    assert!(t.l1.tcp_connects(PAIE, APP_PORT, 2));

    // Without a database, sessions and flows are audit log lines (windows of 1 s).
    let want = [
        "\"reason\":\"no_grant\"",
        "\"reason\":\"spoofed_source\"",
        "\"reason\":\"unsolicited_inbound\"",
        "\"resource\":\"paie\"",
        "tunnel.session_started",
    ];
    let logged = wait_for(Duration::from_secs(10), || {
        let log = t.log_text();
        want.iter().all(|w| log.contains(w))
    });
    assert!(logged, "audit lines missing; log:\n{}", t.log_text());
    assert!(t.log_text().contains("peer:laptop1"));

    // Per-peer counters are reported too.
    let _ = t.drop_count("malformed");
    let log = t.log_text();
    assert!(log.contains("peer stats peer=static:laptop1"), "{log}");
    let _ = (&t.wg2, &t.gw, &t.dir, &t.config, &t.gateway_public);
}

#[test]
fn gateway_restart_and_laptops_reconnect_on_their_own() {
    require_root!("network namespaces, TUN, wireguard-go");
    let mut t = setup();
    assert!(
        t.until_connected(&t.l1, PAIE),
        "gateway log:\n{}",
        t.log_text()
    );
    assert!(t.until_connected(&t.l2, RH));

    // Clean shutdown on SIGTERM: exit 0, TUN device gone.
    let status = t
        .gateway
        .signal_and_wait(libc::SIGTERM, Duration::from_secs(10))
        .expect("gateway did not stop on SIGTERM");
    assert!(status.success(), "exit status {status}");
    // Open sessions were closed and written before the exit.
    let log = t.log_text();
    assert!(log.contains("\"reason\":\"gateway_stopped\""), "{log}");
    assert!(!t.gw.exec("ip", &["link", "show", TUN]).status.success());
    assert!(!t.l1.tcp_connects(PAIE, APP_PORT, 2));

    // The gateway remembered where each laptop was (sealed like the peer cache).
    let remembered = std::fs::read_to_string(t.dir.path().join("endpoints.json")).unwrap();
    assert!(
        remembered.contains("198.18.1.2:") && remembered.contains("198.18.2.2:"),
        "{remembered}"
    );

    let log2 = t.dir.path().join("gateway2.log");
    let started = std::time::Instant::now();
    t.gateway = start_gateway(&t.gw, &t.config, &log2);
    t.log = log2;
    // No action on the laptops: the gateway calls each back at its last endpoint, so stock
    // wireguard-go clients are back within 5 s (alone they wait ~15 s for their own timer).
    let back = |ns: &Netns, ip: &str| {
        wait_for(Duration::from_secs(5), || ns.tcp_connects(ip, APP_PORT, 1))
    };
    assert!(
        back(&t.l1, PAIE),
        "laptop1 not back within 5 s of the restart; log:\n{}",
        t.log_text()
    );
    assert!(
        back(&t.l2, RH),
        "laptop2 not back within 5 s of the restart"
    );
    eprintln!(
        "static gateway restart: both laptops back {:?} after the start",
        started.elapsed()
    );
    assert!(t
        .log_text()
        .contains("initiating handshakes towards the peers' last endpoints"));
}

#[test]
fn malformed_datagram_flood_is_counted_and_harmless() {
    require_root!("network namespaces, TUN, wireguard-go");
    let t = setup();
    assert!(
        t.until_connected(&t.l1, PAIE),
        "gateway log:\n{}",
        t.log_text()
    );
    let flood = t.dir.path().join("flood.py");
    std::fs::write(&flood, FLOOD).unwrap();
    const N: u64 = 2000;
    t.l2.exec_ok(
        "python3",
        &[
            flood.to_str().unwrap(),
            "198.18.2.1",
            &GW_PORT.to_string(),
            &N.to_string(),
        ],
    );
    assert!(
        wait_for(Duration::from_secs(10), || t.drop_count("malformed") >= N),
        "malformed count: {}",
        t.drop_count("malformed")
    );
    assert_eq!(t.drop_count("malformed"), N);
    // Still alive and still forwarding.
    assert!(t.gateway.child.is_some());
    assert!(t.l1.tcp_connects(PAIE, APP_PORT, 2));
    assert!(t.l1.pings(PAIE, 1));
}

#[test]
fn bulk_tcp_both_ways_arrives_intact_through_the_offloads() {
    require_root!("network namespaces, TUN, wireguard-go");
    let t = setup();
    assert!(
        t.until_connected(&t.l1, PAIE),
        "gateway log:\n{}",
        t.log_text()
    );
    // The kernel gave the gateway TSO: reads are split and writes coalesced on this path.
    let log = t.log_text();
    assert!(log.contains("tso: true"), "no TUN offload: {log}");
    let bulk = t.dir.path().join("bulk.py");
    // 8 MiB each way: thousands of super-segments split and of segments coalesced.
    let out = t.l1.exec(
        "timeout",
        &[
            "120",
            "python3",
            bulk.to_str().unwrap(),
            "check",
            PAIE,
            &APP_PORT.to_string(),
            &(8 << 20).to_string(),
        ],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok"),
        "bulk transfer failed: {}\ngateway log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        t.log_text()
    );
    assert_eq!(t.drop_count("io_error"), 0);
    assert_eq!(t.drop_count("tun_malformed"), 0);
}
