//! Sesame laptop agent: enrolment with a one-time code, key kept on the laptop, userspace tunnel.

// Test modules may hold long tests: the 100-line rule (clippy.toml) is for production code.
#![cfg_attr(test, allow(clippy::too_many_lines))]

pub mod cli;
pub mod enrol;
pub mod error;
pub mod files;
pub mod i18n;
pub mod mfa;
pub mod portal;
pub mod state;
pub mod status;
#[cfg(target_os = "linux")]
pub mod tunnel;
pub mod wgconf;
