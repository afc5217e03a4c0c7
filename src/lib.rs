//! Sesame: a remote-work VPN access broker (WireGuard gateway, LDAP enrolment portal, audit log).

// Test modules may hold long tests: the 100-line rule (clippy.toml) is for production code.
#![cfg_attr(test, allow(clippy::too_many_lines))]

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
/// Distinguished names: the directory compares groups with them, the policy (data plane) too.
#[cfg(feature = "dataplane")]
pub mod dn;
#[cfg(feature = "dataplane")]
pub mod durable;
#[cfg(feature = "fastpath")]
pub mod fastpath;
#[cfg(feature = "dataplane")]
pub mod gateway;
#[cfg(feature = "server")]
pub mod hostname;
#[cfg(feature = "fastpath")]
pub mod ip_proto;
#[cfg(feature = "key")]
pub mod key;
#[cfg(feature = "server")]
pub mod listen;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod mfa;
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
#[cfg(feature = "dataplane")]
pub mod time;

#[cfg(test)]
#[path = "sizes_tests.rs"]
mod sizes;
