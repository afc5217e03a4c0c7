//! The TOML configuration: its keys, their defaults, and validation errors naming file, line and key.
//!
//! Every key is documented in `config/sesame.toml`; each default is defined once, here.
//! Loading is all-or-nothing: the first error stops everything before any part starts.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use ipnet::{IpNet, Ipv4Net};
use serde::Deserialize;

use crate::policy::{Policy, Resource, Rule};

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
    pub peers: Vec<StaticPeer>,
    /// Resources and grants, compiled.
    pub policy: Policy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalConfig {
    pub listen: SocketAddr,
    pub public_url: String,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
}

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
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolesConfig {
    pub vpn_users: Vec<String>,
    pub it_staff: Vec<String>,
    pub auditors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    pub retention: Duration,
}

/// A fixed peer from `[[peer]]`: no enrolment, always present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticPeer {
    pub name: String,
    pub public_key: [u8; 32],
    pub address: Ipv4Addr,
    pub resources: Vec<String>,
    pub persistent_keepalive: Option<u16>,
}

// ---- raw, as written in the file -------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    portal: RawPortal,
    #[serde(default)]
    gateway: RawGateway,
    #[serde(default)]
    database: RawDatabase,
    directory: Option<RawDirectory>,
    #[serde(default)]
    roles: RawRoles,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    resource: Vec<RawResource>,
    #[serde(default)]
    grant: Vec<RawGrant>,
    #[serde(default)]
    peer: Vec<RawPeer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPortal {
    listen: String,
    public_url: String,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
}

impl Default for RawPortal {
    fn default() -> Self {
        RawPortal {
            listen: "127.0.0.1:8080".into(),
            public_url: "http://127.0.0.1:8080".into(),
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawGateway {
    listen: String,
    endpoint: String,
    interface: String,
    tunnel_network: String,
    private_key_file: PathBuf,
    dns: Vec<String>,
    mtu: u16,
    threads: usize,
    flow_idle_timeout: String,
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
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDatabase {
    url: String,
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
struct RawDirectory {
    #[serde(default = "default_kind")]
    kind: String,
    url: String,
    #[serde(default)]
    starttls: bool,
    #[serde(default)]
    insecure_plaintext: bool,
    ca_file: Option<PathBuf>,
    bind_dn: String,
    bind_password_file: PathBuf,
    user_base: String,
    user_filter: Option<String>,
    group_base: String,
    #[serde(default = "default_sync_interval")]
    sync_interval: String,
    #[serde(default = "default_directory_timeout")]
    timeout: String,
}

fn default_kind() -> String {
    "openldap".into()
}
fn default_sync_interval() -> String {
    "60s".into()
}
fn default_directory_timeout() -> String {
    "5s".into()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawRoles {
    vpn_users: Vec<String>,
    it_staff: Vec<String>,
    auditors: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAudit {
    retention: String,
}

impl Default for RawAudit {
    fn default() -> Self {
        RawAudit {
            retention: "400d".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResource {
    name: String,
    #[serde(default)]
    site: String,
    #[serde(default)]
    description: String,
    allow: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    group: String,
    resources: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    name: String,
    public_key: String,
    address: String,
    #[serde(default)]
    resources: Vec<String>,
    persistent_keepalive: Option<u16>,
}

// ---- loading -----------------------------------------------------------------------------

/// A key path inside the document: table keys and array indices.
#[derive(Debug, Clone)]
enum Seg {
    Key(&'static str),
    Index(usize),
}

fn key(k: &'static str) -> Seg {
    Seg::Key(k)
}
fn idx(i: usize) -> Seg {
    Seg::Index(i)
}

fn path_string(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Locates keys in the source text (toml_edit keeps spans; serde's view does not).
struct Locator<'a> {
    file: &'a Path,
    text: &'a str,
    doc: Option<toml_edit::ImDocument<&'a str>>,
}

impl<'a> Locator<'a> {
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1
    }

    fn span(&self, path: &[Seg]) -> Option<Range<usize>> {
        let doc = self.doc.as_ref()?;
        let mut item: &toml_edit::Item = doc.as_item();
        let mut last_span = None;
        for seg in path {
            let next = match seg {
                Seg::Key(k) => match item {
                    toml_edit::Item::Table(t) => {
                        if let Some((kk, _)) = t.get_key_value(k) {
                            last_span = kk.span().or(last_span);
                        }
                        t.get(k)
                    }
                    toml_edit::Item::Value(toml_edit::Value::InlineTable(t)) => {
                        if let Some((kk, _)) = t.get_key_value(k) {
                            last_span = kk.span().or(last_span);
                        }
                        t.get(k).map(|_| &item[*k])
                    }
                    _ => None,
                },
                Seg::Index(i) => match item {
                    toml_edit::Item::ArrayOfTables(a) => a.get(*i).map(|_| &item[*i]),
                    toml_edit::Item::Value(toml_edit::Value::Array(a)) => {
                        a.get(*i).map(|_| &item[*i])
                    }
                    _ => None,
                },
            };
            match next {
                Some(n) => {
                    item = n;
                    if let Some(s) = item.span() {
                        last_span = Some(s);
                    }
                }
                None => break,
            }
        }
        last_span
    }

    fn error(&self, path: &[Seg], message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: self.span(path).map(|s| self.line_of(s.start)),
            key: path_string(path),
            message: message.into(),
        }
    }

    /// The dotted key whose value covers `offset`, for serde errors that only carry a span.
    fn key_at(&self, offset: usize) -> String {
        fn walk(item: &toml_edit::Item, offset: usize, out: &mut String) {
            let within = |s: Option<Range<usize>>| {
                s.is_some_and(|s| s.start <= offset && offset < s.end.max(s.start + 1))
            };
            match item {
                toml_edit::Item::Table(t) => {
                    for (k, v) in t.iter() {
                        let key_span = t.key(k).and_then(|kk| kk.span());
                        if within(v.span())
                            || within(key_span)
                            || matches!(
                                v,
                                toml_edit::Item::Table(_) | toml_edit::Item::ArrayOfTables(_)
                            ) && contains(v, offset)
                        {
                            if !out.is_empty() {
                                out.push('.');
                            }
                            out.push_str(k);
                            walk(v, offset, out);
                            return;
                        }
                    }
                }
                toml_edit::Item::ArrayOfTables(a) => {
                    for (i, t) in a.iter().enumerate() {
                        let as_item = toml_edit::Item::Table(t.clone());
                        if contains(&as_item, offset) {
                            out.push_str(&format!("[{i}]"));
                            walk(&as_item, offset, out);
                            return;
                        }
                    }
                }
                toml_edit::Item::Value(toml_edit::Value::Array(a)) => {
                    for (i, v) in a.iter().enumerate() {
                        if within(v.span()) {
                            out.push_str(&format!("[{i}]"));
                            return;
                        }
                    }
                }
                _ => {}
            }
        }
        /// Whether a table (whose own span is only its header) holds `offset` in any value.
        fn contains(item: &toml_edit::Item, offset: usize) -> bool {
            let hit = |s: Option<Range<usize>>| {
                s.is_some_and(|s| s.start <= offset && offset < s.end.max(s.start + 1))
            };
            match item {
                toml_edit::Item::Table(t) => {
                    hit(t.span())
                        || t.iter().any(|(k, v)| {
                            hit(t.key(k).and_then(|kk| kk.span()))
                                || hit(v.span())
                                || contains(v, offset)
                        })
                }
                toml_edit::Item::ArrayOfTables(a) => a
                    .iter()
                    .any(|t| contains(&toml_edit::Item::Table(t.clone()), offset)),
                other => hit(other.span()),
            }
        }
        let mut out = String::new();
        if let Some(doc) = &self.doc {
            walk(doc.as_item(), offset, &mut out);
        }
        out
    }
}

/// Parses a duration such as `500ms`, `60s`, `30m`, `72h` or `400d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("invalid duration {s:?}: write a number and a unit, e.g. 60s, 30m, 72h, 7d")
    })?;
    let secs = match unit.trim() {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" | "" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?}: use ms, s, m, h or d (e.g. 72h)"
            ))
        }
    };
    Ok(Duration::from_secs(secs))
}

/// Decodes a base64 WireGuard key (32 bytes).
pub fn parse_key(s: &str) -> Result<[u8; 32], String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|_| "not valid base64: a WireGuard key is 44 characters ending in '=' (as printed by `wg pubkey`)".to_string())?;
    bytes
        .try_into()
        .map_err(|_| "a WireGuard key is 32 bytes (44 base64 characters)".to_string())
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
        validate(raw, &loc, base)
    }
}

fn resolve(base: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}

fn validate(raw: RawConfig, loc: &Locator<'_>, base: &Path) -> Result<Config, ConfigError> {
    let socket = |path: &[Seg], s: &str| -> Result<SocketAddr, ConfigError> {
        s.parse().map_err(|_| {
            loc.error(
                path,
                format!("invalid address {s:?}: expected IP:PORT such as 0.0.0.0:51820"),
            )
        })
    };
    let duration = |path: &[Seg], s: &str| parse_duration(s).map_err(|m| loc.error(path, m));

    // [portal]
    let portal = PortalConfig {
        listen: socket(&[key("portal"), key("listen")], &raw.portal.listen)?,
        public_url: {
            let u = raw.portal.public_url.trim_end_matches('/').to_string();
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                return Err(loc.error(
                    &[key("portal"), key("public_url")],
                    "must start with https:// (or http:// for a lab)",
                ));
            }
            u
        },
        tls_cert_file: raw.portal.tls_cert_file.map(|p| resolve(base, p)),
        tls_key_file: raw.portal.tls_key_file.map(|p| resolve(base, p)),
    };
    if portal.tls_cert_file.is_some() != portal.tls_key_file.is_some() {
        return Err(loc.error(
            &[key("portal"), key("tls_cert_file")],
            "tls_cert_file and tls_key_file go together: set both, or neither",
        ));
    }

    // [gateway]
    let g = raw.gateway;
    let tunnel_network: Ipv4Net = g.tunnel_network.parse().map_err(|_| {
        loc.error(
            &[key("gateway"), key("tunnel_network")],
            format!(
                "invalid IPv4 network {:?}: expected a CIDR such as 100.64.0.0/16",
                g.tunnel_network
            ),
        )
    })?;
    if tunnel_network.prefix_len() > 30 {
        return Err(loc.error(
            &[key("gateway"), key("tunnel_network")],
            "the tunnel network is too small: use a /30 or larger (e.g. /16)",
        ));
    }
    let tunnel_network = tunnel_network.trunc();
    let gateway_address = tunnel_network
        .hosts()
        .next()
        .unwrap_or(tunnel_network.network());
    if g.interface.is_empty()
        || g.interface.len() > 15
        || !g
            .interface
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(loc.error(
            &[key("gateway"), key("interface")],
            format!(
                "invalid interface name {:?}: 1 to 15 letters, digits, '-', '_' or '.'",
                g.interface
            ),
        ));
    }
    let mut dns = Vec::new();
    for (i, d) in g.dns.iter().enumerate() {
        dns.push(d.parse::<IpAddr>().map_err(|_| {
            loc.error(
                &[key("gateway"), key("dns"), idx(i)],
                format!("invalid IP address {d:?}"),
            )
        })?);
    }
    if !(1280..=9000).contains(&g.mtu) {
        return Err(loc.error(
            &[key("gateway"), key("mtu")],
            "mtu must be between 1280 and 9000",
        ));
    }
    if g.endpoint
        .rsplit_once(':')
        .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
    {
        return Err(loc.error(
            &[key("gateway"), key("endpoint")],
            format!(
                "invalid endpoint {:?}: expected HOST:PORT such as vpn.example.org:51820",
                g.endpoint
            ),
        ));
    }
    let gateway = GatewayConfig {
        listen: socket(&[key("gateway"), key("listen")], &g.listen)?,
        endpoint: g.endpoint,
        interface: g.interface,
        tunnel_network,
        address: gateway_address,
        private_key_file: resolve(base, g.private_key_file),
        dns,
        mtu: g.mtu,
        threads: g.threads,
        flow_idle_timeout: duration(
            &[key("gateway"), key("flow_idle_timeout")],
            &g.flow_idle_timeout,
        )?,
    };

    // [database]
    let url = raw.database.url;
    if !(url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://"))
    {
        return Err(loc.error(
            &[key("database"), key("url")],
            "unsupported database URL: use sqlite:///path/to/sesame.db or postgres://user@host/db",
        ));
    }
    let database = DatabaseConfig { url };

    // [directory]
    let directory = match raw.directory {
        None => None,
        Some(d) => {
            let k = |name: &'static str| [key("directory"), key(name)];
            let kind = match d.kind.as_str() {
                "openldap" => DirectoryKind::OpenLdap,
                "active-directory" => DirectoryKind::ActiveDirectory,
                other => {
                    return Err(loc.error(
                        &k("kind"),
                        format!("unknown directory kind {other:?}: use \"openldap\" or \"active-directory\""),
                    ))
                }
            };
            if d.url.starts_with("ldap://") {
                if !d.starttls && !d.insecure_plaintext && !is_loopback_url(&d.url) {
                    return Err(loc.error(
                        &k("url"),
                        "ldap:// would send passwords in clear over the network: use ldaps://, or set starttls = true, or (not recommended) insecure_plaintext = true",
                    ));
                }
            } else if !d.url.starts_with("ldaps://") {
                return Err(loc.error(
                    &k("url"),
                    "the directory URL must start with ldaps:// or ldap://",
                ));
            }
            if d.starttls && d.url.starts_with("ldaps://") {
                return Err(loc.error(
                    &k("starttls"),
                    "starttls is for ldap:// URLs; ldaps:// is already encrypted",
                ));
            }
            let user_filter = d.user_filter.unwrap_or_else(|| match kind {
                DirectoryKind::OpenLdap => "(uid={username})".into(),
                DirectoryKind::ActiveDirectory => "(sAMAccountName={username})".into(),
            });
            if !user_filter.contains("{username}") {
                return Err(loc.error(
                    &k("user_filter"),
                    "the filter must contain {username}, e.g. (uid={username})",
                ));
            }
            Some(DirectoryConfig {
                kind,
                url: d.url,
                starttls: d.starttls,
                insecure_plaintext: d.insecure_plaintext,
                ca_file: d.ca_file.map(|p| resolve(base, p)),
                bind_dn: d.bind_dn,
                bind_password_file: resolve(base, d.bind_password_file),
                user_base: d.user_base,
                user_filter,
                group_base: d.group_base,
                sync_interval: duration(&k("sync_interval"), &d.sync_interval)?,
                timeout: duration(&k("timeout"), &d.timeout)?,
            })
        }
    };

    let roles = RolesConfig {
        vpn_users: raw.roles.vpn_users,
        it_staff: raw.roles.it_staff,
        auditors: raw.roles.auditors,
    };
    let audit = AuditConfig {
        retention: duration(&[key("audit"), key("retention")], &raw.audit.retention)?,
    };

    // [[resource]] and [[grant]]
    let mut resources = Vec::new();
    for (i, r) in raw.resource.into_iter().enumerate() {
        if r.name.trim().is_empty() {
            return Err(loc.error(
                &[key("resource"), idx(i), key("name")],
                "a resource needs a name",
            ));
        }
        if resources.iter().any(|x: &Resource| x.name == r.name) {
            return Err(loc.error(
                &[key("resource"), idx(i), key("name")],
                format!("duplicate resource name {:?}", r.name),
            ));
        }
        let mut rules = Vec::new();
        for (j, a) in r.allow.iter().enumerate() {
            let rule = a.parse::<Rule>().map_err(|e: crate::policy::RuleError| {
                loc.error(
                    &[key("resource"), idx(i), key("allow"), idx(j)],
                    e.to_string(),
                )
            })?;
            rules.push(rule);
        }
        resources.push(Resource {
            name: r.name,
            site: r.site,
            description: r.description,
            rules,
        });
    }
    let mut policy = Policy::new(resources);
    for (i, g) in raw.grant.iter().enumerate() {
        if g.group.trim().is_empty() {
            return Err(loc.error(
                &[key("grant"), idx(i), key("group")],
                "a grant needs a group DN",
            ));
        }
        for (j, name) in g.resources.iter().enumerate() {
            if policy.resource(name).is_none() {
                return Err(loc.error(
                    &[key("grant"), idx(i), key("resources"), idx(j)],
                    format!("unknown resource {name:?}: define it in a [[resource]] section"),
                ));
            }
        }
        policy
            .grant(&g.group, &g.resources)
            .map_err(|e| loc.error(&[key("grant"), idx(i), key("resources")], e.to_string()))?;
    }

    // [[peer]]
    let mut peers: Vec<StaticPeer> = Vec::new();
    for (i, p) in raw.peer.into_iter().enumerate() {
        let at = |name: &'static str| [key("peer"), idx(i), key(name)];
        let public_key = parse_key(&p.public_key).map_err(|m| loc.error(&at("public_key"), m))?;
        let address: Ipv4Addr = p.address.trim_end_matches("/32").parse().map_err(|_| {
            loc.error(
                &at("address"),
                format!("invalid IPv4 address {:?}", p.address),
            )
        })?;
        if !tunnel_network.contains(&address)
            || address == tunnel_network.network()
            || address == tunnel_network.broadcast()
        {
            return Err(loc.error(
                &at("address"),
                format!(
                    "{address} is not a host address of gateway.tunnel_network {tunnel_network}"
                ),
            ));
        }
        if address == gateway_address {
            return Err(loc.error(
                &at("address"),
                format!("{address} is the gateway's own tunnel address"),
            ));
        }
        if let Some(other) = peers.iter().find(|o| o.address == address) {
            return Err(loc.error(
                &at("address"),
                format!(
                    "duplicate tunnel address {address}: already used by peer {:?}",
                    other.name
                ),
            ));
        }
        if let Some(other) = peers.iter().find(|o| o.public_key == public_key) {
            return Err(loc.error(
                &at("public_key"),
                format!(
                    "duplicate public key: already used by peer {:?}",
                    other.name
                ),
            ));
        }
        if peers.iter().any(|o| o.name == p.name) {
            return Err(loc.error(&at("name"), format!("duplicate peer name {:?}", p.name)));
        }
        for (j, name) in p.resources.iter().enumerate() {
            if policy.resource(name).is_none() {
                return Err(loc.error(
                    &[key("peer"), idx(i), key("resources"), idx(j)],
                    format!("unknown resource {name:?}: define it in a [[resource]] section"),
                ));
            }
        }
        peers.push(StaticPeer {
            name: p.name,
            public_key,
            address,
            resources: p.resources,
            persistent_keepalive: p.persistent_keepalive,
        });
    }

    Ok(Config {
        path: loc.file.to_path_buf(),
        portal,
        gateway,
        database,
        directory,
        roles,
        audit,
        peers,
        policy,
    })
}

/// Checks that a network overlaps nothing unexpected; kept for callers that compare networks.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "mB1Xmcm9Bqi8Dxy9Yz6rIHzC9jJbYp7vDXXHa+VfRVI=";
    const KEY_B: &str = "Ly6ppXE4y6xWZMHAAP9t2QgYV9jB8Ew3IU6m2lFnrGo=";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/sesame/sesame.toml"), text)
    }

    fn err(text: &str) -> ConfigError {
        parse(text).expect_err("config should be refused")
    }

    #[test]
    fn defaults_apply_to_an_empty_file() {
        let c = parse("").expect("empty config is valid");
        assert_eq!(c.gateway.listen, "0.0.0.0:51820".parse().expect("addr"));
        assert_eq!(c.gateway.tunnel_network.to_string(), "100.64.0.0/16");
        assert_eq!(c.gateway.address, Ipv4Addr::new(100, 64, 0, 1));
        assert_eq!(c.gateway.mtu, 1420);
        assert_eq!(c.audit.retention, Duration::from_secs(400 * 86_400));
        assert!(c.directory.is_none());
    }

    #[test]
    fn full_example_parses() {
        let c = parse(&format!(
            r#"
[gateway]
listen = "198.18.0.1:51820"
tunnel_network = "100.64.0.0/24"
private_key_file = "gw.key"

[[resource]]
name = "paie"
allow = ["198.18.10.10/32 tcp:443,8443", "198.18.10.0/28 icmp"]

[[grant]]
group = "cn=paie,ou=groups,dc=example,dc=org"
resources = ["paie"]

[[peer]]
name = "supervision"
public_key = "{KEY_A}"
address = "100.64.0.10"
resources = ["paie"]
"#
        ))
        .expect("valid");
        assert_eq!(c.peers.len(), 1);
        assert_eq!(
            c.gateway.private_key_file,
            PathBuf::from("/etc/sesame/gw.key")
        );
        let rules = c
            .policy
            .rules_for_resources(c.peers[0].resources.iter().map(String::as_str));
        assert_eq!(rules.rules().len(), 2);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = err("[gateway]\nlisten = \"0.0.0.0:1\"\nlisen = \"x\"\n");
        assert_eq!(e.file, PathBuf::from("/etc/sesame/sesame.toml"));
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("lisen"), "{e}");
        assert!(
            e.to_string().starts_with("/etc/sesame/sesame.toml:3"),
            "{e}"
        );
    }

    #[test]
    fn invalid_cidr_in_resource_names_the_rule() {
        let e = err("[[resource]]\nname = \"paie\"\nallow = [\n  \"198.18.10.10/32 tcp:443\",\n  \"198.18.10.300/32\",\n]\n");
        assert_eq!(e.key, "resource[0].allow[1]");
        assert_eq!(e.line, Some(5));
        assert!(e.message.contains("invalid network"), "{e}");
    }

    #[test]
    fn invalid_port_is_refused() {
        let e = err("[[resource]]\nname = \"paie\"\nallow = [\"198.18.10.10/32 tcp:99999\"]\n");
        assert_eq!(e.key, "resource[0].allow[0]");
        assert_eq!(e.line, Some(3));
    }

    #[test]
    fn duplicate_tunnel_address_is_refused() {
        let e = err(&format!(
            "[[peer]]\nname = \"a\"\npublic_key = \"{KEY_A}\"\naddress = \"100.64.0.10\"\n\n[[peer]]\nname = \"b\"\npublic_key = \"{KEY_B}\"\naddress = \"100.64.0.10\"\n"
        ));
        assert_eq!(e.key, "peer[1].address");
        assert_eq!(e.line, Some(9));
        assert!(e.message.contains("duplicate tunnel address"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = err("[gateway]\nlisten = \"nowhere\"\n");
        assert_eq!((e.key.as_str(), e.line), ("gateway.listen", Some(2)));
        let e = err("[gateway]\ntunnel_network = \"100.64.0.0/40\"\n");
        assert_eq!(
            (e.key.as_str(), e.line),
            ("gateway.tunnel_network", Some(2))
        );
        let e = err("[gateway]\nmtu = \"big\"\n");
        assert_eq!((e.key.as_str(), e.line), ("gateway.mtu", Some(2)));
        let e = err(&format!(
            "[[peer]]\nname = \"a\"\npublic_key = \"{KEY_A}\"\naddress = \"10.0.0.1\"\n"
        ));
        assert_eq!((e.key.as_str(), e.line), ("peer[0].address", Some(4)));
        let e = err("[[peer]]\nname = \"a\"\npublic_key = \"short\"\naddress = \"100.64.0.9\"\n");
        assert_eq!((e.key.as_str(), e.line), ("peer[0].public_key", Some(3)));
        let e = err("[[grant]]\ngroup = \"cn=x\"\nresources = [\"nope\"]\n");
        assert_eq!((e.key.as_str(), e.line), ("grant[0].resources[0]", Some(3)));
    }

    #[test]
    fn syntax_error_has_a_line() {
        let e = err("[gateway]\nlisten = \n");
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn plaintext_ldap_over_network_needs_explicit_consent() {
        let dir = |url: &str, extra: &str| -> String {
            format!("[directory]\nurl = \"{url}\"\nbind_dn = \"cn=s\"\nbind_password_file = \"p\"\nuser_base = \"ou=p\"\ngroup_base = \"ou=g\"\n{extra}")
        };
        let e = err(&dir("ldap://ldap.example.org", ""));
        assert_eq!(e.key, "directory.url");
        assert!(parse(&dir("ldap://127.0.0.1:3890", "")).is_ok());
        assert!(parse(&dir("ldap://ldap.example.org", "starttls = true")).is_ok());
        assert!(parse(&dir("ldap://ldap.example.org", "insecure_plaintext = true")).is_ok());
        assert!(parse(&dir("ldaps://ldap.example.org", "")).is_ok());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("72h"), Ok(Duration::from_secs(72 * 3600)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("3 weeks").is_err());
        assert!(parse_duration("h").is_err());
    }
}
