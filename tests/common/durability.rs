//! A `sesame serve` that a test kills with SIGKILL and restarts at will, on SQLite or
//! PostgreSQL, alone in a network namespace with slapd (and PostgreSQL) beside it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use super::cli;
use super::config::TestConfig;
use super::netns::ThreadNetns;
use super::netns::{unique, wait_for, Netns, Proc};
use super::postgres::PgCluster;
use super::slapd::Slapd;

pub const PORTAL: &str = "http://127.0.0.1:8080";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct Crashable {
    // Processes first: dropped before the databases and the namespace.
    serve: Mutex<Option<Proc>>,
    /// A cluster of its own, in the namespace (database `sesame`).
    pub pg: Option<PgCluster>,
    pub slapd: Slapd,
    _in_ns: ThreadNetns,
    pub ns: Netns,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    /// How many times serve was started (each start logs to its own file).
    starts: AtomicUsize,
}

impl Crashable {
    /// The namespace, slapd, the database, the keys and the config; serve started and ready.
    /// The calling thread stays in the namespace (threads it spawns too) until the drop.
    pub fn start(backend: Backend) -> Crashable {
        Self::start_with(backend, "")
    }

    /// As [`Self::start`], with `portal_keys` added to the `[portal]` section.
    pub fn start_with(backend: Backend, portal_keys: &str) -> Crashable {
        let dir = tempfile::tempdir().expect("tempdir");
        let ns = Netns::new("sxd");
        let in_ns = ThreadNetns::enter(&ns);
        let slapd = Slapd::start();
        let pg = (backend == Backend::Postgres).then(PgCluster::start);
        let url = match &pg {
            Some(pg) => {
                pg.create_database("sesame");
                pg.url("sesame")
            }
            None => format!("sqlite://{}", dir.path().join("sesame.db").display()),
        };
        let path = |name: &str| dir.path().join(name).display().to_string();
        for args in [
            vec!["keygen", "--out", &path("gateway.key")],
            vec!["keygen", "--audit", "--out", &path("audit.key")],
        ] {
            cli::sesame(&args).ok();
        }
        let config = TestConfig::new()
            .portal(&format!(
                "listen = \"127.0.0.1:8080\"\npublic_url = \"{PORTAL}\"\n{portal_keys}"
            ))
            .gateway(&format!(
                "listen = \"127.0.0.1:51820\"\nendpoint = \"127.0.0.1:51820\"\ninterface = \"{tun}\"\n\
                 tunnel_network = \"100.64.0.0/20\"\nprivate_key_file = \"{key}\"\nthreads = 1",
                tun = unique("sd"),
                key = path("gateway.key"),
            ))
            .database(&url)
            .sections(&slapd.directory_toml())
            .roles()
            .table(
                "audit",
                &format!(
                    "signing_key_file = \"{}\"\ncheckpoint_file = \"{}\"",
                    path("audit.key"),
                    path("audit-checkpoints.jsonl")
                ),
            )
            .sections(
                r#"[[resource]]
name = "paie"
allow = ["198.18.10.10/32 tcp:443"]

[[grant]]
group = "cn=gestionnaires-paie,ou=groups,dc=academie,dc=test"
resources = ["paie"]"#,
            )
            .write(&dir.path().join("sesame.toml"));
        let c = Crashable {
            serve: Mutex::new(None),
            pg,
            slapd,
            _in_ns: in_ns,
            ns,
            dir,
            config,
            starts: AtomicUsize::new(0),
        };
        c.spawn();
        c
    }

    /// How many times serve was started (each start logs to its own file).
    pub fn starts(&self) -> usize {
        self.starts.load(Ordering::Acquire)
    }

    pub fn config_str(&self) -> &str {
        self.config.to_str().expect("utf-8 path")
    }

    fn log_path(&self, start: usize) -> PathBuf {
        self.dir.path().join(format!("serve-{start}.log"))
    }

    /// The log of the current (last) run of serve.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path(self.starts())).unwrap_or_default()
    }

    /// Starts serve and waits (up to 30 s) until the portal answers `/readyz`.
    pub fn spawn(&self) {
        let mut serve = self.serve.lock().unwrap_or_else(|e| e.into_inner());
        assert!(serve.is_none(), "serve already runs");
        let start = self.starts.fetch_add(1, Ordering::AcqRel) + 1;
        let log = self.log_path(start);
        *serve = Some(self.ns.spawn(
            cli::BIN,
            &["serve", "--config", self.config_str()],
            Some(&log),
        ));
        drop(serve);
        assert!(
            wait_for(Duration::from_secs(30), || self
                .api("GET", "/readyz", None, None)
                .0
                == 200),
            "sesame serve (start {}) not ready; log:\n{}",
            start,
            self.log()
        );
    }

    /// The process id of the running serve.
    pub fn serve_pid(&self) -> u32 {
        let serve = self.serve.lock().unwrap_or_else(|e| e.into_inner());
        serve
            .as_ref()
            .and_then(|p| p.child.as_ref())
            .expect("serve runs")
            .id()
    }

    /// SIGKILL, no warning: whatever was in flight is cut.
    pub fn kill9(&self) {
        let taken = self.serve.lock().unwrap_or_else(|e| e.into_inner()).take();
        let mut p = taken.expect("serve runs");
        let st = p.signal_and_wait(libc::SIGKILL, Duration::from_secs(10));
        assert!(st.is_some(), "serve survived SIGKILL");
    }

    /// SIGTERM and a clean exit.
    pub fn stop(&self) {
        let taken = self.serve.lock().unwrap_or_else(|e| e.into_inner()).take();
        let mut p = taken.expect("serve runs");
        let st = p.signal_and_wait(libc::SIGTERM, Duration::from_secs(20));
        assert!(
            st.is_some_and(|s| s.success()),
            "serve did not stop cleanly: {st:?}\n{}",
            self.log()
        );
    }

    /// One HTTP call to the portal with curl: `(status, JSON body or Null)`; status 0 when no
    /// answer came (connection refused or cut).
    pub fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        jar: Option<&Path>,
    ) -> (u16, Value) {
        super::curl::api(&format!("{PORTAL}{path}"), method, body, jar, None)
    }

    /// One-time codes for `(user, device name)` rows, issued by the CLI (`--csv`), in order.
    pub fn codes(&self, rows: &[(String, String)]) -> Vec<String> {
        let csv = self.dir.path().join("codes.csv");
        let mut text = String::from("user,device\n");
        for (u, d) in rows {
            text.push_str(&format!("{u},{d}\n"));
        }
        std::fs::write(&csv, text).expect("write csv");
        let text = cli::sesame(&[
            "enrol-code",
            "create",
            "--csv",
            csv.to_str().expect("utf-8"),
        ])
        .config(&self.config)
        .ok();
        let codes: Vec<String> = text
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(2).expect("code column").to_string())
            .collect();
        assert_eq!(codes.len(), rows.len(), "{text}");
        codes
    }
}
