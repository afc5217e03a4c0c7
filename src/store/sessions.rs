//! Web portal sessions: the cookie value is a random token; only its hash is stored.

use std::time::Duration;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row as _};

use super::users::normalize_username;
use super::{hash_secret, random_token, Store, StoreError};
use crate::time::duration_ms;

/// What to open a session for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    pub username: String,
    /// Roles granted at login (`vpn_user`, `it_staff`, `auditor`).
    pub roles: Vec<String>,
    /// Lifetime from now.
    pub ttl: Duration,
}

/// A stored session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSession {
    pub id_hash: String,
    pub username: String,
    pub roles: Vec<String>,
    pub created_at: i64,
    pub last_seen: i64,
    pub expires_at: i64,
}

const COLUMNS: &str = "id_hash, username, roles, created_at, last_seen, expires_at";

fn from_row(row: &AnyRow) -> Result<WebSession, StoreError> {
    let roles: String = row.try_get("roles")?;
    Ok(WebSession {
        id_hash: row.try_get("id_hash")?,
        username: row.try_get("username")?,
        roles: serde_json::from_str(&roles).map_err(|e| StoreError::Corrupt {
            table: "web_sessions",
            message: format!("roles are not a JSON array: {e}"),
        })?,
        created_at: row.try_get("created_at")?,
        last_seen: row.try_get("last_seen")?,
        expires_at: row.try_get("expires_at")?,
    })
}

/// The row for a new session opened now for `new`, and its cookie value (shown once).
pub(crate) fn new_session(new: &NewSession, now: i64) -> (String, WebSession) {
    let token = random_token();
    let session = WebSession {
        id_hash: hash_secret(&token),
        username: normalize_username(&new.username),
        roles: new.roles.clone(),
        created_at: now,
        last_seen: now,
        expires_at: now.saturating_add(duration_ms(new.ttl)),
    };
    (token, session)
}

/// Inserts session rows with ONE statement (the group committer's logins share it: one round
/// trip for the batch instead of one per login, inside the serialised writer transaction).
pub(crate) async fn insert_sessions(
    conn: &mut AnyConnection,
    sessions: &[&WebSession],
) -> Result<(), StoreError> {
    const PER_ROW: usize = 6;
    if sessions.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO web_sessions (id_hash, username, roles, created_at, last_seen, expires_at) VALUES {}",
        super::row_placeholders(sessions.len(), PER_ROW)
    );
    let mut query = sqlx::query(&sql);
    for session in sessions {
        let roles = serde_json::to_string(&session.roles)
            .map_err(|e| StoreError::InvalidInput(e.to_string()))?;
        query = query
            .bind(session.id_hash.clone())
            .bind(session.username.clone())
            .bind(roles)
            .bind(session.created_at)
            .bind(session.last_seen)
            .bind(session.expires_at);
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

impl Store {
    /// Opens a session; returns the cookie value (shown once) and the stored session.
    pub async fn create_session(
        &self,
        new: &NewSession,
    ) -> Result<(String, WebSession), StoreError> {
        let (token, session) = new_session(new, self.now_ms());
        insert_sessions(&mut *self.pool.acquire().await?, &[&session]).await?;
        Ok((token, session))
    }

    /// The live session for a cookie value; `None` if unknown or expired.
    pub async fn session(&self, token: &str) -> Result<Option<WebSession>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM web_sessions WHERE id_hash = $1 AND expires_at > $2"
        ))
        .bind(hash_secret(token))
        .bind(self.now_ms())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Records activity on a live session; with `extend`, also pushes its expiry to now + extend
    /// (sliding idle timeout). Returns false if the session is unknown or expired.
    pub async fn touch_session(
        &self,
        token: &str,
        extend: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let now = self.now_ms();
        let new_expiry = extend.map(|d| now.saturating_add(duration_ms(d)));
        let done = sqlx::query(
            "UPDATE web_sessions SET last_seen = $1, expires_at = COALESCE($2, expires_at) \
             WHERE id_hash = $3 AND expires_at > $1",
        )
        .bind(now)
        .bind(new_expiry)
        .bind(hash_secret(token))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends a session (logout). Returns false if there was none.
    pub async fn delete_session(&self, token: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM web_sessions WHERE id_hash = $1")
            .bind(hash_secret(token))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends every session of `username` (disabled or deleted in the directory); returns how many.
    pub async fn delete_user_sessions(&self, username: &str) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM web_sessions WHERE username = $1")
            .bind(super::normalize_username(username))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Removes expired sessions; returns how many.
    pub async fn purge_expired_sessions(&self) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM web_sessions WHERE expires_at <= $1")
            .bind(self.now_ms())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
