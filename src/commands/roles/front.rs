//! The front roles, stopped at the shutdown request: the portal and the metrics listener.

use std::sync::Arc;

use crate::config::Config;
use crate::listen::{self, TlsFiles};
use crate::metrics::Metrics;
use crate::portal::{router, AppState};
use crate::service::Services;

use super::{Roles, Stage};

/// The portal over `services` on `listener` (HTTPS itself when it has its own certificate).
pub fn portal(
    roles: &mut Roles,
    listener: std::net::TcpListener,
    config: &Config,
    services: Services,
) {
    let tls = match (&config.portal.tls_cert_file, &config.portal.tls_key_file) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    let per_source = crate::portal::per_source_cap(&config.portal, services.metrics());
    let state = AppState::new(Arc::new(services));
    roles.spawn("portal", Stage::Front, move |mut stop| {
        listen::serve_portal(
            listener,
            tls,
            router(state),
            async move {
                let _ = stop.wait_for(|stop| *stop).await;
            },
            listen::ListenLimits::default(),
            per_source,
        )
    });
}

/// The Prometheus listener.
pub fn metrics(roles: &mut Roles, listener: std::net::TcpListener, metrics: &Arc<Metrics>) {
    let metrics = Arc::clone(metrics);
    roles.spawn("metrics", Stage::Front, move |mut stop| {
        crate::metrics::serve(listener, metrics, async move {
            let _ = stop.wait_for(|stop| *stop).await;
        })
    });
}

/// A plain-http public URL outside loopback, allowed explicitly: said at start.
pub fn warn_if_plaintext(config: &Config) {
    if config.portal.insecure_plaintext && config.portal.public_url.starts_with("http://") {
        tracing::warn!(
            public_url = %config.portal.public_url,
            "[portal] insecure_plaintext = true: passwords and session cookies cross the network in clear (labs only)"
        );
    }
}
