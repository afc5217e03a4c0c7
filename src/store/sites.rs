//! Site gateways' tokens (stored as hashes) and the last event sequence each site delivered.

use super::audit;
use super::{Store, StoreError};
use crate::audit::{Action, AuditContext, NewAuditEvent};

impl Store {
    /// Stores `token_hash` as `site`'s token, replacing the previous one, and audits
    /// `site.token_created` in the same transaction.
    pub async fn replace_site_token(
        &self,
        site: &str,
        token_hash: &str,
        ctx: &AuditContext,
    ) -> Result<(), StoreError> {
        let now = self.now_ms();
        let mut tx = self.write_tx().await?;
        let replaced: Option<i64> =
            sqlx::query_scalar("SELECT created_at FROM site_tokens WHERE site = $1")
                .bind(site)
                .fetch_optional(&mut *tx)
                .await?;
        sqlx::query("DELETE FROM site_tokens WHERE site = $1")
            .bind(site)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO site_tokens (site, token_hash, created_at) VALUES ($1, $2, $3)")
            .bind(site)
            .bind(token_hash)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        audit::append(
            &mut tx,
            now,
            &NewAuditEvent::new(Action::SiteTokenCreated, ctx, format!("site:{site}"))
                .details(serde_json::json!({ "site": site, "replaced": replaced.is_some() })),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The site whose current token hashes to `token_hash`, if any.
    pub async fn site_of_token(&self, token_hash: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT site FROM site_tokens WHERE token_hash = $1")
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Appends the events of a site's batch whose `seq` is above the last one stored for
    /// `site`, and moves that mark, in one transaction; returns how many were written.
    /// `events` are `(seq, event)` in increasing `seq` order.
    pub async fn append_site_events(
        &self,
        site: &str,
        events: &[(u64, NewAuditEvent)],
    ) -> Result<usize, StoreError> {
        let now = self.now_ms();
        let mut tx = self.write_tx().await?;
        let last: Option<i64> =
            sqlx::query_scalar("SELECT last_seq FROM site_event_seqs WHERE site = $1")
                .bind(site)
                .fetch_optional(&mut *tx)
                .await?;
        let last = last.unwrap_or(-1);
        let fresh: Vec<&NewAuditEvent> = events
            .iter()
            .filter(|(seq, _)| i64::try_from(*seq).is_ok_and(|s| s > last))
            .map(|(_, e)| e)
            .collect();
        let Some(top) = events.iter().map(|(s, _)| *s).max() else {
            return Ok(0);
        };
        let top = i64::try_from(top).unwrap_or(i64::MAX).max(last);
        audit::append_many(&mut tx, now, &fresh).await?;
        sqlx::query("DELETE FROM site_event_seqs WHERE site = $1")
            .bind(site)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO site_event_seqs (site, last_seq) VALUES ($1, $2)")
            .bind(site)
            .bind(top)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(fresh.len())
    }
}
