//! Shared state of the portal's handlers.

use crate::audit::{Action, AuditContext, NewAuditEvent, Outcome};
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::directory::{Directory, DirectoryUser};
use crate::service::Publisher;
use crate::store::Store;

use super::error::ApiError;
use super::metrics::Metrics;
use super::ratelimit::FailureLimiter;
use super::session::CookiePolicy;

/// Longest time a request waits for the directory before answering 503 (under 5 s, so the
/// answer itself arrives within 5 s).
pub const DIRECTORY_DEADLINE: Duration = Duration::from_millis(4500);

/// Everything a handler needs, behind one `Arc`.
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub directory: Arc<dyn Directory>,
    /// The control plane, as the service layer sees it.
    pub control: Arc<dyn Publisher>,
    pub limiter: FailureLimiter,
    pub metrics: Arc<Metrics>,
    pub cookies: CookiePolicy,
    /// The audit log page's last chain verification (`service::audit::verify_cached`).
    pub chain_status: crate::service::audit::ChainStatusCache,
}

pub type SharedState = Arc<AppState>;

impl AppState {
    pub fn new(
        config: Arc<Config>,
        store: Store,
        directory: Arc<dyn Directory>,
        control: Arc<dyn Publisher>,
        metrics: Arc<Metrics>,
    ) -> SharedState {
        Self::with_limiter(
            config,
            store,
            directory,
            control,
            metrics,
            FailureLimiter::new(),
        )
    }

    /// Same, with other brute-force limits.
    pub fn with_limiter(
        config: Arc<Config>,
        store: Store,
        directory: Arc<dyn Directory>,
        control: Arc<dyn Publisher>,
        metrics: Arc<Metrics>,
        limiter: FailureLimiter,
    ) -> SharedState {
        // Served over HTTPS by this process, or announced as https: the cookie keeps Secure.
        let cookies = if config.portal.tls_cert_file.is_some() {
            CookiePolicy { secure: true }
        } else {
            CookiePolicy::for_public_url(&config.portal.public_url)
        };
        Arc::new(AppState {
            config,
            store,
            directory,
            control,
            limiter,
            metrics,
            cookies,
            chain_status: Default::default(),
        })
    }

    /// What the code-issuing services need from this state.
    pub fn code_deps(&self) -> crate::service::codes::Deps<'_> {
        crate::service::codes::Deps {
            config: &self.config,
            store: &self.store,
            directory: &*self.directory,
            deadline: self.deadline(),
        }
    }

    /// How long a request waits for the directory.
    pub fn deadline(&self) -> Duration {
        self.config
            .directory
            .as_ref()
            .map_or(DIRECTORY_DEADLINE, |d| d.timeout.min(DIRECTORY_DEADLINE))
    }

    /// `Directory::authenticate` bounded by the deadline (a hung directory answers 503).
    pub async fn authenticate(
        &self,
        username: &str,
        password: &str,
    ) -> Result<DirectoryUser, ApiError> {
        match tokio::time::timeout(
            self.deadline(),
            self.directory.authenticate(username, password),
        )
        .await
        {
            Ok(r) => r.map_err(ApiError::from),
            Err(_) => Err(ApiError::DirectoryUnavailable("timed out".into())),
        }
    }

    /// `Directory::lookup` bounded by the deadline.
    pub async fn lookup(&self, username: &str) -> Result<Option<DirectoryUser>, ApiError> {
        Ok(crate::service::access::lookup(&*self.directory, self.deadline(), username).await?)
    }
}

/// Appends an audit event the store does not write itself (rejections, logins, sync). A failed
/// write is logged and does not fail the request: the answer is already decided.
pub async fn audit(
    store: &Store,
    actor: &str,
    action: Action,
    target: &str,
    outcome: Outcome,
    source_ip: Option<std::net::IpAddr>,
    details: serde_json::Value,
) {
    let ctx = AuditContext::new(actor, source_ip.map(|ip| ip.to_string()));
    let ev = NewAuditEvent::new(action, &ctx, target)
        .outcome(outcome)
        .details(details);
    // Group-committed: concurrent requests share one transaction (and its fsync).
    if let Err(e) = store.append_audit_grouped(ev).await {
        tracing::warn!(action = action.as_str(), error = %e, "cannot write audit event");
    }
}
