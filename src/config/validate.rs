//! Semantic validation: raw values to typed configuration, each error located by its key path.
//!
//! One function per section, called in the file's order: the first error found is the one
//! reported, as before the split.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;

use super::locate::{idx, key, Locator, Seg};
use super::raw::{
    RawAudit, RawConfig, RawDatabase, RawDevices, RawDirectory, RawGateway, RawGrant, RawLog,
    RawMetrics, RawMfa, RawPeer, RawPortal, RawRadius, RawResource, RawRoles,
};
use super::*;
use crate::policy::{Policy, Resource, Rule};

/// A site's name: what `[[site]] name`, `[gateway] site` and `--site` carry.
pub(crate) fn valid_site_name(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

#[path = "validate_gateway.rs"]
mod gateway;
#[path = "validate_mfa.rs"]
mod mfa;

fn resolve(base: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}

/// What every section's validation needs: where errors point, and the folder relative paths
/// are resolved against.
struct Ctx<'a, 'l> {
    loc: &'a Locator<'l>,
    base: &'a Path,
}

pub(super) fn validate(
    raw: RawConfig,
    loc: &Locator<'_>,
    base: &Path,
) -> Result<Config, ConfigError> {
    let cx = Ctx { loc, base };
    let gateway = cx.gateway(raw.gateway)?;
    let portal = cx.portal(raw.portal, &gateway)?;
    let database = cx.database(raw.database)?;
    let directory = raw.directory.map(|d| cx.directory(d)).transpose()?;
    let roles = cx.roles(raw.roles)?;
    let audit = cx.audit(raw.audit, &gateway)?;
    let devices = cx.devices(&raw.devices)?;
    let log = cx.log(&raw.log)?;
    let metrics = cx.metrics(&raw.metrics, &portal)?;
    let sites = super::sites::validate(loc, raw.site)?;
    super::sites::check_resources(loc, &sites, &raw.resource)?;
    let mfa = raw.mfa.map(|m| cx.mfa(m, &gateway)).transpose()?;
    let policy = cx.policy(raw.resource, &raw.grant, mfa.is_some())?;
    let peers = cx.peers(raw.peer, &gateway, &policy)?;
    Ok(Config {
        path: loc.file.to_path_buf(),
        portal,
        gateway,
        database,
        directory,
        roles,
        audit,
        devices,
        log,
        metrics,
        mfa,
        peers,
        sites,
        policy,
    })
}

impl Ctx<'_, '_> {
    fn socket(&self, path: &[Seg], s: &str) -> Result<SocketAddr, ConfigError> {
        s.parse().map_err(|_| {
            self.loc.error(
                path,
                format!("invalid address {s:?}: expected IP:PORT such as 0.0.0.0:51820"),
            )
        })
    }

    fn duration(&self, path: &[Seg], s: &str) -> Result<Duration, ConfigError> {
        crate::time::parse_duration(s).map_err(|e| self.loc.error(path, e.to_string()))
    }

    /// `[portal]`
    fn portal(&self, p: RawPortal, gateway: &GatewayConfig) -> Result<PortalConfig, ConfigError> {
        let loc = self.loc;
        let state_dir = gateway
            .private_key_file
            .parent()
            .map_or_else(|| self.base.to_path_buf(), Path::to_path_buf);
        if p.max_connections_per_source == 0 {
            return Err(loc.error(
                &[key("portal"), key("max_connections_per_source")],
                "must be at least 1 (default 64)",
            ));
        }
        let portal = PortalConfig {
            listen: self.socket(&[key("portal"), key("listen")], &p.listen)?,
            public_url: {
                let u = p.public_url.trim_end_matches('/').to_string();
                if !(u.starts_with("https://") || u.starts_with("http://")) {
                    return Err(loc.error(
                        &[key("portal"), key("public_url")],
                        "must start with https:// (or http:// for a lab)",
                    ));
                }
                u
            },
            tls_cert_file: p.tls_cert_file.map(|f| resolve(self.base, f)),
            tls_key_file: p.tls_key_file.map(|f| resolve(self.base, f)),
            insecure_plaintext: p.insecure_plaintext,
            helpdesk: p.helpdesk.trim().to_string(),
            role_refresh: self.duration(&[key("portal"), key("role_refresh")], &p.role_refresh)?,
            spray_ceiling: p.spray_ceiling,
            secret_key_file: p
                .secret_key_file
                .map_or_else(|| state_dir.join("portal-secret.key"), |f| resolve(self.base, f)),
            max_connections_per_source: p.max_connections_per_source,
            trusted_proxies: p
                .trusted_proxies
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    s.parse::<ipnet::IpNet>()
                        .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| {
                            loc.error(
                                &[key("portal"), key("trusted_proxies"), idx(i)],
                                format!("invalid address {s:?}: expected an IP address or a CIDR such as 127.0.0.1 or 10.0.0.0/24"),
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        if portal.public_url.starts_with("http://")
            && !portal.insecure_plaintext
            && !is_loopback_url(&portal.public_url)
        {
            return Err(loc.error(
                &[key("portal"), key("public_url")],
                "http:// outside loopback would send passwords and session cookies in clear: use https:// (tls_cert_file, or a reverse proxy), or for a lab set [portal] insecure_plaintext = true",
            ));
        }
        if portal.tls_cert_file.is_some() != portal.tls_key_file.is_some() {
            return Err(loc.error(
                &[key("portal"), key("tls_cert_file")],
                "tls_cert_file and tls_key_file go together: set both, or neither",
            ));
        }
        Ok(portal)
    }

    /// `[database]`
    fn database(&self, d: RawDatabase) -> Result<DatabaseConfig, ConfigError> {
        let url = d.url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(self.loc.error(
                &[key("database"), key("url")],
                "unsupported database URL: use sqlite:///path/to/sesame.db or postgres://user@host/db",
            ));
        }
        Ok(DatabaseConfig { url })
    }

    /// `[directory]`
    fn directory(&self, d: RawDirectory) -> Result<DirectoryConfig, ConfigError> {
        let loc = self.loc;
        let k = |name: &'static str| [key("directory"), key(name)];
        let kind = match d.kind.as_str() {
            "openldap" => DirectoryKind::OpenLdap,
            "active-directory" => DirectoryKind::ActiveDirectory,
            other => {
                return Err(loc.error(
                    &k("kind"),
                    format!(
                    "unknown directory kind {other:?}: use \"openldap\" or \"active-directory\""
                ),
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
        Ok(DirectoryConfig {
            kind,
            url: d.url,
            starttls: d.starttls,
            insecure_plaintext: d.insecure_plaintext,
            ca_file: d.ca_file.map(|p| resolve(self.base, p)),
            bind_dn: d.bind_dn,
            bind_password_file: resolve(self.base, d.bind_password_file),
            user_base: d.user_base,
            user_filter,
            group_base: d.group_base,
            sync_interval: self.duration(&k("sync_interval"), &d.sync_interval)?,
            timeout: self.duration(&k("timeout"), &d.timeout)?,
            max_changes_per_sync: MaxChanges::parse(&d.max_changes_per_sync)
                .map_err(|m| loc.error(&k("max_changes_per_sync"), m))?,
            suspend_grace: self.duration(&k("suspend_grace"), &d.suspend_grace)?,
        })
    }

    /// `[roles]` and `[[roles.delegated]]`
    fn roles(&self, r: RawRoles) -> Result<RolesConfig, ConfigError> {
        let mut delegated = Vec::new();
        for (i, d) in r.delegated.into_iter().enumerate() {
            for (field, dn) in [("it_staff", &d.it_staff), ("scope", &d.scope)] {
                if !dn.contains('=') {
                    return Err(self.loc.error(
                        &[key("roles"), key("delegated"), idx(i), key(field)],
                        format!("expected a group DN such as \"cn=dsi-56,ou=groups,dc=example,dc=org\", found {dn:?}"),
                    ));
                }
            }
            delegated.push(DelegatedRole {
                it_staff: d.it_staff,
                scope: d.scope,
            });
        }
        Ok(RolesConfig {
            vpn_users: r.vpn_users,
            it_staff: r.it_staff,
            auditors: r.auditors,
            delegated,
        })
    }

    /// `[audit]`: its files default to the service's state folder, where the gateway key lives.
    fn audit(&self, a: RawAudit, gateway: &GatewayConfig) -> Result<AuditConfig, ConfigError> {
        let state_dir = gateway
            .private_key_file
            .parent()
            .map_or_else(|| self.base.to_path_buf(), Path::to_path_buf);
        let checkpoint_interval = self.duration(
            &[key("audit"), key("checkpoint_interval")],
            &a.checkpoint_interval,
        )?;
        if checkpoint_interval < Duration::from_secs(1) {
            return Err(self.loc.error(
                &[key("audit"), key("checkpoint_interval")],
                "must be at least 1s (default 1h)",
            ));
        }
        Ok(AuditConfig {
            retention: self.duration(&[key("audit"), key("retention")], &a.retention)?,
            signing_key_file: a
                .signing_key_file
                .map_or_else(|| state_dir.join("audit.key"), |p| resolve(self.base, p)),
            checkpoint_file: a.checkpoint_file.map_or_else(
                || state_dir.join("audit-checkpoints.jsonl"),
                |p| resolve(self.base, p),
            ),
            checkpoint_interval,
            flow_window: {
                let path = [key("audit"), key("flow_window")];
                let w = self.duration(&path, &a.flow_window)?;
                if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&w) {
                    return Err(self.loc.error(
                        &path,
                        "must be between 1s and 1h (flows are aggregated over this window)",
                    ));
                }
                w
            },
        })
    }

    /// `[devices]`
    fn devices(&self, d: &RawDevices) -> Result<DevicesConfig, ConfigError> {
        let devices = DevicesConfig {
            key_lifetime: self.duration(&[key("devices"), key("key_lifetime")], &d.key_lifetime)?,
            max_lifetime: self.duration(&[key("devices"), key("max_lifetime")], &d.max_lifetime)?,
            reauth_interval: self.duration(
                &[key("devices"), key("reauth_interval")],
                &d.reauth_interval,
            )?,
        };
        if devices.reauth_interval.is_zero() {
            return Err(self.loc.error(
                &[key("devices"), key("reauth_interval")],
                "must be more than zero (default 90d)",
            ));
        }
        if devices.key_lifetime.is_zero() {
            return Err(self.loc.error(
                &[key("devices"), key("key_lifetime")],
                "a device key must live a while: use e.g. 180d",
            ));
        }
        if devices.max_lifetime < devices.key_lifetime {
            return Err(self.loc.error(
                &[key("devices"), key("max_lifetime")],
                "max_lifetime must be at least key_lifetime (e.g. key_lifetime = \"180d\", max_lifetime = \"730d\")",
            ));
        }
        Ok(devices)
    }

    /// `[log]`
    fn log(&self, l: &RawLog) -> Result<LogConfig, ConfigError> {
        Ok(LogConfig {
            format: match l.format.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    return Err(self.loc.error(
                        &[key("log"), key("format")],
                        format!("unknown log format {other:?}: use \"text\" or \"json\""),
                    ))
                }
            },
            level: LogLevel::parse(&l.level).ok_or_else(|| {
                self.loc.error(
                    &[key("log"), key("level")],
                    format!(
                        "unknown log level {:?}: use one of {}",
                        l.level,
                        LogLevel::NAMES.join(", ")
                    ),
                )
            })?,
        })
    }

    /// `[metrics]`: never on the portal's address.
    fn metrics(&self, m: &RawMetrics, portal: &PortalConfig) -> Result<MetricsConfig, ConfigError> {
        let metrics = MetricsConfig {
            listen: self.socket(&[key("metrics"), key("listen")], &m.listen)?,
        };
        if metrics.listen == portal.listen {
            return Err(self.loc.error(
                &[key("metrics"), key("listen")],
                "metrics must not share the portal's address: give [metrics] listen its own port (default 127.0.0.1:9108)",
            ));
        }
        Ok(metrics)
    }

    /// `[[resource]]` and `[[grant]]`, compiled into the policy.
    fn policy(
        &self,
        raw: Vec<RawResource>,
        grants: &[RawGrant],
        mfa_on: bool,
    ) -> Result<Policy, ConfigError> {
        let loc = self.loc;
        let mut resources = Vec::new();
        let protected = self.protected_resources(&raw, mfa_on)?;
        for (i, r) in raw.into_iter().enumerate() {
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
        for name in &protected {
            policy
                .require_mfa(name)
                .map_err(|e| loc.error(&[key("resource")], e.to_string()))?;
        }
        for (i, g) in grants.iter().enumerate() {
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
        Ok(policy)
    }

    /// `[[peer]]`: static peers, inside the tunnel network and unique.
    fn peers(
        &self,
        raw: Vec<RawPeer>,
        gateway: &GatewayConfig,
        policy: &Policy,
    ) -> Result<Vec<StaticPeer>, ConfigError> {
        let mut peers: Vec<StaticPeer> = Vec::new();
        for (i, p) in raw.into_iter().enumerate() {
            let peer = self.peer(i, p, gateway)?;
            let at = |name: &'static str| [key("peer"), idx(i), key(name)];
            if let Some(other) = peers.iter().find(|o| o.address == peer.address) {
                return Err(self.loc.error(
                    &at("address"),
                    format!(
                        "duplicate tunnel address {}: already used by peer {:?}",
                        peer.address, other.name
                    ),
                ));
            }
            if let Some(other) = peers.iter().find(|o| o.public_key == peer.public_key) {
                return Err(self.loc.error(
                    &at("public_key"),
                    format!(
                        "duplicate public key: already used by peer {:?}",
                        other.name
                    ),
                ));
            }
            if peers.iter().any(|o| o.name == peer.name) {
                return Err(self
                    .loc
                    .error(&at("name"), format!("duplicate peer name {:?}", peer.name)));
            }
            for (j, name) in peer.resources.iter().enumerate() {
                if policy.resource(name).is_none() {
                    return Err(self.loc.error(
                        &[key("peer"), idx(i), key("resources"), idx(j)],
                        format!("unknown resource {name:?}: define it in a [[resource]] section"),
                    ));
                }
            }
            peers.push(peer);
        }
        Ok(peers)
    }

    /// One `[[peer]]` alone: its key and its address.
    fn peer(
        &self,
        i: usize,
        p: RawPeer,
        gateway: &GatewayConfig,
    ) -> Result<StaticPeer, ConfigError> {
        let loc = self.loc;
        let at = |name: &'static str| [key("peer"), idx(i), key(name)];
        let public_key = crate::key::PublicKey::parse(&p.public_key).map_err(|e| {
            loc.error(
                &at("public_key"),
                format!("invalid WireGuard key ({e}): 44 base64 characters ending in '=', as printed by `wg pubkey`"),
            )
        })?;
        let address: Ipv4Addr = p.address.trim_end_matches("/32").parse().map_err(|_| {
            loc.error(
                &at("address"),
                format!("invalid IPv4 address {:?}", p.address),
            )
        })?;
        let net = gateway.tunnel_network;
        if !net.contains(&address) || address == net.network() || address == net.broadcast() {
            return Err(loc.error(
                &at("address"),
                format!("{address} is not a host address of gateway.tunnel_network {net}"),
            ));
        }
        if address == gateway.address {
            return Err(loc.error(
                &at("address"),
                format!("{address} is the gateway's own tunnel address"),
            ));
        }
        Ok(StaticPeer {
            name: p.name,
            public_key,
            address,
            resources: p.resources,
            persistent_keepalive: p.persistent_keepalive,
        })
    }
}
