//! The access review's reads: one subject's active devices (a user's, or those of the members of a resource's granting groups), a page at a time, and their owners' factors.
//!
//! `service::review` applies the gateway's rule; these reads only narrow the rows it applies
//! it to, with the indexes that exist (`devices_username` on user, status and suspension,
//! `user_groups_group_dn` on group and user, the primary key of `user_groups`: a count reads
//! the indexes alone): a user's review reads that user's devices, a resource's review the
//! devices of the users of its granting groups who are also VPN users, by id from a cursor.
//! Group DNs are given normalized (`directory::normalize_dn`), as `user_groups` holds them.

use sqlx::any::AnyRow;
use sqlx::Row as _;

use super::devices::{self, DeviceWithUser};
use super::users;
use super::{Store, StoreError};

/// A user's confirmed second factor as the review shows it (no secret is read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactorUse {
    pub username: String,
    /// `totp` or `radius`.
    pub kind: String,
    pub registered_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

/// Which devices a resource's review reads: active ones of users in one of `granting` AND in
/// one of `vpn_users` (both normalized DNs; either empty: none).
#[derive(Debug, Clone, Copy)]
pub struct GrantedTo<'a> {
    pub granting: &'a [String],
    pub vpn_users: &'a [String],
}

/// The users' columns of the review's joins, `u_`-prefixed (as `users::from_row(row, "u_")`
/// reads them).
fn user_columns() -> String {
    users::COLUMNS
        .split(", ")
        .map(|c| format!("u.{c} AS u_{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn device_with_user(row: &AnyRow) -> Result<DeviceWithUser, StoreError> {
    Ok(DeviceWithUser {
        device: devices::from_row(row)?,
        user: users::from_row(row, "u_")?,
    })
}

/// `$first, …` for `n` values.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The condition "active, and its user is in one of the granting groups and one of the VPN
/// users' groups", its placeholders numbered from `$1` (granting, then VPN users). Two wordings
/// of the same condition: SQLite's planner follows the wording, PostgreSQL's its statistics
/// (a semi-join either way). `by_id`: the granting groups as a test of each device, so that
/// devices are walked by id until the page is full (for a page of a large set); otherwise the
/// members of the granting groups drive the read (a small set, or a whole one).
fn granted_condition(to: GrantedTo<'_>, by_id: bool) -> String {
    let g = placeholders(1, to.granting.len());
    let v = placeholders(1 + to.granting.len(), to.vpn_users.len());
    let granted = if by_id {
        format!(
            "EXISTS (SELECT 1 FROM user_groups g WHERE g.username = d.username \
             AND g.group_dn IN ({g}))"
        )
    } else {
        format!("d.username IN (SELECT g.username FROM user_groups g WHERE g.group_dn IN ({g}))")
    };
    format!(
        "d.status = 'active' AND d.suspended_at IS NULL AND {granted} \
         AND EXISTS (SELECT 1 FROM user_groups v WHERE v.username = d.username \
         AND v.group_dn IN ({v}))"
    )
}

impl Store {
    /// `username`'s active (not suspended) devices with their owner, by id (the user as the
    /// store keeps uids: lower case).
    pub async fn review_user_devices(
        &self,
        username: &str,
    ) -> Result<Vec<DeviceWithUser>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {}, {} FROM devices d JOIN users u ON u.username = d.username \
             WHERE d.username = $1 AND d.status = 'active' AND d.suspended_at IS NULL \
             ORDER BY d.id",
            devices::COLUMNS,
            user_columns()
        ))
        .bind(users::normalize_username(username))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(device_with_user).collect()
    }

    /// At most `limit` of the active devices of [`GrantedTo`] with an id above `after`, by id,
    /// with their owners. `count` is how many there are ([`Store::review_granted_count`]): a
    /// page of a large set is found walking the devices by id (about `limit × devices / count`
    /// rows), otherwise the set is read through its members and sorted (about `count` rows).
    pub async fn review_granted_devices(
        &self,
        to: GrantedTo<'_>,
        after: Option<i64>,
        limit: i64,
        count: u64,
    ) -> Result<Vec<DeviceWithUser>, StoreError> {
        if to.granting.is_empty() || to.vpn_users.is_empty() || limit <= 0 {
            return Ok(Vec::new());
        }
        let by_id = u64::try_from(limit).is_ok_and(|l| l < count) && {
            let max: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM devices")
                .fetch_one(&self.pool)
                .await?;
            let walk = u128::from(u64::try_from(limit).unwrap_or(u64::MAX))
                * u128::from(u64::try_from(max).unwrap_or(0));
            walk < u128::from(count) * u128::from(count)
        };
        let n = to.granting.len() + to.vpn_users.len();
        let sql = format!(
            "SELECT {}, {} FROM devices d JOIN users u ON u.username = d.username \
             WHERE {} AND d.id > ${} ORDER BY d.id LIMIT ${}",
            devices::COLUMNS,
            user_columns(),
            granted_condition(to, by_id),
            n + 1,
            n + 2
        );
        let mut q = sqlx::query(&sql);
        for g in to.granting.iter().chain(to.vpn_users) {
            q = q.bind(g.clone());
        }
        let rows = q
            .bind(after.unwrap_or(i64::MIN))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(device_with_user).collect()
    }

    /// How many active devices [`GrantedTo`] holds (what [`Store::review_granted_devices`]
    /// returns page after page: without its join of `users`, which the foreign key of
    /// `devices.username` makes a no-op, a third of the count's time on SQLite).
    pub async fn review_granted_count(&self, to: GrantedTo<'_>) -> Result<u64, StoreError> {
        if to.granting.is_empty() || to.vpn_users.is_empty() {
            return Ok(0);
        }
        let sql = format!(
            "SELECT COUNT(*) FROM devices d WHERE {}",
            granted_condition(to, false)
        );
        let mut q = sqlx::query_scalar::<_, i64>(&sql);
        for g in to.granting.iter().chain(to.vpn_users) {
            q = q.bind(g.clone());
        }
        let n = q.fetch_one(&self.pool).await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The confirmed factors of those of `usernames` (lower case) who have one.
    pub async fn review_factors(&self, usernames: &[String]) -> Result<Vec<FactorUse>, StoreError> {
        // Users per statement: under SQLite's bind limit.
        const USERS: usize = 500;
        let mut out = Vec::new();
        for chunk in usernames.chunks(USERS) {
            let sql = format!(
                "SELECT username, kind, registered_at, last_used_at FROM mfa_factors \
                 WHERE registered_at IS NOT NULL AND username IN ({})",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for u in chunk {
                q = q.bind(u.clone());
            }
            for row in q.fetch_all(&self.pool).await? {
                out.push(FactorUse {
                    username: row.try_get("username")?,
                    kind: row.try_get("kind")?,
                    registered_at: row.try_get("registered_at")?,
                    last_used_at: row.try_get("last_used_at")?,
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A resource's count (most of a review page's work at 100,000 devices) is answered from
    /// the indexes alone on SQLite: no visit of a `devices` or `user_groups` row (migration
    /// 0018; with the narrower indexes before it, five row lookups per member).
    #[tokio::test]
    async fn the_count_of_a_resource_reads_covering_indexes_only() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = Store::connect(&url).await.unwrap();
        let granting = vec!["cn=paie".to_string(), "cn=rh".to_string()];
        let vpn_users = vec!["cn=personnels".to_string()];
        let sql = format!(
            "EXPLAIN QUERY PLAN SELECT COUNT(*) FROM devices d WHERE {}",
            granted_condition(
                GrantedTo {
                    granting: &granting,
                    vpn_users: &vpn_users,
                },
                false
            )
        );
        let mut q = sqlx::query(&sql);
        for g in granting.iter().chain(&vpn_users) {
            q = q.bind(g.clone());
        }
        let steps: Vec<String> = q
            .fetch_all(store.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get::<String, _>("detail").unwrap())
            .collect();
        let reads: Vec<&String> = steps
            .iter()
            .filter(|s| s.starts_with("SEARCH") || s.starts_with("SCAN"))
            .collect();
        assert!(reads.len() >= 3, "{steps:?}");
        for step in reads {
            assert!(
                step.contains("COVERING INDEX"),
                "a step reads table rows: {step} (plan: {steps:?})"
            );
        }
    }
}
