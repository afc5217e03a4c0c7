//! The portal and web tests' harness (with tests/common/portal.rs): a real portal on
//! a loopback port, a real slapd, a real SQLite file (or PostgreSQL). The gateway is the only
//! stand-in (a recording PeerSink); tests/root/serve_e2e.rs runs the real gateway.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};
use sesame::config::{Config, LiveConfig};
use sesame::control::{ControlPlane, DirectorySync, GatewayStats, PeerSink, PeerSpec};
use sesame::key::PublicKey;
use sesame::portal::metrics::Metrics;
use sesame::portal::{router, AppState};
use sesame::service::ratelimit::FailureLimiter;
use sesame::service::Services;
use sesame::store::Store;

use crate::common::config::{TestConfig, GRANTS};
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
    pub last: Mutex<Option<Vec<PeerSpec>>>,
    pub publications: Mutex<usize>,
    /// Single peers added or replaced (enrolment, rotation) without a whole set.
    pub upserts: Mutex<usize>,
}

impl PeerSink for RecordingSink {
    fn set_peers(&self, peers: Vec<PeerSpec>) {
        *self.last.lock() = Some(peers);
        *self.publications.lock() += 1;
    }
    fn upsert_peer(&self, peer: PeerSpec) -> bool {
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
    fn remove_peer(&self, public_key: &PublicKey) -> bool {
        let mut last = self.last.lock();
        let Some(peers) = last.as_mut() else {
            return false;
        };
        let before = peers.len();
        peers.retain(|p| &p.public_key != public_key);
        peers.len() != before
    }
    fn public_key(&self) -> PublicKey {
        PublicKey::from_bytes(GATEWAY_KEY).expect("key")
    }
    fn stats(&self) -> GatewayStats {
        GatewayStats {
            peers: self.last.lock().as_ref().map_or(0, |p| p.len() as u64),
            ..GatewayStats::default()
        }
    }
}

impl RecordingSink {
    pub fn keys(&self) -> Vec<PublicKey> {
        self.last
            .lock()
            .as_ref()
            .map(|p| p.iter().map(|d| d.public_key).collect())
            .unwrap_or_default()
    }
    pub fn peer(&self, key: &PublicKey) -> Option<PeerSpec> {
        self.last
            .lock()
            .as_ref()
            .and_then(|p| p.iter().find(|d| &d.public_key == key).cloned())
    }
}

/// The harness's config: `portal` (the whole `[portal]` body), a stand-in gateway, the store at
/// `db_url`, the slapd fixture, the seeded roles plus a delegated DSDEN technician, payroll and HR.
pub fn config_toml(slapd: &Slapd, db_url: &str, portal: &str) -> String {
    TestConfig::new()
        .portal(portal)
        .gateway(
            r#"endpoint = "198.18.0.1:51820"
tunnel_network = "100.64.0.0/24"
# Not read by the portal; anchors the audit key and checkpoint files in the test's folder.
private_key_file = "gateway.key"
dns = ["198.18.0.53"]"#,
        )
        .database(db_url)
        .sections(&slapd.directory_toml())
        .roles()
        .sections(&format!(
            r#"# A DSDEN technician group (created by the tests that need it) manages that DSDEN's staff only.
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

{GRANTS}"#
        ))
        .text()
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
        Self::start_full(db_url, limiter, false, None).await
    }

    /// The portal serving HTTPS itself (rustls), with the slapd fixture's test CA material.
    pub async fn start_https() -> Harness {
        Self::start_full(None, FailureLimiter::new(), true, None).await
    }

    /// The second factor on: `mfa_section` is the body of `[mfa]` (its key file lands in the
    /// test's folder), and `paie` needs it (`mfa = true`); production limits.
    pub async fn start_mfa(mfa_section: &str) -> Harness {
        Self::start_full(None, FailureLimiter::new(), false, Some(mfa_section)).await
    }

    async fn start_full(
        db_url: Option<String>,
        limiter: FailureLimiter,
        https: bool,
        mfa: Option<&str>,
    ) -> Harness {
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
        let listener = sesame::listen::bind("127.0.0.1:0".parse().unwrap()).unwrap();
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
            "listen = \"{addr}\"\npublic_url = \"{scheme}://{addr}\"\ntrusted_proxies = [\"127.0.0.1\"]\n{tls_lines}"
        );
        let db_url = db_url
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("sesame.db").display()));
        let path = dir.path().join("sesame.toml");
        let mut text = config_toml(&slapd, &db_url, &portal);
        if let Some(section) = mfa {
            text = text.replace(
                "description = \"Paie\"\n",
                "description = \"Paie\"\nmfa = true\n",
            );
            text.push_str(&format!("\n[mfa]\n{section}\n"));
        }
        std::fs::write(&path, &text).unwrap();
        let config = Arc::new(Config::parse(&path, &text).expect("test config"));
        // Codes hashed with the portal key in the test's folder, as `sesame serve` does.
        let (code_key, _) =
            sesame::store::CodeKey::load_or_create(&config.portal.secret_key_file).unwrap();
        let store = Store::connect(&config.database.url)
            .await
            .unwrap()
            .with_code_key(Arc::new(code_key));
        let directory = Arc::new(
            sesame::directory::LdapDirectory::new(config.directory.as_ref().unwrap()).unwrap(),
        );
        let sink = Arc::new(RecordingSink::default());
        // One live configuration for the control plane and the services, as `sesame serve`.
        let live = LiveConfig::from(Arc::clone(&config));
        let control = ControlPlane::new(store.clone(), live.clone(), sink.clone());
        control.reconcile().await.unwrap();
        let metrics = Arc::new(Metrics::default());
        let services = Services::new(live, store.clone())
            .with_directory(directory.clone())
            .with_publisher(control.clone())
            .with_metrics(Arc::clone(&metrics))
            .with_limiter(limiter);
        let services = match &config.mfa {
            Some(m) => services.with_mfa(sesame::mfa::Kit::from_config(m, &store).unwrap().0),
            None => services,
        };
        let state = AppState::new(Arc::new(services));
        let tls = https.then(|| sesame::listen::TlsFiles {
            cert: config.portal.tls_cert_file.clone().unwrap(),
            key: config.portal.tls_key_file.clone().unwrap(),
        });
        let app = router(state);
        let server = tokio::spawn(async move {
            let _ = sesame::listen::serve(listener, tls, app, std::future::pending()).await;
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

    /// A laptop of `uid` enrolled through the API (the code from `sesame enrol-code create`)
    /// with the factor its enrolment handed out confirmed: (device id, TOTP secret in base32).
    pub async fn enrol_with_factor(&self, uid: &str, device: &str) -> (i64, String) {
        let code = crate::common::cli::sesame(&[
            "enrol-code",
            "create",
            "--user",
            uid,
            "--device",
            device,
        ])
        .config(self.dir.path().join("sesame.toml"))
        .ok();
        let code = code.trim();
        let r = self.enrol(code, uid, &laptop_key().0).await;
        assert_eq!(r.status(), 201);
        let cfg: Value = r.json().await.unwrap();
        let secret = cfg["mfa_registration"]["secret"]
            .as_str()
            .expect("a factor to register")
            .to_string();
        let r = reqwest::Client::new()
            .post(self.url("/api/v1/device/mfa/confirm"))
            .bearer_auth(cfg["device_token"].as_str().unwrap())
            .json(&json!({"code": totp_code(&secret, 0)}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        (cfg["device_id"].as_i64().unwrap(), secret)
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
pub fn laptop_key() -> (String, PublicKey) {
    let public = sesame::key::PrivateKey::generate().public_key();
    (public.to_base64(), public)
}

/// The TOTP code of `secret` (base32) `offset` steps from now (±1 is accepted; each step once).
pub fn totp_code(secret: &str, offset: i64) -> String {
    let bytes = sesame::mfa::totp::from_base32(secret).unwrap();
    let now = sesame::time::now_ms() / 1000 + offset * 30;
    sesame::mfa::totp::code_at(&bytes, u64::try_from(now).unwrap())
}
