//! A laptop with resources on two sites: the agent's tunnel against two wireguard-go site
//! gateways, each in its own namespace with its own resource behind it.
#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::too_many_lines)]

use crate::common as support;
use crate::require_root;

use std::time::{Duration, Instant};

use sesame::api::{DeviceConfig, GatewayInfo, ResourceInfo, SitePeer};
use sesame::key::PrivateKey;
use sesame_agent::status::TunnelStatus;
use support::*;

const RECTORAT_UNDERLAY: &str = "198.18.0.1";
const DSDEN_UNDERLAY: &str = "198.18.0.5";
const LAPTOP_TUNNEL: &str = "100.64.0.2";
const PAYROLL: &str = "198.18.10.10";
const SCHOOLS: &str = "198.18.56.10";
const PORT: u16 = 51820;

fn resource(name: &str, net: &str, site: &str) -> ResourceInfo {
    ResourceInfo {
        name: name.into(),
        description: String::new(),
        networks: vec![format!("{net}/32")],
        site: Some(site.into()),
        mfa: false,
    }
}

/// The portal's answer for the sites given (`(site, gateway key, underlay, resource)`).
fn device(sites: &[(&str, &str, &str, &str)]) -> DeviceConfig {
    let peers: Vec<SitePeer> = sites
        .iter()
        .map(|(site, key, underlay, net)| SitePeer {
            site: (*site).into(),
            public_key: (*key).into(),
            endpoint: format!("{underlay}:{PORT}"),
            allowed_ips: vec![format!("{net}/32")],
        })
        .collect();
    DeviceConfig {
        device_id: 1,
        tunnel_address: LAPTOP_TUNNEL.into(),
        gateway: GatewayInfo {
            public_key: peers[0].public_key.clone(),
            endpoint: peers[0].endpoint.clone(),
        },
        allowed_ips: peers.iter().flat_map(|p| p.allowed_ips.clone()).collect(),
        dns: vec![],
        device_token: None,
        expires_at: "2027-01-01T00:00:00Z".into(),
        resources: sites
            .iter()
            .map(|(site, _, _, net)| resource(&format!("app-{site}"), net, site))
            .collect(),
        peers,
        mfa_until: None,
        mfa_registration: None,
    }
}

/// The laptop linked to two site networks; a wireguard-go gateway on each, payroll behind the
/// rectorat's, the schools' application behind the DSDEN's.
struct Lab {
    // Fields drop in order: the wireguard-go interfaces before their namespaces.
    rectorat_wg: WgGo,
    dsden_wg: WgGo,
    laptop: Netns,
    rectorat: Netns,
    dsden: Netns,
    tmp: tempfile::TempDir,
    secret: PrivateKey,
    rectorat_key: String,
    dsden_key: String,
}

fn lab() -> Lab {
    let tmp = tempfile::tempdir().unwrap();
    let laptop = Netns::new("sslap");
    let rectorat = Netns::new("ssrec");
    let dsden = Netns::new("ssdsd");
    veth(
        &laptop,
        "198.18.0.2/30",
        &rectorat,
        &format!("{RECTORAT_UNDERLAY}/30"),
    );
    veth(
        &laptop,
        "198.18.0.6/30",
        &dsden,
        &format!("{DSDEN_UNDERLAY}/30"),
    );
    let secret = PrivateKey::generate();
    let laptop_public = secret.public_key().to_base64();
    let (rectorat_wg, rectorat_key) = wg_gateway(
        &rectorat,
        tmp.path(),
        "100.64.0.1/24",
        PORT,
        &[PAYROLL],
        &laptop_public,
        LAPTOP_TUNNEL,
    );
    let (dsden_wg, dsden_key) = wg_gateway(
        &dsden,
        tmp.path(),
        "100.64.0.3/24",
        PORT,
        &[SCHOOLS],
        &laptop_public,
        LAPTOP_TUNNEL,
    );
    Lab {
        rectorat_wg,
        dsden_wg,
        laptop,
        rectorat,
        dsden,
        tmp,
        secret,
        rectorat_key,
        dsden_key,
    }
}

impl Lab {
    fn rectorat_site(&self) -> (&'static str, &str, &'static str, &'static str) {
        ("rectorat", &self.rectorat_key, RECTORAT_UNDERLAY, PAYROLL)
    }
    fn dsden_site(&self) -> (&'static str, &str, &'static str, &'static str) {
        ("dsden56", &self.dsden_key, DSDEN_UNDERLAY, SCHOOLS)
    }

    /// The last handshake each gateway saw from the laptop (0: none).
    fn handshakes(&self) -> (u64, u64) {
        let seen = |ns: &Netns, wg: &WgGo| {
            ns.must("wg", &["show", &wg.iface, "latest-handshakes"])
                .split_whitespace()
                .nth(1)
                .and_then(|t| t.parse().ok())
                .unwrap_or(0)
        };
        (
            seen(&self.rectorat, &self.rectorat_wg),
            seen(&self.dsden, &self.dsden_wg),
        )
    }
}

#[test]
fn agent_up_reaches_a_resource_on_each_of_two_sites_and_status_lists_both() {
    require_root!("network namespaces, TUN, wireguard-go");
    let lab = lab();
    let iface = unique("sas");
    let dir = lab.tmp.path().join("agent");
    let device = device(&[lab.rectorat_site(), lab.dsden_site()]);
    let paths = write_agent_dir(&dir, &lab.secret, &device, &iface);
    let dir_s = dir.to_str().unwrap();

    let out = agent(&lab.laptop, &["up", "--dir", dir_s]);
    assert!(out.status.success(), "up failed: {}", text(&out));
    let _guard = Down {
        ns: &lab.laptop,
        dir: dir_s,
    };
    let log = || std::fs::read_to_string(paths.log()).unwrap_or_default();
    assert!(
        lab.laptop.ping_until(PAYROLL, Duration::from_secs(10)),
        "payroll (rectorat) unreachable: {}",
        log()
    );
    assert!(
        lab.laptop.ping_until(SCHOOLS, Duration::from_secs(10)),
        "schools (dsden56) unreachable: {}",
        log()
    );
    // Each gateway saw the laptop's own handshake.
    let (rectorat, dsden) = lab.handshakes();
    assert!(rectorat > 0 && dsden > 0, "{rectorat} {dsden}");
    // TCP too, to the DSDEN's resource (the second peer).
    let listener = lab
        .dsden
        .cmd("python3")
        .args([
            "-c",
            &format!(
                "import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);\
                 s.bind(('{SCHOOLS}',8080));s.listen(1);c,_=s.accept();c.sendall(b'bonjour');c.close()"
            ),
        ])
        .spawn();
    let mut listener = listener.unwrap();
    let mut got = String::new();
    let started = Instant::now();
    while !got.contains("bonjour") && started.elapsed() < Duration::from_secs(10) {
        let out = lab.laptop.run(
            "python3",
            &[
                "-c",
                &format!(
                    "import socket;s=socket.create_connection(('{SCHOOLS}',8080),timeout=3);print(s.recv(64).decode())"
                ),
            ],
        );
        got = text(&out);
        if !got.contains("bonjour") {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let _ = listener.kill();
    let _ = listener.wait();
    assert!(got.contains("bonjour"), "TCP through dsden56: {got}");

    let routes = lab.laptop.routes();
    assert!(
        routes.contains(&format!("{PAYROLL} dev {iface}")),
        "{routes}"
    );
    assert!(
        routes.contains(&format!("{SCHOOLS} dev {iface}")),
        "{routes}"
    );

    // Wait for a status report after the traffic (one every 500 ms).
    let started = Instant::now();
    let both = |s: &TunnelStatus| {
        s.sites.len() == 2
            && s.sites
                .iter()
                .all(|x| x.last_handshake_age_secs.is_some() && x.rx_bytes > 0)
    };
    while !TunnelStatus::load(&paths).is_some_and(|s| both(&s))
        && started.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = TunnelStatus::load(&paths).unwrap();
    assert!(both(&status), "{status:?}");
    assert_eq!(status.sites[0].site, "rectorat");
    assert_eq!(status.sites[1].site, "dsden56");

    let out = agent(&lab.laptop, &["status", "--dir", dir_s]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains(&format!("State: connected ({iface})")),
        "{shown}"
    );
    assert!(shown.contains("Sites (one gateway each):"), "{shown}");
    for (site, underlay, net) in [
        ("rectorat", RECTORAT_UNDERLAY, PAYROLL),
        ("dsden56", DSDEN_UNDERLAY, SCHOOLS),
    ] {
        let line = shown
            .lines()
            .find(|l| l.contains(&format!("site {site} ({underlay}:{PORT}): last handshake ")))
            .unwrap_or_else(|| panic!("no line for {site}: {shown}"));
        assert!(line.ends_with(&format!("; routes {net}/32")), "{line}");
    }
    // French first.
    let out = lab
        .laptop
        .cmd(env!("CARGO_BIN_EXE_sesame-agent"))
        .args(["status", "--dir", dir_s])
        .env("LANG", "fr_FR.UTF-8")
        .output()
        .unwrap();
    let shown = text(&out);
    assert!(shown.contains("Sites (une passerelle chacun) :"), "{shown}");
    assert!(
        shown.contains(&format!(
            "site dsden56 ({DSDEN_UNDERLAY}:{PORT}) : dernier échange de clés il y a "
        )),
        "{shown}"
    );
}

/// A stand-in for the portal's `GET /api/v1/device/config`: a static file served by Python's
/// HTTP server in the laptop's namespace, replaced (atomically) to change the grants.
struct Portal {
    file: std::path::PathBuf,
    server: std::process::Child,
}

impl Portal {
    const URL: &'static str = "http://127.0.0.1:8765";

    fn start(ns: &Netns, root: &std::path::Path, device: &DeviceConfig) -> Portal {
        let dir = root.join("www/api/v1/device");
        std::fs::create_dir_all(&dir).unwrap();
        let portal = Portal {
            file: dir.join("config"),
            server: ns
                .cmd("python3")
                .args([
                    "-m",
                    "http.server",
                    "--bind",
                    "127.0.0.1",
                    "8765",
                    "--directory",
                ])
                .arg(root.join("www"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        };
        portal.answer(device);
        portal
    }

    fn answer(&self, device: &DeviceConfig) {
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(device).unwrap()).unwrap();
        std::fs::rename(&tmp, &self.file).unwrap();
    }
}

impl Drop for Portal {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// Polls `check` every 200 ms for up to `within`.
fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < within {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

#[test]
fn a_refresh_adds_then_removes_a_site_peer_without_dropping_the_other() {
    require_root!("network namespaces, TUN, wireguard-go");
    let lab = lab();
    let iface = unique("sar");
    let dir = lab.tmp.path().join("agent");
    let one = device(&[lab.rectorat_site()]);
    let portal = Portal::start(&lab.laptop, lab.tmp.path(), &one);
    let paths = write_agent_dir_with_portal(&dir, &lab.secret, &one, &iface, Portal::URL);
    let dir_s = dir.to_str().unwrap();
    let out = agent(&lab.laptop, &["up", "--dir", dir_s, "--refresh", "1"]);
    assert!(out.status.success(), "up failed: {}", text(&out));
    let _guard = Down {
        ns: &lab.laptop,
        dir: dir_s,
    };
    let log = || std::fs::read_to_string(paths.log()).unwrap_or_default();
    assert!(
        lab.laptop.ping_until(PAYROLL, Duration::from_secs(10)),
        "payroll unreachable: {}",
        log()
    );
    assert!(!lab.laptop.routes().contains(SCHOOLS));
    assert!(
        eventually(Duration::from_secs(10), || TunnelStatus::load(&paths)
            .is_some_and(|s| s.last_refresh_at.is_some())),
        "the stand-in portal never answered: {}",
        log()
    );
    let (rectorat_before, dsden_before) = lab.handshakes();
    assert!(rectorat_before > 0 && dsden_before == 0);

    // A grant on the DSDEN's site: its gateway is added, the rectorat's session goes on.
    portal.answer(&device(&[lab.rectorat_site(), lab.dsden_site()]));
    assert!(
        eventually(Duration::from_secs(15), || lab.laptop.ping(SCHOOLS)),
        "schools unreachable after the grant: {}",
        log()
    );
    assert!(
        lab.laptop.ping(PAYROLL),
        "payroll lost when a site was added"
    );
    let (rectorat_after, dsden_after) = lab.handshakes();
    assert_eq!(
        rectorat_after,
        rectorat_before,
        "the rectorat's session was restarted: {}",
        log()
    );
    assert!(dsden_after > 0);
    let conf = std::fs::read_to_string(paths.conf()).unwrap();
    assert!(conf.contains("# site dsden56"), "{conf}");

    // The rectorat's grant removed: its peer and route go, the DSDEN's session goes on.
    portal.answer(&device(&[lab.dsden_site()]));
    assert!(
        eventually(Duration::from_secs(15), || !lab
            .laptop
            .routes()
            .contains(PAYROLL)),
        "payroll still routed: {}",
        log()
    );
    assert!(!lab.laptop.ping(PAYROLL));
    assert!(lab.laptop.ping(SCHOOLS), "schools lost when a site went");
    assert_eq!(
        lab.handshakes().1,
        dsden_after,
        "the DSDEN's session was restarted"
    );
    assert!(
        eventually(Duration::from_secs(5), || {
            TunnelStatus::load(&paths)
                .is_some_and(|s| s.sites.len() == 1 && s.sites[0].site == "dsden56")
        }),
        "{:?}",
        TunnelStatus::load(&paths)
    );
    let conf = std::fs::read_to_string(paths.conf()).unwrap();
    assert!(
        conf.contains(&lab.dsden_key) && !conf.contains(&lab.rectorat_key),
        "{conf}"
    );
    assert!(
        log().contains("site rectorat (198.18.0.1:51820) removed"),
        "{}",
        log()
    );
}
