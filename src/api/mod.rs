//! Wire types of the HTTP API (`/api/v1`), shared by the portal and the agent.
//!
//! This module depends on serde only, so the agent can use it without pulling any
//! server dependency (the root crate's `server` feature gates everything else).

use serde::{Deserialize, Serialize};

pub mod feed;
pub mod mfa;

/// Prefix of every API route.
pub const API_PREFIX: &str = "/api/v1";

/// `POST /api/v1/enrol` body: a one-time code, the user's own credentials and the
/// laptop's freshly generated public key (the private key never leaves the laptop).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnrolRequest {
    pub code: String,
    pub username: String,
    pub password: String,
    /// Base64 X25519 public key (32 bytes).
    pub public_key: String,
    pub hostname: String,
    /// The second factor's code, required once the user has a factor (`mfa_required` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otp: Option<String>,
}

/// The gateway a device dials.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct GatewayInfo {
    /// Base64 X25519 public key of the gateway.
    pub public_key: String,
    /// `host:port` laptops dial.
    pub endpoint: String,
}

/// A resource the device may reach, by name, for display (`sesame-agent status`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct ResourceInfo {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Networks of this resource (CIDR), the union of which is in `allowed_ips`.
    pub networks: Vec<String>,
    /// The site whose gateway serves it (none: the portal's own gateway, one-site install).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Reachable only inside an access window opened with the second factor.
    #[serde(default)]
    pub mfa: bool,
}

/// One WireGuard peer of the laptop: the gateway of one site, and what goes through it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct SitePeer {
    pub site: String,
    /// Base64 X25519 public key of that site's gateway.
    pub public_key: String,
    /// `host:port` laptops dial for that site.
    pub endpoint: String,
    /// CIDRs routed to that site: the networks of its granted resources.
    pub allowed_ips: Vec<String>,
}

/// Answer of `POST /api/v1/enrol` (201) and of `GET /api/v1/device/config`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct DeviceConfig {
    pub device_id: i64,
    /// The device's address inside the tunnel, without prefix length (e.g. `100.64.0.2`).
    pub tunnel_address: String,
    pub gateway: GatewayInfo,
    /// CIDRs routed into the tunnel: the networks of the granted resources.
    pub allowed_ips: Vec<String>,
    pub dns: Vec<String>,
    /// Bearer token for `/device/*` routes. Only present in the enrolment answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_token: Option<String>,
    /// When the device key must be rotated (RFC 3339, UTC).
    pub expires_at: String,
    /// Granted resources, by name (extension of the contract, for display).
    #[serde(default)]
    pub resources: Vec<ResourceInfo>,
    /// One peer per site the device has resources on (`gateway` is the first, for older agents).
    #[serde(default)]
    pub peers: Vec<SitePeer>,
    /// End of the open access window to protected resources (RFC 3339 UTC), if one is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_until: Option<String>,
    /// A factor to register (enrolment answer only, MFA on and the user has none yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_registration: Option<mfa::MfaRegistration>,
}

/// `POST /api/v1/device/rotate` body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    pub public_key: String,
}

/// `POST /api/v1/login` body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
    /// The second factor's code: required for roles in `[mfa] web_roles` (`mfa_required`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otp: Option<String>,
}

/// `POST /api/v1/login` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct LoginResponse {
    pub username: String,
    pub display_name: String,
    /// Roles derived from directory groups: `vpn_user`, `it_staff`, `auditor`.
    pub roles: Vec<String>,
}

/// `POST /api/v1/enrolment-codes` body (IT staff).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateCodeRequest {
    pub username: String,
    pub device_name: String,
    /// Duration such as `72h`, `30m`, `7d`; default 72h.
    #[serde(default)]
    pub ttl: Option<String>,
}

/// `POST /api/v1/enrolment-codes` answer (201).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct CreateCodeResponse {
    pub code: String,
    pub username: String,
    pub device_name: String,
    pub expires_at: String,
}

/// One device in `GET /api/v1/devices`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct DeviceSummary {
    pub id: i64,
    pub username: String,
    pub name: String,
    pub hostname: String,
    pub public_key: String,
    pub tunnel_address: String,
    /// `active` or `revoked`.
    pub status: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

/// Every API error: `{"error":{"code":"stable_snake_case","message":"…"}}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable snake_case code scripts can rely on.
    pub code: String,
    /// A sentence telling a non-technical user what to do.
    pub message: String,
}

/// Stable error codes of the API. The agent maps them to its own messages.
pub mod codes {
    pub const BAD_REQUEST: &str = "bad_request";
    pub const INVALID_JSON: &str = "invalid_json";
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    pub const INVALID_CREDENTIALS: &str = "invalid_credentials";
    pub const EMPTY_PASSWORD: &str = "empty_password";
    pub const NOT_VPN_USER: &str = "not_vpn_user";
    pub const ACCOUNT_DISABLED: &str = "account_disabled";
    pub const INVALID_CODE: &str = "invalid_code";
    pub const CODE_EXPIRED: &str = "code_expired";
    pub const CODE_ALREADY_USED: &str = "code_already_used";
    pub const CODE_WRONG_USER: &str = "code_wrong_user";
    pub const INVALID_PUBLIC_KEY: &str = "invalid_public_key";
    pub const PUBLIC_KEY_IN_USE: &str = "public_key_in_use";
    pub const ADDRESS_POOL_EXHAUSTED: &str = "address_pool_exhausted";
    pub const UNAUTHENTICATED: &str = "unauthenticated";
    pub const FORBIDDEN: &str = "forbidden";
    pub const NOT_FOUND: &str = "not_found";
    pub const DEVICE_REVOKED: &str = "device_revoked";
    pub const DEVICE_SUSPENDED: &str = "device_suspended";
    pub const DEVICE_EXPIRED: &str = "device_expired";
    pub const TOO_MANY_ATTEMPTS: &str = "too_many_attempts";
    pub const DIRECTORY_UNAVAILABLE: &str = "directory_unavailable";
    pub const DATABASE_UNAVAILABLE: &str = "database_unavailable";
    pub const UNKNOWN_USER: &str = "unknown_user";
    pub const INTERNAL: &str = "internal_error";
    pub const REQUEST_TIMEOUT: &str = "request_timeout";
    pub const CSRF_REJECTED: &str = "csrf_rejected";
    /// The second factor is needed (send `otp`, or unlock the device).
    pub const MFA_REQUIRED: &str = "mfa_required";
    /// The second factor's code is wrong, already used, or from another time step.
    pub const INVALID_OTP: &str = "invalid_otp";
    /// No factor registered: ask IT for a registration code.
    pub const MFA_NOT_REGISTERED: &str = "mfa_not_registered";
    /// The registration code is unknown, used or expired.
    pub const INVALID_REGISTRATION_CODE: &str = "invalid_registration_code";
    /// The owner has not used the second factor for `[devices] reauth_interval`.
    pub const REAUTH_REQUIRED: &str = "reauth_required";
    /// A gateway's token is unknown, replaced, or of another site.
    pub const INVALID_SITE_TOKEN: &str = "invalid_site_token";
    /// The database has no primary right now (failover): retry shortly.
    pub const SERVICE_UNAVAILABLE: &str = "service_unavailable";
}
