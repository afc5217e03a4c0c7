//! Sesame: a remote-work VPN access broker (WireGuard gateway, LDAP enrolment portal, audit log).

pub mod api;
#[cfg(feature = "server")]
pub mod audit;
#[cfg(feature = "server")]
pub mod commands;
#[cfg(feature = "dataplane")]
pub mod config;
#[cfg(feature = "server")]
pub mod control;
#[cfg(feature = "server")]
pub mod directory;
/// The DN type lives with the directory code; the policy (data-plane feature) needs it too.
#[cfg(feature = "dataplane")]
#[path = "directory/dn.rs"]
pub mod dn;
#[cfg(feature = "fastpath")]
pub mod fastpath;
#[cfg(feature = "dataplane")]
pub mod gateway;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "dataplane")]
pub mod policy;
#[cfg(feature = "server")]
pub mod portal;
#[cfg(feature = "dataplane")]
pub mod secret_file;
#[cfg(feature = "server")]
pub mod service;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
pub mod telemetry;
pub mod text;
