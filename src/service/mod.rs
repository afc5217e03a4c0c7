//! The flows the JSON API, the web pages and the CLI all call: codes, devices, access, roles.
//!
//! Each rule (a code's TTL bounds, device-name rules, who may act on whom) lives here once.
//! The layer sits below `portal` and beside `control`: it names the gateway only through
//! [`Publisher`], so neither of those two modules imports the other; `commands::serve` wires
//! them together.

pub mod access;
pub mod audit;
pub mod codes;
pub mod dashboard;
pub mod devices;
pub mod enrol;
pub mod roles;

use std::future::Future;
use std::pin::Pin;

use crate::directory::DirectoryError;
use crate::store::{Device, StoreError};

pub use roles::{Actor, Role, RoleSet, Scope};

/// A boxed future (object-safe async methods of [`Publisher`]).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Counters the gateway exposes, for `/metrics` and the dashboard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayStats {
    pub peers: u64,
    pub active_sessions: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Dropped packets by reason.
    pub drops: Vec<(String, u64)>,
    /// Flow and session audit records lost because the queue was full, by kind.
    pub audit_lost: Vec<(String, u64)>,
}

/// What the flows need from the control plane: the gateway's key and counters, and telling it
/// that devices changed. `control::ControlPlane` is the real one.
pub trait Publisher: Send + Sync + 'static {
    /// The gateway's public key (devices dial it; no device may reuse it).
    fn gateway_public_key(&self) -> [u8; 32];
    /// The gateway's current counters.
    fn gateway_stats(&self) -> GatewayStats;
    /// Publishes the whole desired peer set now (after a revocation committed).
    fn publish_now(&self) -> BoxFuture<'_, ()>;
    /// Publishes one device's peer (after an enrolment or rotation committed); `replaced_key` is
    /// a rotated-out key to remove.
    fn publish_device<'a>(
        &'a self,
        device: &'a Device,
        groups: &'a [String],
        replaced_key: Option<[u8; 32]>,
    ) -> BoxFuture<'a, ()>;
}

/// Why a flow refused or failed; the portal maps each to its API error, the CLI prints it.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A field is wrong; the message names it (French / English).
    #[error("{0}")]
    Invalid(String),
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    #[error("account disabled")]
    AccountDisabled,
    #[error("not a VPN user")]
    NotVpnUser,
    /// The actor's roles or delegated scope do not allow this.
    #[error("forbidden")]
    Forbidden,
    /// No such object, or not one the actor may see (same answer, nothing leaks).
    #[error("not found")]
    NotFound,
    #[error("invalid public key: {0}")]
    InvalidPublicKey(&'static str),
    /// Not a code at all (empty, too long); unknown codes come from the store.
    #[error("invalid enrolment code")]
    InvalidCode,
    #[error("directory: {0}")]
    Directory(#[from] DirectoryError),
    #[error("directory timed out")]
    DirectoryTimeout,
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A bad audit query parameter (time, format, review subject, unknown resource).
    #[error(transparent)]
    Query(#[from] crate::audit::QueryError),
}
