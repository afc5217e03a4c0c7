//! A site gateway (`sesame gateway --site`) with every portal gone: it serves the peer set its
//! feed last cached, brings a stock wireguard-go laptop back within 5 s of a restart by calling
//! it back at its last endpoint, closes an access window at its end and removes a peer when its
//! key expires, both on its own clock.
//! (The cache is written here as the feed writes it, through the library: the portal side of
//! the feed is tested with the portal.)
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use crate::common;
use crate::common::cli;
use crate::common::config::TestConfig;
use crate::common::steps::step;
use crate::require_root;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::netns::{wait_for, Netns, Proc};
use common::wg::WgPeer;
use common::world::{self, keygen, APP_PORT, GW_PORT, PAIE, RH};
use sesame::api::feed::{FeedPeer, FeedResource};
use sesame::control::peer_cache::PeerCache;
use sesame::control::site_gateway::state::SiteState;
use sesame::key::PublicKey;

const TUN: &str = "sc0";
const LAPTOP: &str = "100.64.0.2";

fn start(gw: &Netns, config: &Path, log: &Path) -> Proc {
    let p = gw.spawn(
        cli::BIN,
        &[
            "gateway",
            "--config",
            config.to_str().unwrap(),
            "--site",
            "dsden56",
        ],
        Some(log),
    );
    assert!(
        wait_for(Duration::from_secs(15), || gw
            .exec("ip", &["link", "show", TUN, "up"])
            .stdout
            .windows(2)
            .any(|w| w == b"UP")),
        "site gateway did not bring {TUN} up; log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    p
}

/// The feed state as the feed loop caches it: payroll for the laptop, whose key expires at
/// `expires_ms`, and HR (`mfa = true`) inside its access window, open until `window_ms`.
fn write_cache(
    dir: &Path,
    gateway_public: &str,
    laptop_key: &str,
    stolen_key: &str,
    expires_ms: i64,
    window_ms: i64,
) {
    let state = SiteState {
        site: "dsden56".into(),
        generation: "g-test".into(),
        version: 7,
        mfa_idle_ms: Some(10 * 60 * 1000),
        resources: vec![
            FeedResource {
                name: "paie".into(),
                description: "Paie".into(),
                allow: vec![format!("{PAIE}/32 tcp:{APP_PORT}")],
                mfa: false,
            },
            FeedResource {
                name: "rh".into(),
                description: "RH".into(),
                allow: vec![format!("{RH}/32 tcp:{APP_PORT}")],
                mfa: true,
            },
        ],
        peers: BTreeMap::from([
            (
                laptop_key.to_string(),
                FeedPeer {
                    public_key: laptop_key.to_string(),
                    address: LAPTOP.parse().unwrap(),
                    device_id: 1,
                    device_name: "PC-PAIE-01".into(),
                    username: "mleroux".into(),
                    resources: vec!["paie".into(), "rh".into()],
                    key_expires_at_ms: expires_ms,
                    mfa_until_ms: Some(window_ms),
                    persistent_keepalive: None,
                },
            ),
            (
                stolen_key.to_string(),
                FeedPeer {
                    public_key: stolen_key.to_string(),
                    address: "100.64.0.3".parse().unwrap(),
                    device_id: 2,
                    device_name: "PC-VOLE-02".into(),
                    username: "sbernard".into(),
                    resources: vec!["paie".into()],
                    key_expires_at_ms: i64::MAX,
                    mfa_until_ms: None,
                    persistent_keepalive: None,
                },
            ),
        ]),
    };
    let cache = PeerCache::open(dir).unwrap().sibling("site-cache.json");
    let gw = PublicKey::parse(gateway_public).unwrap();
    cache
        .save_value(&gw, sesame::time::now_ms(), &state)
        .unwrap();
}

#[test]
fn with_every_portal_gone_the_cache_is_served_restarts_call_back_and_keys_expire_on_time() {
    require_root!("network namespaces, TUN, wireguard-go");
    let dir = tempfile::tempdir().unwrap();
    let t = world::Topology::new("sc", 1);
    let laptop = &t.laptops[0];
    let _servers = world::app_servers(&t, dir.path());
    let key_path = dir.path().join("gateway.key");
    let gateway_public = keygen(&key_path);
    let wg = WgPeer::start(laptop, &format!("{LAPTOP}/32"), dir.path());
    // Time for two starts and a restart before the window ends, then before the key expires.
    let window_ms = sesame::time::now_ms() + 25_000;
    let expires_ms = sesame::time::now_ms() + 45_000;
    let stolen = sesame::key::PrivateKey::generate().public_key().to_base64();
    write_cache(
        dir.path(),
        &gateway_public,
        &wg.key.public,
        &stolen,
        expires_ms,
        window_ms,
    );
    let token = dir.path().join("site.token");
    std::fs::write(&token, "not-checked-while-no-portal-answers\n").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let config = TestConfig::new()
        .gateway(&format!(
            "listen = \"0.0.0.0:{GW_PORT}\"\nendpoint = \"198.18.1.1:{GW_PORT}\"\ninterface = \"{TUN}\"\n\
             private_key_file = \"{key}\"\nthreads = 2\n\
             portals = [\"http://127.0.0.1:9\"]\nportal_token_file = \"{token}\"",
            key = key_path.display(),
            token = token.display(),
        ))
        .table("audit", "flow_window = \"1s\"")
        .table("metrics", "listen = \"127.0.0.1:0\"")
        .write(&dir.path().join("gateway.toml"));
    let log = dir.path().join("gateway.log");
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let reaches = |ip: &str| laptop.tcp_connects(ip, APP_PORT, 1);

    let mut gateway = step("no portal answers: the cached peer set is served", || {
        let p = start(&t.gw, &config, &log);
        wg.set_peer(
            laptop,
            &gateway_public,
            &world::Topology::endpoint(0),
            &["198.18.10.0/24", "198.18.20.0/24"],
            1,
        );
        assert!(
            wait_for(Duration::from_secs(15), || reaches(PAIE)),
            "payroll unreachable from the cache; log:\n{}",
            text()
        );
        assert!(reaches(RH), "HR inside the cached access window");
        let peers = t.gw.exec("wg", &["show", TUN, "peers"]);
        assert!(
            String::from_utf8_lossy(&peers.stdout).contains(&wg.key.public),
            "wg show lists the site's device"
        );
        assert!(text().contains("serving the cached peer set"), "{}", text());
        assert!(text().contains("feed unavailable"), "{}", text());
        p
    });

    step(
        "restarted with no portal: the laptop is back within 5 s, called back at its endpoint",
        || {
            let status = gateway
                .signal_and_wait(libc::SIGTERM, Duration::from_secs(10))
                .expect("site gateway did not stop on SIGTERM");
            assert!(status.success(), "exit status {status}");
            assert!(!reaches(PAIE));
            let log2 = dir.path().join("gateway2.log");
            let started = Instant::now();
            gateway = start(&t.gw, &config, &log2);
            assert!(
                wait_for(Duration::from_secs(5), || reaches(PAIE)),
                "laptop not back within 5 s; log:\n{}",
                std::fs::read_to_string(&log2).unwrap_or_default()
            );
            eprintln!(
                "site gateway restart without portal: laptop back {:?} after the start",
                started.elapsed()
            );
            let text2 = std::fs::read_to_string(&log2).unwrap_or_default();
            assert!(
                text2.contains("initiating handshakes towards the peers' last endpoints"),
                "{text2}"
            );
        },
    );

    step(
        "a stolen laptop cut at the site with the portal down: `devices revoke --emergency`",
        || {
            let peers = || {
                String::from_utf8_lossy(&t.gw.exec("wg", &["show", TUN, "peers"]).stdout)
                    .into_owned()
            };
            assert!(peers().contains(&stolen), "{}", peers());
            let out = cli::sesame(&[
                "devices",
                "revoke",
                "2",
                "--emergency",
                "--config",
                config.to_str().unwrap(),
            ])
            .ok();
            assert!(out.contains(&stolen), "{out}");
            assert!(!peers().contains(&stolen), "{}", peers());
            assert!(peers().contains(&wg.key.public), "the other laptop stays");
            assert!(reaches(PAIE));
        },
    );

    step(
        "the access window ends with every portal gone: HR closes on time, payroll stays",
        || {
            let until = Duration::from_millis(
                u64::try_from(window_ms - sesame::time::now_ms()).unwrap_or(0),
            );
            assert!(reaches(RH), "HR reachable before the window's end");
            std::thread::sleep(until);
            assert!(
                wait_for(Duration::from_secs(2), || !reaches(RH)),
                "HR still reachable 2 s after the window's end"
            );
            assert!(reaches(PAIE), "payroll needs no window");
            let text2 = std::fs::read_to_string(dir.path().join("gateway2.log")).unwrap();
            assert!(text2.contains("access window closed"), "{text2}");
            assert!(
                text2.contains("reason=\"expired\"") || text2.contains("reason=expired"),
                "{text2}"
            );
        },
    );

    step(
        "the device key expires: the peer leaves on time, by the gateway's own clock",
        || {
            let until = Duration::from_millis(
                u64::try_from(expires_ms - sesame::time::now_ms()).unwrap_or(0),
            );
            assert!(reaches(PAIE), "still reachable before the expiry");
            std::thread::sleep(until);
            assert!(
                wait_for(Duration::from_secs(2), || !String::from_utf8_lossy(
                    &t.gw.exec("wg", &["show", TUN, "peers"]).stdout
                )
                .contains(&wg.key.public)),
                "peer still present 2 s after its key expired"
            );
            assert!(
                !reaches(PAIE),
                "payroll still reachable after the key expired"
            );
        },
    );
    let _ = gateway.signal_and_wait(libc::SIGTERM, Duration::from_secs(10));
}
