//! Enrolled devices: lookup by id or token, listing, key rotation, revocation.

use std::net::Ipv4Addr;
use std::time::Duration;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row as _};

use super::audit;
use super::users::{self, normalize_username, User};
use super::{hash_secret, random_token, Store, StoreError};
use crate::audit::{Action, AuditContext, NewAuditEvent};
use crate::key::PublicKey;
use crate::time::{self, duration_ms};

/// Whether a device may connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    Active,
    /// Cut by the directory sync (user left `vpn_users`, disabled, gone); restorable within
    /// `directory.suspend_grace`. Stored as status 'active' with `suspended_at` set.
    Suspended,
    Revoked,
}

impl DeviceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Active => "active",
            DeviceStatus::Suspended => "suspended",
            DeviceStatus::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<DeviceStatus> {
        match s {
            "active" => Some(DeviceStatus::Active),
            "suspended" => Some(DeviceStatus::Suspended),
            "revoked" => Some(DeviceStatus::Revoked),
            _ => None,
        }
    }
}

/// A device as stored (its token only as a hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub id: i64,
    pub username: String,
    /// Name given by IT staff on the enrolment code.
    pub name: String,
    /// Host name reported by the agent.
    pub hostname: String,
    pub public_key: PublicKey,
    pub tunnel_address: Ipv4Addr,
    pub status: DeviceStatus,
    pub created_at: i64,
    pub rotated_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub revoke_reason: Option<String>,
    /// When the key must be rotated (unix ms); `None`: no expiry.
    pub expires_at: Option<i64>,
    /// When the directory sync suspended it (unix ms), `None` unless suspended.
    pub suspended_at: Option<i64>,
    /// Why it is suspended, `None` unless suspended.
    pub suspend_reason: Option<String>,
}

impl Device {
    /// The public key in standard base64, as `wg` prints it.
    pub fn public_key_base64(&self) -> String {
        self.public_key.to_base64()
    }

    /// The API's view of the device (`GET /api/v1/devices`, `sesame devices list --format json`).
    pub fn summary(&self) -> crate::api::DeviceSummary {
        crate::api::DeviceSummary {
            id: self.id,
            username: self.username.clone(),
            name: self.name.clone(),
            hostname: self.hostname.clone(),
            public_key: self.public_key_base64(),
            tunnel_address: self.tunnel_address.to_string(),
            status: self.status.as_str().to_string(),
            created_at: time::format(self.created_at),
            revoked_at: self.revoked_at.map(time::format),
        }
    }
}

/// The rules of a key rotation (`[devices]` and the portal's rate limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rotation {
    /// New expiry = now + this; `None` keeps the current expiry.
    pub key_lifetime: Option<Duration>,
    /// No expiry beyond enrolment + this, and no rotation past it; `None`: unbounded.
    pub max_lifetime: Option<Duration>,
    /// Least time between two rotations of one device.
    pub min_interval: Duration,
}

/// An active device and its owner: one entry of the gateway's desired peer set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceWithUser {
    pub device: Device,
    pub user: User,
}

pub(crate) const COLUMNS: &str = "d.id AS d_id, d.username AS d_username, d.name AS d_name, \
    d.hostname AS d_hostname, d.public_key AS d_public_key, d.tunnel_address AS d_tunnel_address, \
    d.status AS d_status, d.created_at AS d_created_at, d.rotated_at AS d_rotated_at, \
    d.revoked_at AS d_revoked_at, d.revoke_reason AS d_revoke_reason, d.expires_at AS d_expires_at, \
    d.suspended_at AS d_suspended_at, d.suspend_reason AS d_suspend_reason";

pub(crate) const USER_COLUMNS: &str =
    "u.username AS u_username, u.dn AS u_dn, u.display_name AS u_display_name, \
    u.groups AS u_groups, u.disabled AS u_disabled, u.last_sync AS u_last_sync, \
    u.missing_syncs AS u_missing_syncs";

pub(crate) fn from_row(row: &AnyRow) -> Result<Device, StoreError> {
    let corrupt = |message: String| StoreError::Corrupt {
        table: "devices",
        message,
    };
    let key: String = row.try_get("d_public_key")?;
    let addr: String = row.try_get("d_tunnel_address")?;
    let status: String = row.try_get("d_status")?;
    let suspended_at: Option<i64> = row.try_get("d_suspended_at")?;
    let status = match DeviceStatus::parse(&status) {
        Some(DeviceStatus::Active) if suspended_at.is_some() => DeviceStatus::Suspended,
        Some(s @ (DeviceStatus::Active | DeviceStatus::Revoked)) => s,
        _ => return Err(corrupt(format!("status {status:?}"))),
    };
    Ok(Device {
        id: row.try_get("d_id")?,
        username: row.try_get("d_username")?,
        name: row.try_get("d_name")?,
        hostname: row.try_get("d_hostname")?,
        public_key: PublicKey::parse(&key).map_err(|e| corrupt(format!("public_key: {e}")))?,
        tunnel_address: addr
            .parse()
            .map_err(|_| corrupt(format!("tunnel_address {addr:?}")))?,
        status,
        created_at: row.try_get("d_created_at")?,
        rotated_at: row.try_get("d_rotated_at")?,
        revoked_at: row.try_get("d_revoked_at")?,
        revoke_reason: row.try_get("d_revoke_reason")?,
        expires_at: row.try_get("d_expires_at")?,
        suspended_at,
        suspend_reason: row.try_get("d_suspend_reason")?,
    })
}

pub(crate) async fn by_id(conn: &mut AnyConnection, id: i64) -> Result<Option<Device>, StoreError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM devices d WHERE d.id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

pub(crate) async fn key_in_use(
    conn: &mut AnyConnection,
    key: &PublicKey,
) -> Result<bool, StoreError> {
    let row = sqlx::query("SELECT id FROM devices WHERE public_key = $1")
        .bind(key.to_base64())
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.is_some())
}

/// Marks one active device revoked and audits it (`action`: `device.revoked` or
/// `device.expired`). Returns the updated device. A suspended device may be revoked.
async fn revoke_one(
    conn: &mut AnyConnection,
    id: i64,
    reason: &str,
    ctx: &AuditContext,
    now: i64,
    action: Action,
) -> Result<Device, StoreError> {
    let done = sqlx::query(
        "UPDATE devices SET status = 'revoked', revoked_at = $1, revoke_reason = $2 \
         WHERE id = $3 AND status = 'active'",
    )
    .bind(now)
    .bind(reason)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() != 1 {
        return Err(match by_id(conn, id).await? {
            Some(_) => StoreError::DeviceRevoked(id),
            None => StoreError::DeviceNotFound(id),
        });
    }
    let device = by_id(conn, id)
        .await?
        .ok_or(StoreError::DeviceNotFound(id))?;
    audit::append(
        conn,
        now,
        &NewAuditEvent::new(action, ctx, format!("device:{id}")).details(serde_json::json!({
            "username": device.username,
            "name": device.name,
            "tunnel_address": device.tunnel_address.to_string(),
            "reason": reason,
        })),
    )
    .await?;
    Ok(device)
}

impl Store {
    /// A device by id, whatever its status.
    pub async fn device(&self, id: i64) -> Result<Option<Device>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        by_id(&mut conn, id).await
    }

    /// The device holding this bearer token (plaintext as the agent sends it), whatever its
    /// status: the caller refuses revoked ones with `device_revoked`.
    pub async fn device_by_token(&self, token: &str) -> Result<Option<Device>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM devices d WHERE d.token_hash = $1"
        ))
        .bind(hash_secret(token))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Every device (revoked included), or only `username`'s, by id.
    pub async fn list_devices(&self, username: Option<&str>) -> Result<Vec<Device>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM devices d WHERE ($1 IS NULL OR d.username = $1) ORDER BY d.id"
        ))
        .bind(username.map(normalize_username))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Active (not suspended) devices with their owners, by id: the gateway's desired peer set
    /// before policy.
    pub async fn active_devices(&self) -> Result<Vec<DeviceWithUser>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS}, {USER_COLUMNS} FROM devices d JOIN users u ON u.username = d.username \
             WHERE d.status = 'active' AND d.suspended_at IS NULL ORDER BY d.id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeviceWithUser {
                    device: from_row(r)?,
                    user: users::from_row(r, "u_")?,
                })
            })
            .collect()
    }

    /// Replaces an active device's public key (atomically, the new key checked unused) and
    /// its bearer token (the old one dies; the new one is returned, the only time it exists in
    /// clear). With `key_lifetime`, moves its expiry to now + lifetime, never beyond enrolment +
    /// `max_lifetime`. Audits `device.rotated`.
    pub async fn rotate_key(
        &self,
        id: i64,
        new_key: &PublicKey,
        rules: &Rotation,
        ctx: &AuditContext,
    ) -> Result<(Device, String), StoreError> {
        let now = self.now_ms();
        let mut tx = self.write_tx().await?;
        let old = by_id(&mut tx, id)
            .await?
            .ok_or(StoreError::DeviceNotFound(id))?;
        if old.status == DeviceStatus::Revoked {
            return Err(StoreError::DeviceRevoked(id));
        }
        let end_of_life = rules
            .max_lifetime
            .map(|m| old.created_at.saturating_add(duration_ms(m)));
        if end_of_life.is_some_and(|end| now >= end) {
            return Err(StoreError::DeviceTooOld(id));
        }
        if let Some(last) = old.rotated_at {
            let since = now.saturating_sub(last);
            let min = duration_ms(rules.min_interval);
            if since < min {
                let wait = u64::try_from((min - since + 999) / 1000).unwrap_or(1);
                return Err(StoreError::RotationTooSoon {
                    retry_after_secs: wait.max(1),
                });
            }
        }
        if key_in_use(&mut tx, new_key).await? {
            return Err(StoreError::PublicKeyInUse);
        }
        let expires_at = rules
            .key_lifetime
            .map(|l| now.saturating_add(duration_ms(l)))
            .or(old.expires_at)
            .map(|e| end_of_life.map_or(e, |end| e.min(end)));
        let token = random_token();
        sqlx::query(
            "UPDATE devices SET public_key = $1, rotated_at = $2, expires_at = $3, token_hash = $4 \
             WHERE id = $5",
        )
        .bind(new_key.to_base64())
        .bind(now)
        .bind(expires_at)
        .bind(hash_secret(&token))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let device = by_id(&mut tx, id)
            .await?
            .ok_or(StoreError::DeviceNotFound(id))?;
        audit::append(
            &mut tx,
            now,
            &NewAuditEvent::new(Action::DeviceRotated, ctx, format!("device:{id}")).details(
                serde_json::json!({
                    "username": device.username,
                    "old_public_key": old.public_key_base64(),
                    "new_public_key": device.public_key_base64(),
                }),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok((device, token))
    }

    /// Revokes one device. `DeviceRevoked` if it already was, `DeviceNotFound` if no such id.
    pub async fn revoke_device(
        &self,
        id: i64,
        reason: &str,
        ctx: &AuditContext,
    ) -> Result<Device, StoreError> {
        let now = self.now_ms();
        let mut tx = self.write_tx().await?;
        let device = revoke_one(&mut tx, id, reason, ctx, now, Action::DeviceRevoked).await?;
        tx.commit().await?;
        Ok(device)
    }

    /// Revokes every active device of `username` (left `vpn_users`, disabled). Returns the
    /// devices revoked now, so their live sessions can be cut.
    pub async fn revoke_user_devices(
        &self,
        username: &str,
        reason: &str,
        ctx: &AuditContext,
    ) -> Result<Vec<Device>, StoreError> {
        let now = self.now_ms();
        let mut tx = self.write_tx().await?;
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM devices WHERE username = $1 AND status = 'active' ORDER BY id",
        )
        .bind(normalize_username(username))
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(revoke_one(&mut tx, id, reason, ctx, now, Action::DeviceRevoked).await?);
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Revokes every active device whose key expired (`expires_at <= now`), auditing each as
    /// `device.expired` by `system`. Returns them, so their sessions can be cut.
    pub async fn expire_devices(&self) -> Result<Vec<Device>, StoreError> {
        let now = self.now_ms();
        self.revoke_selected(
            "SELECT id FROM devices WHERE status = 'active' AND expires_at IS NOT NULL \
             AND expires_at <= $1 ORDER BY id",
            now,
            "key expired",
            Action::DeviceExpired,
        )
        .await
    }

    /// Revokes, as `system` in one transaction, the devices whose ids `select` returns for
    /// the bound value `bound` (a time limit), auditing each as `action`.
    pub(super) async fn revoke_selected(
        &self,
        select: &str,
        bound: i64,
        reason: &str,
        action: Action,
    ) -> Result<Vec<Device>, StoreError> {
        let now = self.now_ms();
        let mut tx = self.write_tx().await?;
        let ids: Vec<i64> = sqlx::query_scalar(select)
            .bind(bound)
            .fetch_all(&mut *tx)
            .await?;
        let ctx = AuditContext::system();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(revoke_one(&mut tx, id, reason, &ctx, now, action).await?);
        }
        tx.commit().await?;
        Ok(out)
    }
}
