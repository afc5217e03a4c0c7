//! Who reached a resource (flows) and who can reach it now (access review), shared by the API and the CLI.
//!
//! The access review lists every device that can reach a resource right now (or everything a
//! user's devices can reach), through which directory group and `[[grant]]`, with each device's
//! last session and last flow: the one implementation behind `GET /api/v1/audit/access-review`
//! and `sesame audit access-review`. The flows view formats the store's per-device sums of
//! `flow.allowed` for `GET /api/v1/audit/flows` and `sesame audit flows`.

use crate::config::StaticPeer;
use crate::control::{has_role, resources_for};
use crate::policy::Policy;
use crate::store::{rfc3339_ms, FlowSummary, Store, StoreError};

use super::{AuditEvent, QueryError};

/// What the review is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReviewSubject {
    Resource(String),
    User(String),
}

impl ReviewSubject {
    /// From the `resource` / `user` parameters: exactly one must be given.
    pub fn from_params(resource: Option<&str>, user: Option<&str>) -> Result<Self, QueryError> {
        fn set(v: Option<&str>) -> Option<&str> {
            v.map(str::trim).filter(|s| !s.is_empty())
        }
        match (set(resource), set(user)) {
            (Some(r), None) => Ok(ReviewSubject::Resource(r.to_string())),
            (None, Some(u)) => Ok(ReviewSubject::User(crate::store::normalize_username(u))),
            _ => Err(QueryError::ReviewSubject),
        }
    }

    /// The subject as recorded in `audit.read` details.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            ReviewSubject::Resource(r) => serde_json::json!({ "resource": r }),
            ReviewSubject::User(u) => serde_json::json!({ "user": u }),
        }
    }
}

/// Why an entry can reach its resource: a directory group of the user and the `[[grant]]`
/// sections (1-based, file order) giving the resource to that group; or a static `[[peer]]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Via {
    /// Group DN as the directory returned it; `null` for a static peer.
    pub group: Option<String>,
    /// `[[grant]]` section numbers; empty for a static peer.
    pub grants: Vec<usize>,
    /// `[[peer]]` name when the access comes from a static peer section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
}

/// The last `tunnel.session_*` event of a device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct SessionSeen {
    pub event_id: i64,
    /// `tunnel.session_started` (still up, or ended without record) or `tunnel.session_ended`.
    pub action: String,
    /// RFC 3339 UTC, ms: `started_at` or `ended_at` from the event.
    pub at: String,
    pub endpoint: Option<String>,
    /// End reason (`expired`, `revoked`…) for an ended session.
    pub reason: Option<String>,
}

/// The last `flow.allowed` record of a device to the resource.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FlowSeen {
    pub event_id: i64,
    /// RFC 3339 UTC, ms (`last_seen` of the record).
    pub last_seen: String,
    pub bytes: u64,
    pub packets: u64,
}

/// One (device or static peer) × resource that is reachable now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ReviewEntry {
    pub resource: String,
    /// Owner uid; `null` for a static peer.
    pub username: Option<String>,
    pub display_name: Option<String>,
    pub device_id: Option<i64>,
    /// Device name (enrolment code) or static peer name.
    pub device_name: String,
    pub hostname: Option<String>,
    pub tunnel_address: String,
    pub via: Vec<Via>,
    pub last_session: Option<SessionSeen>,
    pub last_flow: Option<FlowSeen>,
}

/// The answer: the subject and its entries (by resource, then device id).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Review {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub entries: Vec<ReviewEntry>,
}

/// What the review needs from the configuration.
pub struct ReviewPolicy<'a> {
    pub policy: &'a Policy,
    pub vpn_users: &'a [String],
    pub static_peers: &'a [StaticPeer],
}

/// Why a review failed.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// CSV header of [`review_csv_record`].
pub const REVIEW_CSV_HEADER: [&str; 15] = [
    "resource",
    "username",
    "display_name",
    "device_id",
    "device_name",
    "hostname",
    "tunnel_address",
    "groups",
    "grants",
    "last_session_action",
    "last_session_at",
    "last_session_endpoint",
    "last_flow_at",
    "last_flow_bytes",
    "last_flow_packets",
];

/// One entry as CSV cells (groups `;`-separated, grants as `#N`), [`REVIEW_CSV_HEADER`] order.
pub fn review_csv_record(e: &ReviewEntry) -> [String; 15] {
    let groups: Vec<String> = e
        .via
        .iter()
        .map(|v| match (&v.group, &v.peer) {
            (Some(g), _) => g.clone(),
            (None, Some(p)) => format!("[[peer]] {p}"),
            (None, None) => String::new(),
        })
        .collect();
    let grants: Vec<String> = e
        .via
        .iter()
        .flat_map(|v| v.grants.iter().map(|n| format!("#{n}")))
        .collect();
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let s = e.last_session.as_ref();
    let f = e.last_flow.as_ref();
    [
        e.resource.clone(),
        opt(&e.username),
        opt(&e.display_name),
        e.device_id.map(|d| d.to_string()).unwrap_or_default(),
        e.device_name.clone(),
        opt(&e.hostname),
        e.tunnel_address.clone(),
        groups.join(";"),
        grants.join(";"),
        s.map(|s| s.action.clone()).unwrap_or_default(),
        s.map(|s| s.at.clone()).unwrap_or_default(),
        s.and_then(|s| s.endpoint.clone()).unwrap_or_default(),
        f.map(|f| f.last_seen.clone()).unwrap_or_default(),
        f.map(|f| f.bytes.to_string()).unwrap_or_default(),
        f.map(|f| f.packets.to_string()).unwrap_or_default(),
    ]
}

fn detail_str(e: &AuditEvent, k: &str) -> Option<String> {
    e.details
        .get(k)
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

fn session_seen(e: AuditEvent) -> SessionSeen {
    let at_key = if e.action == super::Action::TunnelSessionEnded.as_str() {
        "ended_at"
    } else {
        "started_at"
    };
    SessionSeen {
        event_id: e.id,
        at: detail_str(&e, at_key).unwrap_or_else(|| rfc3339_ms(e.ts)),
        endpoint: detail_str(&e, "endpoint"),
        reason: detail_str(&e, "reason"),
        action: e.action,
    }
}

fn flow_seen(e: AuditEvent) -> FlowSeen {
    let num = |k: &str| e.details.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    FlowSeen {
        event_id: e.id,
        last_seen: detail_str(&e, "last_seen").unwrap_or_else(|| rfc3339_ms(e.ts)),
        bytes: num("bytes"),
        packets: num("packets"),
    }
}

/// Runs the review: the same rule as the gateway's desired peer set (an active device of a
/// `vpn_users` member reaches the union of its user's groups' grants; a static peer its listed
/// resources), read from the store's devices and the groups seen at the last sync or login.
pub async fn access_review(
    store: &Store,
    cfg: &ReviewPolicy<'_>,
    subject: &ReviewSubject,
) -> Result<Review, ReviewError> {
    if let ReviewSubject::Resource(r) = subject {
        if cfg.policy.resource(r).is_none() {
            return Err(QueryError::UnknownResource(r.clone()).into());
        }
    }
    let wanted = |resource: &str| match subject {
        ReviewSubject::Resource(r) => r == resource,
        ReviewSubject::User(_) => true,
    };
    // Who can reach what: pure, from the policy and the stored devices and groups.
    let mut wanted_entries = Vec::new();
    for d in store.active_devices().await? {
        if let ReviewSubject::User(u) = subject {
            if &d.user.username != u {
                continue;
            }
        }
        if !has_role(&d.user.groups, cfg.vpn_users) {
            continue;
        }
        let reachable: Vec<String> = resources_for(cfg.policy, &d.user.groups)
            .into_iter()
            .filter(|r| wanted(r))
            .collect();
        if !reachable.is_empty() {
            wanted_entries.push((d, reachable));
        }
    }
    // Last use: two statements for all the devices (the table the append keeps, migration
    // 0007), the events read from the chain.
    let ids: Vec<i64> = wanted_entries.iter().map(|(d, _)| d.device.id).collect();
    let mut sessions = store.last_sessions(&ids).await?;
    let only = match subject {
        ReviewSubject::Resource(r) => Some(r.as_str()),
        ReviewSubject::User(_) => None,
    };
    let mut flows = store.last_flows(&ids, only).await?;
    let mut entries = Vec::new();
    for (d, reachable) in wanted_entries {
        let last_session = sessions.remove(&d.device.id).map(session_seen);
        for resource in reachable {
            let last_flow = flows
                .remove(&(d.device.id, resource.clone()))
                .map(flow_seen);
            let via = d
                .user
                .groups
                .iter()
                .filter_map(|g| {
                    let grants = cfg.policy.grant_sections(g, &resource);
                    (!grants.is_empty()).then(|| Via {
                        group: Some(g.clone()),
                        grants,
                        peer: None,
                    })
                })
                .collect();
            entries.push(ReviewEntry {
                resource,
                username: Some(d.user.username.clone()),
                display_name: Some(d.user.display_name.clone()),
                device_id: Some(d.device.id),
                device_name: d.device.name.clone(),
                hostname: Some(d.device.hostname.clone()),
                tunnel_address: d.device.tunnel_address.to_string(),
                via,
                last_session: last_session.clone(),
                last_flow,
            });
        }
    }
    // Static peers belong to no user: listed in a resource review only.
    if let ReviewSubject::Resource(r) = subject {
        for p in cfg.static_peers.iter().filter(|p| p.resources.contains(r)) {
            entries.push(ReviewEntry {
                resource: r.clone(),
                username: None,
                display_name: None,
                device_id: None,
                device_name: p.name.clone(),
                hostname: None,
                tunnel_address: p.address.to_string(),
                via: vec![Via {
                    group: None,
                    grants: Vec::new(),
                    peer: Some(p.name.clone()),
                }],
                last_session: None,
                last_flow: None,
            });
        }
    }
    entries.sort_by(|a, b| (&a.resource, a.device_id).cmp(&(&b.resource, b.device_id)));
    let (resource, user) = match subject {
        ReviewSubject::Resource(r) => (Some(r.clone()), None),
        ReviewSubject::User(u) => (None, Some(u.clone())),
    };
    Ok(Review {
        resource,
        user,
        entries,
    })
}

/// Who reached a resource from which device: sums of its `flow.allowed` records.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FlowView {
    pub username: Option<String>,
    pub device_id: Option<i64>,
    pub peer: String,
    /// RFC 3339 UTC, ms.
    pub first_seen: String,
    pub last_seen: String,
    pub bytes: u64,
    pub packets: u64,
    /// Laptop → resource.
    pub bytes_out: u64,
    /// Replies.
    pub bytes_in: u64,
    /// Aggregation windows summed.
    pub windows: u64,
    /// Destination ports seen (TCP/UDP), ascending.
    pub ports: Vec<u16>,
}

/// Columns of the flows CSV (API and CLI).
pub const FLOWS_CSV_HEADER: [&str; 10] = [
    "username",
    "device_id",
    "peer",
    "first_seen",
    "last_seen",
    "bytes",
    "packets",
    "bytes_out",
    "bytes_in",
    "windows",
];

impl From<FlowSummary> for FlowView {
    fn from(f: FlowSummary) -> Self {
        FlowView {
            username: f.username,
            device_id: f.device_id,
            peer: f.peer,
            first_seen: rfc3339_ms(f.first_seen),
            last_seen: rfc3339_ms(f.last_seen),
            bytes: f.bytes,
            packets: f.packets,
            bytes_out: f.bytes_out,
            bytes_in: f.bytes_in,
            windows: f.windows,
            ports: f.ports.into_iter().collect(),
        }
    }
}

impl FlowView {
    /// As CSV cells, [`FLOWS_CSV_HEADER`] order.
    pub fn csv_record(&self) -> [String; 10] {
        [
            self.username.clone().unwrap_or_default(),
            self.device_id.map(|d| d.to_string()).unwrap_or_default(),
            self.peer.clone(),
            self.first_seen.clone(),
            self.last_seen.clone(),
            self.bytes.to_string(),
            self.packets.to_string(),
            self.bytes_out.to_string(),
            self.bytes_in.to_string(),
            self.windows.to_string(),
        ]
    }
}
