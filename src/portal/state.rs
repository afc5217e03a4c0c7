//! Shared state of the portal's handlers: the services they call and the cookie attributes.

use std::sync::Arc;

use crate::service::Services;

use super::session::CookiePolicy;

/// Everything a handler needs, behind one `Arc`.
pub struct AppState {
    /// The flows every handler and page calls (configuration read per request from there).
    pub services: Arc<Services>,
    pub cookies: CookiePolicy,
}

pub type SharedState = Arc<AppState>;

impl AppState {
    pub fn new(services: Arc<Services>) -> SharedState {
        let config = services.config();
        // Served over HTTPS by this process, or announced as https: the cookie keeps Secure.
        let cookies = if config.portal.tls_cert_file.is_some() {
            CookiePolicy { secure: true }
        } else {
            CookiePolicy::for_public_url(&config.portal.public_url)
        };
        Arc::new(AppState { services, cookies })
    }
}
