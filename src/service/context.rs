//! The one context every flow takes: live configuration, store, directory, gateway, metrics,
//! failure limiter. Built once by `sesame serve` (every part) and by each CLI command (the
//! configuration and the store).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::audit::{Action, AuditContext, NewAuditEvent, Outcome};
use crate::config::{Config, LiveConfig};
use crate::directory::{Directory, DirectoryUser};
use crate::metrics::Metrics;
use crate::store::Store;

use super::audit::ChainStatusCache;
use super::ratelimit::FailureLimiter;
use super::review::ReviewCounts;
use super::spray::SprayCeiling;
use super::{Publisher, ServiceError};

/// Longest time a request waits for the directory before answering 503 (under 5 s, so the
/// answer itself arrives within 5 s).
pub const DIRECTORY_DEADLINE: Duration = Duration::from_millis(4500);
/// Longest time the readiness probe waits for the database.
pub const READY_DEADLINE: Duration = Duration::from_secs(3);

/// What the flows run against. Cheap to share behind an `Arc`; the configuration is read per
/// request from the live one, so a reload reaches every flow at once.
pub struct Services {
    config: LiveConfig,
    store: Store,
    directory: Option<Arc<dyn Directory>>,
    publisher: Option<Arc<dyn Publisher>>,
    feeds: Option<Arc<super::feed::FeedHub>>,
    metrics: Arc<Metrics>,
    limiter: FailureLimiter,
    /// Failures across accounts (`[portal] spray_ceiling`).
    spray: SprayCeiling,
    /// With PostgreSQL, the failure counts' reads of concurrent attempts, one statement each round.
    count_reads: super::count_reads::CountReads,
    /// The second factor (`[mfa]`), when the configuration turns it on.
    mfa: Option<Arc<crate::mfa::Kit>>,
    /// The audit log page's last chain verification (`audit::verify_cached`).
    pub(super) chain_status: ChainStatusCache,
    /// The access review's counts per state of the peer set (`review::ReviewCounts`).
    pub(super) review_counts: ReviewCounts,
}

impl Services {
    /// The configuration and the store alone (the CLI): flows needing the directory or the
    /// gateway answer [`ServiceError::NotWired`]. Metrics are counted but served by no one.
    pub fn new(config: LiveConfig, store: Store) -> Self {
        let limiter = with_device_key(FailureLimiter::new(), &store);
        Services {
            config,
            store,
            directory: None,
            publisher: None,
            feeds: None,
            metrics: Arc::new(Metrics::new()),
            limiter,
            spray: SprayCeiling::default(),
            count_reads: Default::default(),
            mfa: None,
            chain_status: ChainStatusCache::default(),
            review_counts: ReviewCounts::default(),
        }
    }

    /// Users are authenticated and looked up in `directory`.
    pub fn with_directory(mut self, directory: Arc<dyn Directory>) -> Self {
        self.directory = Some(directory);
        self
    }

    /// Device changes are published to this gateway (the control plane).
    pub fn with_publisher(mut self, publisher: Arc<dyn Publisher>) -> Self {
        self.publisher = Some(publisher);
        self
    }

    /// The site gateways' feeds are served from this hub (the control plane fills it).
    pub fn with_feeds(mut self, feeds: Arc<super::feed::FeedHub>) -> Self {
        self.feeds = Some(feeds);
        self
    }

    pub(super) fn feeds(&self) -> Result<&super::feed::FeedHub, ServiceError> {
        self.feeds
            .as_deref()
            .ok_or(ServiceError::NotWired("the site feeds"))
    }

    /// Counters go to these metrics (those the metrics listener serves).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The second factor's provider and key (built from `[mfa]` by `mfa::Kit::from_config`).
    pub fn with_mfa(mut self, kit: crate::mfa::Kit) -> Self {
        self.mfa = Some(Arc::new(kit));
        self
    }

    /// The second factor when `[mfa]` turns it on (`None`: off); on without a kit wired in is
    /// an error, never "no second factor".
    pub(super) fn mfa(&self) -> Result<Option<&crate::mfa::Kit>, ServiceError> {
        match (&self.config().mfa, &self.mfa) {
            (None, _) => Ok(None),
            (Some(_), Some(kit)) => Ok(Some(kit)),
            (Some(_), None) => Err(ServiceError::NotWired("the second factor")),
        }
    }

    /// Other brute-force limits than production's.
    pub fn with_limiter(mut self, limiter: FailureLimiter) -> Self {
        self.limiter = with_device_key(limiter, &self.store);
        self
    }

    /// The configuration in force: read it once per request.
    pub fn config(&self) -> Arc<Config> {
        self.config.get()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Now, in unix milliseconds (the store's clock: a test clock in tests).
    pub fn now_ms(&self) -> i64 {
        self.store.now_ms()
    }

    /// Whether the database answers (the readiness probe).
    pub async fn ready(&self) -> Result<(), ServiceError> {
        match tokio::time::timeout(READY_DEADLINE, self.store.ping()).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(ServiceError::DatabaseTimeout),
        }
    }

    /// Closes the store (the CLI, at the end of a command).
    pub async fn close(&self) {
        self.store.close().await;
    }

    pub(super) fn store(&self) -> &Store {
        &self.store
    }

    pub(super) fn limiter(&self) -> &FailureLimiter {
        &self.limiter
    }

    pub(super) fn spray(&self) -> &SprayCeiling {
        &self.spray
    }

    pub(super) fn count_reads(&self) -> &super::count_reads::CountReads {
        &self.count_reads
    }

    pub(super) fn directory(&self) -> Result<&dyn Directory, ServiceError> {
        self.directory
            .as_deref()
            .ok_or(ServiceError::NotWired("the directory"))
    }

    pub(super) fn publisher(&self) -> Option<&dyn Publisher> {
        self.publisher.as_deref()
    }

    /// The gateway's public key (devices dial it; no device may reuse it).
    pub(super) fn gateway_public_key(&self) -> Result<crate::key::PublicKey, ServiceError> {
        self.publisher()
            .map(Publisher::gateway_public_key)
            .ok_or(ServiceError::NotWired("the gateway"))
    }

    /// How long a request waits for the directory.
    pub fn deadline(&self) -> Duration {
        self.config()
            .directory
            .as_ref()
            .map_or(DIRECTORY_DEADLINE, |d| d.timeout.min(DIRECTORY_DEADLINE))
    }

    /// `Directory::authenticate` bounded by the deadline (a hung directory is an error, not a
    /// wait).
    pub(super) async fn authenticate(
        &self,
        username: &str,
        password: &str,
    ) -> Result<DirectoryUser, ServiceError> {
        let directory = self.directory()?;
        match tokio::time::timeout(self.deadline(), directory.authenticate(username, password))
            .await
        {
            Ok(r) => Ok(r?),
            Err(_) => Err(ServiceError::DirectoryTimeout),
        }
    }

    /// `Directory::lookup` bounded by the deadline.
    pub(super) async fn lookup(
        &self,
        username: &str,
    ) -> Result<Option<DirectoryUser>, ServiceError> {
        let directory = self.directory()?;
        match tokio::time::timeout(self.deadline(), directory.lookup(username)).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(ServiceError::DirectoryTimeout),
        }
    }

    /// Records a refusal (or an event no store write carries): group-committed with concurrent
    /// requests. A failed write is logged and does not change the answer, already decided.
    pub(super) async fn audit(&self, event: Record<'_>) {
        let action = event.action;
        if let Err(e) = self.store.append_audit_grouped(event.event()).await {
            tracing::warn!(action = action.as_str(), error = %e, "cannot write audit event");
        }
    }
}

/// An audit event a flow writes on its own (a refusal, a logout), not inside a store change.
pub(super) struct Record<'a> {
    pub actor: &'a str,
    pub action: Action,
    pub target: &'a str,
    pub outcome: Outcome,
    pub source_ip: Option<IpAddr>,
    pub details: serde_json::Value,
}

impl Record<'_> {
    /// The event as the store appends it.
    pub(super) fn event(self) -> NewAuditEvent {
        let ctx = AuditContext::new(self.actor, self.source_ip.map(|ip| ip.to_string()));
        NewAuditEvent::new(self.action, &ctx, self.target)
            .outcome(self.outcome)
            .details(self.details)
    }
}

/// What the device tokens of the login limiter are signed with, derived from the portal key.
const DEVICE_TOKEN_CONTEXT: &[u8] = b"sesame device token v1";

/// `limiter` signing its device tokens with a key derived from the store's portal key, when it
/// has one: shared by every portal with the same key file, kept across restarts.
fn with_device_key(limiter: FailureLimiter, store: &Store) -> FailureLimiter {
    match store.code_key() {
        Some(key) => limiter.with_device_key(key.subkey(DEVICE_TOKEN_CONTEXT)),
        None => limiter,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::CodeKey;

    async fn services(dir: &std::path::Path, key: Option<[u8; 32]>) -> Services {
        let url = format!("sqlite://{}", dir.join("s.db").display());
        let mut store = Store::connect(&url).await.unwrap();
        if let Some(k) = key {
            store = store.with_code_key(Arc::new(CodeKey::from_bytes(k)));
        }
        let config = Config::parse(&dir.join("sesame.toml"), "").unwrap();
        Services::new(LiveConfig::from(Arc::new(config)), store)
    }

    #[tokio::test]
    async fn portals_sharing_the_portal_key_honour_each_others_device_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let one = services(dir.path(), Some([7; 32])).await;
        let two =
            services(dir.path(), Some([7; 32]))
                .await
                .with_limiter(FailureLimiter::with_limits(
                    3,
                    std::time::Duration::from_secs(60),
                ));
        let other = services(dir.path(), Some([8; 32])).await;
        let keyless = services(dir.path(), None).await;
        let token = one.limiter.issue_device_token("alice");
        assert!(two.limiter.is_known_device("alice", Some(&token)));
        assert!(!two.limiter.is_known_device("bob", Some(&token)));
        assert!(!other.limiter.is_known_device("alice", Some(&token)));
        assert!(!keyless.limiter.is_known_device("alice", Some(&token)));
    }
}
