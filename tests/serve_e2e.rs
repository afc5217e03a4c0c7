//! End to end: the real `sesame serve` binary (portal + gateway + directory sync) in a network
//! namespace, a real slapd beside it, a stock wireguard-go laptop and resource hosts in their
//! own namespaces. Needs root (CI runs as root).
#![allow(clippy::unwrap_used)]

// Only the fixtures this test uses (no shared tests/common/mod.rs to merge).
mod common {
    pub mod curl;
    pub mod netns;
    pub mod slapd;
    pub mod wg;
}

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::netns::{link, unique, wait_for, Netns, Proc};
use common::slapd::{password_of, Slapd};
use common::wg::{genkey, WgPeer};
use serde_json::{json, Value};

const GW_PORT: u16 = 51820;
const PORTAL: &str = "http://127.0.0.1:8080";
/// The metrics listener's default address (its own port, never the portal's).
const METRICS: &str = "http://127.0.0.1:9108/metrics";
const PAIE: &str = "198.18.10.10";
const RH: &str = "198.18.20.10";
const APP_PORT: u16 = 8443;
const SYNC: Duration = Duration::from_secs(2);

/// The TCP servers of the internal hosts (`bulk.py serve ADDR...`), shared with the other e2e tests.
const LISTENER: &str = include_str!("common/bulk.py");

/// Moves the calling thread into a namespace (so slapd, curl and every child it starts live
/// there, beside `sesame serve`); back to the original namespace on Drop.
struct ThreadNetns {
    orig: File,
}

impl ThreadNetns {
    fn enter(ns: &Netns) -> ThreadNetns {
        let orig = File::open("/proc/thread-self/ns/net").unwrap();
        let target = File::open(format!("/var/run/netns/{}", ns.name)).unwrap();
        // SAFETY: setns(2) on valid namespace fds, affecting only this test's thread.
        let rc = unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        ThreadNetns { orig }
    }
}

impl Drop for ThreadNetns {
    fn drop(&mut self) {
        // SAFETY: as above, back to the namespace this thread started in.
        unsafe { libc::setns(self.orig.as_raw_fd(), libc::CLONE_NEWNET) };
    }
}

fn sesame() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sesame"))
}

/// One portal call with curl (from this thread's namespace): `(status, JSON body or Null)`.
fn api(
    method: &str,
    path: &str,
    body: Option<&Value>,
    jar: Option<&Path>,
    bearer: Option<&str>,
) -> (u16, Value) {
    common::curl::api(&format!("{PORTAL}{path}"), method, body, jar, bearer)
}

struct World {
    // Processes first: dropped before their namespaces.
    serve: Option<Proc>,
    _listener: Proc,
    wg: WgPeer,
    wg2: WgPeer,
    slapd: Slapd,
    _in_gw: ThreadNetns,
    gw: Netns,
    laptop: Netns,
    laptop2: Netns,
    _res: Netns,
    dir: tempfile::TempDir,
    config: PathBuf,
    log: PathBuf,
    gateway_public: String,
}

impl World {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn start_serve(&mut self) {
        let p = self.gw.spawn(
            env!("CARGO_BIN_EXE_sesame"),
            &["serve", "--config", self.config.to_str().unwrap()],
            Some(&self.log),
        );
        self.serve = Some(p);
        assert!(
            wait_for(Duration::from_secs(30), || api(
                "GET", "/readyz", None, None, None
            )
            .0 == 200),
            "sesame serve did not become ready; log:\n{}",
            self.log_text()
        );
    }

    fn stop_serve(&mut self) {
        let mut p = self.serve.take().unwrap();
        let st = p.signal_and_wait(libc::SIGTERM, Duration::from_secs(20));
        assert!(
            st.is_some_and(|s| s.success()),
            "serve did not stop cleanly: {st:?}\n{}",
            self.log_text()
        );
    }

    fn reaches(&self, ip: &str) -> bool {
        self.laptop.tcp_connects(ip, APP_PORT, 2)
    }

    /// Polls until `reaches(ip) == want`; returns how long it took.
    fn until_reach(&self, ip: &str, want: bool, timeout: Duration) -> Option<Duration> {
        let t = Instant::now();
        wait_for(timeout, || self.reaches(ip) == want).then(|| t.elapsed())
    }
}

fn setup() -> World {
    let dir = tempfile::tempdir().unwrap();
    let gw = Netns::new("sxg");
    let laptop = Netns::new("sxl");
    let laptop2 = Netns::new("sxm");
    let res = Netns::new("sxr");
    link(&gw, "198.18.1.1/30", &laptop, "198.18.1.2/30");
    link(&gw, "198.18.2.1/30", &laptop2, "198.18.2.2/30");
    let (_, res_if) = link(&gw, "198.18.3.1/30", &res, "198.18.3.2/30");
    res.ip(&["addr", "add", &format!("{PAIE}/32"), "dev", &res_if]);
    res.ip(&["addr", "add", &format!("{RH}/32"), "dev", &res_if]);
    res.ip(&["route", "add", "100.64.0.0/10", "via", "198.18.3.1"]);
    gw.sysctl("net.ipv4.ip_forward", "1");
    gw.ip(&["route", "add", &format!("{PAIE}/32"), "via", "198.18.3.2"]);
    gw.ip(&["route", "add", &format!("{RH}/32"), "via", "198.18.3.2"]);

    let script = dir.path().join("listener.py");
    std::fs::write(&script, LISTENER).unwrap();
    let res_log = dir.path().join("res-listener.log");
    let listener = res.spawn(
        "python3",
        &[
            script.to_str().unwrap(),
            "serve",
            &format!("{PAIE}:{APP_PORT}"),
            &format!("{RH}:{APP_PORT}"),
        ],
        Some(&res_log),
    );
    assert!(wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&res_log)
            .unwrap_or_default()
            .contains("ready")
    }));

    // From here on this thread, slapd and curl live in the gateway's namespace.
    let in_gw = ThreadNetns::enter(&gw);
    let slapd = Slapd::start();

    let key_path = dir.path().join("gateway.key");
    let out = sesame()
        .args(["keygen", "--out", key_path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gateway_public = String::from_utf8(out.stdout).unwrap().trim().to_string();

    let directory = slapd
        .directory_toml()
        .replace("sync_interval = \"60s\"", "sync_interval = \"2s\"");
    assert!(directory.contains("sync_interval = \"2s\""));
    let config = dir.path().join("sesame.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[portal]
listen = "127.0.0.1:8080"
public_url = "{PORTAL}"

[gateway]
listen = "0.0.0.0:{GW_PORT}"
endpoint = "198.18.1.1:{GW_PORT}"
interface = "{tun}"
tunnel_network = "100.64.0.0/24"
private_key_file = "{key}"
threads = 1

[database]
url = "sqlite://{db}"

{directory}

[roles]
vpn_users = ["cn=personnels-administratifs,ou=groups,dc=academie,dc=test"]
it_staff = ["cn=dsi,ou=groups,dc=academie,dc=test"]
auditors = ["cn=auditeurs,ou=groups,dc=academie,dc=test"]

[[resource]]
name = "paie"
allow = ["{PAIE}/32 tcp:{APP_PORT}", "{PAIE}/32 icmp"]

[[resource]]
name = "rh"
allow = ["{RH}/32 tcp:{APP_PORT}", "{RH}/32 icmp"]

[[grant]]
group = "cn=gestionnaires-paie,ou=groups,dc=academie,dc=test"
resources = ["paie"]

[[grant]]
group = "cn=gestionnaires-rh,ou=groups,dc=academie,dc=test"
resources = ["rh"]
"#,
            tun = unique("sx"),
            key = key_path.display(),
            db = dir.path().join("sesame.db").display(),
        ),
    )
    .unwrap();
    // The first device gets the first free address after the gateway's.
    let wg = WgPeer::start(&laptop, "100.64.0.2/32", dir.path());
    let wg2 = WgPeer::start(&laptop2, "100.64.0.3/32", dir.path());
    let log = dir.path().join("serve.log");
    let mut w = World {
        serve: None,
        _listener: listener,
        wg,
        wg2,
        slapd,
        _in_gw: in_gw,
        gw,
        laptop,
        laptop2,
        _res: res,
        dir,
        config,
        log,
        gateway_public,
    };
    w.start_serve();
    w
}

#[test]
fn serve_enrol_reach_grants_sync_rotate_restart_ldap_outage_revoke() {
    let mut w = setup();
    let it_jar = w.dir.path().join("it.cookies");
    let (st, _) = api(
        "POST",
        "/api/v1/login",
        Some(&json!({"username": "tleroux", "password": password_of("tleroux")})),
        Some(&it_jar),
        None,
    );
    assert_eq!(st, 200);
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
            &json!({"code": code, "username": "mdupont", "password": password_of("mdupont"), "public_key": w.wg.key.public, "hostname": "pc-marie"}),
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
    w.wg.set_peer(
        &w.laptop,
        &w.gateway_public,
        &format!("198.18.1.1:{GW_PORT}"),
        &[&format!("{PAIE}/32"), &format!("{RH}/32")],
        1,
    );
    assert!(
        w.until_reach(PAIE, true, Duration::from_secs(15)).is_some(),
        "granted resource unreachable; log:\n{}",
        w.log_text()
    );
    assert!(!w.reaches(RH), "ungranted resource reachable");

    // A second laptop, Sophie's (HR): enrolled the same way, reaches RH.
    let (st, v) = api(
        "POST",
        "/api/v1/enrolment-codes",
        Some(&json!({"username": "sbernard", "device_name": "portable-sophie"})),
        Some(&it_jar),
        None,
    );
    assert_eq!(st, 201, "{v}");
    let (st, cfg2) = api(
        "POST",
        "/api/v1/enrol",
        Some(
            &json!({"code": v["code"], "username": "sbernard", "password": password_of("sbernard"), "public_key": w.wg2.key.public, "hostname": "pc-sophie"}),
        ),
        None,
        None,
    );
    assert_eq!(st, 201, "{cfg2}");
    assert_eq!(cfg2["tunnel_address"], "100.64.0.3");
    assert_eq!(cfg2["allowed_ips"], json!([format!("{RH}/32")]));
    w.wg2.set_peer(
        &w.laptop2,
        &w.gateway_public,
        &format!("198.18.2.1:{GW_PORT}"),
        &[&format!("{RH}/32")],
        1,
    );
    assert!(
        wait_for(Duration::from_secs(15), || w
            .laptop2
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
    let probe = PingProbe::start(&w.laptop, PAIE, 3);
    let (st, v) = api(
        "POST",
        "/api/v1/device/rotate",
        Some(&json!({"public_key": new_key.public})),
        None,
        Some(&token),
    );
    assert_eq!(st, 200, "{v}");
    let lag = probe.last_reply_after_start();
    eprintln!(
        "rotation: last echo reply through the old key {lag:?} after the rotate call started"
    );
    let dropped = lag < Duration::from_secs(1);
    assert!(dropped, "old key still passes traffic 1 s after rotation");
    let keyfile = w.dir.path().join("rotated.key");
    std::fs::write(&keyfile, &new_key.private).unwrap();
    w.laptop.exec_ok(
        "wg",
        &[
            "set",
            &w.wg.interface,
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
            .laptop2
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

    // Sophie leaves every vpn_users group: the next sync revokes her device and cuts her tunnel.
    let probe = PingProbe::start(&w.laptop2, RH, 3 * SYNC.as_secs() as u32);
    w.slapd
        .remove_from_group("sbernard", "personnels-administratifs");
    let lag = probe.last_reply_after_start();
    eprintln!("left vpn_users: last echo reply {lag:?} after the directory change (sync_interval {SYNC:?})");
    assert!(
        lag < 2 * SYNC,
        "tunnel still up {lag:?} after leaving vpn_users"
    );
    assert!(!w.laptop2.tcp_connects(RH, APP_PORT, 2));

    // Revocation by IT staff cuts the live session at once.
    let (_, list) = api("GET", "/api/v1/devices", None, Some(&it_jar), None);
    let id = list[0]["id"].as_i64().unwrap();
    let probe = PingProbe::start(&w.laptop, PAIE, 3);
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
    assert!(m.contains("sesame_revocations_total 2"), "{m}");
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
    let out = sesame()
        .args(["audit", "verify", "--config", w.config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
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
