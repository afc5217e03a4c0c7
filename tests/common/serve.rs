//! `sesame serve` in a network namespace beside slapd, two wireguard-go laptops and the resource
//! hosts: the world of the serve end-to-end tests (root needed).
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::netns::{link, unique, wait_for, Netns, Proc};
use super::slapd::{password_of, Slapd};
use super::wg::WgPeer;

pub const GW_PORT: u16 = 51820;
pub const PORTAL: &str = "http://127.0.0.1:8080";
/// The metrics listener's default address (its own port, never the portal's).
pub const METRICS: &str = "http://127.0.0.1:9108/metrics";
pub const PAIE: &str = "198.18.10.10";
pub const RH: &str = "198.18.20.10";
pub const APP_PORT: u16 = 8443;
pub const SYNC: Duration = Duration::from_secs(2);

pub const LISTENER: &str = r#"
import socket, select, sys
socks = []
for a in sys.argv[1:]:
    h, p = a.rsplit(':', 1)
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((h, int(p))); s.listen(64); socks.append(s)
print('ready', flush=True)
while True:
    r, _, _ = select.select(socks, [], [])
    for s in r:
        c, _ = s.accept(); c.close()
"#;

/// Moves the calling thread into a namespace (so slapd, curl and every child it starts live
/// there, beside `sesame serve`); back to the original namespace on Drop.
pub struct ThreadNetns {
    orig: File,
}

impl ThreadNetns {
    pub fn enter(ns: &Netns) -> ThreadNetns {
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

pub fn sesame() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sesame"))
}

/// One HTTP call with curl (from this thread's namespace): `(status, JSON body or Null)`.
pub fn api(
    method: &str,
    path: &str,
    body: Option<&Value>,
    jar: Option<&Path>,
    bearer: Option<&str>,
) -> (u16, Value) {
    super::curl::api(&format!("{PORTAL}{path}"), method, body, jar, bearer)
}

pub struct World {
    // Processes first: dropped before their namespaces.
    pub serve: Option<Proc>,
    pub _listener: Proc,
    pub wg: WgPeer,
    pub wg2: WgPeer,
    pub slapd: Slapd,
    pub _in_gw: ThreadNetns,
    pub gw: Netns,
    pub laptop: Netns,
    pub laptop2: Netns,
    pub _res: Netns,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub log: PathBuf,
    pub gateway_public: String,
}

impl World {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Starts `sesame serve` without waiting for the portal (it may be waiting for the
    /// database); returns the start instant.
    pub fn spawn_serve(&mut self, config: &Path) -> Instant {
        let t = Instant::now();
        let p = self.gw.spawn(
            env!("CARGO_BIN_EXE_sesame"),
            &["serve", "--config", config.to_str().unwrap()],
            Some(&self.log),
        );
        self.serve = Some(p);
        t
    }

    /// A file in the gateway's state directory (beside its private key).
    pub fn gw_state_file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn start_serve(&mut self) {
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

    pub fn stop_serve(&mut self) {
        let mut p = self.serve.take().unwrap();
        let st = p.signal_and_wait(libc::SIGTERM, Duration::from_secs(20));
        assert!(
            st.is_some_and(|s| s.success()),
            "serve did not stop cleanly: {st:?}\n{}",
            self.log_text()
        );
    }

    /// The first laptop routes both hosts into the tunnel (the gateway decides) and reaches the
    /// payroll host.
    pub fn laptop_tunnel_up(&self) {
        self.wg.set_peer(
            &self.laptop,
            &self.gateway_public,
            &format!("198.18.1.1:{GW_PORT}"),
            &[&format!("{PAIE}/32"), &format!("{RH}/32")],
            1,
        );
        assert!(
            self.until_reach(PAIE, true, Duration::from_secs(15))
                .is_some(),
            "granted resource unreachable; log:\n{}",
            self.log_text()
        );
    }

    pub fn reaches(&self, ip: &str) -> bool {
        self.laptop.tcp_connects(ip, APP_PORT, 2)
    }

    /// Polls until `reaches(ip) == want`; returns how long it took.
    pub fn until_reach(&self, ip: &str, want: bool, timeout: Duration) -> Option<Duration> {
        let t = Instant::now();
        wait_for(timeout, || self.reaches(ip) == want).then(|| t.elapsed())
    }
}

pub fn setup() -> World {
    setup_with("")
}

/// The world, with `extra` appended to the config (`[audit]` settings…).
pub fn setup_with(extra: &str) -> World {
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

{extra}
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

/// The audit log as `sesame audit export --format jsonl` prints it.
pub fn audit_events(config: &Path) -> Vec<Value> {
    let out = sesame()
        .args([
            "audit",
            "export",
            "--config",
            config.to_str().unwrap(),
            "--format",
            "jsonl",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn of_action<'a>(events: &'a [Value], action: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["action"] == action).collect()
}

/// IT staff creates a code for `user`, the laptop enrols with `key`: the device's API config.
pub fn enrol(it_jar: &Path, user: &str, device: &str, key: &str) -> Value {
    let (st, v) = api(
        "POST",
        "/api/v1/enrolment-codes",
        Some(&json!({"username": user, "device_name": device})),
        Some(it_jar),
        None,
    );
    assert_eq!(st, 201, "{v}");
    let (st, cfg) = api(
        "POST",
        "/api/v1/enrol",
        Some(
            &json!({"code": v["code"], "username": user, "password": password_of(user), "public_key": key, "hostname": device}),
        ),
        None,
        None,
    );
    assert_eq!(st, 201, "{cfg}");
    cfg
}
