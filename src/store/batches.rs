//! Enrolment batches (bulk CSV uploads of the web portal) and their progress.

use sqlx::Row as _;

use super::codes::{insert, validate_all};
use super::{CreatedCode, NewCode, Store, StoreError};
use crate::audit::AuditContext;

/// A batch as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub id: i64,
    pub label: String,
    pub created_by: String,
    pub created_at: i64,
}

/// One code of a batch and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchCode {
    pub username: String,
    pub device_name: String,
    pub expires_at: i64,
    pub redeemed_at: Option<i64>,
    pub device_id: Option<i64>,
}

fn batch_of(r: &sqlx::any::AnyRow) -> Result<Batch, StoreError> {
    Ok(Batch {
        id: r.try_get("id")?,
        label: r.try_get("label")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
    })
}

impl Store {
    /// Creates a batch and all its codes in one transaction: all or nothing.
    pub async fn create_batch(
        &self,
        label: &str,
        news: &[NewCode],
        ctx: &AuditContext,
    ) -> Result<(i64, Vec<CreatedCode>), StoreError> {
        validate_all(news)?;
        let now = self.now_ms();
        let mut tx = self.write_tx().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO enrolment_batches (label, created_by, created_at) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(label)
        .bind(&ctx.actor)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let mut out = Vec::with_capacity(news.len());
        for new in news {
            out.push(insert(&mut tx, self.code_key(), new, ctx, now, Some(id)).await?);
        }
        tx.commit().await?;
        Ok((id, out))
    }

    /// Every batch, newest first.
    pub async fn batches(&self) -> Result<Vec<Batch>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, label, created_by, created_at FROM enrolment_batches ORDER BY id DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(batch_of).collect()
    }

    /// The batches whose every code is for a member of one of `scope`'s groups (normalized
    /// DNs, as `[[roles.delegated]]` scopes are), newest first: what a delegated technician may
    /// see. A batch with any code for someone outside the scope is left out whole (its label,
    /// author and date included).
    pub async fn batches_in_scope(&self, scope: &[String]) -> Result<Vec<Batch>, StoreError> {
        if scope.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<String> = (1..=scope.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT id, label, created_by, created_at FROM enrolment_batches b \
             WHERE EXISTS (SELECT 1 FROM enrolment_codes c WHERE c.batch_id = b.id) \
             AND NOT EXISTS (SELECT 1 FROM enrolment_codes c WHERE c.batch_id = b.id \
               AND NOT EXISTS (SELECT 1 FROM user_groups g WHERE g.username = c.username \
                 AND g.group_dn IN ({}))) \
             ORDER BY id DESC",
            list.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for g in scope {
            q = q.bind(g);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(batch_of).collect()
    }

    /// One batch and its codes (by user), or `None`.
    pub async fn batch(&self, id: i64) -> Result<Option<(Batch, Vec<BatchCode>)>, StoreError> {
        let Some(b) = self.batches().await?.into_iter().find(|b| b.id == id) else {
            return Ok(None);
        };
        let rows = sqlx::query(
            "SELECT username, device_name, expires_at, redeemed_at, device_id FROM enrolment_codes \
             WHERE batch_id = $1 ORDER BY username, device_name",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let codes = rows
            .iter()
            .map(|r| {
                Ok(BatchCode {
                    username: r.try_get("username")?,
                    device_name: r.try_get("device_name")?,
                    expires_at: r.try_get("expires_at")?,
                    redeemed_at: r.try_get("redeemed_at")?,
                    device_id: r.try_get("device_id")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Some((b, codes)))
    }
}
