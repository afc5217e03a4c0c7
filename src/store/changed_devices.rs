//! The rows a few changes of the peer set name: the active devices with their owners for a set
//! of device ids and usernames, and those devices' open access windows. O(rows named), through
//! the primary keys and the `devices_username` index, never a scan of `devices`.

use std::collections::BTreeMap;

use sqlx::Row as _;

use super::devices::{self, DeviceWithUser};
use super::mfa::OpenWindow;
use super::{users, Store, StoreError};

/// Values bound per statement (SQLite's default limit is 32,766; PostgreSQL's 65,535).
const CHUNK: usize = 500;

/// `$first, $first+1, …` for `n` values.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    /// The active (not suspended) devices with their owners whose id is in `ids` or whose
    /// owner is in `usernames` (stored names, as the change log gives them), by id: the part of
    /// [`Store::active_devices`] that a few changes concern. Disabled users' devices are
    /// included, as there.
    pub async fn active_devices_named(
        &self,
        ids: &[i64],
        usernames: &[String],
    ) -> Result<Vec<DeviceWithUser>, StoreError> {
        let mut found = BTreeMap::new();
        for chunk in ids.chunks(CHUNK) {
            let sql = format!(
                "{} AND d.id IN ({})",
                active_with_user(),
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(*id);
            }
            for row in q.fetch_all(&self.pool).await? {
                let d = with_user(&row)?;
                found.insert(d.device.id, d);
            }
        }
        for chunk in usernames.chunks(CHUNK) {
            let sql = format!(
                "{} AND d.username IN ({})",
                active_with_user(),
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for name in chunk {
                q = q.bind(name.as_str());
            }
            for row in q.fetch_all(&self.pool).await? {
                let d = with_user(&row)?;
                found.insert(d.device.id, d);
            }
        }
        Ok(found.into_values().collect())
    }

    /// The access windows open now among `device_ids`' (the part of [`Store::open_windows`]
    /// those devices have).
    pub async fn open_windows_of(&self, device_ids: &[i64]) -> Result<Vec<OpenWindow>, StoreError> {
        let mut out = Vec::new();
        let now = self.now_ms();
        for chunk in device_ids.chunks(CHUNK) {
            let sql = format!(
                "SELECT device_id, expires_at, last_activity_at FROM mfa_windows \
                 WHERE closed_at IS NULL AND expires_at > $1 AND device_id IN ({})",
                placeholders(2, chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(now);
            for id in chunk {
                q = q.bind(*id);
            }
            for row in q.fetch_all(&self.pool).await? {
                out.push(OpenWindow {
                    device_id: row.try_get("device_id")?,
                    until_ms: row.try_get("expires_at")?,
                    last_activity_ms: row.try_get("last_activity_at")?,
                });
            }
        }
        Ok(out)
    }
}

/// The join of [`Store::active_devices`], before its selection of ids or usernames.
fn active_with_user() -> String {
    format!(
        "SELECT {}, {} FROM devices d JOIN users u ON u.username = d.username \
         WHERE d.status = 'active' AND d.suspended_at IS NULL",
        devices::COLUMNS,
        devices::USER_COLUMNS
    )
}

fn with_user(row: &sqlx::any::AnyRow) -> Result<DeviceWithUser, StoreError> {
    Ok(DeviceWithUser {
        device: devices::from_row(row)?,
        user: users::from_row(row, "u_")?,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_are_numbered_from_the_first() {
        assert_eq!(super::placeholders(2, 3), "$2, $3, $4");
        assert_eq!(super::placeholders(1, 1), "$1");
    }
}
