//! The TOML configuration: its keys, their defaults, and validation errors naming file, line and key.
//!
//! Every key is documented in `config/sesame.toml`; each default is defined once, here.
//! Loading is all-or-nothing: the first error stops everything before any part starts.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;

use crate::policy::Policy;

#[cfg(test)]
#[path = "documented_tests.rs"]
mod documented;
mod live;
mod locate;
#[cfg(test)]
#[path = "mfa_tests.rs"]
mod mfa_tests;
mod raw;
mod site;
mod sites;
#[cfg(test)]
#[path = "sites_tests.rs"]
mod sites_tests;
#[cfg(test)]
mod tests;
mod validate;

pub use live::LiveConfig;
use locate::Locator;
use raw::RawConfig;
pub use site::SiteGatewayConfig;

/// A configuration error: where it is and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line, when the error can be located in the file.
    pub line: Option<usize>,
    /// Dotted key path, such as `gateway.listen` or `resource[1].allow[0]`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": key `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (relative paths inside are resolved against its folder).
    pub path: PathBuf,
    pub portal: PortalConfig,
    pub gateway: GatewayConfig,
    pub database: DatabaseConfig,
    /// Absent in a gateway-only configuration.
    pub directory: Option<DirectoryConfig>,
    pub roles: RolesConfig,
    pub audit: AuditConfig,
    pub devices: DevicesConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    /// `[mfa]`: the second factor is on when the section is present.
    pub mfa: Option<MfaConfig>,
    pub peers: Vec<StaticPeer>,
    /// `[[site]]`: the site gateways a portal feeds (empty for a one-site install).
    pub sites: Vec<Site>,
    /// Resources and grants, compiled.
    pub policy: Policy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalConfig {
    pub listen: SocketAddr,
    pub public_url: String,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// A plain-http `public_url` outside loopback was allowed explicitly (labs; logged).
    pub insecure_plaintext: bool,
    /// How agents reach IT support (printed on enrolment sheets); empty: a generic sentence.
    pub helpdesk: String,
    /// A signed-in user's groups older than this are re-read from the directory on their next
    /// request (roles follow the directory even between syncs).
    pub role_refresh: Duration,
    /// Reverse proxies whose `X-Forwarded-For` / `Forwarded` headers are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Failed logins and enrolments per minute across every account past which only known
    /// devices may try (a password spray); 0 turns the ceiling off.
    pub spray_ceiling: u32,
    /// The portal key codes are hashed with (0600, created on first start, outside the
    /// database; one per académie).
    pub secret_key_file: PathBuf,
    /// Connections one client address may hold open at once (trusted proxies exempt).
    pub max_connections_per_source: usize,
}

/// `[portal] max_connections_per_source` by default: a browser opens 6 per host, a school
/// behind one NAT a few dozen at once.
pub const DEFAULT_MAX_CONNECTIONS_PER_SOURCE: usize = 64;

/// `[portal] spray_ceiling` by default: at 1.2 million logins a day, a busy morning minute sees
/// some 7,000 attempts and a few hundred failures; 1,000 failures a minute is a spray.
pub const DEFAULT_SPRAY_CEILING: u32 = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    pub endpoint: String,
    pub interface: String,
    pub tunnel_network: Ipv4Net,
    /// The gateway's own address inside the tunnel: the network's first host.
    pub address: Ipv4Addr,
    pub private_key_file: PathBuf,
    pub dns: Vec<IpAddr>,
    pub mtu: u16,
    /// Packet worker threads; 0 means one per core.
    pub threads: usize,
    /// Idle time after which a tracked flow is forgotten.
    pub flow_idle_timeout: Duration,
    /// A fail-static peer cache older than this is refused at start (the gateway then waits
    /// for its database or portal).
    pub max_cache_age: Duration,
    /// The site this gateway serves (`sesame gateway --site` overrides it).
    pub site: Option<String>,
    /// The portals a site gateway is fed by, tried in turn (`https://…`).
    pub portals: Vec<String>,
    /// The site token (printed by `sesame site token` on the portal host).
    pub portal_token_file: Option<PathBuf>,
    /// PEM file of the portals' private CA (else the system's trusted CAs).
    pub portal_ca_file: Option<PathBuf>,
    /// A plain-http portal outside loopback was allowed explicitly (labs).
    pub insecure_plaintext: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    pub url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectoryKind {
    OpenLdap,
    ActiveDirectory,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryConfig {
    pub kind: DirectoryKind,
    pub url: String,
    pub starttls: bool,
    pub insecure_plaintext: bool,
    pub ca_file: Option<PathBuf>,
    pub bind_dn: String,
    pub bind_password_file: PathBuf,
    pub user_base: String,
    /// Search filter with `{username}` replaced by the RFC 4515-escaped login.
    pub user_filter: String,
    pub group_base: String,
    pub sync_interval: Duration,
    pub timeout: Duration,
    /// Most devices one sync pass may suspend or revoke before it waits for an operator.
    pub max_changes_per_sync: MaxChanges,
    /// How long suspended devices wait for their user to come back before being revoked.
    pub suspend_grace: Duration,
}

/// `[directory] max_changes_per_sync`: an absolute number of devices, or a share of the
/// active devices with a floor of [`MaxChanges::PERCENT_FLOOR`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxChanges {
    Count(usize),
    Percent(u32),
}

impl MaxChanges {
    /// A percentage never allows fewer changes than this (small deployments, one leaver).
    pub const PERCENT_FLOOR: usize = 10;

    /// Parses `"5%"` or `"20"`.
    pub fn parse(s: &str) -> Result<MaxChanges, String> {
        let t = s.trim();
        let bad = || {
            format!("invalid value {s:?}: write a number of devices (\"20\") or a percentage of the active devices (\"5%\")")
        };
        match t.strip_suffix('%') {
            Some(p) => {
                let p: u32 = p.trim().parse().map_err(|_| bad())?;
                if p > 100 {
                    return Err(format!("invalid percentage {s:?}: at most 100%"));
                }
                Ok(MaxChanges::Percent(p))
            }
            None => t.parse().map(MaxChanges::Count).map_err(|_| bad()),
        }
    }

    /// How many devices a pass may suspend or revoke with `active` active devices.
    pub fn limit(self, active: usize) -> usize {
        match self {
            MaxChanges::Count(n) => n,
            MaxChanges::Percent(p) => {
                let share = (active.saturating_mul(p as usize)).div_ceil(100);
                share.max(Self::PERCENT_FLOOR)
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolesConfig {
    pub vpn_users: Vec<String>,
    pub it_staff: Vec<String>,
    pub auditors: Vec<String>,
    /// `[[roles.delegated]]`: technician groups limited to the users of one scope group.
    pub delegated: Vec<DelegatedRole>,
}

/// A delegated IT group: its members manage only the members of `scope` (one DSDEN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegatedRole {
    /// Group DN of the technicians.
    pub it_staff: String,
    /// Group DN of the users they manage.
    pub scope: String,
}

/// `[devices]`: how long a device key (and its token) lives, and how far rotations may
/// extend a device without a fresh enrolment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevicesConfig {
    pub key_lifetime: Duration,
    pub max_lifetime: Duration,
    /// With `[mfa]`: a device whose owner has not used the second factor for this long cannot
    /// rotate with its bearer token alone.
    pub reauth_interval: Duration,
}

/// `[mfa] provider`: who checks one-time codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MfaProvider {
    /// RFC 6238 codes of an authenticator application; secrets registered with Sesame.
    Totp,
    /// The académie's OTP server (RADIUS Access-Request).
    Radius,
}

/// The web roles `[mfa] web_roles` may name (the role names of `[roles]`).
pub const MFA_WEB_ROLES: [&str; 3] = ["vpn_users", "it_staff", "auditors"];

/// `[mfa]`: the second factor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfaConfig {
    pub provider: MfaProvider,
    /// How long an access window to `mfa = true` resources stays open.
    pub session: Duration,
    /// A window closes early after this long without a packet to a protected resource.
    pub idle: Duration,
    /// `[roles]` names whose web login needs the second factor (`it_staff`, `auditors`…).
    pub web_roles: Vec<String>,
    /// The key sealing TOTP secrets (0600, created on first start).
    pub secret_key_file: PathBuf,
    /// `[mfa.radius]`: set when `provider = "radius"`.
    pub radius: Option<RadiusConfig>,
}

/// `[mfa.radius]`: the académie's OTP servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RadiusConfig {
    /// Tried in order; a server silent for `timeout` passes to the next.
    pub servers: Vec<SocketAddr>,
    /// The shared secret, one line, 0600 (read at start).
    pub secret_file: PathBuf,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// Events older than this are purged daily; zero keeps everything.
    pub retention: Duration,
    /// Aggregation window of `flow.allowed` / `flow.denied` records (1 s to 1 h).
    pub flow_window: Duration,
    /// The Ed25519 key that signs checkpoints (0600, outside the database).
    pub signing_key_file: PathBuf,
    /// Signed chain heads, one JSON line each, append-only (outside the database).
    pub checkpoint_file: PathBuf,
    /// How often a checkpoint is written (also at every purge and at shutdown).
    pub checkpoint_interval: Duration,
}

/// How logs are written to stderr (journald picks them up there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub format: LogFormat,
    /// `error`, `warn`, `info`, `debug` or `trace`; `RUST_LOG`, when set, takes precedence.
    pub level: LogLevel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub const NAMES: [&'static str; 5] = ["error", "warn", "info", "debug", "trace"];

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    fn parse(s: &str) -> Option<LogLevel> {
        const ALL: [LogLevel; 5] = [
            LogLevel::Error,
            LogLevel::Warn,
            LogLevel::Info,
            LogLevel::Debug,
            LogLevel::Trace,
        ];
        ALL.into_iter().find(|l| l.name() == s)
    }
}

/// The Prometheus listener, apart from the public portal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
}

/// A site gateway from `[[site]]`: what laptops dial for the site's resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// Unique; `[[resource]] site` names it.
    pub name: String,
    /// `host:port` the laptops dial for this site.
    pub endpoint: String,
    /// That gateway's key (printed by `sesame keygen` on its host).
    pub public_key: crate::key::PublicKey,
}

/// The site name of `sesame serve`'s own gateway in `DeviceConfig.peers` and the audit log.
pub const LOCAL_SITE: &str = "local";

impl Config {
    /// The `[[site]]` named `name`.
    pub fn site(&self, name: &str) -> Option<&Site> {
        self.sites.iter().find(|s| s.name == name)
    }
}

/// A fixed peer from `[[peer]]`: no enrolment, always present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticPeer {
    pub name: String,
    pub public_key: crate::key::PublicKey,
    pub address: Ipv4Addr,
    pub resources: Vec<String>,
    pub persistent_keepalive: Option<u16>,
}

fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Config {
    /// The secret files this configuration names, with their key: the gateway key, the portal's
    /// TLS key and the directory password file.
    pub fn secret_files(&self) -> Vec<(&'static str, &Path)> {
        let mut files = vec![(
            "gateway.private_key_file",
            self.gateway.private_key_file.as_path(),
        )];
        files.push((
            "audit.signing_key_file",
            self.audit.signing_key_file.as_path(),
        ));
        files.push((
            "portal.secret_key_file",
            self.portal.secret_key_file.as_path(),
        ));
        if let Some(mfa) = &self.mfa {
            files.push(("mfa.secret_key_file", mfa.secret_key_file.as_path()));
        }
        if let Some(key) = &self.portal.tls_key_file {
            files.push(("portal.tls_key_file", key.as_path()));
        }
        if let Some(d) = &self.directory {
            files.push((
                "directory.bind_password_file",
                d.bind_password_file.as_path(),
            ));
        }
        files
    }

    /// Refuses to start when a secret file group or others may read (see [`crate::secret_file`]);
    /// a missing file is left to the part that reads it, which says how to create it.
    pub fn check_secret_files(&self) -> Result<(), crate::secret_file::SecretFileError> {
        for (what, path) in self.secret_files() {
            match crate::secret_file::check(path, what) {
                Err(e) if !e.is_missing() => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            key: String::new(),
            message: format!("cannot read the configuration file: {e}"),
        })?;
        Config::parse(path, &text)
    }

    /// Validates configuration text; `path` names it in errors and anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let doc = toml_edit::ImDocument::parse(text);
        let loc = Locator {
            file: path,
            text,
            doc: doc.as_ref().ok().cloned(),
        };
        if let Err(e) = doc {
            return Err(ConfigError {
                file: path.to_path_buf(),
                line: e.span().map(|s| loc.line_of(s.start)),
                key: String::new(),
                message: format!("TOML syntax error: {}", e.message()),
            });
        }
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|s| s.start);
            ConfigError {
                file: path.to_path_buf(),
                line: offset.map(|o| loc.line_of(o)),
                key: offset.map(|o| loc.key_at(o)).unwrap_or_default(),
                message: e.message().to_string(),
            }
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        validate::validate(raw, &loc, base)
    }
}
