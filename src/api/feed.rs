//! Wire types between the portals and the site gateways: the peer feed and the batched events.
//!
//! `GET /api/v1/gateway/feed?since=VERSION&wait=SECONDS` (Bearer site token) answers a
//! [`FeedUpdate`]: the whole set of the site's peers when `since` is absent, unknown, of another
//! generation or too old, else the changes since `since`; with nothing new within `wait`
//! (at most [`MAX_WAIT_SECS`]), an update with no peer, no removal and the same version.
//! `POST /api/v1/gateway/events` (Bearer site token) takes a [`GatewayEvents`] batch.
//! Times are unix milliseconds (UTC): the gateway compares them with its own clock.

use serde::{Deserialize, Serialize};

/// The longest a feed request is held open when nothing changes.
pub const MAX_WAIT_SECS: u64 = 30;
/// What a gateway asks for when it does not say.
pub const DEFAULT_WAIT_SECS: u64 = 25;

/// A resource of the site, as its gateway compiles it (same syntax as `[[resource]] allow`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct FeedResource {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// `"198.18.10.10/32 tcp:443,8443"`, `"198.18.10.0/28 icmp"`…
    pub allow: Vec<String>,
    /// Reachable only inside the device's access window (second factor).
    #[serde(default)]
    pub mfa: bool,
}

/// One device the site's gateway must admit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct FeedPeer {
    /// Base64 X25519 public key.
    pub public_key: String,
    /// The device's tunnel address (one per device, the same on every site).
    #[cfg_attr(feature = "server", schema(value_type = String, example = "100.64.0.2"))]
    pub address: std::net::Ipv4Addr,
    pub device_id: i64,
    /// The laptop's name as IT gave it (`PC-PAIE-01`).
    pub device_name: String,
    pub username: String,
    /// Names among [`FeedUpdate::resources`]: what this device may reach on this site.
    pub resources: Vec<String>,
    /// The device key's expiry: the gateway drops the peer at that instant on its own clock.
    pub key_expires_at_ms: i64,
    /// End of the device's access window to `mfa = true` resources; none: no window open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_until_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_keepalive: Option<u16>,
}

/// One answer of the feed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct FeedUpdate {
    pub site: String,
    /// Identifies the feed's state on the portals; another generation means "resync".
    pub generation: String,
    /// Strictly increasing within a generation; pass it back as `since`.
    pub version: u64,
    /// `peers` is the whole set (anything else goes); otherwise upserts, with `removed`.
    pub full: bool,
    /// Every resource of the site (always whole: they are few).
    pub resources: Vec<FeedResource>,
    pub peers: Vec<FeedPeer>,
    /// Base64 keys of peers to remove (changes only).
    #[serde(default)]
    pub removed: Vec<String>,
    /// The portal's clock when it answered (the gateway logs a skew).
    pub server_time_ms: i64,
    /// `[mfa] idle` of the portal, in milliseconds: an open access window with no packet to a
    /// protected resource for that long is closed by the gateway. None: no `[mfa]` (the
    /// gateway keeps its default, 30 minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_idle_ms: Option<u64>,
}

/// A batch of audit records from a site gateway. The portal writes them into the audit log with
/// the token's site (a site named in the body is never trusted).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct GatewayEvents {
    pub records: Vec<GatewayEvent>,
}

/// One record, with the gateway's sequence number for idempotent retries (a record whose
/// `seq` the portal already stored for this site is acknowledged and skipped).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct GatewayEvent {
    pub seq: u64,
    /// `tunnel.session_started`, `tunnel.session_ended`, `flow.allowed`, `flow.denied`,
    /// `mfa.window_closed` or `audit.overflow`.
    pub action: String,
    /// When it happened, on the gateway's clock.
    pub ts_ms: i64,
    /// Base64 key of the peer concerned (none for `audit.overflow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<i64>,
    /// `success` or `denied`.
    pub outcome: String,
    /// The action's fields, as `sesame serve` writes them today for the same action.
    #[cfg_attr(feature = "server", schema(value_type = Object))]
    pub details: serde_json::Value,
}

/// `POST /api/v1/gateway/events` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct EventsAccepted {
    /// Records now in the audit log (skipped duplicates included): the gateway may forget them.
    pub accepted: u64,
}
