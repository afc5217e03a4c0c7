//! Leases between processes on one database (`job_leases`, migration 0016): taken when free or
//! expired, renewed by their holder, released at its exit. The database arbitrates: one
//! statement takes or renews, so two portals never both hold a lease.

use super::{Store, StoreError};

impl Store {
    /// Takes the lease `name` for `holder` until now + `ttl_ms`, or renews it if `holder`
    /// already has it. True when `holder` holds it after the call; false when another holder's
    /// lease has not expired.
    pub async fn hold_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        let now = self.now_ms();
        let done = sqlx::query(
            "INSERT INTO job_leases (name, holder, acquired_at, expires_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
             acquired_at = CASE WHEN job_leases.holder = excluded.holder \
                 THEN job_leases.acquired_at ELSE excluded.acquired_at END, \
             expires_at = excluded.expires_at \
             WHERE job_leases.holder = excluded.holder OR job_leases.expires_at <= excluded.acquired_at",
        )
        .bind(name)
        .bind(holder)
        .bind(now)
        .bind(now.saturating_add(ttl_ms))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives the lease up if `holder` has it (a clean exit: the next portal need not wait for
    /// it to expire). The row stays, expired, naming its last holder.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE job_leases SET expires_at = 0 WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Who holds `name` now, if anyone (expired leases included: the caller compares times).
    pub async fn lease_holder(&self, name: &str) -> Result<Option<(String, i64)>, StoreError> {
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT holder, expires_at FROM job_leases WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row)
    }
}
