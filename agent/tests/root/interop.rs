//! The agent's config and tunnel against a real WireGuard peer (Debian's wireguard-go), in namespaces.
//! Needs root (CI runs as root): namespaces, TUN, wireguard-go.
#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::too_many_lines)]

use crate::common as support;
use crate::require_root;

use std::path::Path;

use std::time::Duration;

use sesame::api::{DeviceConfig, GatewayInfo, ResourceInfo};
use sesame::key::PrivateKey;
use sesame_agent::wgconf;
use support::*;

const GW_UNDERLAY: &str = "198.18.0.1";
const LAPTOP_UNDERLAY: &str = "198.18.0.2/30";
const GW_TUNNEL: &str = "100.64.0.1/24";
const LAPTOP_TUNNEL: &str = "100.64.0.2";
const PAYROLL: &str = "198.18.10.10";
const HR: &str = "198.18.20.10";
const PORT: u16 = 51820;

fn device(gw_public: &str) -> DeviceConfig {
    DeviceConfig {
        device_id: 1,
        tunnel_address: LAPTOP_TUNNEL.into(),
        gateway: GatewayInfo {
            public_key: gw_public.into(),
            endpoint: format!("{GW_UNDERLAY}:{PORT}"),
        },
        allowed_ips: vec![format!("{PAYROLL}/32")],
        dns: vec![],
        device_token: None,
        expires_at: "2027-01-01T00:00:00Z".into(),
        resources: vec![ResourceInfo {
            name: "paie".into(),
            description: "Payroll".into(),
            networks: vec![format!("{PAYROLL}/32")],
            site: None,
            mfa: false,
        }],
        peers: vec![],
        mfa_until: None,
        mfa_registration: None,
    }
}

/// Laptop and gateway namespaces; the gateway (wireguard-go) serves payroll and HR on its loopback.
struct Lab {
    // Fields drop in order: the wireguard-go interface before its namespace.
    _wg: WgGo,
    laptop: Netns,
    gw: Netns,
    tmp: tempfile::TempDir,
    secret: PrivateKey,
    gw_public: String,
}

fn lab() -> Lab {
    let tmp = tempfile::tempdir().unwrap();
    let laptop = Netns::new("salap");
    let gw = Netns::new("sagw");
    veth(&laptop, LAPTOP_UNDERLAY, &gw, &format!("{GW_UNDERLAY}/30"));
    let secret = PrivateKey::generate();
    let (wg, gw_public) = wg_gateway(
        &gw,
        tmp.path(),
        GW_TUNNEL,
        PORT,
        &[PAYROLL, HR],
        &secret.public_key().to_base64(),
        LAPTOP_TUNNEL,
    );
    Lab {
        _wg: wg,
        laptop,
        gw,
        tmp,
        secret,
        gw_public,
    }
}

#[test]
fn written_config_works_with_wireguard_go_after_wg_quick_strip() {
    require_root!("network namespaces, TUN, wireguard-go");
    let lab = lab();
    let dir = lab.tmp.path().join("agent");
    let paths = write_agent_dir(&dir, &lab.secret, &device(&lab.gw_public), "unused");
    let conf_text = std::fs::read_to_string(paths.conf()).unwrap();

    // Our strip is exactly wg-quick's.
    let official = must("wg-quick", &["strip", paths.conf().to_str().unwrap()]);
    let normalize = |s: &str| {
        s.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| l.replace(' ', ""))
            .collect::<Vec<_>>()
    };
    assert_eq!(normalize(&wgconf::strip(&conf_text)), normalize(&official));

    // The laptop side is wireguard-go configured with `wg setconf` from the file, unchanged but stripped.
    let wg = WgGo::start(&lab.laptop, "slp");
    let stripped = write_secret(lab.tmp.path(), "stripped.conf", &official);
    lab.laptop
        .must("wg", &["setconf", &wg.iface, stripped.to_str().unwrap()]);
    lab.laptop.must(
        "ip",
        &[
            "addr",
            "add",
            &format!("{LAPTOP_TUNNEL}/32"),
            "dev",
            &wg.iface,
        ],
    );
    lab.laptop.must("ip", &["link", "set", &wg.iface, "up"]);
    lab.laptop.must(
        "ip",
        &["route", "add", &format!("{PAYROLL}/32"), "dev", &wg.iface],
    );
    assert!(
        lab.laptop.ping_until(PAYROLL, Duration::from_secs(10)),
        "payroll unreachable through wireguard-go"
    );
    let shown = lab
        .laptop
        .must("wg", &["show", &wg.iface, "latest-handshakes"]);
    assert!(!shown.trim().ends_with("\t0"), "no handshake: {shown}");
}

#[test]
fn agent_up_status_down_against_wireguard_go() {
    require_root!("network namespaces, TUN, wireguard-go");
    let lab = lab();
    let iface = unique("sag");
    let dir = lab.tmp.path().join("agent");
    let paths = write_agent_dir(&dir, &lab.secret, &device(&lab.gw_public), &iface);
    let dir_s = dir.to_str().unwrap();

    // A config readable by others is refused with the fix.
    let conf = paths.conf();
    must("chmod", &["644", conf.to_str().unwrap()]);
    let out = agent(&lab.laptop, &["up", "--dir", dir_s]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!("chmod 600 {}", conf.display())),
        "{}",
        text(&out)
    );
    must("chmod", &["600", conf.to_str().unwrap()]);

    let out = agent(&lab.laptop, &["up", "--dir", dir_s, "--refresh", "1"]);
    assert!(out.status.success(), "up failed: {}", text(&out));
    let guard = Down {
        ns: &lab.laptop,
        dir: dir_s,
    };
    assert!(
        text(&out).contains(&format!("Tunnel {iface} up")),
        "{}",
        text(&out)
    );

    // Twice is refused.
    let again = agent(&lab.laptop, &["up", "--dir", dir_s]);
    assert!(
        !again.status.success() && text(&again).contains("already running"),
        "{}",
        text(&again)
    );

    // Payroll (granted) answers through the tunnel; HR (not granted) has no route at all.
    assert!(
        lab.laptop.ping_until(PAYROLL, Duration::from_secs(10)),
        "payroll unreachable"
    );
    assert!(!lab.laptop.ping(HR), "HR must not be reachable");
    let routes = lab.laptop.routes();
    assert!(
        routes.contains(&format!("{PAYROLL} dev {iface}")),
        "{routes}"
    );
    assert!(!routes.contains("198.18.20."), "{routes}");
    // The gateway saw the laptop's handshake, with the laptop's key.
    let peers = lab
        .gw
        .must("wg", &["show", &lab._wg.iface, "latest-handshakes"]);
    assert!(
        peers.contains(&lab.secret.public_key().to_base64()) && !peers.trim().ends_with("\t0"),
        "{peers}"
    );

    std::thread::sleep(Duration::from_millis(1200));
    let out = agent(&lab.laptop, &["status", "--dir", dir_s]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains(&format!("State: connected ({iface})")),
        "{shown}"
    );
    assert!(
        shown.contains("Last handshake:") && shown.contains("s ago"),
        "{shown}"
    );
    assert!(
        shown.contains("- paie — Payroll (198.18.10.10/32)"),
        "{shown}"
    );
    assert!(
        shown.contains("Key valid until: 2027-01-01T00:00:00Z"),
        "{shown}"
    );
    assert!(
        shown.contains("unreachable"),
        "portal is down in this test: {shown}"
    );
    let status = sesame_agent::status::TunnelStatus::load(&paths).unwrap();
    assert!(status.rx_bytes > 0 && status.tx_bytes > 0, "{status:?}");
    assert!(status.refresh_error.is_some(), "{status:?}");

    // French by default.
    let out = lab
        .laptop
        .cmd(env!("CARGO_BIN_EXE_sesame-agent"))
        .args(["status", "--dir", dir_s])
        .env("LANG", "fr_FR.UTF-8")
        .output()
        .unwrap();
    assert!(text(&out).contains("État : connecté"), "{}", text(&out));

    drop(guard);
    let links = lab.laptop.links();
    assert!(!links.contains(&iface), "interface left behind: {links}");
    assert!(
        !lab.laptop.routes().contains("198.18.10.10"),
        "route left behind"
    );
    assert!(!paths.pid().exists());
    let out = agent(&lab.laptop, &["down", "--dir", dir_s]);
    assert!(text(&out).contains("not running"), "{}", text(&out));
}

/// Servers (`serve`) and the bulk client (`check`), shared with the gateway's e2e tests.
const BULK: &str = include_str!("../../../tests/common/bulk.py");

/// 8 MiB each way between the agent and stock wireguard-go, through the agent's fast path
/// (TUN super-segments split before encryption, decrypted segments coalesced): intact.
#[test]
fn bulk_tcp_through_the_agent_fast_path_arrives_intact() {
    require_root!("network namespaces, TUN, wireguard-go");
    let lab = lab();
    let iface = unique("sab");
    let dir = lab.tmp.path().join("agent");
    let paths = write_agent_dir(&dir, &lab.secret, &device(&lab.gw_public), &iface);
    let dir_s = dir.to_str().unwrap();
    let script = lab.tmp.path().join("bulk.py");
    std::fs::write(&script, BULK).unwrap();
    let script = script.to_str().unwrap();
    let server_log = std::fs::File::create(lab.tmp.path().join("server.log")).unwrap();
    let mut server = lab
        .gw
        .cmd("python3")
        .args([script, "serve", &format!("{PAYROLL}:8443")])
        .stdout(server_log)
        .spawn()
        .unwrap();
    let out = agent(&lab.laptop, &["up", "--dir", dir_s]);
    assert!(out.status.success(), "up failed: {}", text(&out));
    let guard = Down {
        ns: &lab.laptop,
        dir: dir_s,
    };
    assert!(lab.laptop.ping_until(PAYROLL, Duration::from_secs(10)));
    let log = std::fs::read_to_string(paths.log()).unwrap();
    assert!(log.contains("tso: true"), "no TUN offload: {log}");
    let out = lab.laptop.run(
        "timeout",
        &[
            "120",
            "python3",
            script,
            "check",
            PAYROLL,
            "8443",
            &(8 << 20).to_string(),
        ],
    );
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        text(&out).contains("ok"),
        "bulk transfer failed: {}\nagent log:\n{}",
        text(&out),
        std::fs::read_to_string(paths.log()).unwrap_or_default()
    );
    drop(guard);
}

/// A large packet sent before the first handshake waits in the tunnel and goes out when the
/// gateway answers (the flush after a handshake reply needs room for a whole packet, not just
/// a handshake message); the daemon survives it and the tunnel works.
#[test]
fn a_large_packet_queued_before_the_handshake_goes_out_after_it() {
    require_root!("network namespaces, TUN, wireguard-go");
    let lab = lab();
    let iface = unique("sag");
    let dir = lab.tmp.path().join("agent");
    write_agent_dir(&dir, &lab.secret, &device(&lab.gw_public), &iface);
    let dir_s = dir.to_str().unwrap();
    let laptop_public = lab.secret.public_key().to_base64();
    // The gateway does not know the laptop yet: its initiations go unanswered.
    let wg_iface = lab._wg.iface.clone();
    lab.gw
        .must("wg", &["set", &wg_iface, "peer", &laptop_public, "remove"]);
    let out = agent(&lab.laptop, &["up", "--dir", dir_s]);
    assert!(out.status.success(), "up failed: {}", text(&out));
    let _guard = Down {
        ns: &lab.laptop,
        dir: dir_s,
    };
    // 1,300 bytes of ICMP: queued by the tunnel, the ping itself times out.
    assert!(!lab
        .laptop
        .run("ping", &["-c", "1", "-s", "1300", "-W", "1", PAYROLL])
        .status
        .success());
    let allowed = format!("{LAPTOP_TUNNEL}/32");
    lab.gw.must(
        "wg",
        &[
            "set",
            &wg_iface,
            "peer",
            &laptop_public,
            "allowed-ips",
            &allowed,
        ],
    );
    // The next initiation (within 5 s) is answered; the queued packet follows the handshake.
    let arrived = |min: u64| {
        let shown = lab.gw.must("wg", &["show", &wg_iface, "transfer"]);
        shown
            .split_whitespace()
            .nth(1)
            .and_then(|rx| rx.parse::<u64>().ok())
            .is_some_and(|rx| rx >= min)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !arrived(1300) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(arrived(1300), "the queued packet never reached the gateway");
    assert!(
        lab.laptop.ping_until(PAYROLL, Duration::from_secs(10)),
        "the tunnel does not work after the flush"
    );
    let pid = std::fs::read_to_string(dir.join("agent.pid")).unwrap();
    assert!(
        Path::new(&format!("/proc/{}", pid.trim())).exists(),
        "the daemon died"
    );
}
