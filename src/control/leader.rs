//! Which portal runs the singleton jobs (directory sync, device key expiry, audit retention and checkpoints): the holder of the database's `jobs` lease, renewed while it lives.
//!
//! Every portal runs [`Leadership::run`]: it takes the lease when it is free or expired and
//! renews it every [`renew_interval`]; the lease lasts two renewals. When the leader dies, its
//! lease expires and another portal takes it at its next try: within 1.5 sync intervals. A
//! leader that cannot renew (its database gone) stops leading at once: the jobs need the
//! database anyway, and another portal may take over once the lease has expired. A clean exit
//! releases the lease. Each change is logged, audited (`jobs.leader_changed`) and counted
//! (`sesame_jobs_leader`). With one process (`sesame serve`, SQLite) it simply leads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::audit::{Action, AuditContext, NewAuditEvent};
use crate::store::Store;

/// The lease of the singleton jobs.
pub const JOBS_LEASE: &str = "jobs";

/// How often the lease is renewed (or tried): half the directory sync interval, between 1 and
/// 15 seconds (15 without a directory). The lease lasts two of these.
pub fn renew_interval(sync_interval: Option<Duration>) -> Duration {
    let most = Duration::from_secs(15);
    sync_interval.map_or(most, |i| (i / 2).clamp(Duration::from_secs(1), most))
}

/// This process's part in the singleton jobs.
#[derive(Debug)]
pub struct Leadership {
    leading: AtomicBool,
    /// Host and configuration file: one per portal.
    holder: String,
}

impl Leadership {
    /// Not leading until [`Leadership::run`] takes the lease. `name` tells this portal from
    /// the others on the same host (its configuration file): a restarted portal finds its own
    /// lease and takes it back at once, as the same holder.
    pub fn new(name: &str) -> Arc<Leadership> {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "host".to_string());
        Arc::new(Leadership {
            leading: AtomicBool::new(false),
            holder: format!("{host}:{name}"),
        })
    }

    /// Leading from the start, with no lease (one process alone: tests, tools).
    pub fn alone() -> Arc<Leadership> {
        let l = Leadership::new("alone");
        l.leading.store(true, Ordering::Relaxed);
        l
    }

    /// True while this process runs the singleton jobs.
    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }

    /// Who this process is in `job_leases.holder`.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// One try: takes or renews the lease for `ttl`; returns whether this process leads now.
    /// A change is logged and counted; a handover (taken from another portal, or lost) is
    /// also audited (`jobs.leader_changed`).
    pub async fn try_lead(
        &self,
        store: &Store,
        ttl: Duration,
        metrics: Option<&crate::metrics::Metrics>,
    ) -> bool {
        let was = self.is_leader();
        let previous = if was {
            None
        } else {
            store
                .lease_holder(JOBS_LEASE)
                .await
                .ok()
                .flatten()
                .map(|(holder, _)| holder)
                .filter(|h| *h != self.holder)
        };
        let ttl_ms = crate::time::duration_ms(ttl);
        let held = match store.hold_lease(JOBS_LEASE, &self.holder, ttl_ms).await {
            Ok(held) => held,
            Err(e) => {
                if was {
                    tracing::warn!(error = %e, "cannot renew the jobs lease: this portal stops running the singleton jobs");
                }
                false
            }
        };
        if was != held {
            self.leading.store(held, Ordering::Relaxed);
            self.changed(store, held, previous, metrics).await;
        }
        held
    }

    async fn changed(
        &self,
        store: &Store,
        leading: bool,
        previous: Option<String>,
        metrics: Option<&crate::metrics::Metrics>,
    ) {
        if leading {
            tracing::info!(holder = %self.holder, previous = previous.as_deref().unwrap_or(""), "this portal now runs the singleton jobs (directory sync, key expiry, audit retention and checkpoints)");
        } else {
            tracing::warn!(holder = %self.holder, "this portal no longer runs the singleton jobs");
        }
        if let Some(m) = metrics {
            m.jobs_leader(leading);
        }
        if leading && previous.is_none() {
            // This portal's own lease (a start or a restart): no handover.
            return;
        }
        let ev = NewAuditEvent::new(
            Action::JobsLeaderChanged,
            &AuditContext::system(),
            format!("lease:{JOBS_LEASE}"),
        )
        .details(serde_json::json!({
            "holder": self.holder,
            "leading": leading,
            "previous": previous,
        }));
        if let Err(e) = store.append_audit(&ev).await {
            tracing::debug!(error = %e, "cannot audit the change of leader");
        }
    }

    /// Takes and renews the lease every `renew` (it lasts two of them) until `stop` turns
    /// true. The lease stays held: [`Leadership::release`] gives it up once the last
    /// singleton job (the shutdown checkpoint) is done.
    pub async fn run(
        self: Arc<Self>,
        store: Store,
        renew: Duration,
        metrics: Option<Arc<crate::metrics::Metrics>>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            self.try_lead(&store, renew * 2, metrics.as_deref()).await;
            tokio::select! {
                _ = tokio::time::sleep(renew) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// Gives the lease up at exit: another portal takes it at its next try instead of waiting
    /// for it to expire.
    pub async fn release(&self, store: &Store) {
        if self.leading.swap(false, Ordering::Relaxed) {
            match store.release_lease(JOBS_LEASE, &self.holder).await {
                Ok(()) => tracing::info!("jobs lease released"),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot release the jobs lease: it expires on its own")
                }
            }
        }
    }
}
