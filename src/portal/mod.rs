//! The enrolment portal: HTTP API (axum), sessions, roles, rate limits, metrics.

pub mod error;
pub mod extract;
pub mod metrics;
pub mod ratelimit;
