//! `status.json`: what the running tunnel reports (written by the daemon, read by `status` and `up`).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::files;
use crate::state::Paths;

/// A handshake younger than this means "connected" (WireGuard's REJECT_AFTER_TIME).
pub const CONNECTED_WITHIN_SECS: u64 = 180;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TunnelStatus {
    pub pid: i32,
    pub interface: String,
    /// `starting`, `up`, `failed` or `down`.
    pub state: String,
    #[serde(default)]
    pub error: Option<String>,
    /// Unix seconds of this report.
    pub updated_at: u64,
    #[serde(default)]
    pub last_handshake_age_secs: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Routes currently installed into the tunnel.
    #[serde(default)]
    pub routes: Vec<String>,
    /// The portal said this device was revoked.
    #[serde(default)]
    pub revoked: bool,
    #[serde(default)]
    pub last_refresh_at: Option<u64>,
    #[serde(default)]
    pub refresh_error: Option<String>,
    /// Packets dropped (bad source, not decryptable, IPv6).
    #[serde(default)]
    pub dropped_packets: u64,
    /// Each site's gateway (one for a one-site install), the main one first.
    #[serde(default)]
    pub sites: Vec<SiteStatus>,
}

/// One site's gateway as the tunnel sees it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SiteStatus {
    /// The site's name (empty when the portal named none).
    pub site: String,
    /// `host:port` dialled.
    pub endpoint: String,
    #[serde(default)]
    pub last_handshake_age_secs: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// The networks routed to this gateway.
    #[serde(default)]
    pub routes: Vec<String>,
}

impl TunnelStatus {
    pub fn connected(&self) -> bool {
        self.state == "up"
            && self
                .last_handshake_age_secs
                .is_some_and(|age| age < CONNECTED_WITHIN_SECS)
    }

    pub fn load(paths: &Paths) -> Option<TunnelStatus> {
        let text = std::fs::read_to_string(paths.status()).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn save(&self, paths: &Paths) -> Result<(), files::FileError> {
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        files::write_private_replace(&paths.status(), text.as_bytes())
    }
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connected_needs_a_recent_handshake() {
        let mut s = TunnelStatus {
            state: "up".into(),
            ..Default::default()
        };
        assert!(!s.connected());
        s.last_handshake_age_secs = Some(5);
        assert!(s.connected());
        s.last_handshake_age_secs = Some(CONNECTED_WITHIN_SECS);
        assert!(!s.connected());
        s.last_handshake_age_secs = Some(5);
        s.state = "down".into();
        assert!(!s.connected());
    }

    #[test]
    fn round_trips_through_the_file() {
        let tmp = tempfile::tempdir().expect("tmp");
        let paths = Paths::new(tmp.path());
        let s = TunnelStatus {
            pid: 42,
            interface: "sesame0".into(),
            state: "up".into(),
            routes: vec!["198.18.10.10/32".into()],
            ..Default::default()
        };
        s.save(&paths).expect("save");
        assert_eq!(TunnelStatus::load(&paths), Some(s));
    }
}
