//! The configuration as written in the file: serde types with defaults, before validation.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) portal: RawPortal,
    #[serde(default)]
    pub(super) gateway: RawGateway,
    #[serde(default)]
    pub(super) database: RawDatabase,
    pub(super) directory: Option<RawDirectory>,
    #[serde(default)]
    pub(super) roles: RawRoles,
    #[serde(default)]
    pub(super) audit: RawAudit,
    #[serde(default)]
    pub(super) devices: RawDevices,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) metrics: RawMetrics,
    pub(super) mfa: Option<RawMfa>,
    #[serde(default)]
    pub(super) resource: Vec<RawResource>,
    #[serde(default)]
    pub(super) grant: Vec<RawGrant>,
    #[serde(default)]
    pub(super) peer: Vec<RawPeer>,
    #[serde(default)]
    pub(super) site: Vec<RawSite>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawPortal {
    pub(super) listen: String,
    pub(super) public_url: String,
    pub(super) tls_cert_file: Option<PathBuf>,
    pub(super) tls_key_file: Option<PathBuf>,
    pub(super) insecure_plaintext: bool,
    pub(super) helpdesk: String,
    pub(super) role_refresh: String,
    pub(super) trusted_proxies: Vec<String>,
    pub(super) spray_ceiling: u32,
    pub(super) secret_key_file: Option<PathBuf>,
    pub(super) max_connections_per_source: usize,
}

impl Default for RawPortal {
    fn default() -> Self {
        RawPortal {
            listen: "127.0.0.1:8080".into(),
            public_url: "http://127.0.0.1:8080".into(),
            tls_cert_file: None,
            tls_key_file: None,
            insecure_plaintext: false,
            helpdesk: String::new(),
            role_refresh: "5m".into(),
            trusted_proxies: Vec::new(),
            spray_ceiling: super::DEFAULT_SPRAY_CEILING,
            secret_key_file: None,
            max_connections_per_source: super::DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawGateway {
    pub(super) listen: String,
    pub(super) endpoint: String,
    pub(super) interface: String,
    pub(super) tunnel_network: String,
    pub(super) private_key_file: PathBuf,
    pub(super) dns: Vec<String>,
    pub(super) mtu: u16,
    pub(super) threads: usize,
    pub(super) flow_idle_timeout: String,
    pub(super) max_cache_age: String,
    pub(super) site: Option<String>,
    pub(super) portals: Vec<String>,
    pub(super) portal_token_file: Option<PathBuf>,
    pub(super) portal_ca_file: Option<PathBuf>,
    pub(super) insecure_plaintext: bool,
}

impl Default for RawGateway {
    fn default() -> Self {
        RawGateway {
            listen: "0.0.0.0:51820".into(),
            endpoint: "vpn.example.org:51820".into(),
            interface: "sesame0".into(),
            tunnel_network: "100.64.0.0/16".into(),
            private_key_file: "/var/lib/sesame/gateway.key".into(),
            dns: Vec::new(),
            mtu: 1420,
            threads: 0,
            flow_idle_timeout: "120s".into(),
            max_cache_age: "7d".into(),
            site: None,
            portals: Vec::new(),
            portal_token_file: None,
            portal_ca_file: None,
            insecure_plaintext: false,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawDatabase {
    pub(super) url: String,
}

impl Default for RawDatabase {
    fn default() -> Self {
        RawDatabase {
            url: "sqlite:///var/lib/sesame/sesame.db".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDirectory {
    #[serde(default = "default_kind")]
    pub(super) kind: String,
    pub(super) url: String,
    #[serde(default)]
    pub(super) starttls: bool,
    #[serde(default)]
    pub(super) insecure_plaintext: bool,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) bind_dn: String,
    pub(super) bind_password_file: PathBuf,
    pub(super) user_base: String,
    pub(super) user_filter: Option<String>,
    pub(super) group_base: String,
    #[serde(default = "default_sync_interval")]
    pub(super) sync_interval: String,
    #[serde(default = "default_directory_timeout")]
    pub(super) timeout: String,
    #[serde(default = "default_max_changes_per_sync")]
    pub(super) max_changes_per_sync: String,
    #[serde(default = "default_suspend_grace")]
    pub(super) suspend_grace: String,
}

pub(super) fn default_kind() -> String {
    "openldap".into()
}
pub(super) fn default_sync_interval() -> String {
    "60s".into()
}
pub(super) fn default_directory_timeout() -> String {
    "5s".into()
}
pub(super) fn default_max_changes_per_sync() -> String {
    "5%".into()
}
pub(super) fn default_suspend_grace() -> String {
    "30d".into()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRoles {
    pub(super) vpn_users: Vec<String>,
    pub(super) it_staff: Vec<String>,
    pub(super) auditors: Vec<String>,
    pub(super) delegated: Vec<RawDelegated>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDelegated {
    pub(super) it_staff: String,
    pub(super) scope: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawDevices {
    pub(super) key_lifetime: String,
    pub(super) max_lifetime: String,
    pub(super) reauth_interval: String,
}

impl Default for RawDevices {
    fn default() -> Self {
        RawDevices {
            key_lifetime: "180d".into(),
            max_lifetime: "730d".into(),
            reauth_interval: "90d".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAudit {
    pub(super) retention: String,
    pub(super) flow_window: String,
    /// Default: `audit.key` beside `[gateway] private_key_file` (the service's state folder).
    pub(super) signing_key_file: Option<PathBuf>,
    /// Default: `audit-checkpoints.jsonl` beside `[gateway] private_key_file`.
    pub(super) checkpoint_file: Option<PathBuf>,
    pub(super) checkpoint_interval: String,
}

impl Default for RawAudit {
    fn default() -> Self {
        RawAudit {
            retention: "400d".into(),
            flow_window: "60s".into(),
            signing_key_file: None,
            checkpoint_file: None,
            checkpoint_interval: "1h".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLog {
    pub(super) format: String,
    pub(super) level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawMetrics {
    pub(super) listen: String,
}

impl Default for RawMetrics {
    fn default() -> Self {
        RawMetrics {
            listen: "127.0.0.1:9108".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawResource {
    pub(super) name: String,
    #[serde(default)]
    pub(super) site: String,
    #[serde(default)]
    pub(super) description: String,
    pub(super) allow: Vec<String>,
    /// Reached only inside an access window opened with the second factor (needs `[mfa]`).
    #[serde(default)]
    pub(super) mfa: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawMfa {
    pub(super) provider: String,
    pub(super) session: String,
    pub(super) idle: String,
    pub(super) web_roles: Vec<String>,
    /// Default: `mfa.key` beside `[gateway] private_key_file` (the service's state folder).
    pub(super) secret_key_file: Option<PathBuf>,
    /// `[mfa.radius]`, with `provider = "radius"`.
    pub(super) radius: Option<RawRadius>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRadius {
    pub(super) servers: Vec<String>,
    pub(super) secret_file: PathBuf,
    #[serde(default = "default_radius_timeout")]
    pub(super) timeout: String,
}

fn default_radius_timeout() -> String {
    "3s".into()
}

impl Default for RawMfa {
    fn default() -> Self {
        RawMfa {
            provider: "totp".into(),
            session: "10h".into(),
            idle: "30m".into(),
            web_roles: vec!["it_staff".into(), "auditors".into()],
            secret_key_file: None,
            radius: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGrant {
    pub(super) group: String,
    pub(super) resources: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeer {
    pub(super) name: String,
    pub(super) public_key: String,
    pub(super) address: String,
    #[serde(default)]
    pub(super) resources: Vec<String>,
    pub(super) persistent_keepalive: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSite {
    pub(super) name: String,
    pub(super) endpoint: String,
    pub(super) public_key: String,
}
