//! Directory sync: re-reads every user who owns an active device; group changes reach the
//! gateway, leavers (no `vpn_users` group, disabled, deleted) lose every device.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::audit::{Action, AuditContext, NewAuditEvent, Outcome};
use crate::directory::{Directory, DirectoryError};
use crate::store::{Store, StoreError};

use super::desired::has_role;
use super::plane::ControlPlane;

/// What one sync pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub checked: usize,
    pub groups_changed: usize,
    pub devices_revoked: usize,
}

/// A pass that changed nothing is still audited, but at most once per this interval.
pub const QUIET_SYNC_AUDIT_INTERVAL: Duration = Duration::from_secs(3600);

/// Why a sync pass stopped; nothing is revoked on the strength of a failed read.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("directory unavailable: {0}")]
    Directory(String),
    #[error("database: {0}")]
    Store(#[from] StoreError),
}

/// Runs sync passes every `interval`.
pub struct DirectorySync {
    pub store: Store,
    pub directory: Arc<dyn Directory>,
    pub control: Arc<ControlPlane>,
    pub vpn_users: Vec<String>,
    /// Bound on each directory lookup.
    pub timeout: Duration,
    /// Revocations are counted with the portal's.
    pub metrics: Arc<crate::portal::metrics::Metrics>,
}

impl DirectorySync {
    /// One pass. Fail-static: if the directory cannot answer, stop without changing anything.
    pub async fn sync_once(&self) -> Result<SyncReport, SyncError> {
        let users = self.store.users_with_active_devices().await?;
        let mut report = SyncReport::default();
        let system = AuditContext::system();
        for stored in users {
            let looked =
                match tokio::time::timeout(self.timeout, self.directory.lookup(&stored.username))
                    .await
                {
                    Ok(Ok(u)) => u,
                    Ok(Err(DirectoryError::Unavailable(why))) => {
                        return Err(SyncError::Directory(why))
                    }
                    Ok(Err(e)) => return Err(SyncError::Directory(e.to_string())),
                    Err(_) => return Err(SyncError::Directory("timed out".into())),
                };
            report.checked += 1;
            let reason = match &looked {
                None => Some("deleted from the directory"),
                Some(u) if u.disabled => Some("account disabled in the directory"),
                Some(u) if !has_role(&u.groups, &self.vpn_users) => {
                    Some("left every vpn_users group")
                }
                Some(_) => None,
            };
            if let Some(u) = &looked {
                let mut old = stored.groups.clone();
                let mut new = u.groups.clone();
                old.sort();
                new.sort();
                if old != new || stored.disabled != u.disabled {
                    report.groups_changed += 1;
                }
                self.store.upsert_user(u).await?;
            }
            if let Some(reason) = reason {
                let revoked = self
                    .store
                    .revoke_user_devices(&stored.username, reason, &system)
                    .await?;
                report.devices_revoked += revoked.len();
                for _ in &revoked {
                    self.metrics.revocation();
                }
                tracing::info!(user = %stored.username, devices = revoked.len(), reason, "devices revoked by directory sync");
            }
        }
        // Publish before auditing the pass: access is cut first.
        let _ = self.control.reconcile().await;
        let changed = report.groups_changed > 0 || report.devices_revoked > 0;
        let ev = NewAuditEvent::new(Action::DirectorySync, &system, "directory").details(
            serde_json::json!({
                "checked": report.checked,
                "groups_changed": report.groups_changed,
                "devices_revoked": report.devices_revoked,
                "changed": changed,
            }),
        );
        if changed || self.quiet_pass_due().await {
            if let Err(e) = self.store.append_audit(&ev).await {
                tracing::warn!(error = %e, "cannot write the directory.sync audit event");
            }
        }
        Ok(report)
    }

    /// Whether a pass that changed nothing should be audited: no `directory.sync` event within
    /// [`QUIET_SYNC_AUDIT_INTERVAL`] (read from the log, so it holds across restarts).
    async fn quiet_pass_due(&self) -> bool {
        match self
            .store
            .last_deviceless_event_ts(Action::DirectorySync)
            .await
        {
            Ok(Some(ts)) => {
                self.store.now_ms().saturating_sub(ts)
                    >= crate::store::duration_ms(QUIET_SYNC_AUDIT_INTERVAL)
            }
            Ok(None) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the last directory.sync event");
                true
            }
        }
    }

    /// Audits a failed pass (once per outage: the caller knows when one starts).
    async fn audit_failure(&self, e: &SyncError) {
        let ev = NewAuditEvent::new(Action::DirectorySync, &AuditContext::system(), "directory")
            .outcome(Outcome::Failure)
            .details(serde_json::json!({ "reason": e.to_string() }));
        if let Err(e) = self.store.append_audit(&ev).await {
            tracing::warn!(error = %e, "cannot write the directory.sync audit event");
        }
    }

    /// Sync every `interval` until `shutdown` turns true. Failures are logged (once per outage)
    /// and the next pass retries; the gateway keeps its peers meanwhile.
    pub async fn run(self, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
            let started = std::time::Instant::now();
            let result = self.sync_once().await;
            self.metrics.directory_sync(
                started.elapsed(),
                result
                    .as_ref()
                    .ok()
                    .map(|r| r.groups_changed + r.devices_revoked),
            );
            match result {
                Ok(r) => {
                    if failing {
                        tracing::info!("directory sync works again");
                        failing = false;
                    }
                    tracing::debug!(?r, "directory sync pass");
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "directory sync failed; keeping current grants");
                        self.audit_failure(&e).await;
                        failing = true;
                    }
                    // Still publish from the store: a database that came back must reconcile.
                    let _ = self.control.reconcile().await;
                }
            }
        }
    }
}
