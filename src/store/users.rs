//! Users as last read from the directory: upsert at login and sync, lookup.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row as _};

use std::collections::{BTreeSet, HashMap};

use super::{Store, StoreError};
use crate::directory::{normalize_dn, DirectoryUser};

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
    /// Last time the row was written from the directory (unix ms): a login, a session's role
    /// refresh, or a sync pass that found the entry changed (a pass that finds it as stored
    /// writes nothing).
    pub last_sync: i64,
    /// Consecutive completed sync passes that did not find this user in the directory.
    pub missing_syncs: i64,
}

impl User {
    /// Whether this row already says what the directory says in `found` (DN, display name,
    /// groups in any order, disabled) and the last pass found the user: a sync pass has nothing
    /// to write for them.
    pub fn matches(&self, found: &DirectoryUser) -> bool {
        let sorted = |groups: &[String]| {
            let mut v = groups.to_vec();
            v.sort();
            v
        };
        self.missing_syncs == 0
            && self.username == normalize_username(&found.username)
            && self.dn == found.dn
            && self.display_name == found.display_name
            && self.disabled == found.disabled
            && sorted(&self.groups) == sorted(&found.groups)
    }
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
    let mut stored = upsert_many(conn, &[user], now).await?;
    stored
        .pop()
        .ok_or_else(|| StoreError::InvalidInput("empty username".into()))
}

/// Inserts or refreshes users from the directory with ONE statement (the group committer's
/// logins share it). A user listed twice is written once, as listed last.
pub(crate) async fn upsert_many(
    conn: &mut AnyConnection,
    users: &[&DirectoryUser],
    now: i64,
) -> Result<Vec<User>, StoreError> {
    const PER_ROW: usize = 6;
    let mut rows: Vec<(User, String)> = Vec::with_capacity(users.len());
    for user in users {
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
        // PostgreSQL refuses to update one row twice in a statement: the last one wins.
        rows.retain(|(u, _)| u.username != stored.username);
        rows.push((stored, groups));
    }
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut sql = format!(
        "INSERT INTO users (username, dn, display_name, groups, disabled, last_sync) VALUES {}",
        super::row_placeholders(rows.len(), PER_ROW)
    );
    sql.push_str(
        " ON CONFLICT (username) DO UPDATE SET dn = excluded.dn, display_name = excluded.display_name, \
         groups = excluded.groups, disabled = excluded.disabled, last_sync = excluded.last_sync, \
         missing_syncs = 0",
    );
    let mut query = sqlx::query(&sql);
    for (stored, groups) in &rows {
        query = query
            .bind(stored.username.clone())
            .bind(stored.dn.clone())
            .bind(stored.display_name.clone())
            .bind(groups.clone())
            .bind(i64::from(stored.disabled))
            .bind(now);
    }
    query.execute(&mut *conn).await?;
    write_groups(conn, &rows).await?;
    Ok(rows.into_iter().map(|(u, _)| u).collect())
}

/// `username IN ($1, …, $n)`.
fn username_in(n: usize) -> String {
    username_in_from(n, 1)
}

/// `username IN ($first, …)`, `n` placeholders.
fn username_in_from(n: usize, first: usize) -> String {
    let placeholders: Vec<String> = (first..first + n).map(|i| format!("${i}")).collect();
    format!("username IN ({})", placeholders.join(", "))
}

/// The `user_groups` rows of those of `usernames` that have any, per user.
async fn stored_groups<'a>(
    conn: &mut AnyConnection,
    usernames: impl ExactSizeIterator<Item = &'a str>,
) -> Result<HashMap<String, BTreeSet<String>>, StoreError> {
    let sql = format!(
        "SELECT username, group_dn FROM user_groups WHERE {}",
        username_in(usernames.len())
    );
    let mut q = sqlx::query(&sql);
    for name in usernames {
        q = q.bind(name.to_string());
    }
    let mut out: HashMap<String, BTreeSet<String>> = HashMap::new();
    for row in q.fetch_all(&mut *conn).await? {
        out.entry(row.try_get("username")?)
            .or_default()
            .insert(row.try_get("group_dn")?);
    }
    Ok(out)
}

/// Those of `users` (lower-cased name, groups) whose `user_groups` rows are not their groups
/// as normalized DNs, with the rows they need: one read.
async fn groups_differing<'a>(
    conn: &mut AnyConnection,
    users: impl Iterator<Item = (&'a str, &'a [String])>,
) -> Result<Vec<(&'a str, BTreeSet<String>)>, StoreError> {
    let wanted: Vec<(&str, BTreeSet<String>)> = users
        .map(|(name, groups)| (name, groups.iter().map(|g| normalize_dn(g)).collect()))
        .collect();
    if wanted.is_empty() {
        return Ok(wanted);
    }
    let before = stored_groups(conn, wanted.iter().map(|(name, _)| *name)).await?;
    let no_rows = BTreeSet::new();
    Ok(wanted
        .into_iter()
        .filter(|(name, dns)| before.get(*name).unwrap_or(&no_rows) != dns)
        .collect())
}

/// Brings the users' rows of `user_groups` (normalized DNs, which the device list's scope
/// filter reads) in line with their groups. The rows are read first and only the users whose
/// rows differ are rewritten: a login batch usually changes none, and rows the migration
/// stored lower-cased only are put in canonical form. One read, then for those users one DELETE
/// and INSERTs of at most `MAX_PAIRS` rows each (a batch of logins shares them, like the
/// users' upsert).
async fn write_groups(conn: &mut AnyConnection, rows: &[(User, String)]) -> Result<(), StoreError> {
    /// Rows per INSERT: 2 parameters each, well under SQLite's 32,766 and PostgreSQL's 65,535.
    const MAX_PAIRS: usize = 5_000;
    let changed = groups_differing(
        conn,
        rows.iter()
            .map(|(u, _)| (u.username.as_str(), &u.groups[..])),
    )
    .await?;
    if changed.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "DELETE FROM user_groups WHERE {}",
        username_in(changed.len())
    );
    let mut q = sqlx::query(&sql);
    for (name, _) in &changed {
        q = q.bind(name.to_string());
    }
    q.execute(&mut *conn).await?;
    let pairs: Vec<(&str, &String)> = changed
        .iter()
        .flat_map(|(name, dns)| dns.iter().map(move |dn| (*name, dn)))
        .collect();
    for chunk in pairs.chunks(MAX_PAIRS) {
        let sql = format!(
            "INSERT INTO user_groups (username, group_dn) VALUES {}",
            super::row_placeholders(chunk.len(), 2)
        );
        let mut q = sqlx::query(&sql);
        for (username, dn) in chunk {
            q = q.bind(username.to_string()).bind(dn.to_string());
        }
        q.execute(&mut *conn).await?;
    }
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

    /// [`Store::upsert_user`] for many users in one transaction (the directory sync's batches:
    /// one commit for hundreds of users instead of one each).
    pub async fn upsert_users(&self, users: &[&DirectoryUser]) -> Result<(), StoreError> {
        if users.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        upsert_many(&mut tx, users, self.now_ms()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A sync batch's writes, in a writer transaction only when something differs: the users
    /// marked `true` (their entry changed: as [`Store::upsert_users`]), those whose
    /// `user_groups` rows are not their groups in canonical form (rows migration 0008 stored
    /// lower-cased), and those with a live web session (their `last_sync` spares the session's
    /// next request a directory lookup, `[portal] role_refresh`). Any other user found as
    /// stored costs a read and is not written, so a pass that changes nothing holds no lock
    /// logins wait behind. Returns how many users were written.
    pub async fn sync_users(&self, users: &[(&DirectoryUser, bool)]) -> Result<usize, StoreError> {
        let names: Vec<(String, &DirectoryUser)> = users
            .iter()
            .filter(|(_, changed)| !changed)
            .map(|(u, _)| (normalize_username(&u.username), *u))
            .collect();
        let mut conn = self.pool.acquire().await?;
        let mut rewrite: BTreeSet<String> = groups_differing(
            &mut conn,
            names.iter().map(|(name, u)| (name.as_str(), &u.groups[..])),
        )
        .await?
        .into_iter()
        .map(|(name, _)| name.to_string())
        .collect();
        if !names.is_empty() {
            let sql = format!(
                "SELECT DISTINCT username FROM web_sessions WHERE expires_at > $1 AND {}",
                username_in_from(names.len(), 2)
            );
            let mut q = sqlx::query_scalar::<_, String>(&sql).bind(self.now_ms());
            for (name, _) in &names {
                q = q.bind(name.clone());
            }
            rewrite.extend(q.fetch_all(&mut *conn).await?);
        }
        drop(conn);
        let write: Vec<&DirectoryUser> = users
            .iter()
            .filter(|(u, changed)| *changed || rewrite.contains(&normalize_username(&u.username)))
            .map(|(u, _)| *u)
            .collect();
        self.upsert_users(&write).await?;
        Ok(write.len())
    }

    /// A user by login name (any case).
    pub async fn user(&self, username: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM users WHERE username = $1"))
            .bind(normalize_username(username))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(|r| from_row(r, "")).transpose()
    }

    /// The users member of one of `groups` (normalized DNs, as `[[roles.delegated]]` scopes
    /// are): a delegated technician's users.
    pub async fn usernames_in_groups(
        &self,
        groups: &[String],
    ) -> Result<std::collections::BTreeSet<String>, StoreError> {
        let mut out = std::collections::BTreeSet::new();
        // Groups per statement: under SQLite's bind limit.
        for chunk in groups.chunks(500) {
            let list: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT DISTINCT username FROM user_groups WHERE group_dn IN ({})",
                list.join(", ")
            );
            let mut q = sqlx::query_scalar::<_, String>(&sql);
            for g in chunk {
                q = q.bind(g);
            }
            out.extend(q.fetch_all(&self.pool).await?);
        }
        Ok(out)
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
