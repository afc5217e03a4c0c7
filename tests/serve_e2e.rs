//! End to end: the real `sesame serve` binary (portal + gateway + directory sync) in a network
//! namespace, a real slapd beside it, a stock wireguard-go laptop and resource hosts in their
//! own namespaces. Needs root (CI runs as root).
#![allow(clippy::unwrap_used)]

// Only the fixtures this test uses (no shared tests/common/mod.rs to merge).
mod common {
    pub mod curl;
    pub mod netns;
    pub mod postgres;
    pub mod serve;
    pub mod slapd;
    pub mod wg;
    pub mod world;
}

use std::process::Command;
use std::time::{Duration, Instant};

use common::netns::{wait_for, Netns};
use common::serve::{
    api, audit_verify, enrol, login, sesame, setup, World, APP_PORT, GW_PORT, METRICS, PAIE, RH,
    SYNC,
};
use common::slapd::password_of;
use common::wg::{genkey, WgPeer};
use serde_json::json;

#[test]
fn serve_enrol_reach_grants_sync_rotate_restart_ldap_outage_revoke() {
    let mut w = setup();
    let it_jar = w.dir.path().join("it.cookies");
    login(&it_jar, "tleroux");
    let (st, v) = api(
        "POST",
        "/api/v1/enrolment-codes",
        Some(&json!({"username": "mdupont", "device_name": "portable-marie"})),
        Some(&it_jar),
        None,
    );
    assert_eq!(st, 201, "{v}");
    let code = v["code"].as_str().unwrap().to_string();

    // The real gateway's own key is refused.
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

    // Enrol with the laptop's own key (from `wg genkey`).
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
    let token = cfg["device_token"].as_str().unwrap().to_string();

    // The laptop routes both hosts into the tunnel: the gateway decides.
    w.laptop_tunnel_up();
    assert!(!w.reaches(RH), "ungranted resource reachable");

    // A second laptop, Sophie's (HR): enrolled the same way, reaches RH.
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

    // Group added in the directory → access within one sync interval; removed → cut.
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

    // Rotation: the old key stops working at once, the new one works.
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

    // Restart `sesame serve`: peers come back from the store, the laptop reconnects by itself.
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

    // Directory down: logins answer 503 quickly; tunnels keep working across sync passes.
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

    // Sophie leaves every vpn_users group: the next sync suspends her device and cuts her tunnel.
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

    // Revocation by IT staff cuts the live session at once.
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

    // The metrics tell the story.
    let out = Command::new("curl").args(["-s", METRICS]).output().unwrap();
    let m = String::from_utf8_lossy(&out.stdout);
    assert!(m.contains("sesame_revocations_total 1"), "{m}");
    assert!(m.contains("sesame_device_suspensions_total 1"), "{m}");
    assert!(m.contains("sesame_gateway_peers 0"), "{m}");
    w.stop_serve();

    // The audit key was created at the first start (0600, beside the gateway key); each stop
    // signed the chain's head, and the whole log verifies against those checkpoints.
    use std::os::unix::fs::PermissionsExt as _;
    let key = w.dir.path().join("audit.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let cps = std::fs::read_to_string(w.dir.path().join("audit-checkpoints.jsonl")).unwrap();
    let shutdowns = cps.lines().filter(|l| l.contains(r#""reason":"shutdown""#));
    assert_eq!(shutdowns.count(), 2, "{cps}");
    audit_verify(&w.config);
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

#[test]
fn serve_refuses_a_config_without_directory() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sesame.toml");
    std::fs::write(&config, "[gateway]\nprivate_key_file = \"gw.key\"\n").unwrap();
    let out = sesame()
        .args(["serve", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[directory] section is missing"), "{err}");
    assert!(err.contains(config.to_str().unwrap()), "{err}");
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
    let mut w = setup();
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

    // Plain restart: the gateway re-initiates towards the laptop's last endpoint; a stock
    // client left alone would wait for its own ~15 s retransmit timer.
    w.stop_serve();
    let cached = std::fs::read_to_string(w.gw_state_file("peer-cache.json")).unwrap_or_default();
    assert!(
        cached.contains("198.18.1.2:"),
        "laptop endpoint not cached: {cached}\n{}",
        w.log_text()
    );
    let config = w.config.clone();
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

    // The database unreachable (its path now under a regular file): the cached set is served.
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

    // Emergency revocation with the database down: cut at once through the admin socket.
    let sock = w.gw_state_file("admin.sock");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&sock).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "admin socket must be owner-only");
    let probe = PingProbe::start(w.laptop(), PAIE, 3);
    let out =
        w.gw.command(env!("CARGO_BIN_EXE_sesame"))
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
    let lag = probe.last_reply_after_start();
    eprintln!(
        "emergency revocation (database down): last echo reply {lag:?} after the call started"
    );
    assert!(
        lag < Duration::from_secs(1),
        "still passing traffic {lag:?} after the emergency revocation"
    );
    // Unknown id: refused, clearly.
    let out =
        w.gw.command(env!("CARGO_BIN_EXE_sesame"))
            .args(["devices", "revoke", "99", "--emergency"])
            .args(["--config", broken_config.to_str().unwrap()])
            .output()
            .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("device 99"));

    // A modified cache is refused, with a clear log line: nothing is served from it.
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

    // The database back: the emergency revocation reaches the store, audited; the device stays
    // cut.
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
}
