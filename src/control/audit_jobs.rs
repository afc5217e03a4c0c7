//! The audit log's periodic jobs: the daily retention purge and the signed checkpoint of the chain's head.
//!
//! Both drive the store (which seals inside its writer transaction) with the audit key's
//! [`Sealer`]; `sesame serve` spawns them, tests call [`Retention::purge_now`] by hand.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::audit::checkpoint::{CheckpointReason, Sealer};
use crate::audit::AuditContext;
use crate::control::leader::Leadership;
use crate::store::{Store, StoreError};

/// How often `sesame serve` applies the retention.
pub const PURGE_PERIOD: Duration = Duration::from_secs(86_400);
/// How often a portal that does not run the singleton jobs checks whether it now does.
pub const FOLLOWER_RETRY: Duration = Duration::from_secs(30);

/// The retention task: what to keep, and who signs the checkpoint written before each purge.
#[derive(Debug, Clone)]
pub struct Retention {
    pub store: Store,
    pub sealer: Arc<Sealer>,
    /// Events older than this go; zero keeps everything.
    pub keep: Duration,
    /// Purges only while this process runs the singleton jobs.
    pub leader: Arc<Leadership>,
}

impl Retention {
    /// Purges once, now (by the store's clock). Returns how many events were removed.
    pub async fn purge_now(&self) -> Result<u64, StoreError> {
        if self.keep.is_zero() {
            return Ok(0);
        }
        self.store
            .purge_audit(self.keep, &AuditContext::system(), &self.sealer)
            .await
    }

    /// Purges at start (once this process leads) and then every `period` until `shutdown`
    /// turns true. A failed purge is logged and retried at the next period; a portal that does
    /// not lead looks again every [`FOLLOWER_RETRY`] (it may take over).
    pub async fn run(self, period: Duration, mut shutdown: watch::Receiver<bool>) {
        if self.keep.is_zero() {
            tracing::info!("audit retention 0: every event is kept");
            return;
        }
        loop {
            let leads = self.leader.is_leader();
            if leads {
                match self.purge_now().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, "audit events past retention purged"),
                    Err(e) => {
                        tracing::warn!(error = %e, "audit retention purge failed; retrying later")
                    }
                }
            }
            let wait = if leads {
                period
            } else {
                period.min(FOLLOWER_RETRY)
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }
}

/// Signs the chain's head every `every` (`[audit] checkpoint_interval`) while `leader` leads,
/// until `shutdown` turns true. A failure is logged and the next period tries again.
pub async fn run_checkpoints(
    store: Store,
    sealer: Arc<Sealer>,
    every: Duration,
    leader: Arc<Leadership>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        if !leader.is_leader() {
            continue;
        }
        if let Err(e) = store
            .checkpoint_audit(&sealer, CheckpointReason::Interval)
            .await
        {
            tracing::error!(error = %e, "cannot write the audit checkpoint");
        }
    }
}
