//! The enrolment portal: HTTP API (axum) and web pages over `service`, session cookies, CSRF
//! and security headers.

pub mod auth;
pub mod error;
pub mod extract;
/// The portal counts into the process-wide metrics (served on their own listener).
pub use crate::metrics;
pub mod pages;
pub mod routes;
pub mod security;
pub mod session;
pub mod state;

pub use error::ApiError;
pub use routes::router;
pub use state::{AppState, SharedState};
