//! End to end: the real `sesame serve` binary (portal + gateway + directory sync) in a network
//! namespace, a real slapd beside it, a stock wireguard-go laptop and resource hosts in their
//! own namespaces. Needs root (CI runs as root).
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use crate::common;
use crate::common::cli;
use crate::common::steps::step;
use crate::require_root;

use std::process::Command;
use std::time::{Duration, Instant};

use common::netns::{wait_for, Netns};
use common::serve::{
    api, audit_verify, enrol, login, setup, World, APP_PORT, GW_PORT, METRICS, PAIE, RH, SYNC,
};
use common::slapd::password_of;
use common::wg::{genkey, WgPeer};
use serde_json::json;

#[test]
fn serve_enrol_reach_grants_sync_rotate_restart_ldap_outage_revoke() {
    require_root!("network namespaces, TUN, wireguard-go");
    let mut w = setup();
    let it_jar = w.dir.path().join("it.cookies");
    let code = step(
        "IT staff signs in and creates a code for Marie's laptop",
        || {
            login(&it_jar, "tleroux");
            let (st, v) = api(
                "POST",
                "/api/v1/enrolment-codes",
                Some(&json!({"username": "mdupont", "device_name": "portable-marie"})),
                Some(&it_jar),
                None,
            );
            assert_eq!(st, 201, "{v}");
            v["code"].as_str().unwrap().to_string()
        },
    );

    step("the real gateway's own key is refused", || {
        let (st, v) = api(
            "POST",
            "/api/v1/enrol",
            Some(
                &json!({"code": code, "username": "mdupont", "password": password_of("mdupont"), "public_key": w.gateway_public, "hostname": "pc-marie"}),
            ),
            None,
            None,
        );
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (400, Some("invalid_public_key"))
        );
    });

    let token = step("enrol with the laptop's own key (from `wg genkey`)", || {
        let (st, cfg) = api(
            "POST",
            "/api/v1/enrol",
            Some(
                &json!({"code": code, "username": "mdupont", "password": password_of("mdupont"), "public_key": w.wg().key.public, "hostname": "pc-marie"}),
            ),
            None,
            None,
        );
        assert_eq!(st, 201, "{cfg}");
        assert_eq!(cfg["tunnel_address"], "100.64.0.2");
        assert_eq!(cfg["gateway"]["public_key"], w.gateway_public);
        assert_eq!(cfg["allowed_ips"], json!([format!("{PAIE}/32")]));
        assert_eq!(cfg["resources"][0]["name"], "paie");
        cfg["device_token"].as_str().unwrap().to_string()
    });

    step(
        "the laptop routes both hosts into the tunnel: the gateway decides",
        || {
            w.laptop_tunnel_up();
            assert!(!w.reaches(RH), "ungranted resource reachable");
        },
    );

    step(
        "a second laptop, Sophie's (HR): enrolled the same way, reaches RH",
        || {
            let cfg2 = enrol(&it_jar, "sbernard", "portable-sophie", &w.wg2().key.public);
            assert_eq!(cfg2["tunnel_address"], "100.64.0.3");
            assert_eq!(cfg2["allowed_ips"], json!([format!("{RH}/32")]));
            w.wg2().set_peer(
                w.laptop2(),
                &w.gateway_public,
                &format!("198.18.2.1:{GW_PORT}"),
                &[&format!("{RH}/32")],
                1,
            );
            assert!(
                wait_for(Duration::from_secs(15), || w
                    .laptop2()
                    .tcp_connects(RH, APP_PORT, 2)),
                "Sophie cannot reach RH"
            );
        },
    );

    step(
        "group added in the directory → access within one sync interval; removed → cut",
        || {
            w.slapd.add_to_group("mdupont", "gestionnaires-rh");
            let granted = w
                .until_reach(RH, true, SYNC * 4)
                .expect("grant not applied");
            w.slapd.remove_from_group("mdupont", "gestionnaires-rh");
            let cut = w
                .until_reach(RH, false, SYNC * 4)
                .expect("grant not removed");
            eprintln!("group added → reachable after {granted:?}; removed → cut after {cut:?} (sync_interval {SYNC:?})");
            assert!(w.reaches(PAIE));
        },
    );

    let token = step(
        "rotation: the old key stops working at once, the new one works",
        || {
            let new_key = genkey();
            let probe = PingProbe::start(w.laptop(), PAIE, 3);
            let (st, v) = api(
                "POST",
                "/api/v1/device/rotate",
                Some(&json!({"public_key": new_key.public})),
                None,
                Some(&token),
            );
            assert_eq!(st, 200, "{v}");
            // The rotation issued a new device token (the old one died).
            let token = v["device_token"].as_str().unwrap().to_string();
            let lag = probe.last_reply_after_start();
            eprintln!(
            "rotation: last echo reply through the old key {lag:?} after the rotate call started"
        );
            let dropped = lag < Duration::from_secs(1);
            assert!(dropped, "old key still passes traffic 1 s after rotation");
            let keyfile = w.dir.path().join("rotated.key");
            std::fs::write(&keyfile, &new_key.private).unwrap();
            w.laptop().exec_ok(
                "wg",
                &[
                    "set",
                    &w.wg().interface,
                    "private-key",
                    keyfile.to_str().unwrap(),
                ],
            );
            assert!(
                w.until_reach(PAIE, true, Duration::from_secs(15)).is_some(),
                "new key does not work"
            );
            token
        },
    );

    step(
        "restart `sesame serve`: peers come back from the store, the laptop reconnects by itself",
        || {
            w.stop_serve();
            assert!(!w.reaches(PAIE));
            w.start_serve();
            let back = w
                .until_reach(PAIE, true, Duration::from_secs(60))
                .unwrap_or_else(|| panic!("no traffic after restart; log:\n{}", w.log_text()));
            eprintln!("serve restart: traffic back {back:?} after ready");
            assert!(
                wait_for(Duration::from_secs(60), || w
                    .laptop2()
                    .tcp_connects(RH, APP_PORT, 2)),
                "Sophie's laptop did not come back after the restart"
            );
        },
    );

    step(
        "directory down: logins answer 503 quickly; tunnels keep working across sync passes",
        || {
            w.slapd.stop();
            let t = Instant::now();
            let (st, v) = api(
                "POST",
                "/api/v1/login",
                Some(&json!({"username": "mdupont", "password": password_of("mdupont")})),
                None,
                None,
            );
            assert_eq!(
                (st, v["error"]["code"].as_str()),
                (503, Some("directory_unavailable"))
            );
            eprintln!("LDAP stopped → login 503 in {:?}", t.elapsed());
            std::thread::sleep(SYNC * 3);
            assert!(w.reaches(PAIE), "tunnel cut while the directory is down");
            w.slapd.start_again();
        },
    );

    step("Sophie leaves every vpn_users group: the next sync suspends her device and cuts her tunnel", || {
        let probe = PingProbe::start(w.laptop2(), RH, 3 * SYNC.as_secs() as u32);
        w.slapd
            .remove_from_group("sbernard", "personnels-administratifs");
        let lag = probe.last_reply_after_start();
        eprintln!("left vpn_users: last echo reply {lag:?} after the directory change (sync_interval {SYNC:?})");
        assert!(
            lag < 2 * SYNC,
            "tunnel still up {lag:?} after leaving vpn_users"
        );
        assert!(!w.laptop2().tcp_connects(RH, APP_PORT, 2));
    });

    step(
        "revocation by IT staff cuts the live session at once",
        || {
            let (_, list) = api("GET", "/api/v1/devices", None, Some(&it_jar), None);
            let id = list[0]["id"].as_i64().unwrap();
            let probe = PingProbe::start(w.laptop(), PAIE, 3);
            let t = Instant::now();
            let (st, _) = api(
                "DELETE",
                &format!("/api/v1/devices/{id}"),
                None,
                Some(&it_jar),
                None,
            );
            assert_eq!(st, 200);
            let answered = t.elapsed();
            // The peer is gone from the gateway by the time the API answers.
            let out = Command::new("curl").args(["-s", METRICS]).output().unwrap();
            assert!(String::from_utf8_lossy(&out.stdout).contains("sesame_gateway_peers 0"));
            eprintln!("revocation: DELETE answered in {answered:?}, gateway peer already removed");
            let lag = probe.last_reply_after_start();
            eprintln!("revocation: last echo reply {lag:?} after the DELETE call started");
            let cut = lag < Duration::from_secs(1);
            assert!(cut, "revoked laptop still passes traffic after 1 s");
            let (st, v) = api("GET", "/api/v1/device/config", None, None, Some(&token));
            assert_eq!(
                (st, v["error"]["code"].as_str()),
                (403, Some("device_revoked"))
            );
        },
    );

    step("the metrics tell the story", || {
        let out = Command::new("curl").args(["-s", METRICS]).output().unwrap();
        let m = String::from_utf8_lossy(&out.stdout);
        assert!(m.contains("sesame_revocations_total 1"), "{m}");
        assert!(m.contains("sesame_device_suspensions_total 1"), "{m}");
        assert!(m.contains("sesame_gateway_peers 0"), "{m}");
        w.stop_serve();
    });

    step(
        "the audit key is 0600, each stop signed the chain, the log verifies",
        || {
            // The audit key was created at the first start (0600, beside the gateway key); each
            // stop signed the chain's head, and the whole log verifies against those checkpoints.
            use std::os::unix::fs::PermissionsExt as _;
            let key = w.dir.path().join("audit.key");
            let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            let cps =
                std::fs::read_to_string(w.dir.path().join("audit-checkpoints.jsonl")).unwrap();
            let shutdowns = cps.lines().filter(|l| l.contains(r#""reason":"shutdown""#));
            assert_eq!(shutdowns.count(), 2, "{cps}");
            audit_verify(&w.config);
        },
    );
}

/// A 100 pings/s probe from the laptop, started before an action: tells when the last echo
/// reply arrived, relative to the action's start (10 ms resolution).
struct PingProbe {
    child: std::process::Child,
    start: f64,
}

impl PingProbe {
    fn start(ns: &Netns, ip: &str, seconds: u32) -> PingProbe {
        let child = ns
            .command("ping")
            .args([
                "-n",
                "-D",
                "-i",
                "0.01",
                "-W",
                "1",
                "-w",
                &seconds.to_string(),
                ip,
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Let replies flow before the action.
        std::thread::sleep(Duration::from_millis(500));
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        PingProbe { child, start }
    }

    /// Waits for ping to end; time from the action's start to the last reply.
    fn last_reply_after_start(self) -> Duration {
        let out = self.child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let stamps: Vec<f64> = text
            .lines()
            .filter(|l| l.contains("bytes from"))
            .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
            .collect();
        assert!(
            stamps.iter().any(|t| *t < self.start),
            "no echo reply before the action: {text}"
        );
        let last = stamps.iter().cloned().fold(f64::MIN, f64::max);
        Duration::from_secs_f64((last - self.start).max(0.0))
    }
}

/// Enrols `uid`'s laptop `peer` (IT staff creates the code) and points it at the gateway with
/// no persistent keepalive, as a stock WireGuard client; returns the device token.
fn enrol_stock_laptop(w: &World, uid: &str, peer: &WgPeer, ns: &Netns, endpoint: &str) -> String {
    let jar = w.dir.path().join("it-stock.cookies");
    login(&jar, "tleroux");
    let cfg = enrol(&jar, uid, &format!("portable-{uid}"), &peer.key.public);
    peer.set_peer(ns, &w.gateway_public, endpoint, &[&format!("{PAIE}/32")], 0);
    cfg["device_token"].as_str().unwrap().to_string()
}

#[test]
fn restarts_bring_stock_laptops_back_with_or_without_the_database() {
    require_root!("network namespaces, TUN, wireguard-go");
    let mut w = setup();
    let config = w.config.clone();
    step("a stock laptop enrols and reaches payroll", || {
        let _ = enrol_stock_laptop(
            &w,
            "mdupont",
            w.wg(),
            w.laptop(),
            &format!("198.18.1.1:{GW_PORT}"),
        );
        assert!(
            w.until_reach(PAIE, true, Duration::from_secs(15)).is_some(),
            "granted resource unreachable; log:\n{}",
            w.log_text()
        );
    });

    step(
        "plain restart: the gateway re-initiates towards the laptop's last endpoint",
        || {
            // A stock client left alone would wait for its own ~15 s retransmit timer.
            w.stop_serve();
            let cached =
                std::fs::read_to_string(w.gw_state_file("peer-cache.json")).unwrap_or_default();
            assert!(
                cached.contains("198.18.1.2:"),
                "laptop endpoint not cached: {cached}\n{}",
                w.log_text()
            );
            let t = w.spawn_serve(&config);
            assert!(
                wait_for(Duration::from_secs(5), || w.reaches(PAIE)),
                "laptop not back within 5 s of a plain restart; log:\n{}",
                w.log_text()
            );
            eprintln!(
                "plain restart: traffic back {:?} after the start",
                t.elapsed()
            );
            assert!(
                wait_for(Duration::from_secs(30), || api(
                    "GET", "/readyz", None, None, None
                )
                .0 == 200),
                "{}",
                w.log_text()
            );
        },
    );

    let broken_config = step(
        "the database unreachable (its path now under a regular file): the cached set is served",
        || {
            w.stop_serve();
            let blocker = w.dir.path().join("not-a-directory");
            std::fs::write(&blocker, "x").unwrap();
            let text = std::fs::read_to_string(&config).unwrap();
            let db = w.dir.path().join("sesame.db");
            let broken = text.replace(
                &format!("sqlite://{}", db.display()),
                &format!("sqlite://{}", blocker.join("sesame.db").display()),
            );
            assert_ne!(text, broken);
            let broken_config = w.dir.path().join("db-unreachable.toml");
            std::fs::write(&broken_config, &broken).unwrap();
            let t = w.spawn_serve(&broken_config);
            assert!(
                wait_for(Duration::from_secs(10), || w.reaches(PAIE)),
                "cached peers not served within 10 s with the database unreachable; log:\n{}",
                w.log_text()
            );
            eprintln!(
                "restart without database: traffic back {:?} after the start",
                t.elapsed()
            );
            assert!(
                w.log_text().contains("serving the cached peer set"),
                "{}",
                w.log_text()
            );
            assert_ne!(api("GET", "/readyz", None, None, None).0, 200);
            broken_config
        },
    );

    step(
        "emergency revocation with the database down: cut at once through the admin socket",
        || {
            // Even with another client connected and silent on it (it used to hold the only
            // server slot).
            let sock = w.gw_state_file("admin.sock");
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(&sock).unwrap().permissions(),
            );
            assert_eq!(mode & 0o777, 0o600, "admin socket must be owner-only");
            let idle = std::os::unix::net::UnixStream::connect(&sock).unwrap();
            std::thread::sleep(Duration::from_millis(200));
            let probe = PingProbe::start(w.laptop(), PAIE, 3);
            let out =
                w.gw.command(cli::BIN)
                    .args([
                        "devices",
                        "revoke",
                        "1",
                        "--emergency",
                        "--reason",
                        "laptop stolen",
                    ])
                    .args(["--config", broken_config.to_str().unwrap()])
                    .output()
                    .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            // Killed right after the acknowledgement: no shutdown code runs.
            w.serve
                .as_mut()
                .unwrap()
                .signal_and_wait(libc::SIGKILL, Duration::from_secs(5));
            w.serve = None;
            drop(idle);
            let lag = probe.last_reply_after_start();
            eprintln!(
                "emergency revocation (database down, an idle admin client): last echo reply {lag:?} after the call started"
            );
            assert!(
                lag < Duration::from_secs(1),
                "still passing traffic {lag:?} after the emergency revocation"
            );
            // The revocation outlived the kill: the restarted gateway serves the cached set
            // without the device.
            w.spawn_serve(&broken_config);
            assert!(
                wait_for(Duration::from_secs(10), || w
                    .log_text()
                    .contains("serving the cached peer set")),
                "{}",
                w.log_text()
            );
            assert!(
                w.until_reach(PAIE, true, Duration::from_secs(5)).is_none(),
                "the revoked laptop is back after a kill -9 and a restart; log:\n{}",
                w.log_text()
            );
            // Unknown id: refused, clearly.
            let out =
                w.gw.command(cli::BIN)
                    .args(["devices", "revoke", "99", "--emergency"])
                    .args(["--config", broken_config.to_str().unwrap()])
                    .output()
                    .unwrap();
            assert!(!out.status.success());
            assert!(String::from_utf8_lossy(&out.stderr).contains("device 99"));
        },
    );

    step(
        "a modified cache is refused, with a clear log line: nothing is served from it",
        || {
            w.stop_serve();
            let cache = w.gw_state_file("peer-cache.json");
            let body = std::fs::read_to_string(&cache).unwrap();
            assert!(body.contains("100.64.0.2"), "{body}");
            std::fs::write(&cache, body.replace("100.64.0.2", "100.64.0.3")).unwrap();
            w.spawn_serve(&broken_config);
            assert!(
                wait_for(Duration::from_secs(10), || w
                    .log_text()
                    .contains("peer cache refused")),
                "no refusal in the log:\n{}",
                w.log_text()
            );
            assert!(!w.reaches(PAIE), "a tampered cache was served");
            w.stop_serve();
        },
    );

    step("the database back: the emergency revocation reaches the store, audited; the device stays cut", || {
        w.start_serve();
        let jar = w.dir.path().join("auditor.cookies");
        login(&jar, "cgarnier");
        let (st, v) = api(
            "GET",
            "/api/v1/audit/events?action=device.revoked&format=json",
            None,
            Some(&jar),
            None,
        );
        assert_eq!(st, 200, "{v}");
        let events = v["events"].as_array().unwrap_or_else(|| panic!("{v}"));
        assert_eq!(events.len(), 1, "{v}");
        assert_eq!(events[0]["target"], "device:1");
        assert!(
            events[0]["actor"].as_str().unwrap().starts_with("cli:"),
            "{v}"
        );
        assert!(
            events[0]["details"]["reason"]
                .as_str()
                .unwrap()
                .contains("laptop stolen"),
            "{v}"
        );
        let pending = std::fs::read_to_string(w.gw_state_file("pending-revocations.json")).unwrap();
        assert_eq!(pending.trim(), "[]");
        assert!(
            w.until_reach(PAIE, true, Duration::from_secs(5)).is_none(),
            "revoked laptop back"
        );
        w.stop_serve();
    });
}

/// The tunnel interface of a world's config (`[gateway] interface`).
fn interface_of(config: &std::path::Path) -> String {
    let text = std::fs::read_to_string(config).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("interface = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no interface in {text}"))
        .to_string()
}

/// Opens a TCP connection and sends a request head that never ends (a slow-loris).
fn slow_loris(addr: &str) -> std::net::TcpStream {
    use std::io::Write as _;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    s
}

#[test]
fn sigterm_stops_serve_within_5_s_and_removes_its_sockets_despite_idle_clients() {
    require_root!("network namespaces, TUN");
    let mut w = common::serve::Builder::new("sq")
        .laptops(1)
        .no_wireguard()
        .build();
    let admin = w.gw_state_file("admin.sock");
    let uapi = std::path::PathBuf::from(format!(
        "/var/run/wireguard/{}.sock",
        interface_of(&w.config)
    ));
    assert!(
        wait_for(Duration::from_secs(10), || uapi.exists() && admin.exists()),
        "sockets not there; log:\n{}",
        w.log_text()
    );
    // Clients that connect and say nothing, or never finish their request head.
    let _idle_admin = std::os::unix::net::UnixStream::connect(&admin).unwrap();
    let _idle_uapi = std::os::unix::net::UnixStream::connect(&uapi).unwrap();
    let _slow_portal = slow_loris("127.0.0.1:8080");
    let _slow_metrics = slow_loris("127.0.0.1:9108");
    std::thread::sleep(Duration::from_millis(300));

    let mut serve = w.serve.take().unwrap();
    let pid = serve.child.as_ref().unwrap().id() as i32;
    let t = Instant::now();
    let st = serve.signal_and_wait(libc::SIGTERM, Duration::from_secs(20));
    let took = t.elapsed();
    eprintln!("sesame serve stopped {took:?} after SIGTERM");
    assert!(
        st.is_some_and(|s| s.success()),
        "serve did not stop cleanly: {st:?}\n{}",
        w.log_text()
    );
    assert!(
        took < Duration::from_secs(5),
        "serve took {took:?} to stop; log:\n{}",
        w.log_text()
    );
    assert!(!admin.exists(), "admin socket left behind");
    assert!(!uapi.exists(), "WireGuard API socket left behind");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} still there"
    );
}
