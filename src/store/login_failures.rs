//! Failure counts shared by several portals (`login_failures`, migration 0017): per key, the
//! failures of a short and a long window, an account's lock and when the row expires. The store
//! only counts: which keys, how long the windows are and when to lock are the caller's rules
//! (`service::ratelimit`).

use sqlx::any::AnyRow;
use sqlx::Row as _;

use super::{Store, StoreError};

/// One key's counts as stored (times in unix ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureCount {
    pub key: String,
    pub short_start: i64,
    pub short_count: i64,
    pub long_start: i64,
    pub long_count: i64,
    pub locked_until: Option<i64>,
}

/// The windows a failure is counted in, and how long a new row is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureWindows {
    /// Length of the short window: a failure past it starts a new one.
    pub short_ms: i64,
    /// Length of the long window.
    pub long_ms: i64,
}

const COLUMNS: &str = "key, short_start, short_count, long_start, long_count, locked_until";

fn from_row(row: &AnyRow) -> Result<FailureCount, StoreError> {
    Ok(FailureCount {
        key: row.try_get("key")?,
        short_start: row.try_get("short_start")?,
        short_count: row.try_get("short_count")?,
        long_start: row.try_get("long_start")?,
        long_count: row.try_get("long_count")?,
        locked_until: row.try_get("locked_until")?,
    })
}

impl Store {
    /// The counts of `keys` (those that have any): one primary-key lookup. The statement asks
    /// for a power of two of keys (at least 4; the last repeated to fill it): a handful of
    /// statement texts whatever the number of keys, each prepared once per connection.
    pub async fn failure_counts(&self, keys: &[&str]) -> Result<Vec<FailureCount>, StoreError> {
        let Some(last) = keys.last() else {
            return Ok(Vec::new());
        };
        let n = keys.len().next_power_of_two().max(4);
        let marks: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT {COLUMNS} FROM login_failures WHERE key IN ({})",
            marks.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for key in keys.iter().chain(std::iter::repeat_n(last, n - keys.len())) {
            query = query.bind(*key);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(from_row).collect()
    }

    /// Counts one failure now on each of `keys` (key, kept until) with ONE statement, and
    /// returns the counts after it. A window that ended is started again at now with this
    /// failure; a row is kept at least until its `kept until`. Rows are written in the order
    /// given: callers give the kinds of key in one fixed order, so concurrent counts never
    /// deadlock.
    pub async fn count_failure(
        &self,
        keys: &[(&str, i64)],
        windows: FailureWindows,
    ) -> Result<Vec<FailureCount>, StoreError> {
        const PER_ROW: usize = 6;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.now_ms();
        let short = format!("${}", keys.len() * PER_ROW + 1);
        let long = format!("${}", keys.len() * PER_ROW + 2);
        let sql = format!(
            "INSERT INTO login_failures \
             (key, short_start, short_count, long_start, long_count, expires_at) VALUES {rows} \
             ON CONFLICT (key) DO UPDATE SET \
             short_count = CASE WHEN login_failures.short_start <= excluded.short_start - {short} \
                 THEN 1 ELSE login_failures.short_count + 1 END, \
             short_start = CASE WHEN login_failures.short_start <= excluded.short_start - {short} \
                 THEN excluded.short_start ELSE login_failures.short_start END, \
             long_count = CASE WHEN login_failures.long_start <= excluded.long_start - {long} \
                 THEN 1 ELSE login_failures.long_count + 1 END, \
             long_start = CASE WHEN login_failures.long_start <= excluded.long_start - {long} \
                 THEN excluded.long_start ELSE login_failures.long_start END, \
             expires_at = CASE WHEN login_failures.expires_at > excluded.expires_at \
                 THEN login_failures.expires_at ELSE excluded.expires_at END \
             RETURNING {COLUMNS}",
            rows = super::row_placeholders(keys.len(), PER_ROW),
        );
        let mut query = sqlx::query(&sql);
        for (key, kept_until) in keys {
            query = query
                .bind(*key)
                .bind(now)
                .bind(1_i64)
                .bind(now)
                .bind(1_i64)
                .bind(*kept_until);
        }
        let rows = query
            .bind(windows.short_ms)
            .bind(windows.long_ms)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// Locks `key` until `until` (unix ms) unless a lock is already on; the row is kept at least
    /// as long. True when this call set the lock.
    pub async fn lock_failures(&self, key: &str, until: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE login_failures SET locked_until = $2, \
             expires_at = CASE WHEN expires_at > $2 THEN expires_at ELSE $2 END \
             WHERE key = $1 AND (locked_until IS NULL OR locked_until <= $3)",
        )
        .bind(key)
        .bind(until)
        .bind(self.now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Forgets the short window's failures of `key` (a success); the long count and a lock stay.
    pub async fn forget_short_failures(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE login_failures SET short_count = 0 WHERE key = $1 AND short_count > 0")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes the rows expired by now; how many.
    pub async fn prune_failures(&self) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM login_failures WHERE expires_at < $1")
            .bind(self.now_ms())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
