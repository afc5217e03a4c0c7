//! The flows the JSON API, the web pages and the CLI all call: sessions, enrolment, codes,
//! devices and rotation, access, audit queries; each takes the one context, [`Services`].
//!
//! Each rule (a code's TTL bounds, device-name rules, who may act on whom) lives here once, and
//! so does the audit of each flow: a refusal is recorded here from its [`ServiceError`], once,
//! whichever adapter called; a success is written by the store in the same transaction as the
//! change it records. The layer sits below `portal` and beside `control`: it names the gateway
//! only through [`Publisher`], so neither of those two modules imports the other;
//! `commands::serve` wires them together.

pub mod access;
mod attempts;
pub mod audit;
pub mod codes;
mod context;
mod count_reads;
pub mod dashboard;
pub mod devices;
pub mod enrol;
mod error;
pub mod feed;
mod limits;
pub mod mfa;
pub mod ratelimit;
pub mod review;
pub mod roles;
pub mod sessions;
pub mod sites;
pub mod spray;

use crate::key::PublicKey;
use std::future::Future;
use std::pin::Pin;

pub use context::{Services, DIRECTORY_DEADLINE};
pub use error::{ErrorKind, ServiceError};
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
    fn gateway_public_key(&self) -> PublicKey;
    /// The gateway's current counters.
    fn gateway_stats(&self) -> GatewayStats;
    /// Brings the gateway and the site feeds up to date now (after a write committed: an
    /// enrolment, a rotation, a revocation, a window): the changes the change log names,
    /// applied alone (one device's change is O(1)); the whole set when they cannot be.
    fn publish_now(&self) -> BoxFuture<'_, ()>;
}
