//! The agent's directory: `agent.toml` (portal, device id and token), `sesame.conf`, cached grants, paths.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sesame::api::DeviceConfig;

use crate::files::{self, FileError};

/// Default directory of the agent's private files.
#[cfg(windows)]
pub const DEFAULT_DIR: &str = r"C:\ProgramData\sesame-agent";
#[cfg(not(windows))]
pub const DEFAULT_DIR: &str = "/etc/sesame-agent";

/// Default name of the tunnel interface.
pub const DEFAULT_INTERFACE: &str = "sesame0";
/// Default period of the grant refresh from the portal.
pub const DEFAULT_REFRESH_SECS: u64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{path}, line {line}: {source}")]
    Toml {
        path: PathBuf,
        line: usize,
        source: Box<toml::de::Error>,
    },
    #[error("not enrolled: {0} is missing")]
    NotEnrolled(PathBuf),
}

/// Paths inside the agent's directory.
#[derive(Debug, Clone)]
pub struct Paths {
    pub dir: PathBuf,
}

impl Paths {
    pub fn new(dir: impl Into<PathBuf>) -> Paths {
        Paths { dir: dir.into() }
    }
    /// wg-quick config with the private key.
    pub fn conf(&self) -> PathBuf {
        self.dir.join("sesame.conf")
    }
    /// A rotated config written before the portal confirmed it.
    pub fn conf_pending(&self) -> PathBuf {
        self.dir.join("sesame.conf.pending")
    }
    pub fn agent(&self) -> PathBuf {
        self.dir.join("agent.toml")
    }
    /// Last config the portal sent (no token), for `status` while offline.
    pub fn device_cache(&self) -> PathBuf {
        self.dir.join("device.json")
    }
    pub fn pid(&self) -> PathBuf {
        self.dir.join("agent.pid")
    }
    pub fn status(&self) -> PathBuf {
        self.dir.join("status.json")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("agent.log")
    }
}

/// `agent.toml`: what the agent needs to talk to the portal after enrolment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AgentState {
    /// Portal base URL, as given to `enrol`.
    pub portal: String,
    pub device_id: i64,
    /// Bearer token for `/api/v1/device/*`.
    pub device_token: String,
    /// PEM file of the portal's private CA, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Enrolled with `--insecure`: a plain http:// portal outside loopback is accepted for
    /// refreshes and rotations too (labs only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// Tunnel interface name (default `sesame0`).
    #[serde(default = "default_interface")]
    pub interface: String,
    /// Seconds between two grant refreshes (default 60).
    #[serde(default = "default_refresh")]
    pub refresh_interval_secs: u64,
    /// The portal's signed device cookie (`NAME=VALUE`) from the last successful enrolment:
    /// shown at the next enrolment, it lets this laptop in while others keep its account
    /// locked with wrong passwords. Outlives a revoked device (kept by re-enrolment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_cookie: Option<String>,
}

fn default_interface() -> String {
    DEFAULT_INTERFACE.to_string()
}
fn default_refresh() -> u64 {
    DEFAULT_REFRESH_SECS
}

impl AgentState {
    pub fn load(paths: &Paths) -> Result<AgentState, StateError> {
        let path = paths.agent();
        if !path.exists() {
            return Err(StateError::NotEnrolled(path));
        }
        let text = files::read_private(&path)?;
        toml::from_str(&text).map_err(|source| {
            let line = source.span().map_or(1, |span| {
                text[..span.start.min(text.len())].matches('\n').count() + 1
            });
            StateError::Toml {
                path,
                line,
                source: Box::new(source),
            }
        })
    }

    pub fn save(&self, paths: &Paths) -> Result<(), StateError> {
        let text = format!(
            "# Sesame agent state — written by sesame-agent; keep this file private.\n{}",
            toml::to_string(self).unwrap_or_default()
        );
        files::write_private_atomic(&paths.agent(), text.as_bytes())?;
        Ok(())
    }
}

/// The device cookie kept by an earlier enrolment in this directory, if any (a missing or
/// unreadable `agent.toml` simply means none: enrolment goes on without it).
pub fn known_device_cookie(paths: &Paths) -> Option<String> {
    AgentState::load(paths).ok()?.device_cookie
}

/// Saves the last config from the portal (never the token).
pub fn save_device_cache(paths: &Paths, device: &DeviceConfig) -> Result<(), FileError> {
    let mut device = device.clone();
    device.device_token = None;
    let text = serde_json::to_string_pretty(&device).unwrap_or_default();
    files::write_private_atomic(&paths.device_cache(), text.as_bytes())
}

pub fn load_device_cache(paths: &Paths) -> Option<DeviceConfig> {
    let text = std::fs::read_to_string(paths.device_cache()).ok()?;
    serde_json::from_str(&text).ok()
}

/// True if a file exists at `path`.
pub fn exists(path: &Path) -> bool {
    path.exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_state_round_trips_with_defaults() {
        let tmp = tempfile::tempdir().expect("tmp");
        let paths = Paths::new(tmp.path());
        assert!(matches!(
            AgentState::load(&paths),
            Err(StateError::NotEnrolled(_))
        ));
        let state = AgentState {
            portal: "https://vpn.example.org".into(),
            device_id: 3,
            device_token: "tok".into(),
            ca_file: None,
            insecure: true,
            interface: DEFAULT_INTERFACE.into(),
            refresh_interval_secs: DEFAULT_REFRESH_SECS,
            device_cookie: Some("sesame-device=AAAA".into()),
        };
        state.save(&paths).expect("save");
        assert_eq!(AgentState::load(&paths).expect("load"), state);
        let text = std::fs::read_to_string(paths.agent()).expect("read");
        assert!(text.contains("insecure = true"), "{text}");
        std::fs::write(
            paths.agent(),
            "portal = \"http://x\"\ndevice_id = 1\ndevice_token = \"t\"\n",
        )
        .expect("w");
        let loaded = AgentState::load(&paths).expect("load");
        assert_eq!(loaded.interface, "sesame0");
        assert!(!loaded.insecure, "absent means a secure portal is required");
        assert_eq!(loaded.refresh_interval_secs, 60);
        assert_eq!(loaded.device_cookie, None);
    }
}
