//! Second-factor rows: each user's factor (sealed TOTP secret, last step), recovery and registration codes, and each device's access window.

use std::time::Duration;

use sqlx::any::AnyRow;
use sqlx::Row as _;

use super::codes::{generate_code, stored_hash, CodeLookup};
use super::users::normalize_username;
use super::{Store, StoreError};
use crate::audit::NewAuditEvent;
use crate::time::duration_ms;

/// A user's factor (confirmed, or only a registration in progress).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Factor {
    pub username: String,
    /// `totp` or `radius`.
    pub kind: String,
    /// The confirmed secret, sealed (`mfa::SecretKey`); `None` while only pending.
    pub secret_enc: Option<String>,
    pub registered_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub last_step: Option<i64>,
    /// A registration in progress: the new secret, sealed.
    pub pending_secret_enc: Option<String>,
    pub pending_at: Option<i64>,
}

impl Factor {
    /// True once a first code confirmed it.
    pub fn is_registered(&self) -> bool {
        self.registered_at.is_some()
    }
}

/// A device's last access window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub device_id: i64,
    pub username: String,
    /// `agent` or `web`.
    pub source: String,
    pub opened_at: i64,
    pub expires_at: i64,
    pub last_activity_at: i64,
    pub closed_at: Option<i64>,
    pub close_reason: Option<String>,
}

impl Window {
    /// Open at `now` (not closed early, not expired).
    pub fn is_open(&self, now: i64) -> bool {
        self.closed_at.is_none() && self.expires_at > now
    }
}

/// An open window as the control plane needs it for the peer set (`Store::open_windows`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenWindow {
    pub device_id: i64,
    /// The window's end, unix ms (wall clock).
    pub until_ms: i64,
    /// The last activity the portal recorded, unix ms (the gateway measures idle itself).
    pub last_activity_ms: i64,
}

const FACTOR_COLUMNS: &str = "username, kind, secret_enc, registered_at, last_used_at, last_step, \
                              pending_secret_enc, pending_at";
const WINDOW_COLUMNS: &str = "device_id, username, source, opened_at, expires_at, \
                              last_activity_at, closed_at, close_reason";

fn factor_from_row(row: &AnyRow) -> Result<Factor, StoreError> {
    Ok(Factor {
        username: row.try_get("username")?,
        kind: row.try_get("kind")?,
        secret_enc: row.try_get("secret_enc")?,
        registered_at: row.try_get("registered_at")?,
        last_used_at: row.try_get("last_used_at")?,
        last_step: row.try_get("last_step")?,
        pending_secret_enc: row.try_get("pending_secret_enc")?,
        pending_at: row.try_get("pending_at")?,
    })
}

fn window_from_row(row: &AnyRow) -> Result<Window, StoreError> {
    Ok(Window {
        device_id: row.try_get("device_id")?,
        username: row.try_get("username")?,
        source: row.try_get("source")?,
        opened_at: row.try_get("opened_at")?,
        expires_at: row.try_get("expires_at")?,
        last_activity_at: row.try_get("last_activity_at")?,
        closed_at: row.try_get("closed_at")?,
        close_reason: row.try_get("close_reason")?,
    })
}

impl Store {
    /// The factor of `username`, confirmed or pending.
    pub async fn mfa_factor(&self, username: &str) -> Result<Option<Factor>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {FACTOR_COLUMNS} FROM mfa_factors WHERE username = $1"
        ))
        .bind(normalize_username(username))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(factor_from_row).transpose()
    }

    /// The device `token` names and its owner's factor (confirmed or pending), in one read:
    /// what an unlock checks.
    pub async fn mfa_device_by_token(
        &self,
        token: &str,
    ) -> Result<Option<(super::Device, Option<Factor>)>, StoreError> {
        let factor = FACTOR_COLUMNS
            .split(", ")
            .map(|c| format!("f.{c} AS {c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let row = sqlx::query(&format!(
            "SELECT {}, {factor} FROM devices d LEFT JOIN mfa_factors f \
             ON f.username = d.username WHERE d.token_hash = $1",
            super::devices::COLUMNS
        ))
        .bind(super::hash_secret(token))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let device = super::devices::from_row(&row)?;
        let has_factor = row.try_get::<Option<String>, _>("username")?.is_some();
        let factor = if has_factor {
            Some(factor_from_row(&row)?)
        } else {
            None
        };
        Ok(Some((device, factor)))
    }

    /// Every confirmed factor, by user name (the access review).
    pub async fn mfa_factors(&self) -> Result<Vec<Factor>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {FACTOR_COLUMNS} FROM mfa_factors WHERE registered_at IS NOT NULL \
             ORDER BY username"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(factor_from_row).collect()
    }

    /// Starts (or restarts) a registration: `sealed` waits in `pending_secret_enc` until
    /// [`Store::mfa_confirm`]. A confirmed factor stays in force meanwhile.
    pub async fn mfa_begin_registration(
        &self,
        username: &str,
        kind: &str,
        sealed: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO mfa_factors (username, kind, pending_secret_enc, pending_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (username) DO UPDATE SET \
             pending_secret_enc = excluded.pending_secret_enc, pending_at = excluded.pending_at",
        )
        .bind(normalize_username(username))
        .bind(kind)
        .bind(sealed)
        .bind(self.now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Confirms the pending registration of `username` (its first code was good at `step`):
    /// the pending secret becomes the factor, `recovery_hashes` replace the recovery codes, and
    /// `registration_code` (when the registration came with one) is spent, all in one writer
    /// transaction. Refused with [`StoreError::MfaNotPending`] without a pending registration,
    /// [`StoreError::MfaRegistrationCode`] when the code is not usable any more.
    pub async fn mfa_confirm(
        &self,
        username: &str,
        registration_code: Option<&str>,
        step: i64,
        recovery_hashes: &[String],
    ) -> Result<(), StoreError> {
        let user = normalize_username(username);
        let now = self.now_ms();
        let mut tx = self.write_tx().await?;
        if let Some(code) = registration_code {
            let lookup =
                CodeLookup::new(self.code_key(), code).ok_or(StoreError::MfaRegistrationCode)?;
            let sql = format!(
                "UPDATE mfa_registration_codes SET used_at = $1 WHERE username = $2 \
                 AND used_at IS NULL AND expires_at > $1 AND {}",
                CodeLookup::condition(3)
            );
            let spent = lookup
                .bind(sqlx::query(&sql).bind(now).bind(&user))
                .execute(&mut *tx)
                .await?;
            if spent.rows_affected() != 1 {
                return Err(StoreError::MfaRegistrationCode);
            }
        }
        let done = sqlx::query(
            "UPDATE mfa_factors SET secret_enc = pending_secret_enc, registered_at = $1, \
             last_used_at = $1, last_step = $2, pending_secret_enc = NULL, pending_at = NULL \
             WHERE username = $3 AND pending_secret_enc IS NOT NULL",
        )
        .bind(now)
        .bind(step)
        .bind(&user)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::MfaNotPending);
        }
        sqlx::query("DELETE FROM mfa_recovery_codes WHERE username = $1")
            .bind(&user)
            .execute(&mut *tx)
            .await?;
        for hash in recovery_hashes {
            sqlx::query("INSERT INTO mfa_recovery_codes (username, code_hash) VALUES ($1, $2)")
                .bind(&user)
                .bind(hash)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Spends TOTP `step` for `username`: true when it is later than every step accepted before
    /// (one conditional UPDATE, so two requests racing with the same code cannot both win).
    pub async fn mfa_accept_step(&self, username: &str, step: i64) -> Result<bool, StoreError> {
        // Group-committed: logins with a code at the same moment share one transaction (one
        // fsync) instead of one each.
        self.commit_step(normalize_username(username), step).await
    }

    /// Spends the recovery code hashed `hash`: true when it was unused.
    pub async fn mfa_use_recovery_code(
        &self,
        username: &str,
        hash: &str,
    ) -> Result<bool, StoreError> {
        let user = normalize_username(username);
        let now = self.now_ms();
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE mfa_recovery_codes SET used_at = $1 WHERE username = $2 AND code_hash = $3 \
             AND used_at IS NULL",
        )
        .bind(now)
        .bind(&user)
        .bind(hash)
        .execute(&mut *tx)
        .await?;
        let used = done.rows_affected() == 1;
        if used {
            sqlx::query("UPDATE mfa_factors SET last_used_at = $1 WHERE username = $2")
                .bind(now)
                .bind(&user)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(used)
    }

    /// Records a code accepted by a provider that keeps no secret here (RADIUS): the factor row
    /// (created on first use) carries `last_used_at` for the access review and reauth_interval.
    pub async fn mfa_record_use(&self, username: &str, kind: &str) -> Result<(), StoreError> {
        let now = self.now_ms();
        sqlx::query(
            "INSERT INTO mfa_factors (username, kind, registered_at, last_used_at) \
             VALUES ($1, $2, $3, $3) ON CONFLICT (username) DO UPDATE SET last_used_at = $3",
        )
        .bind(normalize_username(username))
        .bind(kind)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Issues a one-time registration code for `username`, valid `ttl`; returns it (shown once,
    /// stored hashed). Earlier unused codes of the user stop working.
    pub async fn mfa_issue_registration_code(
        &self,
        username: &str,
        ttl: Duration,
    ) -> Result<String, StoreError> {
        let user = normalize_username(username);
        let code = generate_code();
        let (hash, kind) = stored_hash(self.code_key(), &code)
            .ok_or_else(|| StoreError::InvalidInput("generated code does not normalize".into()))?;
        let now = self.now_ms();
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM mfa_registration_codes WHERE username = $1 AND used_at IS NULL")
            .bind(&user)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO mfa_registration_codes (code_hash, username, created_at, expires_at, hash_kind) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(hash)
        .bind(&user)
        .bind(now)
        .bind(now.saturating_add(duration_ms(ttl)))
        .bind(kind)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(code)
    }

    /// Whether `code` is a usable registration code of `username` (unused, unexpired); does
    /// not spend it ([`Store::mfa_confirm`] does).
    pub async fn mfa_registration_code_usable(
        &self,
        username: &str,
        code: &str,
    ) -> Result<bool, StoreError> {
        let Some(lookup) = CodeLookup::new(self.code_key(), code) else {
            return Ok(false);
        };
        let sql = format!(
            "SELECT 1 AS ok FROM mfa_registration_codes WHERE username = $1 \
             AND used_at IS NULL AND expires_at > $2 AND {}",
            CodeLookup::condition(3)
        );
        let row = lookup
            .bind(
                sqlx::query(&sql)
                    .bind(normalize_username(username))
                    .bind(self.now_ms()),
            )
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Removes the factor of `username` (and its recovery codes); true when there was one.
    pub async fn mfa_remove_factor(&self, username: &str) -> Result<bool, StoreError> {
        let user = normalize_username(username);
        let mut tx = self.write_tx().await?;
        let done = sqlx::query("DELETE FROM mfa_factors WHERE username = $1")
            .bind(&user)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM mfa_recovery_codes WHERE username = $1")
            .bind(&user)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Opens (or replaces) the access window of `device_id` until `expires_at`.
    pub async fn mfa_open_window(
        &self,
        device_id: i64,
        username: &str,
        source: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.mfa_unlock(WindowOpening {
            device_id,
            username: username.to_string(),
            source: source.to_string(),
            expires_at,
            step: None,
            audit: Vec::new(),
        })
        .await
        .map(|_| ())
    }

    /// Opens the window `open` describes, spending its code's step and appending its events in
    /// the same transaction, group-committed with concurrent logins and unlocks: false (nothing
    /// written) when that step, or a later one, was spent already.
    pub async fn mfa_unlock(&self, open: WindowOpening) -> Result<bool, StoreError> {
        self.submit_verdict(super::group::Write::Window(Box::new(open)))
            .await
    }

    /// The last window of `device_id`, open or not.
    pub async fn mfa_window(&self, device_id: i64) -> Result<Option<Window>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {WINDOW_COLUMNS} FROM mfa_windows WHERE device_id = $1"
        ))
        .bind(device_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(window_from_row).transpose()
    }

    /// Closes the window of `device_id` for `reason` (`down`, `revoked`) if it is open now;
    /// true when it was.
    pub async fn mfa_close_window(&self, device_id: i64, reason: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE mfa_windows SET closed_at = $1, close_reason = $2 WHERE device_id = $3 \
             AND closed_at IS NULL AND expires_at > $1",
        )
        .bind(self.now_ms())
        .bind(reason)
        .bind(device_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A gateway closed the window of `device_id` that ends at `until_ms` (`expired`, `idle`):
    /// marks that window closed, if the store has not closed it yet. A newer window (another
    /// end) stays open: a report delivered late (a site gateway's spool) never closes it.
    pub async fn mfa_gateway_closed_window(
        &self,
        device_id: i64,
        until_ms: i64,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE mfa_windows SET closed_at = $1, close_reason = $2 WHERE device_id = $3 \
             AND closed_at IS NULL AND expires_at = $4",
        )
        .bind(self.now_ms())
        .bind(reason)
        .bind(device_id)
        .bind(until_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Closes the open windows of `username` (only those opened from `source` when given);
    /// returns the devices whose window closed.
    pub async fn mfa_close_user_windows(
        &self,
        username: &str,
        source: Option<&str>,
        reason: &str,
    ) -> Result<Vec<i64>, StoreError> {
        let now = self.now_ms();
        let user = normalize_username(username);
        let mut tx = self.write_tx().await?;
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT device_id FROM mfa_windows WHERE username = $1 AND closed_at IS NULL \
             AND expires_at > $2 AND ($3 IS NULL OR source = $3) ORDER BY device_id",
        )
        .bind(&user)
        .bind(now)
        .bind(source)
        .fetch_all(&mut *tx)
        .await?;
        for id in &ids {
            sqlx::query(
                "UPDATE mfa_windows SET closed_at = $1, close_reason = $2 WHERE device_id = $3",
            )
            .bind(now)
            .bind(reason)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// Every window open now, by device id: what the control plane puts in the peer set
    /// (`mfa_until` per device peer).
    pub async fn open_windows(&self) -> Result<Vec<OpenWindow>, StoreError> {
        let rows = sqlx::query(
            "SELECT device_id, expires_at, last_activity_at FROM mfa_windows \
             WHERE closed_at IS NULL AND expires_at > $1 ORDER BY device_id",
        )
        .bind(self.now_ms())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(OpenWindow {
                    device_id: row.try_get("device_id")?,
                    until_ms: row.try_get("expires_at")?,
                    last_activity_ms: row.try_get("last_activity_at")?,
                })
            })
            .collect()
    }
}

/// An access window to open ([`Store::mfa_unlock`]).
#[derive(Debug, Clone)]
pub struct WindowOpening {
    pub device_id: i64,
    pub username: String,
    /// `agent` or `web` (`mfa_windows.source`).
    pub source: String,
    pub expires_at: i64,
    /// The TOTP step of the code that opens it, spent with it (`None`: nothing to spend).
    pub step: Option<i64>,
    /// Appended with it, in order (`mfa.verified`, `mfa.window_opened`).
    pub audit: Vec<NewAuditEvent>,
}

#[path = "mfa_writes.rs"]
mod writes;
pub(crate) use writes::{accept_steps, write_windows};

#[cfg(test)]
#[path = "mfa_tests.rs"]
mod tests;
