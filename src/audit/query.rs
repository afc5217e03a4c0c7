//! Audit queries: the auditor's filter, its parsing from API/CLI parameters, the opaque page
//! cursor, and the index keys (user, device, resource, site) derived from each event at insert
//! time.

use base64::Engine as _;

use super::{Action, AuditContext, NewAuditEvent, Outcome};

/// Largest page an auditor may ask for (`limit`); larger asks are refused, never cut silently.
pub const MAX_PAGE: i64 = 10_000;
/// Page size when none is given.
pub const DEFAULT_PAGE: i64 = 1_000;

/// Which events to list. Every set field narrows the result; results are oldest first (by id).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Events whose actor is this uid, or which concern this uid (see [`index_keys`]).
    pub user: Option<String>,
    /// Events about this device (`device:<id>` target or `device_id` in details).
    pub device: Option<i64>,
    pub action: Option<String>,
    /// Events about this resource (`resource` in details: flows).
    pub resource: Option<String>,
    /// Events of this site's gateway (`site` in details); [`SiteFilter::Local`]: events without
    /// a site (`sesame serve`'s own gateway and the portal's own events).
    pub site: Option<SiteFilter>,
    pub outcome: Option<Outcome>,
    /// Client address, exactly as stored (no port).
    pub source_ip: Option<String>,
    /// `ts >= since` (unix ms).
    pub since: Option<i64>,
    /// `ts < until` (unix ms).
    pub until: Option<i64>,
    /// Only events with `id > after_id` (keyset paging).
    pub after_id: Option<i64>,
    /// Only events with `id <= through_id`: an export is the log as it stood when it started
    /// (without its own `audit.read`, nor what is appended while it streams).
    pub through_id: Option<i64>,
    /// At most this many events.
    pub limit: Option<i64>,
}

/// The columns derived from an event for indexed filtering. They are an index only: every
/// output is built from the hashed fields, never from these.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexKeys {
    /// The user the event concerns: the target when it is a plain uid (no `kind:` prefix),
    /// else `details.username` (data-plane events, device events that carry it).
    pub username: Option<String>,
    /// `details.device_id`, else the id of a `device:<id>` target.
    pub device_id: Option<i64>,
    /// `details.resource` (flow.allowed).
    pub resource: Option<String>,
    /// `details.site`: the site gateway that reported the event (`POST /api/v1/gateway/events`).
    pub site: Option<String>,
}

/// Which site's events: a `[[site]]` gateway's (`details.site`), or `local`
/// ([`crate::config::LOCAL_SITE`]): the events without a site, those recorded by the portal
/// host itself (`sesame serve`'s own gateway, logins, enrolments, administration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteFilter {
    Local,
    Named(String),
}

impl SiteFilter {
    /// `local` (any case) is [`SiteFilter::Local`]; any other name is a site's.
    pub fn parse(s: &str) -> SiteFilter {
        if s.eq_ignore_ascii_case(crate::config::LOCAL_SITE) {
            SiteFilter::Local
        } else {
            SiteFilter::Named(s.to_string())
        }
    }
}

/// The one rule deriving [`IndexKeys`] from an event's target and details (the store calls it on
/// every append; migrations 0003 and 0014's backfills apply the same rule in SQL to older rows).
pub fn index_keys(target: &str, details: &serde_json::Value) -> IndexKeys {
    let detail_str = |k: &str| {
        details
            .get(k)
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
    };
    let username = if !target.is_empty() && !target.contains(':') {
        Some(target.to_string())
    } else {
        detail_str("username")
    };
    let device_id = details
        .get("device_id")
        .and_then(serde_json::Value::as_i64)
        .or_else(|| target.strip_prefix("device:")?.parse().ok());
    IndexKeys {
        username,
        device_id,
        resource: detail_str("resource"),
        site: detail_str("site"),
    }
}

/// The `audit.read` event of an auditor's query: which query (`events`, `export`, `flows`,
/// `access_review`, `verify`), in which format, with which filter (the parameters as given).
pub fn read_event(
    ctx: &AuditContext,
    query: &str,
    format: &str,
    filter: serde_json::Value,
) -> NewAuditEvent {
    NewAuditEvent::new(Action::AuditRead, ctx, format!("audit:{query}"))
        .details(serde_json::json!({ "query": query, "format": format, "filter": filter }))
}

/// A bad query parameter: which one and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// `since`/`until` in none of the forms [`crate::time::parse`] takes (kept as the source).
    #[error("{0}")]
    BadTime(#[from] crate::time::TimeError),
    #[error("device {0:?} : un numéro d'appareil est attendu (sesame devices list) / a device number is expected (sesame devices list)")]
    BadDevice(String),
    #[error("action {0:?} inconnue : voir la liste dans docs/audit.md / unknown action: see the list in docs/audit.md")]
    UnknownAction(String),
    #[error(
        "outcome {0:?} : utilisez success, failure ou denied / use success, failure or denied"
    )]
    BadOutcome(String),
    #[error("cursor invalide : reprenez le next_cursor de la page précédente / invalid cursor: pass the previous page's next_cursor")]
    BadCursor,
    #[error("limit {0:?} : entre 1 et 10000 / between 1 and 10000")]
    BadLimit(String),
    #[error("format {0:?} : utilisez {1} / use {1}")]
    BadFormat(String, &'static str),
    #[error(
        "précisez resource, user ou site (un seul) / give resource, user or site (one of them)"
    )]
    ReviewSubject,
    #[error("resource {0:?} inconnue : voir sesame check-config / unknown resource: see sesame check-config")]
    UnknownResource(String),
    #[error("site {0:?} inconnu : un [[site]] de la configuration, ou local / unknown site: a [[site]] of the configuration, or local")]
    UnknownSite(String),
}

impl QueryError {
    /// Stable snake_case code for API answers.
    pub fn code(&self) -> &'static str {
        match self {
            QueryError::BadTime(_) => "invalid_time",
            QueryError::BadDevice(_) => "invalid_device",
            QueryError::UnknownAction(_) => "unknown_action",
            QueryError::BadOutcome(_) => "invalid_outcome",
            QueryError::BadCursor => "invalid_cursor",
            QueryError::BadLimit(_) => "invalid_limit",
            QueryError::BadFormat(..) => "invalid_format",
            QueryError::ReviewSubject => "resource_or_user_required",
            QueryError::UnknownResource(_) => "unknown_resource",
            QueryError::UnknownSite(_) => "unknown_site",
        }
    }
}

/// The filter as auditors write it, the one type for the API's query string, the web log's
/// form and `sesame audit export`'s flags (serde, utoipa and clap read the same fields): text,
/// checked by [`FilterParams::to_filter`]. Empty values mean "no filter".
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    serde::Deserialize,
    serde::Serialize,
    clap::Args,
    utoipa::IntoParams,
)]
#[into_params(parameter_in = Query)]
pub struct FilterParams {
    /// Only events whose actor is this uid or which concern it (target, details.username).
    #[arg(long)]
    pub user: Option<String>,
    /// Only events about this device id (`12` or `device:12`).
    #[arg(long)]
    pub device: Option<String>,
    /// Only this action (`auth.login`, `flow.allowed`…).
    #[arg(long)]
    pub action: Option<String>,
    /// Only events about this resource (flows).
    #[arg(long)]
    pub resource: Option<String>,
    /// Only events of this site's gateway (`details.site`: sessions, flows); `local`: the events
    /// without a site (`sesame serve`'s own gateway, and the portal's own events).
    #[arg(long)]
    pub site: Option<String>,
    /// `success`, `failure` or `denied`.
    #[arg(long)]
    pub outcome: Option<String>,
    /// Only events from this client address, as recorded (no port).
    #[arg(long)]
    pub source_ip: Option<String>,
    /// From (included): 2026-01-31 (midnight UTC), 2026-01-31T08:00:00Z, or 7d for "7 days
    /// ago" (also 12h, 30m).
    #[arg(long)]
    pub since: Option<String>,
    /// Until (excluded), same forms as since.
    #[arg(long)]
    pub until: Option<String>,
}

fn set(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl FilterParams {
    /// The checked filter; `since`/`until` are read by [`crate::time::parse`] (an age such as
    /// `7d` counts back from `now_ms`).
    pub fn to_filter(&self, now_ms: i64) -> Result<AuditFilter, QueryError> {
        Ok(AuditFilter {
            // As typed: failed logins keep the username verbatim, uids are stored lower-case.
            user: set(&self.user).map(str::to_string),
            device: set(&self.device)
                .map(|d| {
                    d.strip_prefix("device:")
                        .unwrap_or(d)
                        .parse::<i64>()
                        .map_err(|_| QueryError::BadDevice(d.to_string()))
                })
                .transpose()?,
            action: set(&self.action)
                .map(|a| {
                    Action::parse(a)
                        .map(|a| a.as_str().to_string())
                        .ok_or_else(|| QueryError::UnknownAction(a.to_string()))
                })
                .transpose()?,
            resource: set(&self.resource).map(str::to_string),
            site: set(&self.site).map(SiteFilter::parse),
            outcome: set(&self.outcome)
                .map(|o| Outcome::parse(o).ok_or_else(|| QueryError::BadOutcome(o.to_string())))
                .transpose()?,
            source_ip: set(&self.source_ip).map(str::to_string),
            since: set(&self.since)
                .map(|s| crate::time::parse("since", s, now_ms))
                .transpose()?,
            until: set(&self.until)
                .map(|s| crate::time::parse("until", s, now_ms))
                .transpose()?,
            after_id: None,
            through_id: None,
            limit: None,
        })
    }

    /// The filter as recorded in `audit.read` details: only the parameters that were given.
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for (k, v) in [
            ("user", &self.user),
            ("device", &self.device),
            ("action", &self.action),
            ("resource", &self.resource),
            ("site", &self.site),
            ("outcome", &self.outcome),
            ("source_ip", &self.source_ip),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if let Some(v) = set(v) {
                map.insert(k.to_string(), serde_json::Value::String(v.to_string()));
            }
        }
        serde_json::Value::Object(map)
    }
}

/// Page size from `limit`: 1..=[`MAX_PAGE`], [`DEFAULT_PAGE`] when absent.
pub fn page_size(limit: Option<&str>) -> Result<i64, QueryError> {
    match limit.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(DEFAULT_PAGE),
        Some(s) => match s.parse::<i64>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            _ => Err(QueryError::BadLimit(s.to_string())),
        },
    }
}

/// Opaque keyset cursor: where the next page starts. Clients pass it back unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Id of the last event of the previous page.
    pub after_id: i64,
}

const CURSOR_PREFIX: &str = "after:";

impl Cursor {
    pub fn encode(self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{CURSOR_PREFIX}{}", self.after_id))
    }

    pub fn decode(s: &str) -> Result<Cursor, QueryError> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim())
            .map_err(|_| QueryError::BadCursor)?;
        let text = String::from_utf8(bytes).map_err(|_| QueryError::BadCursor)?;
        let after_id = text
            .strip_prefix(CURSOR_PREFIX)
            .and_then(|n| n.parse::<i64>().ok())
            .filter(|n| *n >= 0)
            .ok_or(QueryError::BadCursor)?;
        Ok(Cursor { after_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn index_keys_follow_target_then_details() {
        let k = index_keys("alice", &json!({}));
        assert_eq!(k.username.as_deref(), Some("alice"));
        assert_eq!(k.device_id, None);
        let k = index_keys("device:12", &json!({"username": "bob"}));
        assert_eq!(k.username.as_deref(), Some("bob"));
        assert_eq!(k.device_id, Some(12));
        let k = index_keys(
            "device:7",
            &json!({"device_id": 7, "username": "carol", "resource": "paie"}),
        );
        assert_eq!(
            k,
            IndexKeys {
                username: Some("carol".into()),
                device_id: Some(7),
                resource: Some("paie".into()),
                site: None,
            }
        );
        let k = index_keys(
            "device:7",
            &json!({"device_id": 7, "resource": "appli", "site": "dsden56"}),
        );
        assert_eq!(k.site.as_deref(), Some("dsden56"));
        // A static peer: no user, no device.
        let k = index_keys(
            "peer:supervision",
            &json!({"device_id": null, "username": null}),
        );
        assert_eq!(k, IndexKeys::default());
    }

    #[test]
    fn filter_params_are_checked() {
        let p = FilterParams {
            user: Some(" Alice ".into()),
            device: Some("device:3".into()),
            action: Some("flow.allowed".into()),
            outcome: Some("denied".into()),
            since: Some("2026-03-01".into()),
            until: Some("2026-04-01T00:00:00Z".into()),
            source_ip: Some("".into()),
            site: Some(" dsden56 ".into()),
            ..FilterParams::default()
        };
        let f = p.to_filter(0).expect("valid");
        assert_eq!(f.site, Some(SiteFilter::Named("dsden56".into())));
        let local = FilterParams {
            site: Some("Local".into()),
            ..FilterParams::default()
        };
        assert_eq!(
            local.to_filter(0).expect("local").site,
            Some(SiteFilter::Local),
            "the events without a site"
        );
        assert_eq!(f.user.as_deref(), Some("Alice"), "trimmed, case kept");
        assert_eq!(f.device, Some(3));
        assert_eq!(f.outcome, Some(Outcome::Denied));
        assert_eq!(f.since, Some(1_772_323_200_000));
        assert_eq!(f.until, Some(1_775_001_600_000));
        assert_eq!(f.source_ip, None);
        let ago = FilterParams {
            since: Some("7d".into()),
            ..FilterParams::default()
        };
        assert_eq!(
            ago.to_filter(1_000_000_000_000).expect("an age").since,
            Some(1_000_000_000_000 - 7 * 86_400_000),
            "counts back from the now it is given"
        );
        assert_eq!(
            p.to_json(),
            json!({"user": "Alice", "device": "device:3", "action": "flow.allowed",
                   "site": "dsden56", "outcome": "denied", "since": "2026-03-01", "until": "2026-04-01T00:00:00Z"})
        );
        for (bad, code) in [
            (
                FilterParams {
                    device: Some("x".into()),
                    ..Default::default()
                },
                "invalid_device",
            ),
            (
                FilterParams {
                    action: Some("auth.nope".into()),
                    ..Default::default()
                },
                "unknown_action",
            ),
            (
                FilterParams {
                    outcome: Some("ok".into()),
                    ..Default::default()
                },
                "invalid_outcome",
            ),
            (
                FilterParams {
                    since: Some("yesterday".into()),
                    ..Default::default()
                },
                "invalid_time",
            ),
        ] {
            let e = bad.to_filter(0).expect_err("refused");
            assert_eq!(e.code(), code);
            if let QueryError::BadTime(_) = e {
                let source = std::error::Error::source(&e).expect("the TimeError");
                assert!(
                    source.to_string().starts_with("since \"yesterday\""),
                    "{source}"
                );
            }
        }
    }

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let c = Cursor { after_id: 123_456 };
        assert_eq!(Cursor::decode(&c.encode()), Ok(c));
        assert_ne!(c.encode(), "123456", "opaque");
        for bad in ["", "!!", "YWZ0ZXI6", "YWZ0ZXI6LTE", "MTIz"] {
            assert_eq!(Cursor::decode(bad), Err(QueryError::BadCursor), "{bad}");
        }
    }

    #[test]
    fn page_sizes_are_bounded_not_cut() {
        assert_eq!(page_size(None), Ok(DEFAULT_PAGE));
        assert_eq!(page_size(Some("10000")), Ok(10_000));
        assert!(page_size(Some("10001")).is_err());
        assert!(page_size(Some("0")).is_err());
    }
}
