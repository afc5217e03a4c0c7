//! The enrolment portal: HTTP API (axum), sessions, roles, CSRF and security headers, rate
//! limits, metrics.

pub mod auth;
pub mod error;
pub mod extract;
pub mod listen;
/// The portal counts into the process-wide metrics (served on their own listener).
pub use crate::metrics;
pub mod pages;
pub mod ratelimit;
pub mod routes;
pub mod security;
pub mod session;
pub mod state;
pub mod time;

pub use error::ApiError;
pub use routes::router;
pub use state::{AppState, SharedState};
