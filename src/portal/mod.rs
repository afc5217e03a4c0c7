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

/// The portal listener's per-source cap (`[portal] max_connections_per_source`, trusted proxies
/// exempt); each connection it closes is counted in
/// `sesame_portal_connections_refused_total`.
pub fn per_source_cap(
    config: &crate::config::PortalConfig,
    metrics: &metrics::Metrics,
) -> crate::listen::PerSource {
    let refused = prometheus_client::metrics::counter::Counter::<u64>::default();
    metrics.register(
        "sesame_portal_connections_refused",
        "Portal connections closed as soon as accepted because their client address held [portal] max_connections_per_source open already.",
        refused.clone(),
    );
    crate::listen::PerSource {
        max: config.max_connections_per_source,
        exempt: config.trusted_proxies.clone(),
        on_refused: std::sync::Arc::new(move || {
            refused.inc();
        }),
    }
}
