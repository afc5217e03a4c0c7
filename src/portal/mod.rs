//! The enrolment portal: HTTP API (axum), sessions, roles, rate limits, metrics.

pub mod auth;
pub mod error;
pub mod extract;
pub mod listen;
/// The portal counts into the process-wide metrics (served on their own listener).
pub use crate::metrics;
pub mod ratelimit;
pub mod routes;
pub mod session;
pub mod state;
pub mod time;

pub use error::ApiError;
pub use routes::router;
pub use state::{AppState, SharedState};
