//! The device list's SQL: owner, status, text search and delegated scope in one query, paged
//! by id (keyset), so a list of thousands of devices reads one page of rows.
//!
//! The text search reads a trigram index (migration 0019): on SQLite the FTS5 table
//! `devices_search`, walked in id order, on PostgreSQL a pg_trgm GIN index on the same text.

use super::devices::{from_row, COLUMNS};
use super::{bind_all, normalize_username, Backend, Bind, Device, DeviceStatus, Store, StoreError};
use crate::text::fold;
use sqlx::{AnyConnection, Row as _};

/// Which devices to read, and which page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceSearch {
    /// Only this user's devices.
    pub owner: Option<String>,
    pub status: Option<DeviceStatus>,
    /// Substring of the owner, device name or host name (case and accents ignored), or of the
    /// tunnel address.
    pub text: Option<String>,
    /// Only owners member of one of these groups (normalized DNs, as `[roles]` scopes are)…
    pub scope: Option<Vec<String>>,
    /// …or this user (a delegated technician's own devices).
    pub scope_also: Option<String>,
    /// Devices with an id above this one (the previous page's last id).
    pub after_id: Option<i64>,
    /// Page size; `None`: every matching device.
    pub limit: Option<i64>,
}

/// `%text%` for LIKE, with `\`, `%` and `_` escaped (the query says `ESCAPE '\'`).
fn like_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// `*text*` for GLOB (SQLite's FTS5 trigram index answers GLOB in id order; LIKE with ESCAPE it
/// does not index), with `*`, `?` and `[` as one-character classes. The text is folded, so the
/// case-sensitive GLOB matches as LIKE did.
fn glob_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('*');
    for c in text.chars() {
        match c {
            '*' => p.push_str("[*]"),
            '?' => p.push_str("[?]"),
            '[' => p.push_str("[[]"),
            c => p.push(c),
        }
    }
    p.push('*');
    p
}

/// What the text search matches for a device (the `search_text` column, migration 0010): its
/// owner, name and host name, folded, one per line.
pub(crate) fn search_text(username: &str, name: &str, hostname: &str) -> String {
    format!("{}\n{}\n{}", fold(username), fold(name), fold(hostname))
}

/// Fills `search_text` of devices stored before migration 0010 (or by an older binary);
/// returns how many. Cheap when there are none (one indexed-free scan of a small table).
pub(crate) async fn fill_search_text(conn: &mut AnyConnection) -> Result<u64, StoreError> {
    let rows =
        sqlx::query("SELECT id, username, name, hostname FROM devices WHERE search_text IS NULL")
            .fetch_all(&mut *conn)
            .await?;
    for row in &rows {
        let text = search_text(
            row.try_get("username")?,
            row.try_get("name")?,
            row.try_get("hostname")?,
        );
        sqlx::query("UPDATE devices SET search_text = $1 WHERE id = $2 AND search_text IS NULL")
            .bind(text)
            .bind(row.try_get::<i64, _>("id")?)
            .execute(&mut *conn)
            .await?;
    }
    Ok(rows.len() as u64)
}

/// Says, at each start on PostgreSQL, when migration 0019 could not create the trigram index
/// (the role may not create pg_trgm): the search then reads every device, and the log says
/// what a superuser runs (docs/install.md §6).
pub(crate) async fn warn_without_trigram_index(conn: &mut AnyConnection) -> Result<(), StoreError> {
    let found: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM pg_indexes WHERE indexname = 'devices_search_trgm' \
         AND schemaname = current_schema()",
    )
    .fetch_optional(&mut *conn)
    .await?;
    if found.is_none() {
        tracing::warn!(
            "recherche d'appareils sans index : pg_trgm indisponible, chaque recherche lit tous \
             les appareils ; un superutilisateur crée l'index (docs/install.md §6) / device \
             search without its index: pg_trgm unavailable, each search reads every device; a \
             superuser creates the index (docs/install.md §6)"
        );
    }
    Ok(())
}

impl DeviceSearch {
    /// Rows per page (at least one); `None`: every matching device.
    fn page_size(&self) -> Option<i64> {
        self.limit.map(|n| n.max(1))
    }

    /// The folded search text, when there is one.
    fn folded_text(&self) -> Option<String> {
        self.text
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(fold)
    }

    /// `FROM … WHERE …` and its binds, numbered from `$1`, and the column that orders the rows
    /// by id. With a text on SQLite, rows come from the trigram table in id order, joined to
    /// their device, so a page stops at its last match.
    fn rows_clause(&self, backend: Backend) -> (String, Vec<Bind>, &'static str) {
        let mut conds: Vec<String> = Vec::new();
        let mut binds: Vec<Bind> = Vec::new();
        let next = |binds: &mut Vec<Bind>, b: Bind| {
            binds.push(b);
            format!("${}", binds.len())
        };
        if let Some(owner) = &self.owner {
            let p = next(&mut binds, Bind::Text(normalize_username(owner)));
            conds.push(format!("d.username = {p}"));
        }
        match self.status {
            None => {}
            Some(DeviceStatus::Active) => {
                conds.push("d.status = 'active' AND d.suspended_at IS NULL".into())
            }
            Some(DeviceStatus::Suspended) => {
                conds.push("d.status = 'active' AND d.suspended_at IS NOT NULL".into())
            }
            Some(DeviceStatus::Revoked) => conds.push("d.status = 'revoked'".into()),
        }
        let mut from = "devices d";
        let mut order = "d.id";
        match (self.folded_text(), backend) {
            (None, _) => {}
            (Some(text), Backend::Sqlite) => {
                from = "devices_search s JOIN devices d ON d.id = s.rowid";
                order = "s.rowid";
                let p = next(&mut binds, Bind::Text(glob_pattern(&text)));
                conds.push(format!("s.search GLOB {p}"));
            }
            // The expression of the index `devices_search_trgm`, as written there.
            (Some(text), Backend::Postgres) => {
                let p = next(&mut binds, Bind::Text(like_pattern(&text)));
                conds.push(format!(
                    "(COALESCE(d.search_text, '') || chr(10) || d.tunnel_address) \
                     LIKE {p} ESCAPE '\\'"
                ));
            }
        }
        if let Some(scope) = &self.scope {
            let mut alts = Vec::new();
            if !scope.is_empty() {
                let ps: Vec<String> = scope
                    .iter()
                    .map(|g| next(&mut binds, Bind::Text(g.clone())))
                    .collect();
                alts.push(format!(
                    "EXISTS (SELECT 1 FROM user_groups g WHERE g.username = d.username \
                     AND g.group_dn IN ({}))",
                    ps.join(", ")
                ));
            }
            if let Some(me) = &self.scope_also {
                let p = next(&mut binds, Bind::Text(normalize_username(me)));
                alts.push(format!("d.username = {p}"));
            }
            if alts.is_empty() {
                alts.push("1 = 0".into());
            }
            conds.push(format!("({})", alts.join(" OR ")));
        }
        if let Some(after) = self.after_id {
            let p = next(&mut binds, Bind::Int(after));
            conds.push(format!("{order} > {p}"));
        }
        let cond = if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        };
        (format!("{from}{cond}"), binds, order)
    }
}

impl Store {
    /// One page of devices matching `search`, by id, and the id to pass as the next page's
    /// `after_id` (`None` on the last page).
    pub async fn search_devices(
        &self,
        search: &DeviceSearch,
    ) -> Result<(Vec<Device>, Option<i64>), StoreError> {
        let limit = search.page_size();
        let (sql, binds) = self.search_sql(search);
        let rows = bind_all(sqlx::query(&sql), binds)
            .fetch_all(&self.pool)
            .await?;
        let mut devices = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
        let next = match limit {
            Some(n) if devices.len() as i64 > n => {
                devices.truncate(n as usize);
                devices.last().map(|d| d.id)
            }
            _ => None,
        };
        Ok((devices, next))
    }

    /// The statement [`Store::search_devices`] runs, and its binds.
    fn search_sql(&self, search: &DeviceSearch) -> (String, Vec<Bind>) {
        let (from, binds, order) = search.rows_clause(self.backend);
        let sql = match search.page_size() {
            Some(n) => format!(
                "SELECT {COLUMNS} FROM {from} ORDER BY {order} LIMIT {}",
                n + 1
            ),
            None => format!("SELECT {COLUMNS} FROM {from} ORDER BY {order}"),
        };
        (sql, binds)
    }

    /// What the database plans for [`Store::search_devices`] (`EXPLAIN QUERY PLAN` on SQLite,
    /// `EXPLAIN` on PostgreSQL), one line per step: to see which index a search reads.
    pub async fn device_search_plan(&self, search: &DeviceSearch) -> Result<String, StoreError> {
        let (sql, binds) = self.search_sql(search);
        let explain = match self.backend {
            Backend::Sqlite => format!("EXPLAIN QUERY PLAN {sql}"),
            Backend::Postgres => format!("EXPLAIN {sql}"),
        };
        let rows = bind_all(sqlx::query(&explain), binds)
            .fetch_all(&self.pool)
            .await?;
        let mut plan = String::new();
        for row in &rows {
            // SQLite: (id, parent, notused, detail); PostgreSQL: one text column.
            let line: String = match self.backend {
                Backend::Sqlite => row.try_get(3)?,
                Backend::Postgres => row.try_get(0)?,
            };
            plan.push_str(&line);
            plan.push('\n');
        }
        Ok(plan)
    }
}

impl Store {
    /// When each of `ids` last opened a tunnel session (`tunnel.session_started`), unix ms; a
    /// device never seen is absent. One seek per device on the audit log's device index.
    pub async fn last_session_starts(
        &self,
        ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, i64>, StoreError> {
        let mut out = std::collections::HashMap::new();
        for &id in ids {
            let row = sqlx::query(
                "SELECT ts FROM audit_events WHERE device_id = $1 AND action = $2 \
                 ORDER BY id DESC LIMIT 1",
            )
            .bind(id)
            .bind(crate::audit::Action::TunnelSessionStarted.as_str())
            .fetch_optional(&self.pool)
            .await?;
            if let Some(row) = row {
                out.insert(id, row.try_get::<i64, _>("ts")?);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(like_pattern("a_b%c\\d"), "%a\\_b\\%c\\\\d%");
    }

    #[test]
    fn glob_wildcards_are_classes() {
        assert_eq!(glob_pattern("a*b?c[d]e"), "*a[*]b[?]c[[]d]e*");
    }
}
