//! The second factor's writes inside a group commit: the batch's TOTP steps spent (one statement for the batch) and its access windows written.

use sqlx::Row as _;

use super::{normalize_username, WindowOpening};
use crate::store::StoreError;

/// Writes the windows of `opens` in `conn`'s transaction, in one statement (their steps were
/// spent already, see [`accept_steps`]): each device's last one of the list wins.
pub(crate) async fn write_windows(
    conn: &mut sqlx::AnyConnection,
    opens: &[&WindowOpening],
    now: i64,
) -> Result<(), StoreError> {
    const PER_ROW: usize = 6;
    // PostgreSQL refuses to update one row twice in a statement: the last one wins.
    let mut rows: Vec<&WindowOpening> = Vec::with_capacity(opens.len());
    for open in opens {
        rows.retain(|r| r.device_id != open.device_id);
        rows.push(open);
    }
    if rows.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO mfa_windows (device_id, username, source, opened_at, expires_at, \
         last_activity_at) VALUES {} ON CONFLICT (device_id) DO UPDATE \
         SET username = excluded.username, source = excluded.source, \
         opened_at = excluded.opened_at, expires_at = excluded.expires_at, \
         last_activity_at = excluded.last_activity_at, closed_at = NULL, close_reason = NULL",
        crate::store::row_placeholders(rows.len(), PER_ROW)
    );
    let mut query = sqlx::query(&sql);
    for open in rows {
        query = query
            .bind(open.device_id)
            .bind(normalize_username(&open.username))
            .bind(open.source.as_str())
            .bind(now)
            .bind(open.expires_at)
            .bind(now);
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

/// Accepts each `(username, step)` of `steps` (user names lower-cased; `None`: nothing to
/// spend) in `conn`'s transaction, with the verdicts [`accept_step`] would give one after the
/// other in that order: each user's first step of the list in one statement for all of them
/// (different users' steps do not interact), a user's further ones one by one after it.
pub(crate) async fn accept_steps(
    conn: &mut sqlx::AnyConnection,
    steps: &[Option<(String, i64)>],
    now: i64,
) -> Result<Vec<bool>, StoreError> {
    let mut verdicts = vec![false; steps.len()];
    let mut seen = std::collections::HashSet::new();
    let (mut first, mut again) = (Vec::new(), Vec::new());
    for (i, step) in steps.iter().enumerate() {
        if let Some((username, _)) = step {
            if seen.insert(username.as_str()) {
                first.push(i);
            } else {
                again.push(i);
            }
        }
    }
    if !first.is_empty() {
        let sql = format!(
            "WITH v (who, step) AS (VALUES {}) \
             UPDATE mfa_factors SET last_step = v.step, last_used_at = ${} FROM v \
             WHERE username = v.who AND registered_at IS NOT NULL \
             AND (last_step IS NULL OR last_step < v.step) RETURNING username",
            crate::store::row_placeholders(first.len(), 2),
            first.len() * 2 + 1
        );
        let mut query = sqlx::query(&sql);
        for (username, step) in first.iter().filter_map(|&i| steps[i].as_ref()) {
            query = query.bind(username.as_str()).bind(*step);
        }
        let accepted: std::collections::HashSet<String> = query
            .bind(now)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|row| row.try_get("username"))
            .collect::<Result<_, _>>()?;
        for &i in &first {
            verdicts[i] = steps[i]
                .as_ref()
                .is_some_and(|(username, _)| accepted.contains(username));
        }
    }
    for i in again {
        if let Some((username, step)) = &steps[i] {
            verdicts[i] = accept_step(conn, username, *step, now).await?;
        }
    }
    Ok(verdicts)
}

/// Accepts `step` for `username` (lower-cased) in `conn`'s transaction: true once; false when
/// that step or a later one was already used, or the factor is not registered.
pub(crate) async fn accept_step(
    conn: &mut sqlx::AnyConnection,
    username: &str,
    step: i64,
    now: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE mfa_factors SET last_step = $1, last_used_at = $2 WHERE username = $3 \
         AND registered_at IS NOT NULL AND (last_step IS NULL OR last_step < $1)",
    )
    .bind(step)
    .bind(now)
    .bind(username)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
