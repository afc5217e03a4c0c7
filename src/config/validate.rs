//! Semantic validation: raw values to typed configuration, each error located by its key path.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;

use super::locate::{idx, key, Locator, Seg};
use super::raw::RawConfig;
use super::*;
use crate::policy::{Policy, Resource, Rule};

fn resolve(base: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}

pub(super) fn validate(
    raw: RawConfig,
    loc: &Locator<'_>,
    base: &Path,
) -> Result<Config, ConfigError> {
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
        insecure_plaintext: raw.portal.insecure_plaintext,
        helpdesk: raw.portal.helpdesk.trim().to_string(),
        role_refresh: duration(
            &[key("portal"), key("role_refresh")],
            &raw.portal.role_refresh,
        )?,
        trusted_proxies: raw
            .portal
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
                max_changes_per_sync: MaxChanges::parse(&d.max_changes_per_sync)
                    .map_err(|m| loc.error(&k("max_changes_per_sync"), m))?,
                suspend_grace: duration(&k("suspend_grace"), &d.suspend_grace)?,
            })
        }
    };

    let mut delegated = Vec::new();
    for (i, d) in raw.roles.delegated.into_iter().enumerate() {
        for (field, dn) in [("it_staff", &d.it_staff), ("scope", &d.scope)] {
            if !dn.contains('=') {
                return Err(loc.error(
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
    let roles = RolesConfig {
        vpn_users: raw.roles.vpn_users,
        it_staff: raw.roles.it_staff,
        auditors: raw.roles.auditors,
        delegated,
    };
    let audit = {
        let a = raw.audit;
        // Both files default to the service's state folder, where the gateway key lives.
        let state_dir = gateway
            .private_key_file
            .parent()
            .map_or_else(|| base.to_path_buf(), Path::to_path_buf);
        let checkpoint_interval = duration(
            &[key("audit"), key("checkpoint_interval")],
            &a.checkpoint_interval,
        )?;
        if checkpoint_interval < Duration::from_secs(1) {
            return Err(loc.error(
                &[key("audit"), key("checkpoint_interval")],
                "must be at least 1s (default 1h)",
            ));
        }
        AuditConfig {
            retention: duration(&[key("audit"), key("retention")], &a.retention)?,
            signing_key_file: a
                .signing_key_file
                .map_or_else(|| state_dir.join("audit.key"), |p| resolve(base, p)),
            checkpoint_file: a.checkpoint_file.map_or_else(
                || state_dir.join("audit-checkpoints.jsonl"),
                |p| resolve(base, p),
            ),
            checkpoint_interval,
            flow_window: {
                let path = [key("audit"), key("flow_window")];
                let w = duration(&path, &a.flow_window)?;
                if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&w) {
                    return Err(loc.error(
                        &path,
                        "must be between 1s and 1h (flows are aggregated over this window)",
                    ));
                }
                w
            },
        }
    };
    let devices = DevicesConfig {
        key_lifetime: duration(
            &[key("devices"), key("key_lifetime")],
            &raw.devices.key_lifetime,
        )?,
        max_lifetime: duration(
            &[key("devices"), key("max_lifetime")],
            &raw.devices.max_lifetime,
        )?,
    };
    if devices.key_lifetime.is_zero() {
        return Err(loc.error(
            &[key("devices"), key("key_lifetime")],
            "a device key must live a while: use e.g. 180d",
        ));
    }
    if devices.max_lifetime < devices.key_lifetime {
        return Err(loc.error(
            &[key("devices"), key("max_lifetime")],
            "max_lifetime must be at least key_lifetime (e.g. key_lifetime = \"180d\", max_lifetime = \"730d\")",
        ));
    }

    // [log] and [metrics]
    let log = LogConfig {
        format: match raw.log.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(loc.error(
                    &[key("log"), key("format")],
                    format!("unknown log format {other:?}: use \"text\" or \"json\""),
                ))
            }
        },
        level: LogLevel::parse(&raw.log.level).ok_or_else(|| {
            loc.error(
                &[key("log"), key("level")],
                format!(
                    "unknown log level {:?}: use one of {}",
                    raw.log.level,
                    LogLevel::NAMES.join(", ")
                ),
            )
        })?,
    };
    let metrics = MetricsConfig {
        listen: socket(&[key("metrics"), key("listen")], &raw.metrics.listen)?,
    };
    if metrics.listen == portal.listen {
        return Err(loc.error(
            &[key("metrics"), key("listen")],
            "metrics must not share the portal's address: give [metrics] listen its own port (default 127.0.0.1:9108)",
        ));
    }

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
        devices,
        log,
        metrics,
        peers,
        policy,
    })
}
