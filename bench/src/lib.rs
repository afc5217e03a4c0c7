//! Shared pieces of the benchmark tools: flags, keys, packets, TOTP codes and the few syscalls they batch.

// Test modules may hold long tests: the 100-line rule (clippy.toml) is for production code.
#![cfg_attr(test, allow(clippy::too_many_lines))]

pub mod args;
pub mod devices;
pub mod fill;
pub mod keys;
pub mod packet;
pub mod portal;
pub mod sys;
pub mod totp;
pub mod tunn;
