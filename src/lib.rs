//! Sesame: a remote-work VPN access broker (WireGuard gateway, LDAP enrolment portal, audit log).

pub mod api;
#[cfg(feature = "server")]
pub mod commands;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod directory;
#[cfg(feature = "server")]
pub mod gateway;
#[cfg(feature = "server")]
pub mod policy;
#[cfg(feature = "server")]
pub mod telemetry;
