//! Directory sync: re-reads every user who owns an active or suspended device or a web session;
//! group changes reach the gateway and the portal's roles, leavers' devices are suspended
//! (restored if they come back in time), disabled or deleted users lose their web sessions, and
//! a pass that would cut too many devices at once holds only the suspensions of users the
//! directory no longer returns (what a directory mistake looks like) until an operator confirms;
//! what the directory states for named users (disabled, groups left) is applied at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::audit::{Action, AuditContext, NewAuditEvent, Outcome};
use crate::config::{DirectoryConfig, MaxChanges};
use crate::directory::{Directory, DirectoryError, DirectoryUser};
use crate::store::{DeviceStatus, Store, StoreError};

use super::desired::has_role;
use super::plane::ControlPlane;

/// Consecutive completed syncs a user must be missing from before their devices are suspended:
/// one empty answer (a wrong base, a replication hiccup) is not a deletion.
pub const ABSENCE_CONFIRMATIONS: i64 = 3;

/// A pass that changed nothing is still audited, but at most once per this interval.
pub const QUIET_SYNC_AUDIT_INTERVAL: Duration = Duration::from_secs(3600);

/// The safety rules of a sync, from `[directory]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncSafety {
    pub max_changes: MaxChanges,
    pub suspend_grace: Duration,
}

impl SyncSafety {
    pub fn from_config(d: &DirectoryConfig) -> SyncSafety {
        SyncSafety {
            max_changes: d.max_changes_per_sync,
            suspend_grace: d.suspend_grace,
        }
    }
}

/// Whether the pass may exceed `max_changes_per_sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// The periodic pass: over the limit, the suspensions of users not found wait.
    Automatic,
    /// `sesame directory sync --apply`: an operator confirmed the changes.
    Confirmed,
}

/// What a pass would do to one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPlan {
    pub username: String,
    /// The entry as the directory returned it; `None`: not found this pass.
    pub found: Option<DirectoryUser>,
    /// The stored row already says what `found` says (`User::matches`): nothing to write.
    pub current: bool,
    pub groups_changed: bool,
    /// The directory no longer lists one of the stored groups (roles or delegated scope may
    /// have shrunk).
    pub lost_group: bool,
    /// Devices to suspend now, and why.
    pub suspend: Vec<i64>,
    pub reason: Option<&'static str>,
    /// Suspended devices to restore (the user is back).
    pub restore: Vec<i64>,
}

impl UserPlan {
    /// Suspensions of a user the directory no longer returns: the only changes a pass over
    /// `max_changes_per_sync` holds (an emptied `user_base` looks like this; a disabled account
    /// or a group left is the directory speaking about a named user).
    pub fn waits_when_held(&self) -> bool {
        self.found.is_none() && !self.suspend.is_empty()
    }
}

/// What a pass would change, computed before anything is written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncPlan {
    pub users: Vec<UserPlan>,
    /// Active, not suspended devices now.
    pub active_devices: usize,
    /// Most devices this pass may suspend (`max_changes_per_sync` applied to `active_devices`).
    pub limit: usize,
}

impl SyncPlan {
    pub fn suspensions(&self) -> usize {
        self.users.iter().map(|u| u.suspend.len()).sum()
    }

    pub fn restorations(&self) -> usize {
        self.users.iter().map(|u| u.restore.len()).sum()
    }

    /// Over `max_changes_per_sync` (every suspension counts, explicit ones too).
    pub fn over_limit(&self) -> bool {
        self.suspensions() > self.limit
    }

    /// Whether an automatic pass holds: over the limit with suspensions of users not found
    /// (only those wait; a pass over the limit with nothing of that kind applies everything).
    pub fn holds(&self) -> bool {
        self.over_limit() && self.users.iter().any(UserPlan::waits_when_held)
    }

    /// Users whose suspensions wait for `--apply` on a held pass.
    pub fn waiting_users(&self) -> Vec<&str> {
        self.users
            .iter()
            .filter(|u| u.waits_when_held())
            .map(|u| u.username.as_str())
            .collect()
    }

    /// Users a held pass still changes at once: found, with groups or the disabled flag changed,
    /// or devices suspended (disabled, every `vpn_users` group left) or restored.
    pub fn applied_when_held(&self) -> Vec<&str> {
        self.users
            .iter()
            .filter(|u| {
                u.found.is_some()
                    && (u.groups_changed || !u.suspend.is_empty() || !u.restore.is_empty())
            })
            .map(|u| u.username.as_str())
            .collect()
    }

    /// One line per change, for `--dry-run` and the logs.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        for u in &self.users {
            if let (false, Some(reason)) = (u.suspend.is_empty(), u.reason) {
                out.push(format!(
                    "suspend {} device(s) of {} ({reason}): {:?}",
                    u.suspend.len(),
                    u.username,
                    u.suspend
                ));
            }
            if !u.restore.is_empty() {
                out.push(format!(
                    "restore {} device(s) of {}: {:?}",
                    u.restore.len(),
                    u.username,
                    u.restore
                ));
            }
            if u.groups_changed {
                out.push(format!("update the groups of {}", u.username));
            }
            if u.found.is_none() && u.suspend.is_empty() {
                out.push(format!(
                    "{} not found in the directory (counted)",
                    u.username
                ));
            }
        }
        out
    }
}

/// What one sync pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub checked: usize,
    pub groups_changed: usize,
    pub devices_suspended: usize,
    pub devices_restored: usize,
    /// Suspensions older than `suspend_grace`, revoked for good.
    pub devices_revoked: usize,
    /// The pass was over `max_changes_per_sync`: suspensions of users not found wait for
    /// `--apply` (everything else was applied).
    pub held: bool,
    /// Devices the pass would have suspended.
    pub planned_suspensions: usize,
    pub limit: usize,
}

/// Why a sync pass stopped; nothing is changed on the strength of a failed read.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("directory unavailable: {0}")]
    Directory(#[source] DirectoryError),
    #[error("directory did not answer within {0:?}")]
    Timeout(Duration),
    #[error("database: {0}")]
    Store(#[from] StoreError),
}

/// Runs sync passes every `interval`.
pub struct DirectorySync {
    store: Store,
    directory: Arc<dyn Directory>,
    /// The running gateway's publisher; `None` from the CLI (the server's devices-table poll
    /// publishes the changes).
    control: Option<Arc<ControlPlane>>,
    vpn_users: Vec<String>,
    /// Bound on the directory's ping that opens a pass (each request of the pass is bounded by
    /// the directory's own `timeout`).
    timeout: Duration,
    safety: SyncSafety,
    /// Suspensions, revocations and holds are counted with the portal's metrics.
    metrics: Arc<crate::metrics::Metrics>,
    /// The last hold audited, so a hold that persists is audited once, not every pass.
    last_hold: parking_lot::Mutex<Option<Vec<String>>>,
    /// Directory requests a pass keeps in flight ([`LOOKUPS_IN_FLIGHT`]).
    lookups_in_flight: usize,
}

/// Users a sync pass stores in one transaction (their rows and group memberships): one commit,
/// hence one fsync, per batch rather than per user.
const UPSERT_BATCH: usize = 500;

/// Directory requests a sync pass keeps in flight (searches of a batch of users, or of one
/// user where a pass reads them one by one): enough to hide the round trips, few enough to
/// leave the service connection pool (64) to logins, which search on it too.
pub const LOOKUPS_IN_FLIGHT: usize = 8;

impl DirectorySync {
    /// The same sync on another handle of the store (tests give it another clock).
    pub fn with_store(mut self, store: Store) -> Self {
        self.store = store;
        self
    }

    /// The same sync keeping `n` (at least 1) directory requests in flight instead of
    /// [`LOOKUPS_IN_FLIGHT`].
    pub fn with_lookups_in_flight(mut self, n: usize) -> Self {
        self.lookups_in_flight = n.max(1);
        self
    }

    pub fn new(
        store: Store,
        directory: Arc<dyn Directory>,
        control: Option<Arc<ControlPlane>>,
        vpn_users: Vec<String>,
        directory_config: &DirectoryConfig,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> DirectorySync {
        DirectorySync {
            store,
            directory,
            control,
            vpn_users,
            timeout: directory_config.timeout,
            safety: SyncSafety::from_config(directory_config),
            metrics,
            last_hold: parking_lot::Mutex::new(None),
            lookups_in_flight: LOOKUPS_IN_FLIGHT,
        }
    }

    /// Reads the directory for every user with devices and works out the changes, writing
    /// nothing. Fail-static: any directory error stops the plan.
    pub async fn plan(&self) -> Result<SyncPlan, SyncError> {
        // A directory that does not answer fails the pass before every user and device is read
        // (seconds of CPU at 100,000 devices, for nothing).
        match tokio::time::timeout(self.timeout, self.directory.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(SyncError::Directory(e)),
            Err(_) => return Err(SyncError::Timeout(self.timeout)),
        }
        let users = self.store.users_to_sync().await?;
        let mut devices: BTreeMap<String, Vec<(i64, DeviceStatus, Option<i64>)>> = BTreeMap::new();
        for d in self.store.list_devices(None).await? {
            devices
                .entry(d.username.clone())
                .or_default()
                .push((d.id, d.status, d.suspended_at));
        }
        let grace_start = self
            .store
            .now_ms()
            .saturating_sub(crate::time::duration_ms(self.safety.suspend_grace));
        let active_devices = self.store.count_active_devices().await?;
        let mut plan = SyncPlan {
            users: Vec::with_capacity(users.len()),
            active_devices,
            limit: self.safety.max_changes.limit(active_devices),
        };
        // One read of the directory for the whole pass (`Directory::lookup_many`): the
        // entries in batches, the groups once, LOOKUPS_IN_FLIGHT requests at a time.
        let names: Vec<String> = users.iter().map(|u| u.username.clone()).collect();
        let started = Instant::now();
        let answers = self
            .directory
            .lookup_many(&names, self.lookups_in_flight)
            .await
            .map_err(SyncError::Directory)?;
        tracing::debug!(users = names.len(), elapsed = ?started.elapsed(), "directory read for the sync pass");
        for (stored, looked) in users.into_iter().zip(answers) {
            let mine = devices.get(&stored.username).map_or(&[][..], Vec::as_slice);
            let active: Vec<i64> = mine
                .iter()
                .filter(|d| d.1 == DeviceStatus::Active)
                .map(|d| d.0)
                .collect();
            let reason = match &looked {
                None if stored.missing_syncs + 1 >= ABSENCE_CONFIRMATIONS => {
                    Some("absent from the directory for 3 consecutive syncs")
                }
                None => None,
                Some(u) if u.disabled => Some("account disabled in the directory"),
                Some(u) if !has_role(&u.groups, &self.vpn_users) => {
                    Some("left every vpn_users group")
                }
                Some(_) => None,
            };
            let groups_changed = looked.as_ref().is_some_and(|u| {
                let mut old = stored.groups.clone();
                let mut new = u.groups.clone();
                old.sort();
                new.sort();
                old != new || stored.disabled != u.disabled
            });
            let current = looked.as_ref().is_some_and(|u| stored.matches(u));
            let lost_group = looked
                .as_ref()
                .is_some_and(|u| stored.groups.iter().any(|g| !u.groups.contains(g)));
            let restore = if looked.is_some() && reason.is_none() {
                mine.iter()
                    .filter(|d| d.1 == DeviceStatus::Suspended)
                    .filter(|d| d.2.is_some_and(|at| at > grace_start))
                    .map(|d| d.0)
                    .collect()
            } else {
                Vec::new()
            };
            plan.users.push(UserPlan {
                username: stored.username,
                found: looked,
                current,
                groups_changed,
                lost_group,
                suspend: if reason.is_some() { active } else { Vec::new() },
                reason,
                restore,
            });
        }
        Ok(plan)
    }

    /// One periodic pass: suspensions over the limit wait for `sesame directory sync --apply`.
    pub async fn sync_once(&self) -> Result<SyncReport, SyncError> {
        self.sync(SyncMode::Automatic).await
    }

    /// One pass: revoke expired suspensions, plan, then apply; over the limit, an automatic pass
    /// leaves the suspensions of users not found waiting and applies the rest at once.
    pub async fn sync(&self, mode: SyncMode) -> Result<SyncReport, SyncError> {
        let expired = self
            .store
            .revoke_expired_suspensions(self.safety.suspend_grace)
            .await?;
        for d in &expired {
            self.metrics.revocation();
            tracing::info!(device = d.id, user = %d.username, "suspension older than suspend_grace: device revoked");
        }
        let started = Instant::now();
        let plan = self.plan().await?;
        let planned = started.elapsed();
        let held = mode == SyncMode::Automatic && plan.holds();
        let mut report = SyncReport {
            checked: plan.users.len(),
            devices_revoked: expired.len(),
            planned_suspensions: plan.suspensions(),
            limit: plan.limit,
            held,
            ..SyncReport::default()
        };
        for batch in plan.users.chunks(UPSERT_BATCH) {
            // Absence is neither counted nor acted on while the pass is held.
            let batch: Vec<&UserPlan> = batch
                .iter()
                .filter(|u| !held || u.found.is_some())
                .collect();
            let found: Vec<(&DirectoryUser, bool)> = batch
                .iter()
                .filter_map(|u| u.found.as_ref().map(|f| (f, !u.current)))
                .collect();
            self.store.sync_users(&found).await?;
            for u in batch {
                self.apply_user(u, &mut report).await?;
            }
        }
        let written = started.elapsed();
        // Publish before auditing the pass: access is cut first.
        self.publish().await;
        tracing::debug!(
            plan = ?planned,
            write = ?written.saturating_sub(planned),
            publish = ?started.elapsed().saturating_sub(written),
            "directory sync pass timings"
        );
        if held {
            self.hold(&plan).await;
            return Ok(report);
        }
        *self.last_hold.lock() = None;
        let changed = report.groups_changed + report.devices_suspended + report.devices_restored
            > 0
            || report.devices_revoked > 0;
        if changed || self.quiet_pass_due().await {
            let ev =
                NewAuditEvent::new(Action::DirectorySync, &AuditContext::system(), "directory")
                    .details(serde_json::json!({
                        "checked": report.checked,
                        "groups_changed": report.groups_changed,
                        "devices_suspended": report.devices_suspended,
                        "devices_restored": report.devices_restored,
                        "devices_revoked": report.devices_revoked,
                        "confirmed": mode == SyncMode::Confirmed,
                        "changed": changed,
                    }));
            if let Err(e) = self.store.append_audit(&ev).await {
                tracing::warn!(error = %e, "cannot write the directory.sync audit event");
            }
        }
        Ok(report)
    }

    /// Applies one user's plan, its stored groups and flags already written with its batch (the
    /// rules follow them at the next publication): absence, web sessions, suspensions and
    /// restorations.
    async fn apply_user(&self, u: &UserPlan, report: &mut SyncReport) -> Result<(), SyncError> {
        let system = AuditContext::system();
        // A user found was stored with the rest of its batch if it changed (`sync_users`).
        if u.found.is_none() {
            self.store.record_missing(&u.username).await?;
        }
        if u.groups_changed {
            report.groups_changed += 1;
        }
        if u.found.as_ref().is_none_or(|f| f.disabled) {
            // Web sessions die with the account; a lost group shrinks the roles of the same
            // session at its next request (they follow the stored groups, updated above).
            let cut = self.store.delete_user_sessions(&u.username).await?;
            if cut > 0 {
                tracing::info!(user = %u.username, sessions = cut, "web sessions deleted by directory sync");
            }
        }
        if let (false, Some(reason)) = (u.suspend.is_empty(), u.reason) {
            let done = self
                .store
                .suspend_user_devices(&u.username, reason, &system)
                .await?;
            report.devices_suspended += done.len();
            for _ in &done {
                self.metrics.suspension();
            }
            tracing::info!(user = %u.username, devices = done.len(), reason, "devices suspended by directory sync");
        }
        if !u.restore.is_empty() {
            let done = self
                .store
                .restore_user_devices(&u.username, self.safety.suspend_grace, &system)
                .await?;
            report.devices_restored += done.len();
            tracing::info!(user = %u.username, devices = done.len(), "devices restored: the user is back in the directory");
        }
        Ok(())
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
                    >= crate::time::duration_ms(QUIET_SYNC_AUDIT_INTERVAL)
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

    async fn publish(&self) {
        if let Some(control) = &self.control {
            let _ = control.reconcile().await;
        }
    }

    /// A held pass: log, count and audit (once per distinct hold) what was applied and what
    /// waits.
    async fn hold(&self, plan: &SyncPlan) {
        let changes = plan.describe();
        let applied = plan.applied_when_held();
        let waiting = plan.waiting_users();
        self.metrics.sync_held();
        tracing::warn!(
            would_suspend = plan.suspensions(),
            limit = plan.limit,
            active_devices = plan.active_devices,
            applied = ?applied,
            waiting = ?waiting,
            "directory sync held: it would suspend more devices than directory.max_changes_per_sync allows; disabled accounts and groups left were applied, the suspensions of users the directory no longer returns wait. Check the directory (user_base, groups), then run `sesame directory sync --dry-run` and `--apply` to confirm"
        );
        let mut last = self.last_hold.lock().take();
        if last.as_ref() != Some(&changes) {
            let users: Vec<&str> = waiting.iter().copied().take(50).collect();
            let applied: Vec<&str> = applied.iter().copied().take(50).collect();
            let ev = NewAuditEvent::new(
                Action::DirectorySyncHeld,
                &AuditContext::system(),
                "directory",
            )
            .outcome(crate::audit::Outcome::Denied)
            .details(serde_json::json!({
                "would_suspend": plan.suspensions(),
                "limit": plan.limit,
                "active_devices": plan.active_devices,
                "users": users,
                "waiting": users,
                "applied": applied,
            }));
            match self.store.append_audit(&ev).await {
                Ok(_) => last = Some(changes),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot write the directory.sync_held audit event")
                }
            }
        }
        *self.last_hold.lock() = last;
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
            // With several portals, one syncs: the holder of the jobs lease.
            if self.control.as_ref().is_some_and(|c| !c.leads()) {
                continue;
            }
            let started = Instant::now();
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
                    self.publish().await;
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "sync_tests.rs"]
mod tests;
