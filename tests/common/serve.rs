//! `sesame serve` in a network namespace beside slapd (and PostgreSQL when asked), wireguard-go
//! laptops and the resource hosts: the world of the serve end-to-end tests, built by
//! [`Builder`] (root needed).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::cli;
/// Re-exported: the serve tests name them from here too.
pub use super::config::{resources, TestConfig, GRANTS, ROLES};
pub use super::netns::ThreadNetns;
use super::netns::{unique, wait_for, Netns, Proc};
use super::postgres::PgCluster;
use super::slapd::{password_of, Slapd};
use super::wg::WgPeer;
pub use super::world::{app_servers, keygen, Topology, APP_PORT, GW_PORT, PAIE, RH};

pub const PORTAL: &str = "http://127.0.0.1:8080";
/// The metrics listener's default address (its own port, never the portal's).
pub const METRICS: &str = "http://127.0.0.1:9108/metrics";
pub const SYNC: Duration = Duration::from_secs(2);

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

/// Logs `uid` in (seeded password) with cookies kept in `jar`.
pub fn login(jar: &Path, uid: &str) {
    let (st, v) = api(
        "POST",
        "/api/v1/login",
        Some(&json!({"username": uid, "password": password_of(uid)})),
        Some(jar),
        None,
    );
    assert_eq!(st, 200, "login {uid}: {v}");
}

/// What a serve world is made of; `Builder::new(prefix)` is the world of `setup()`: two
/// laptops with wireguard-go, SQLite, a sync every 2 s, payroll and HR.
pub struct Builder {
    prefix: String,
    laptops: usize,
    wireguard: bool,
    portal: String,
    postgres: bool,
    sync_interval: String,
    /// Lines appended to `[directory]` (`max_changes_per_sync = …`).
    directory_extra: String,
    sections: String,
}

impl Builder {
    pub fn new(prefix: &str) -> Builder {
        Builder {
            prefix: prefix.to_string(),
            laptops: 2,
            wireguard: true,
            portal: format!("listen = \"127.0.0.1:8080\"\npublic_url = \"{PORTAL}\"\n"),
            postgres: false,
            sync_interval: "2s".into(),
            directory_extra: String::new(),
            sections: format!("{ROLES}\n{}", resources()),
        }
    }

    /// How many laptop namespaces (1 or 2).
    pub fn laptops(mut self, n: usize) -> Builder {
        self.laptops = n;
        self
    }

    /// Laptop namespaces without a wireguard-go peer (the test brings its own client).
    pub fn no_wireguard(mut self) -> Builder {
        self.wireguard = false;
        self
    }

    /// The body of `[portal]`.
    pub fn portal(mut self, body: &str) -> Builder {
        self.portal = body.to_string();
        self
    }

    /// A PostgreSQL cluster of the world's own in the gateway's namespace instead of SQLite.
    pub fn postgres(mut self) -> Builder {
        self.postgres = true;
        self
    }

    /// `[directory] sync_interval`.
    pub fn sync_interval(mut self, interval: &str) -> Builder {
        self.sync_interval = interval.to_string();
        self
    }

    /// Lines appended to `[directory]` (after `sync_interval`).
    pub fn directory(mut self, lines: &str) -> Builder {
        self.directory_extra.push('\n');
        self.directory_extra.push_str(lines);
        self
    }

    /// What follows the store and directory in the config: roles, resources, grants, `[audit]`…
    /// (`ROLES` and `resources()` by default).
    pub fn sections(mut self, sections: &str) -> Builder {
        self.sections = sections.to_string();
        self
    }

    /// Appends to the sections (`[audit]` settings…).
    pub fn extra(mut self, extra: &str) -> Builder {
        self.sections.push('\n');
        self.sections.push_str(extra);
        self
    }

    /// Namespaces, application servers, slapd (and PostgreSQL), the gateway key, the config, the
    /// laptops' wireguard-go; then `sesame serve`, ready. From here on the calling thread lives
    /// in the gateway's namespace (until the world is dropped).
    pub fn build(self) -> World {
        let dir = tempfile::tempdir().expect("temp dir");
        let net = Topology::new(&self.prefix, self.laptops);
        let listener = app_servers(&net, dir.path());

        // From here on this thread, slapd, PostgreSQL and curl live in the gateway's namespace.
        let in_gw = ThreadNetns::enter(&net.gw);
        let slapd = Slapd::start();
        let pg = self.postgres.then(PgCluster::start);
        let database = match &pg {
            Some(pg) => {
                pg.create_database("sesame");
                pg.url("sesame")
            }
            None => format!("sqlite://{}", dir.path().join("sesame.db").display()),
        };

        let key_path = dir.path().join("gateway.key");
        let gateway_public = keygen(&key_path);
        let sync = format!(
            "sync_interval = \"{}\"{}",
            self.sync_interval, self.directory_extra
        );
        let directory = slapd
            .directory_toml()
            .replace("sync_interval = \"60s\"", &sync);
        assert!(directory.contains(&sync));
        let config = TestConfig::new()
            .portal(&self.portal)
            .gateway(&format!(
                "listen = \"0.0.0.0:{GW_PORT}\"\nendpoint = \"{endpoint}\"\ninterface = \"{tun}\"\n\
                 tunnel_network = \"100.64.0.0/24\"\nprivate_key_file = \"{key}\"\nthreads = 1",
                endpoint = Topology::endpoint(0),
                tun = unique(&format!("{}t", self.prefix)),
                key = key_path.display(),
            ))
            .database(&database)
            .sections(&directory)
            .sections(&self.sections)
            .write(&dir.path().join("sesame.toml"));
        // Device i gets the i-th free address after the gateway's.
        let wgs = if self.wireguard {
            net.laptops
                .iter()
                .enumerate()
                .map(|(i, ns)| WgPeer::start(ns, &format!("100.64.0.{}/32", i + 2), dir.path()))
                .collect()
        } else {
            Vec::new()
        };
        let log = dir.path().join("serve.log");
        let mut w = World {
            serve: None,
            _listener: listener,
            wgs,
            slapd,
            pg,
            _in_gw: in_gw,
            gw: net.gw,
            laptops: net.laptops,
            res: net.res,
            dir,
            config,
            log,
            gateway_public,
        };
        w.start_serve();
        w
    }
}

pub struct World {
    // Processes first: dropped before their namespaces.
    pub serve: Option<Proc>,
    pub _listener: Proc,
    /// The laptops' wireguard-go, laptop i's at 100.64.0.{i+2} (none with `no_wireguard`).
    pub wgs: Vec<WgPeer>,
    pub slapd: Slapd,
    /// The world's own PostgreSQL (`Builder::postgres`), database `sesame`.
    pub pg: Option<PgCluster>,
    pub _in_gw: ThreadNetns,
    pub gw: Netns,
    pub laptops: Vec<Netns>,
    pub res: Netns,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub log: PathBuf,
    pub gateway_public: String,
}

impl World {
    /// The first laptop's namespace.
    pub fn laptop(&self) -> &Netns {
        &self.laptops[0]
    }

    /// The second laptop's namespace.
    pub fn laptop2(&self) -> &Netns {
        &self.laptops[1]
    }

    /// The first laptop's wireguard-go.
    pub fn wg(&self) -> &WgPeer {
        &self.wgs[0]
    }

    /// The second laptop's wireguard-go.
    pub fn wg2(&self) -> &WgPeer {
        &self.wgs[1]
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Starts `sesame serve` without waiting for the portal (it may be waiting for the
    /// database); returns the start instant.
    pub fn spawn_serve(&mut self, config: &Path) -> Instant {
        let t = Instant::now();
        let p = self.gw.spawn(
            cli::BIN,
            &["serve", "--config", config.to_str().expect("utf-8 path")],
            Some(&self.log),
        );
        self.serve = Some(p);
        t
    }

    /// A file in the gateway's state directory (beside its private key).
    pub fn gw_state_file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Whether the portal answers `/readyz` with 200 (the database answers).
    pub fn ready(&self) -> bool {
        api("GET", "/readyz", None, None, None).0 == 200
    }

    pub fn start_serve(&mut self) {
        let config = self.config.clone();
        self.spawn_serve(&config);
        assert!(
            wait_for(Duration::from_secs(30), || self.ready()),
            "sesame serve did not become ready; log:\n{}",
            self.log_text()
        );
    }

    /// Writes `text` as the configuration and reloads `sesame serve` (SIGHUP); returns once the
    /// reload is logged as applied.
    pub fn reload(&self, text: &str) {
        let applied = || self.log_text().matches("configuration reloaded").count();
        let before = applied();
        std::fs::write(&self.config, text).expect("write config");
        self.serve
            .as_ref()
            .expect("serve running")
            .signal(libc::SIGHUP);
        assert!(
            wait_for(Duration::from_secs(15), || applied() > before),
            "reload not applied; log:\n{}",
            self.log_text()
        );
    }

    pub fn stop_serve(&mut self) {
        let mut p = self.serve.take().expect("serve running");
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
        self.wg().set_peer(
            self.laptop(),
            &self.gateway_public,
            &Topology::endpoint(0),
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
        self.laptop().tcp_connects(ip, APP_PORT, 2)
    }

    /// Polls until `reaches(ip) == want`; returns how long it took.
    pub fn until_reach(&self, ip: &str, want: bool, timeout: Duration) -> Option<Duration> {
        let t = Instant::now();
        wait_for(timeout, || self.reaches(ip) == want).then(|| t.elapsed())
    }
}

/// The default world: two wireguard-go laptops, SQLite, `sesame serve` ready.
pub fn setup() -> World {
    Builder::new("sx").build()
}

/// The default world, with `extra` appended to the config (`[audit]` settings…).
pub fn setup_with(extra: &str) -> World {
    Builder::new("sx").extra(extra).build()
}

/// The audit log as `sesame audit export --format jsonl` prints it.
pub fn audit_events(config: &Path) -> Vec<Value> {
    cli::sesame(&["audit", "export", "--format", "jsonl"])
        .config(config)
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// `sesame audit verify`: the chain is intact and matches its signed checkpoints.
pub fn audit_verify(config: &Path) {
    cli::sesame(&["audit", "verify"]).config(config).ok();
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
