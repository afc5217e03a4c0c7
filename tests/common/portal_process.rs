//! `sesame portal` processes for the tests of several portals and of database outages: each
//! one's configuration (on one slapd and one database URL), its start, readiness and log.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::cli;
use super::harness::config_toml;
use super::portal::PortalClient;
use super::slapd::Slapd;

/// A `sesame portal` process, its stderr in a log file beside its configuration; killed on drop.
pub struct PortalProcess {
    pub config: PathBuf,
    pub base: String,
    pub log: PathBuf,
    pub child: Child,
}

impl PortalProcess {
    pub fn start(config: &Path, base: &str) -> PortalProcess {
        let log = config.with_extension("log");
        let out = std::fs::File::create(&log).expect("log");
        let child = Command::new(cli::BIN)
            .args(["portal", "--config", config.to_str().expect("utf-8")])
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("sesame portal");
        PortalProcess {
            config: config.to_path_buf(),
            base: base.to_string(),
            log,
            child,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (30 s at most) for `/readyz` to answer 200.
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("portal exited ({status}); log:\n{}", self.log());
            }
            if let Ok(r) = reqwest::get(format!("{}/readyz", self.base)).await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("portal not ready; log:\n{}", self.log());
    }
}

impl Drop for PortalProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}

/// Portal `n`'s configuration, beside the others' in `dir` (so all share the portal and audit
/// key files, as several portals must), syncing the directory every `sync`; it trusts
/// `X-Forwarded-For` from loopback (a load balancer there). Returns the file and the base URL.
pub fn write_config(
    dir: &Path,
    n: usize,
    slapd: &Slapd,
    db_url: &str,
    sync: Duration,
) -> (PathBuf, String) {
    write_config_with(dir, n, slapd, db_url, sync, "")
}

/// [`write_config`] with `portal_extra` (lines of TOML) added to `[portal]`.
pub fn write_config_with(
    dir: &Path,
    n: usize,
    slapd: &Slapd,
    db_url: &str,
    sync: Duration,
    portal_extra: &str,
) -> (PathBuf, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let portal = format!(
        "listen = \"{addr}\"\npublic_url = \"http://{addr}\"\ntrusted_proxies = [\"127.0.0.1\"]\n{portal_extra}"
    );
    let text = config_toml(slapd, db_url, &portal).replace(
        "sync_interval = \"60s\"",
        &format!("sync_interval = \"{}s\"", sync.as_secs()),
    );
    // `sesame portal` feeds site gateways: one site holds both resources.
    let site_key = sesame::key::PrivateKey::from_bytes([9; 32])
        .public_key()
        .to_base64();
    let text = text
        .replace("description = \"Paie\"\n", "description = \"Paie\"\nsite = \"rectorat\"\n")
        .replace("description = \"RH\"\n", "description = \"RH\"\nsite = \"rectorat\"\n")
        + &format!(
            "\n[[site]]\nname = \"rectorat\"\nendpoint = \"198.18.0.1:51820\"\npublic_key = \"{site_key}\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n"
        );
    let path = dir.join(format!("portal-{n}.toml"));
    std::fs::write(&path, text).expect("config");
    (path, format!("http://{addr}"))
}

/// What `GET /api/v1/devices` answers within 15 s (status, error code); `None` if it hangs.
pub async fn devices_answer(client: &PortalClient) -> Option<(u16, String)> {
    let r = tokio::time::timeout(Duration::from_secs(15), client.get_at("/api/v1/devices"))
        .await
        .ok()?;
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    Some((
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    ))
}
