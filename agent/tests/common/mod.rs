//! Fixtures of the agent's integration tests: network namespaces, veth links, a wireguard-go peer.
#![allow(dead_code, clippy::unwrap_used, clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sesame::api::DeviceConfig;
use sesame::key::PrivateKey;
use sesame_agent::files;
use sesame_agent::state::{self, AgentState, Paths};
use sesame_agent::wgconf::WgConf;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this process and call: `{prefix}{pid%10000}{n}` (≤ 15 chars for prefixes ≤ 5).
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}{}{n}", std::process::id() % 10000)
}

pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

pub fn must(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace, deleted (with every process inside killed) on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Netns {
        let name = unique(prefix);
        must("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.must("ip", &["link", "set", "lo", "up"]);
        ns
    }

    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        self.cmd(program).args(args).output().unwrap()
    }

    pub fn must(&self, program: &str, args: &[&str]) -> String {
        let out = self.run(program, args);
        assert!(
            out.status.success(),
            "[{}] {program} {args:?} failed: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// One ping with a short deadline; true if it was answered.
    pub fn ping(&self, address: &str) -> bool {
        self.run("ping", &["-c", "1", "-W", "2", address])
            .status
            .success()
    }

    /// Pings until answered or `within` elapsed (a handshake may be in flight).
    pub fn ping_until(&self, address: &str, within: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < within {
            if self.ping(address) {
                return true;
            }
        }
        false
    }

    pub fn routes(&self) -> String {
        self.must("ip", &["route", "show"])
    }

    pub fn links(&self) -> String {
        self.must("ip", &["-o", "link", "show"])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Links `a` and `b` with a veth pair and gives each side an address (CIDR).
pub fn veth(a: &Netns, a_addr: &str, b: &Netns, b_addr: &str) {
    let (ia, ib) = (unique("va"), unique("vb"));
    must(
        "ip",
        &[
            "link", "add", &ia, "netns", &a.name, "type", "veth", "peer", "name", &ib, "netns",
            &b.name,
        ],
    );
    a.must("ip", &["addr", "add", a_addr, "dev", &ia]);
    a.must("ip", &["link", "set", &ia, "up"]);
    b.must("ip", &["addr", "add", b_addr, "dev", &ib]);
    b.must("ip", &["link", "set", &ib, "up"]);
}

/// A wireguard-go interface in `ns`; its control socket is removed on drop (the process dies with the netns).
pub struct WgGo {
    pub iface: String,
    pub ns_name: String,
}

impl WgGo {
    pub fn start(ns: &Netns, prefix: &str) -> WgGo {
        let iface = unique(prefix);
        // Its daemon keeps stdout/stderr: a pipe closed after we read it would kill it with SIGPIPE.
        let status = ns
            .cmd("wireguard-go")
            .arg(&iface)
            .env_remove("WG_PROCESS_FOREGROUND")
            .env("LOG_LEVEL", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "wireguard-go {iface} failed to start");
        let wg = WgGo {
            iface,
            ns_name: ns.name.clone(),
        };
        let start = Instant::now();
        while !Path::new(&format!("/var/run/wireguard/{}.sock", wg.iface)).exists() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "wireguard-go socket never appeared"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        wg
    }
}

impl Drop for WgGo {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns_name,
                "ip",
                "link",
                "del",
                &self.iface,
            ])
            .status();
        let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", self.iface));
    }
}

/// `wg genkey` / `wg pubkey`.
pub fn wg_keypair() -> (String, String) {
    let private = must("wg", &["genkey"]).trim().to_string();
    let mut child = Command::new("wg")
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(private.as_bytes())
        .unwrap();
    let public = String::from_utf8(child.wait_with_output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string();
    (private, public)
}

/// Writes `text` to a 0600 file and returns its path.
pub fn write_secret(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
    path
}

/// A wireguard-go "gateway" in `gw` with tunnel address `gw_tunnel` (CIDR), listening on `port`,
/// serving the resource addresses given (put on its loopback), with one peer.
pub fn wg_gateway(
    gw: &Netns,
    tmp: &Path,
    gw_tunnel: &str,
    port: u16,
    resources: &[&str],
    peer_public: &str,
    peer_ip: &str,
) -> (WgGo, String) {
    let wg = WgGo::start(gw, "sgw");
    let (private, public) = wg_keypair();
    let key = write_secret(tmp, "gw.key", &private);
    gw.must(
        "wg",
        &[
            "set",
            &wg.iface,
            "listen-port",
            &port.to_string(),
            "private-key",
            key.to_str().unwrap(),
            "peer",
            peer_public,
            "allowed-ips",
            &format!("{peer_ip}/32"),
        ],
    );
    gw.must("ip", &["addr", "add", gw_tunnel, "dev", &wg.iface]);
    gw.must("ip", &["link", "set", &wg.iface, "up"]);
    for r in resources {
        gw.must("ip", &["addr", "add", &format!("{r}/32"), "dev", "lo"]);
    }
    (wg, public)
}

// The agent's directory and commands, as the root tests use them.

/// Writes the agent directory exactly as `enrol` does (same functions), without a portal.
pub fn write_agent_dir(
    dir: &Path,
    secret: &PrivateKey,
    device: &DeviceConfig,
    interface: &str,
) -> Paths {
    // A closed port: the grant refresh fails and the tunnel must not care.
    write_agent_dir_with_portal(dir, secret, device, interface, "http://127.0.0.1:9")
}

/// As [`write_agent_dir`], with the portal at `portal` (a plain HTTP server of the test).
pub fn write_agent_dir_with_portal(
    dir: &Path,
    secret: &PrivateKey,
    device: &DeviceConfig,
    interface: &str,
    portal: &str,
) -> Paths {
    let paths = Paths::new(dir);
    files::ensure_private_dir(dir).unwrap();
    let conf = WgConf::from_device(secret.clone(), device).unwrap();
    files::write_private_atomic(&paths.conf(), conf.render().as_bytes()).unwrap();
    AgentState {
        portal: portal.into(),
        device_id: device.device_id,
        device_token: "unused".into(),
        ca_file: None,
        insecure: false,
        interface: interface.into(),
        refresh_interval_secs: 60,
        device_cookie: None,
    }
    .save(&paths)
    .unwrap();
    state::save_device_cache(&paths, device).unwrap();
    paths
}

pub fn agent(ns: &Netns, args: &[&str]) -> std::process::Output {
    ns.cmd(env!("CARGO_BIN_EXE_sesame-agent"))
        .args(args)
        .env("LANG", "en_GB.UTF-8")
        .output()
        .unwrap()
}

pub fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `sesame-agent down` on drop, so a failing test leaves no daemon behind.
pub struct Down<'a> {
    pub ns: &'a Netns,
    pub dir: &'a str,
}

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let out = agent(self.ns, &["down", "--dir", self.dir]);
        if !std::thread::panicking() {
            assert!(out.status.success(), "down failed: {}", text(&out));
            assert!(text(&out).contains("stopped"), "{}", text(&out));
        }
    }
}

/// Set to 1 by `.ci/run`: every test must really run, a skip is a failure.
pub const REQUIRE_ROOT_ENV: &str = "SESAME_TESTS_REQUIRE_ROOT";

/// Whether the calling test may go on: true as root; otherwise prints
/// `skipped: TEST needs root (WHY)` and returns false, or panics when
/// `SESAME_TESTS_REQUIRE_ROOT=1` (the same rule as the server's tests/common/need.rs).
pub fn root(why: &str) -> bool {
    use std::io::Write as _;
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string();
    let reason = format!("{test} needs root ({why})");
    assert!(
        std::env::var_os(REQUIRE_ROOT_ENV).is_none_or(|v| v != "1"),
        "{REQUIRE_ROOT_ENV}=1 and {reason}: run the tests as root"
    );
    // Straight to the process's stderr: the harness captures `eprintln!` of passing tests.
    let _ = writeln!(std::io::stderr(), "skipped: {reason}");
    false
}

/// First line of a test that needs root: returns from the test (skipped, with a message) when
/// not root, fails it instead under `SESAME_TESTS_REQUIRE_ROOT=1`.
#[macro_export]
macro_rules! require_root {
    ($why:expr) => {
        if !$crate::common::root($why) {
            return;
        }
    };
}
