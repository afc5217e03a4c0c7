//! Sesame laptop agent: enrolment with a one-time code, key kept on the laptop, userspace tunnel.

pub mod cli;
pub mod enrol;
pub mod error;
pub mod files;
pub mod i18n;
pub mod keys;
pub mod portal;
pub mod state;
pub mod status;
#[cfg(target_os = "linux")]
pub mod tunnel;
pub mod wgconf;
