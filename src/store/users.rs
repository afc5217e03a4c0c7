//! Users as last read from the directory: upsert at login and sync, lookup.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row as _};

use super::{Store, StoreError};
use crate::directory::DirectoryUser;

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Lower-cased login name.
    pub username: String,
    pub dn: String,
    pub display_name: String,
    /// Group DNs, as the directory returned them.
    pub groups: Vec<String>,
    pub disabled: bool,
    /// Last time the directory was read for this user (unix ms).
    pub last_sync: i64,
    /// Consecutive completed sync passes that did not find this user in the directory.
    pub missing_syncs: i64,
}

/// How usernames are compared and stored: trimmed, lower-cased (directory logins are
/// case-insensitive in OpenLDAP's and AD's default schemas).
pub fn normalize_username(name: &str) -> String {
    name.trim().to_lowercase()
}

pub(crate) const COLUMNS: &str =
    "username, dn, display_name, groups, disabled, last_sync, missing_syncs";

pub(crate) fn from_row(row: &AnyRow, prefix: &str) -> Result<User, StoreError> {
    let col = |c: &str| format!("{prefix}{c}");
    let groups: String = row.try_get(col("groups").as_str())?;
    let disabled: i64 = row.try_get(col("disabled").as_str())?;
    Ok(User {
        username: row.try_get(col("username").as_str())?,
        dn: row.try_get(col("dn").as_str())?,
        display_name: row.try_get(col("display_name").as_str())?,
        groups: serde_json::from_str(&groups).map_err(|e| StoreError::Corrupt {
            table: "users",
            message: format!("groups are not a JSON array: {e}"),
        })?,
        disabled: disabled != 0,
        last_sync: row.try_get(col("last_sync").as_str())?,
        missing_syncs: row.try_get(col("missing_syncs").as_str())?,
    })
}

/// Inserts or refreshes a user from the directory.
pub(crate) async fn upsert(
    conn: &mut AnyConnection,
    user: &DirectoryUser,
    now: i64,
) -> Result<User, StoreError> {
    let stored = User {
        username: normalize_username(&user.username),
        dn: user.dn.clone(),
        display_name: user.display_name.clone(),
        groups: user.groups.clone(),
        disabled: user.disabled,
        last_sync: now,
        missing_syncs: 0,
    };
    if stored.username.is_empty() {
        return Err(StoreError::InvalidInput("empty username".into()));
    }
    let groups = serde_json::to_string(&stored.groups)
        .map_err(|e| StoreError::InvalidInput(e.to_string()))?;
    sqlx::query(
        "INSERT INTO users (username, dn, display_name, groups, disabled, last_sync) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (username) DO UPDATE SET dn = excluded.dn, display_name = excluded.display_name, \
         groups = excluded.groups, disabled = excluded.disabled, last_sync = excluded.last_sync, \
         missing_syncs = 0",
    )
    .bind(&stored.username)
    .bind(&stored.dn)
    .bind(&stored.display_name)
    .bind(groups)
    .bind(i64::from(stored.disabled))
    .bind(now)
    .execute(&mut *conn)
    .await?;
    write_groups(conn, &stored).await?;
    Ok(stored)
}

/// Rewrites the user's rows of `user_groups` (normalized DNs), which the device list's scope
/// filter reads.
async fn write_groups(conn: &mut AnyConnection, user: &User) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM user_groups WHERE username = $1")
        .bind(&user.username)
        .execute(&mut *conn)
        .await?;
    let dns: std::collections::BTreeSet<String> = user
        .groups
        .iter()
        .map(|g| crate::directory::normalize_dn(g))
        .collect();
    if dns.is_empty() {
        return Ok(());
    }
    let values: Vec<String> = (0..dns.len())
        .map(|i| format!("($1, ${})", i + 2))
        .collect();
    let sql = format!(
        "INSERT INTO user_groups (username, group_dn) VALUES {}",
        values.join(", ")
    );
    let mut q = sqlx::query(&sql).bind(&user.username);
    for dn in dns {
        q = q.bind(dn);
    }
    q.execute(&mut *conn).await?;
    Ok(())
}

impl Store {
    /// Inserts or refreshes a user from the directory (login, sync).
    pub async fn upsert_user(&self, user: &DirectoryUser) -> Result<User, StoreError> {
        // One transaction: the user row and its user_groups rows change together.
        let mut tx = self.write_tx().await?;
        let stored = upsert(&mut tx, user, self.now_ms()).await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// A user by login name (any case).
    pub async fn user(&self, username: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM users WHERE username = $1"))
            .bind(normalize_username(username))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(|r| from_row(r, "")).transpose()
    }

    /// Every user owning at least one active (or suspended) device: whom the directory sync
    /// must re-check.
    pub async fn users_with_active_devices(&self) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM users WHERE username IN \
             (SELECT username FROM devices WHERE status = 'active') ORDER BY username"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| from_row(r, "")).collect()
    }

    /// Every user owning an active device or signed in to the portal (a live web session):
    /// whom the directory sync re-reads, so sessions follow group changes too.
    pub async fn users_to_sync(&self) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM users WHERE username IN \
             (SELECT username FROM devices WHERE status = 'active') \
             OR username IN (SELECT username FROM web_sessions WHERE expires_at > $1) \
             ORDER BY username"
        ))
        .bind(self.now_ms())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| from_row(r, "")).collect()
    }
}
