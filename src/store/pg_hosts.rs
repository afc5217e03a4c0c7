//! libpq-style PostgreSQL URLs with several hosts: the hosts in order, each as a one-host URL
//! sqlx can open, and the kind of server asked for (`target_session_attrs`).
//!
//! `postgres://sesame:s%40cret@db1:5432,db2:5433/sesame?target_session_attrs=read-write` is what
//! libpq (psql, pg_dump) accepts for a primary and its standby. sqlx 0.8 reads one host only (its
//! URL parser takes `db1:5432,db2` for a host and fails on the port), and tokio-postgres's
//! `Config`, which does read such URLs, would bring a second PostgreSQL driver for a parse. The
//! grammar needed is small, so it is parsed here: the user information and the query are copied
//! as written (percent-encoding included) into one URL per host, which sqlx then decodes as it
//! always did.

use std::fmt;

/// The port libpq and sqlx use when a host has none.
pub const DEFAULT_PORT: u16 = 5432;

/// What kind of server a connection must reach (`target_session_attrs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAttrs {
    /// Any server that answers (`any`, libpq's default).
    Any,
    /// A server that accepts writes: not in recovery, not read-only (`read-write`, `primary`).
    ReadWrite,
}

/// One host of the URL. Its `url` carries the password: it is never logged (`Debug` shows the
/// label only).
#[derive(Clone, PartialEq, Eq)]
pub struct PgHost {
    /// `host:port`, for logs and errors.
    pub label: String,
    pub port: u16,
    /// The one-host URL sqlx opens.
    pub url: String,
}

impl fmt::Debug for PgHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgHost")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// A parsed PostgreSQL URL: at least one host, in the order they are tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTargets {
    pub hosts: Vec<PgHost>,
    pub attrs: SessionAttrs,
}

/// What is wrong with a PostgreSQL URL; each variant names the part at fault (never the
/// password).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PgUrlError {
    #[error("not a postgres:// or postgresql:// URL")]
    Scheme,
    #[error("host {position} of the host list is empty")]
    EmptyHost { position: usize },
    #[error("host {host:?}: the port {port:?} is not a number from 1 to 65535")]
    Port { host: String, port: String },
    #[error("host {host:?}: an IPv6 address is written [address] or [address]:port")]
    Ipv6 { host: String },
    #[error("target_session_attrs={0:?} is not supported: use read-write (or primary) or any; the portal writes, so it never targets a standby")]
    SessionAttrs(String),
    #[error("the query parameter {0:?} cannot list several hosts: list them before the path, as in postgres://user@host1:5432,host2:5432/db")]
    HostParameter(String),
}

/// Parses `url` (one host or several, libpq style).
pub fn parse(url: &str) -> Result<PgTargets, PgUrlError> {
    let (scheme, rest) = url
        .split_once("://")
        .filter(|(s, _)| matches!(*s, "postgres" | "postgresql"))
        .ok_or(PgUrlError::Scheme)?;
    // The authority ends at the path or the query; the user information before its last `@`.
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, host_list) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (tail, None),
    };
    let (attrs, query) = session_attrs(query)?;
    let segments: Vec<&str> = host_list.split(',').collect();
    let mut hosts = Vec::with_capacity(segments.len());
    for (i, segment) in segments.iter().enumerate() {
        if segment.is_empty() && segments.len() > 1 {
            return Err(PgUrlError::EmptyHost { position: i + 1 });
        }
        let (name, port) = host_port(segment)?;
        hosts.push(PgHost {
            label: format!("{name}:{port}"),
            port,
            url: format!("{scheme}://{userinfo}{segment}{path}{query}"),
        });
    }
    Ok(PgTargets { hosts, attrs })
}

/// `target_session_attrs` read from the query, and the query without it (sqlx does not know
/// it), with its `?` when something is left.
fn session_attrs(query: Option<&str>) -> Result<(SessionAttrs, String), PgUrlError> {
    let mut attrs = SessionAttrs::Any;
    let mut kept = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "target_session_attrs" => {
                attrs = match value {
                    "any" => SessionAttrs::Any,
                    "read-write" | "primary" => SessionAttrs::ReadWrite,
                    other => return Err(PgUrlError::SessionAttrs(other.to_string())),
                }
            }
            "host" | "hostaddr" | "port"
                if value.contains(',') || value.to_ascii_lowercase().contains("%2c") =>
            {
                return Err(PgUrlError::HostParameter(key.to_string()));
            }
            _ => kept.push(pair),
        }
    }
    let query = if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    };
    Ok((attrs, query))
}

/// A host segment's name and port (5432 when none is written).
fn host_port(segment: &str) -> Result<(&str, u16), PgUrlError> {
    let (name, port) = if let Some(v6) = segment.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or_else(|| PgUrlError::Ipv6 {
            host: segment.to_string(),
        })?;
        match after {
            "" => (&segment[..addr.len() + 2], None),
            _ => match after.strip_prefix(':') {
                Some(port) => (&segment[..addr.len() + 2], Some(port)),
                None => {
                    return Err(PgUrlError::Ipv6 {
                        host: segment.to_string(),
                    })
                }
            },
        }
    } else {
        match segment.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (segment, None),
        }
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| PgUrlError::Port {
                host: name.to_string(),
                port: p.to_string(),
            })?,
    };
    Ok((name, port))
}

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;

    use super::*;

    fn labels(t: &PgTargets) -> Vec<&str> {
        t.hosts.iter().map(|h| h.label.as_str()).collect()
    }

    #[test]
    fn several_hosts_with_and_without_ports() {
        let t = parse(
            "postgres://sesame:pw@db1.example:5433,db2.example,[::1]:6000/sesame?target_session_attrs=read-write&sslmode=disable",
        )
        .expect("parses");
        assert_eq!(t.attrs, SessionAttrs::ReadWrite);
        assert_eq!(
            labels(&t),
            ["db1.example:5433", "db2.example:5432", "[::1]:6000"]
        );
        assert_eq!(
            t.hosts.iter().map(|h| h.port).collect::<Vec<_>>(),
            [5433, DEFAULT_PORT, 6000]
        );
        assert_eq!(
            t.hosts[1].url,
            "postgres://sesame:pw@db2.example/sesame?sslmode=disable"
        );
        assert_eq!(
            t.hosts[2].url,
            "postgres://sesame:pw@[::1]:6000/sesame?sslmode=disable"
        );
    }

    #[test]
    fn one_host_stays_as_written_without_the_libpq_parameter() {
        let t = parse("postgresql://sesame@db/sesame").expect("parses");
        assert_eq!(t.attrs, SessionAttrs::Any);
        assert_eq!(t.hosts.len(), 1);
        assert_eq!(t.hosts[0].url, "postgresql://sesame@db/sesame");
        let t = parse("postgres://db:5432/s?target_session_attrs=primary").expect("parses");
        assert_eq!(t.attrs, SessionAttrs::ReadWrite);
        assert_eq!(t.hosts[0].url, "postgres://db:5432/s");
        let t = parse("postgres://u@h1,h2?target_session_attrs=any").expect("no path");
        assert_eq!(t.attrs, SessionAttrs::Any);
        assert_eq!(t.hosts[1].url, "postgres://u@h2");
    }

    #[test]
    fn an_encoded_password_reaches_sqlx_decoded_once_and_debug_hides_it() {
        let t = parse("postgres://se%40me:p%40ss%2Fw%3Ard@h1:5433,h2:5434/db").expect("parses");
        for (host, port) in t.hosts.iter().zip([5433, 5434]) {
            let opts =
                sqlx::postgres::PgConnectOptions::from_str(&host.url).expect("sqlx reads it");
            assert_eq!(opts.get_username(), "se@me");
            assert_eq!(opts.get_port(), port);
            assert_eq!(opts.get_database(), Some("db"));
            assert!(host.url.contains(":p%40ss%2Fw%3Ard@"), "{}", host.label);
            assert!(!format!("{host:?}").contains("ss"), "{host:?}");
        }
        let redacted = super::super::redact_url("postgres://u:p%40ss@h1:1,h2:2/db");
        assert_eq!(redacted, "postgres://u:***@h1:1,h2:2/db");
    }

    #[test]
    fn errors_name_the_bad_part() {
        let err = |url| parse(url).expect_err(url);
        assert_eq!(
            err("postgres://u@h1:5432,h2:99999/db"),
            PgUrlError::Port {
                host: "h2".into(),
                port: "99999".into()
            }
        );
        assert_eq!(
            err("postgres://u@h1:x/db").to_string(),
            "host \"h1\": the port \"x\" is not a number from 1 to 65535"
        );
        assert_eq!(
            err("postgres://u@h1,,h3/db"),
            PgUrlError::EmptyHost { position: 2 }
        );
        assert_eq!(
            err("postgres://u@[::1/db"),
            PgUrlError::Ipv6 {
                host: "[::1".into()
            }
        );
        assert_eq!(
            err("postgres://u@h1,h2/db?target_session_attrs=prefer-standby"),
            PgUrlError::SessionAttrs("prefer-standby".into())
        );
        assert!(err("postgres://u@h/db?target_session_attrs=read-only")
            .to_string()
            .contains("\"read-only\" is not supported"));
        assert_eq!(
            err("postgres://u@h/db?host=a,b"),
            PgUrlError::HostParameter("host".into())
        );
        assert_eq!(err("mysql://u@h/db"), PgUrlError::Scheme);
        // The password never appears in an error.
        let e = err("postgres://u:hunter2@h1:0/db").to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
