//! Shared by the portal and web tests through `#[path]` (with tests/common/portal.rs): a real portal on
//! a loopback port, a real slapd, a real SQLite file (or PostgreSQL). The gateway is the only
//! stand-in (a recording PeerSink); tests/serve_e2e.rs runs the real gateway.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};
use sesame::config::Config;
use sesame::control::{ControlPlane, DesiredPeer, DirectorySync, GatewayStats, PeerSink};
use sesame::portal::metrics::Metrics;
use sesame::portal::ratelimit::FailureLimiter;
use sesame::portal::{router, AppState};
use sesame::store::Store;

#[allow(unused_imports)]
pub use crate::common::portal::{csrf_cookie, error_of};
use crate::common::portal::{ClientOptions, PortalClient};
use crate::common::slapd::{password_of, Slapd};

/// The stand-in gateway's public key.
pub const GATEWAY_KEY: [u8; 32] = [0x42; 32];
pub const PAIE_NET: &str = "198.18.10.10/32";
pub const PAIE_ICMP_NET: &str = "198.18.10.0/28";
pub const RH_NET: &str = "198.18.20.0/24";

/// Records every peer set the control plane publishes.
#[derive(Default)]
pub struct RecordingSink {
    pub last: Mutex<Option<Vec<DesiredPeer>>>,
    pub publications: Mutex<usize>,
    /// Single peers added or replaced (enrolment, rotation) without a whole set.
    pub upserts: Mutex<usize>,
}

impl PeerSink for RecordingSink {
    fn set_peers(&self, peers: Vec<DesiredPeer>) {
        *self.last.lock() = Some(peers);
        *self.publications.lock() += 1;
    }
    fn upsert_peer(&self, peer: DesiredPeer) -> bool {
        let mut last = self.last.lock();
        let peers = last.get_or_insert_with(Vec::new);
        // As the gateway: an address held by another key is refused.
        if peers
            .iter()
            .any(|p| p.address == peer.address && p.public_key != peer.public_key)
        {
            return false;
        }
        peers.retain(|p| p.public_key != peer.public_key);
        peers.push(peer);
        *self.upserts.lock() += 1;
        true
    }
    fn remove_peer(&self, public_key: &[u8; 32]) -> bool {
        let mut last = self.last.lock();
        let Some(peers) = last.as_mut() else {
            return false;
        };
        let before = peers.len();
        peers.retain(|p| &p.public_key != public_key);
        peers.len() != before
    }
    fn public_key(&self) -> [u8; 32] {
        GATEWAY_KEY
    }
    fn stats(&self) -> GatewayStats {
        GatewayStats {
            peers: self.last.lock().as_ref().map_or(0, |p| p.len() as u64),
            ..GatewayStats::default()
        }
    }
}

impl RecordingSink {
    pub fn keys(&self) -> Vec<[u8; 32]> {
        self.last
            .lock()
            .as_ref()
            .map(|p| p.iter().map(|d| d.public_key).collect())
            .unwrap_or_default()
    }
    pub fn peer(&self, key: &[u8; 32]) -> Option<DesiredPeer> {
        self.last
            .lock()
            .as_ref()
            .and_then(|p| p.iter().find(|d| &d.public_key == key).cloned())
    }
}

pub fn config_toml(slapd: &Slapd, db_url: &str, portal: &str) -> String {
    format!(
        r#"
{portal}

[gateway]
endpoint = "198.18.0.1:51820"
tunnel_network = "100.64.0.0/24"
# Not read by the portal; anchors the audit key and checkpoint files in the test's folder.
private_key_file = "gateway.key"
dns = ["198.18.0.53"]

[database]
url = "{db_url}"

{dir}

[roles]
vpn_users = ["cn=personnels-administratifs,ou=groups,dc=academie,dc=test"]
it_staff = ["cn=dsi,ou=groups,dc=academie,dc=test"]
auditors = ["cn=auditeurs,ou=groups,dc=academie,dc=test"]
# A DSDEN technician group (created by the tests that need it) manages that DSDEN's staff only.
[[roles.delegated]]
it_staff = "cn=dsi-dsden,ou=groups,dc=academie,dc=test"
scope = "cn=gestionnaires-paie-dsden,ou=groups,dc=academie,dc=test"

[[resource]]
name = "paie"
description = "Paie"
allow = ["{PAIE_NET} tcp:443,8443", "{PAIE_ICMP_NET} icmp"]

[[resource]]
name = "rh"
description = "RH"
allow = ["{RH_NET} tcp:443"]

[[grant]]
group = "cn=gestionnaires-paie,ou=groups,dc=academie,dc=test"
resources = ["paie"]

[[grant]]
group = "cn=gestionnaires-rh,ou=groups,dc=academie,dc=test"
resources = ["rh"]
"#,
        dir = slapd.directory_toml()
    )
}

pub struct Harness {
    pub slapd: Arc<Slapd>,
    pub dir: tempfile::TempDir,
    pub base: String,
    pub store: Store,
    pub sink: Arc<RecordingSink>,
    pub control: Arc<ControlPlane>,
    pub config: Arc<Config>,
    pub directory: Arc<sesame::directory::LdapDirectory>,
    pub metrics: Arc<Metrics>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Harness {
    /// SQLite in a fresh temp dir, production brute-force limits.
    pub async fn start() -> Harness {
        Self::start_with(None, FailureLimiter::new()).await
    }

    /// Limits high enough for tests that send many bad inputs from one address.
    pub async fn start_lenient() -> Harness {
        Self::start_with(
            None,
            FailureLimiter::with_limits(1000, Duration::from_secs(60)),
        )
        .await
    }

    pub async fn start_with(db_url: Option<String>, limiter: FailureLimiter) -> Harness {
        Self::start_full(db_url, limiter, false).await
    }

    /// The portal serving HTTPS itself (rustls), with the slapd fixture's test CA material.
    pub async fn start_https() -> Harness {
        Self::start_full(None, FailureLimiter::new(), true).await
    }

    async fn start_full(db_url: Option<String>, limiter: FailureLimiter, https: bool) -> Harness {
        let slapd = Arc::new(
            tokio::task::spawn_blocking(move || {
                if https {
                    Slapd::start_with_tls()
                } else {
                    Slapd::start()
                }
            })
            .await
            .unwrap(),
        );
        let dir = tempfile::tempdir().unwrap();
        let listener = sesame::portal::listen::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (scheme, tls_lines) = if https {
            let d = slapd.dir();
            (
                "https",
                format!(
                    "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
                    d.join("server.pem").display(),
                    d.join("server.key").display()
                ),
            )
        } else {
            ("http", String::new())
        };
        let portal = format!(
            "[portal]\nlisten = \"{addr}\"\npublic_url = \"{scheme}://{addr}\"\ntrusted_proxies = [\"127.0.0.1\"]\n{tls_lines}"
        );
        let db_url = db_url
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("sesame.db").display()));
        let path = dir.path().join("sesame.toml");
        let text = config_toml(&slapd, &db_url, &portal);
        std::fs::write(&path, &text).unwrap();
        let config = Arc::new(Config::parse(&path, &text).expect("test config"));
        let store = Store::connect(&config.database.url).await.unwrap();
        let directory = Arc::new(
            sesame::directory::LdapDirectory::new(config.directory.as_ref().unwrap()).unwrap(),
        );
        let sink = Arc::new(RecordingSink::default());
        let control = ControlPlane::new(store.clone(), Arc::clone(&config), sink.clone());
        control.reconcile().await.unwrap();
        let metrics = Arc::new(Metrics::default());
        let state = AppState::with_limiter(
            Arc::clone(&config),
            store.clone(),
            directory.clone(),
            control.clone(),
            Arc::clone(&metrics),
            limiter,
        );
        let tls = https.then(|| sesame::portal::listen::TlsFiles {
            cert: config.portal.tls_cert_file.clone().unwrap(),
            key: config.portal.tls_key_file.clone().unwrap(),
        });
        let app = router(state);
        let server = tokio::spawn(async move {
            let _ = sesame::portal::listen::serve(listener, tls, app, std::future::pending()).await;
        });
        Harness {
            slapd,
            dir,
            base: format!("{scheme}://{addr}"),
            store,
            sink,
            control,
            config,
            directory,
            metrics,
            server,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A client with its own cookie jar (one browser).
    pub fn browser(&self) -> PortalClient {
        self.client_with(None, None)
    }

    fn client_with(
        &self,
        jar: Option<Arc<reqwest::cookie::Jar>>,
        csrf: Option<&str>,
    ) -> PortalClient {
        let pem = self
            .base
            .starts_with("https")
            .then(|| std::fs::read(self.slapd.ca_file()).unwrap());
        PortalClient::new(
            &self.base,
            ClientOptions {
                ca_pem: pem.as_deref(),
                csrf,
                jar,
            },
        )
    }

    /// A signed-in browser: session cookie, and the CSRF token sent on state changes.
    pub async fn login(&self, uid: &str) -> PortalClient {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let r = self
            .client_with(Some(Arc::clone(&jar)), None)
            .login(uid)
            .await;
        let token = csrf_cookie(&r).unwrap_or_default();
        assert_eq!(r.status(), 200, "login {uid}: {}", r.text().await.unwrap());
        assert!(!token.is_empty(), "login sets the CSRF cookie");
        self.client_with(Some(jar), Some(&token))
    }

    /// IT staff (tleroux) creates a code for `uid`.
    pub async fn code_for(&self, it: &reqwest::Client, uid: &str, device: &str) -> String {
        let it = PortalClient {
            http: it.clone(),
            base: self.base.clone(),
        };
        let r = it.create_code(uid, device).await;
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.unwrap();
        v["code"].as_str().unwrap().to_string()
    }

    pub async fn enrol(&self, code: &str, uid: &str, key: &str) -> reqwest::Response {
        reqwest::Client::new()
            .post(self.url("/api/v1/enrol"))
            .json(&json!({
                "code": code, "username": uid, "password": password_of(uid),
                "public_key": key, "hostname": format!("pc-{uid}"),
            }))
            .send()
            .await
            .unwrap()
    }

    pub fn sync(&self) -> DirectorySync {
        DirectorySync::new(
            self.store.clone(),
            self.directory.clone(),
            Some(Arc::clone(&self.control)),
            self.config.roles.vpn_users.clone(),
            self.config.directory.as_ref().unwrap(),
            Arc::clone(&self.metrics),
        )
    }

    pub async fn device_count(&self) -> usize {
        self.store.list_devices(None).await.unwrap().len()
    }
}

/// A random laptop key, base64 (as `wg pubkey` prints it).
pub fn laptop_key() -> (String, [u8; 32]) {
    use base64::Engine as _;
    let secret = boringtun::x25519::StaticSecret::random_from_rng(rand_core::OsRng);
    let public = boringtun::x25519::PublicKey::from(&secret).to_bytes();
    (
        base64::engine::general_purpose::STANDARD.encode(public),
        public,
    )
}
