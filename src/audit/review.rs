//! The answers of the flows view and the access review (who reached a resource, who can reach it now) and their CSV columns.
//!
//! The access review (`service::review`) lists every device that can reach a resource right
//! now (or everything a user's devices can reach), through which directory group and
//! `[[grant]]`, with each device's last session and last flow: these are its types, shared by
//! `GET /api/v1/audit/access-review`, `sesame audit access-review` and the page. The flows
//! view formats the store's per-device sums of `flow.allowed` ([`FlowSummary`]) for
//! `GET /api/v1/audit/flows` and `sesame audit flows`.

use std::collections::BTreeSet;

use super::AuditEvent;

/// What the review is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReviewSubject {
    Resource(String),
    User(String),
    /// Every resource of a site (`local`: the resources without a site, `sesame serve`'s own
    /// gateway's), as one resource review each.
    Site(String),
}

impl ReviewSubject {
    /// The subject as recorded in `audit.read` details.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            ReviewSubject::Resource(r) => serde_json::json!({ "resource": r }),
            ReviewSubject::User(u) => serde_json::json!({ "user": u }),
            ReviewSubject::Site(s) => serde_json::json!({ "site": s }),
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

/// The second factor of an entry's owner (the access review shows who could open a window to
/// a protected resource, and how recently they did).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FactorSeen {
    /// `totp` or `radius`.
    pub kind: String,
    /// RFC 3339 UTC, ms; `null` for a RADIUS user (nothing to register).
    pub registered_at: Option<String>,
    /// RFC 3339 UTC, ms: the last accepted code.
    pub last_used_at: Option<String>,
}

/// One (device or static peer) × resource that is reachable now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ReviewEntry {
    pub resource: String,
    /// The site whose gateway serves the resource (`[[resource]] site`; `local` for `sesame
    /// serve`'s own gateway).
    pub site: String,
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
    /// The resource needs the second factor (`[[resource]] mfa = true`): reachable only inside
    /// an access window.
    pub mfa: bool,
    /// The owner's second factor; `null` without one (or for a static peer).
    pub factor: Option<FactorSeen>,
}

/// The answer: the subject and its entries (by resource, then static peers in file order,
/// then devices by id), all of them or one page.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Review {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    pub entries: Vec<ReviewEntry>,
    /// Entries of the whole answer, every page together.
    pub total: u64,
    /// Pass back as `cursor=` (same subject) for the next page; `null`: none (the last page, or
    /// the whole answer).
    pub next_cursor: Option<String>,
}

/// Where an entry stands in the review's order, within its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Slot {
    /// A static `[[peer]]`, by its index in the configuration (they come first, in file order).
    Peer(usize),
    /// A device, by id.
    Device(i64),
}

/// Opaque keyset cursor of the review: the last entry of the previous page (its resource and
/// slot); the next page starts after it. Clients pass it back unchanged.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReviewCursor {
    pub resource: String,
    pub slot: Slot,
}

impl ReviewCursor {
    pub fn encode(&self) -> String {
        use base64::Engine as _;
        let slot = match self.slot {
            Slot::Peer(i) => format!("p:{i}"),
            Slot::Device(id) => format!("d:{id}"),
        };
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("review:{slot}:{}", self.resource))
    }

    pub fn decode(s: &str) -> Result<ReviewCursor, super::QueryError> {
        use base64::Engine as _;
        let bad = || super::QueryError::BadCursor;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim())
            .map_err(|_| bad())?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let rest = text.strip_prefix("review:").ok_or_else(bad)?;
        let (kind, rest) = rest.split_once(':').ok_or_else(bad)?;
        let (n, resource) = rest.split_once(':').ok_or_else(bad)?;
        let slot = match kind {
            "p" => Slot::Peer(n.parse().map_err(|_| bad())?),
            "d" => Slot::Device(n.parse().map_err(|_| bad())?),
            _ => return Err(bad()),
        };
        Ok(ReviewCursor {
            resource: resource.to_string(),
            slot,
        })
    }
}

/// CSV header of [`review_csv_record`].
pub const REVIEW_CSV_HEADER: [&str; 20] = [
    "resource",
    "site",
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
    "mfa",
    "factor_kind",
    "factor_registered_at",
    "factor_last_used_at",
];

/// One entry as CSV cells (groups `;`-separated, grants as `#N`), [`REVIEW_CSV_HEADER`] order.
pub fn review_csv_record(e: &ReviewEntry) -> [String; 20] {
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
    let k = e.factor.as_ref();
    [
        e.resource.clone(),
        e.site.clone(),
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
        e.mfa.to_string(),
        k.map(|k| k.kind.clone()).unwrap_or_default(),
        k.and_then(|k| k.registered_at.clone()).unwrap_or_default(),
        k.and_then(|k| k.last_used_at.clone()).unwrap_or_default(),
    ]
}

fn detail_str(e: &AuditEvent, k: &str) -> Option<String> {
    e.details
        .get(k)
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

impl SessionSeen {
    /// From a device's last `tunnel.session_*` event: `ended_at` or `started_at` of its details.
    pub fn from_event(e: AuditEvent) -> SessionSeen {
        let at_key = if e.action == super::Action::TunnelSessionEnded.as_str() {
            "ended_at"
        } else {
            "started_at"
        };
        SessionSeen {
            event_id: e.id,
            at: detail_str(&e, at_key).unwrap_or_else(|| crate::time::format(e.ts)),
            endpoint: detail_str(&e, "endpoint"),
            reason: detail_str(&e, "reason"),
            action: e.action,
        }
    }
}

impl FlowSeen {
    /// From a device's last `flow.allowed` event to the resource.
    pub fn from_event(e: AuditEvent) -> FlowSeen {
        let num = |k: &str| e.details.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        FlowSeen {
            event_id: e.id,
            last_seen: detail_str(&e, "last_seen").unwrap_or_else(|| crate::time::format(e.ts)),
            bytes: num("bytes"),
            packets: num("packets"),
        }
    }
}

/// Who reached a resource from one device (or static peer), over a time range: the sum of its
/// `flow.allowed` records, as the store adds them up.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FlowSummary {
    pub username: Option<String>,
    pub device_id: Option<i64>,
    /// The device as IT named it, when the records carry it (a site gateway's do).
    pub device_name: Option<String>,
    /// The gateway's label of the peer (`device:ID:user`, `static:NAME`).
    pub peer: String,
    /// Unix ms.
    pub first_seen: i64,
    pub last_seen: i64,
    pub bytes: u64,
    pub packets: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    /// How many `flow.allowed` windows were summed.
    pub windows: u64,
    /// Destination ports seen (TCP/UDP), the union of the windows' `ports`.
    pub ports: BTreeSet<u16>,
}

/// Who reached a resource from which device: sums of its `flow.allowed` records.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FlowView {
    pub username: Option<String>,
    pub device_id: Option<i64>,
    /// The device as IT named it (`PC-PAIE-01`); none for a static peer.
    pub device_name: Option<String>,
    /// The site whose gateway carried the flows: the resource's (`local` for `sesame serve`'s own).
    pub site: String,
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
pub const FLOWS_CSV_HEADER: [&str; 12] = [
    "username",
    "device_id",
    "device_name",
    "site",
    "peer",
    "first_seen",
    "last_seen",
    "bytes",
    "packets",
    "bytes_out",
    "bytes_in",
    "windows",
];

impl FlowView {
    /// One device's flows to a resource of `site`.
    pub fn new(f: FlowSummary, site: &str) -> Self {
        FlowView {
            username: f.username,
            device_id: f.device_id,
            device_name: f.device_name,
            site: site.to_string(),
            peer: f.peer,
            first_seen: crate::time::format(f.first_seen),
            last_seen: crate::time::format(f.last_seen),
            bytes: f.bytes,
            packets: f.packets,
            bytes_out: f.bytes_out,
            bytes_in: f.bytes_in,
            windows: f.windows,
            ports: f.ports.into_iter().collect(),
        }
    }

    /// As CSV cells, [`FLOWS_CSV_HEADER`] order.
    pub fn csv_record(&self) -> [String; 12] {
        [
            self.username.clone().unwrap_or_default(),
            self.device_id.map(|d| d.to_string()).unwrap_or_default(),
            self.device_name.clone().unwrap_or_default(),
            self.site.clone(),
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
