//! `sesame gateway` in production shape: stock `wg show` through its API socket, metrics on
//! their own listener, SIGHUP re-reading the static peers without touching the live session,
//! a broken file refused. Needs root (CI runs as root).
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use crate::common;
use crate::require_root;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::cli;
use common::config::TestConfig;
use common::metrics;
use common::netns::{link, unique, wait_for, Netns, ThreadNetns};
use common::wg::{genkey, WgPeer};
use common::world::keygen;

const GW_PORT: u16 = 51820;

/// The gateway's config: static `peers` (name, public key, address) granted payroll's ICMP, and
/// `extra` keys of `[gateway]`.
fn config(dir: &Path, tun: &str, peers: &[(&str, &str, &str)], extra: &str) -> String {
    let mut c = TestConfig::new()
        .gateway(&format!(
            "listen = \"0.0.0.0:{GW_PORT}\"\ninterface = \"{tun}\"\ntunnel_network = \"100.64.0.0/24\"\n\
             private_key_file = \"{}\"\nthreads = 1\n{extra}",
            dir.join("gateway.key").display()
        ))
        .sections("[[resource]]\nname = \"paie\"\nallow = [\"198.18.10.10/32 icmp\"]");
    for (name, key, address) in peers {
        c = c.sections(&format!(
            "[[peer]]\nname = \"{name}\"\npublic_key = \"{key}\"\naddress = \"{address}\"\nresources = [\"paie\"]"
        ));
    }
    c.text()
}

/// `wg show TUN dump` peer lines: public key → latest handshake (seconds).
fn wg_peers(tun: &str) -> Vec<(String, u64)> {
    let out = Command::new("wg")
        .args(["show", tun, "dump"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "wg show: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].to_string(), f[4].parse().unwrap())
        })
        .collect()
}

fn metric(gw: &Netns, name: &str) -> f64 {
    let out = gw.exec("curl", &["-s", "-m", "5", "http://127.0.0.1:9108/metrics"]);
    let text = String::from_utf8(out.stdout).unwrap();
    metrics::value(&metrics::parse(&text), name, &[])
        .unwrap_or_else(|| panic!("{name} missing: {text}"))
}

#[test]
fn gateway_wg_show_metrics_and_reload_keep_the_session() {
    require_root!("network namespaces, TUN, wireguard-go");
    let dir = tempfile::tempdir().unwrap();
    let gw = Netns::new("pgg");
    let laptop = Netns::new("pgl");
    link(&gw, "198.18.1.1/30", &laptop, "198.18.1.2/30");
    let gateway_public = keygen(&dir.path().join("gateway.key"));

    let wg = WgPeer::start(&laptop, "100.64.0.10/32", dir.path());
    let tun = unique("pg");
    let cfg = dir.path().join("sesame.toml");
    let first = [("supervision", wg.key.public.as_str(), "100.64.0.10")];
    std::fs::write(&cfg, config(dir.path(), &tun, &first, "")).unwrap();
    let log = dir.path().join("gateway.log");
    let mut gateway = gw.spawn(
        cli::BIN,
        &["gateway", "--config", cfg.to_str().unwrap()],
        Some(&log),
    );
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let sock = format!("/var/run/wireguard/{tun}.sock");
    assert!(
        wait_for(Duration::from_secs(15), || Path::new(&sock).exists()),
        "no API socket; log:\n{}",
        log_text()
    );
    wg.set_peer(
        &laptop,
        &gateway_public,
        &format!("198.18.1.1:{GW_PORT}"),
        &["198.18.10.10/32"],
        1,
    );
    assert!(
        wait_for(Duration::from_secs(15), || wg_peers(&tun)
            .iter()
            .any(|(k, h)| *k == wg.key.public && *h > 0)),
        "no handshake in wg show; log:\n{}",
        log_text()
    );
    let handshake = wg_peers(&tun)[0].1;
    assert_eq!(metric(&gw, "sesame_gateway_peers"), 1.0);
    assert_eq!(metric(&gw, "sesame_gateway_peers_connected"), 1.0);
    assert!(metric(&gw, "sesame_gateway_handshakes_total") >= 1.0);

    // Reload: a second static peer appears; the laptop's session is the same one.
    let other = genkey();
    let both = [
        first[0],
        ("site-link", other.public.as_str(), "100.64.0.11"),
    ];
    std::fs::write(&cfg, config(dir.path(), &tun, &both, "")).unwrap();
    let pid = gateway.child.as_ref().unwrap().id() as i32;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    assert!(
        wait_for(Duration::from_secs(10), || wg_peers(&tun).len() == 2),
        "reload did not add the peer; log:\n{}",
        log_text()
    );
    let peers = wg_peers(&tun);
    let kept = peers.iter().find(|(k, _)| *k == wg.key.public).unwrap();
    assert_eq!(kept.1, handshake, "the laptop had to handshake again");
    assert_eq!(metric(&gw, "sesame_gateway_peers_connected"), 1.0);
    assert!(log_text().contains("configuration reloaded"));

    // A broken file: refused, logged with file, line and key; the peers stay.
    std::fs::write(&cfg, config(dir.path(), &tun, &both, "mtu = 99")).unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    assert!(
        wait_for(Duration::from_secs(10), || log_text()
            .contains("reload refused")),
        "{}",
        log_text()
    );
    let line = log_text()
        .lines()
        .find(|l| l.contains("reload refused"))
        .unwrap()
        .to_string();
    assert!(
        line.contains(&format!("{}:7: key `gateway.mtu`", cfg.display())),
        "{line}"
    );
    assert_eq!(wg_peers(&tun).len(), 2);

    // SIGTERM with a silent `wg` client and a never-ending metrics request open: gone within
    // 5 s, its socket removed.
    let _idle_uapi = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let _slow_metrics = {
        use std::io::Write as _;
        let _in_gw = ThreadNetns::enter(&gw);
        let mut s = std::net::TcpStream::connect("127.0.0.1:9108").unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        s
    };
    std::thread::sleep(Duration::from_millis(300));
    let t = std::time::Instant::now();
    let st = gateway.signal_and_wait(libc::SIGTERM, Duration::from_secs(15));
    let took = t.elapsed();
    eprintln!("sesame gateway stopped {took:?} after SIGTERM");
    assert!(st.is_some_and(|s| s.success()), "{}", log_text());
    assert!(
        took < Duration::from_secs(5),
        "took {took:?}; log:\n{}",
        log_text()
    );
    assert!(!Path::new(&sock).exists(), "API socket left after shutdown");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} still there"
    );
}
