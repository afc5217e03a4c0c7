//! Directory-driven device states: absence counters, suspension, restoration and the revocation
//! of suspensions older than the grace period.

use std::time::Duration;

use sqlx::AnyConnection;

use super::audit;
use super::devices::{by_id, Device};
use super::users::normalize_username;
use super::{Store, StoreError};
use crate::audit::{Action, AuditContext, NewAuditEvent};
use crate::time::duration_ms;

/// Why suspensions older than the grace period are revoked (the `device.revoked` reason).
pub const GRACE_EXPIRED_REASON: &str = "suspended longer than directory.suspend_grace";

/// Audits one suspension or restoration of `device`.
async fn audit_state(
    conn: &mut AnyConnection,
    now: i64,
    action: Action,
    ctx: &AuditContext,
    device: &Device,
    reason: &str,
) -> Result<(), StoreError> {
    audit::append(
        conn,
        now,
        &NewAuditEvent::new(action, ctx, format!("device:{}", device.id)).details(
            serde_json::json!({
                "username": device.username,
                "name": device.name,
                "tunnel_address": device.tunnel_address.to_string(),
                "reason": reason,
            }),
        ),
    )
    .await?;
    Ok(())
}

impl Store {
    /// Counts one more completed sync pass in which the directory did not find `username`;
    /// returns the new count. Any directory read of the user (sync, login) resets it.
    pub async fn record_missing(&self, username: &str) -> Result<i64, StoreError> {
        let mut tx = self.write_tx().await?;
        let name = normalize_username(username);
        sqlx::query("UPDATE users SET missing_syncs = missing_syncs + 1 WHERE username = $1")
            .bind(&name)
            .execute(&mut *tx)
            .await?;
        let n: i64 = sqlx::query_scalar("SELECT missing_syncs FROM users WHERE username = $1")
            .bind(&name)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Active, not suspended devices: what `max_changes_per_sync` percentages are taken of.
    pub async fn count_active_devices(&self) -> Result<usize, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM devices WHERE status = 'active' AND suspended_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Suspends every active, not yet suspended device of `username`, auditing each as
    /// `device.suspended`. Returns them, so their live sessions can be cut.
    pub async fn suspend_user_devices(
        &self,
        username: &str,
        reason: &str,
        ctx: &AuditContext,
    ) -> Result<Vec<Device>, StoreError> {
        let now = self.now_ms();
        let mut tx = self.write_tx().await?;
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM devices WHERE username = $1 AND status = 'active' \
             AND suspended_at IS NULL ORDER BY id",
        )
        .bind(normalize_username(username))
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            sqlx::query("UPDATE devices SET suspended_at = $1, suspend_reason = $2 WHERE id = $3")
                .bind(now)
                .bind(reason)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let device = by_id(&mut tx, id)
                .await?
                .ok_or(StoreError::DeviceNotFound(id))?;
            audit_state(&mut tx, now, Action::DeviceSuspended, ctx, &device, reason).await?;
            out.push(device);
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Restores `username`'s devices suspended less than `grace` ago (the user is back),
    /// auditing each as `device.restored`. Older suspensions stay for
    /// [`Store::revoke_expired_suspensions`].
    pub async fn restore_user_devices(
        &self,
        username: &str,
        grace: Duration,
        ctx: &AuditContext,
    ) -> Result<Vec<Device>, StoreError> {
        let now = self.now_ms();
        let since = now.saturating_sub(duration_ms(grace));
        let mut tx = self.write_tx().await?;
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM devices WHERE username = $1 AND status = 'active' \
             AND suspended_at IS NOT NULL AND suspended_at > $2 ORDER BY id",
        )
        .bind(normalize_username(username))
        .bind(since)
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let before = by_id(&mut tx, id)
                .await?
                .ok_or(StoreError::DeviceNotFound(id))?;
            sqlx::query(
                "UPDATE devices SET suspended_at = NULL, suspend_reason = NULL, restored_at = $1 \
                 WHERE id = $2",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            let device = by_id(&mut tx, id)
                .await?
                .ok_or(StoreError::DeviceNotFound(id))?;
            let was = before.suspend_reason.unwrap_or_default();
            let reason = format!("back in the directory (was: {was})");
            audit_state(&mut tx, now, Action::DeviceRestored, ctx, &device, &reason).await?;
            out.push(device);
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Revokes devices suspended `grace` ago or more (`device.revoked` by `system`): their user
    /// did not come back in time; they need a fresh enrolment.
    pub async fn revoke_expired_suspensions(
        &self,
        grace: Duration,
    ) -> Result<Vec<Device>, StoreError> {
        let before = self.now_ms().saturating_sub(duration_ms(grace));
        self.revoke_selected(
            "SELECT id FROM devices WHERE status = 'active' AND suspended_at IS NOT NULL \
             AND suspended_at <= $1 ORDER BY id",
            before,
            GRACE_EXPIRED_REASON,
            Action::DeviceRevoked,
        )
        .await
    }
}
