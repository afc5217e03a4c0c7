//! The audit log's query SQL: filtered keyset pages, flows to a resource, a device's last session
//! and last flow. Filters use the derived index columns; results come from the hashed fields.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::TryStreamExt as _;
use sqlx::Row as _;

use super::audit::{from_row, COLUMNS, SEEN_FLOW, SEEN_SESSION};
use super::{bind_all, Bind, Store, StoreError};
use crate::audit::query::SiteFilter;
use crate::audit::review::FlowSummary;
use crate::audit::{Action, AuditEvent, AuditFilter};

/// `WHERE …` of `filter` (only the conditions that are set, so each can use its index) and its
/// binds, numbered from `$1`.
fn where_clause(filter: &AuditFilter) -> (String, Vec<Bind>) {
    let mut conds: Vec<String> = Vec::new();
    let mut binds = Vec::new();
    let mut push = |cond: &str, bind: Bind, conds: &mut Vec<String>| {
        binds.push(bind);
        conds.push(cond.replace('?', &format!("${}", binds.len())));
    };
    if let Some(u) = &filter.user {
        push(
            "(actor = ? OR username = ?)",
            Bind::Text(u.clone()),
            &mut conds,
        );
    }
    if let Some(d) = filter.device {
        push("device_id = ?", Bind::Int(d), &mut conds);
    }
    if let Some(a) = &filter.action {
        push("action = ?", Bind::Text(a.clone()), &mut conds);
    }
    if let Some(r) = &filter.resource {
        push("resource = ?", Bind::Text(r.clone()), &mut conds);
    }
    match &filter.site {
        Some(SiteFilter::Named(s)) => push("site = ?", Bind::Text(s.clone()), &mut conds),
        // `sesame serve`'s own gateway and the portal record no site.
        Some(SiteFilter::Local) => conds.push("site IS NULL".into()),
        None => {}
    }
    if let Some(o) = filter.outcome {
        push("outcome = ?", Bind::Text(o.as_str().into()), &mut conds);
    }
    if let Some(ip) = &filter.source_ip {
        push("source_ip = ?", Bind::Text(ip.clone()), &mut conds);
    }
    if let Some(t) = filter.since {
        push("ts >= ?", Bind::Int(t), &mut conds);
    }
    if let Some(t) = filter.until {
        push("ts < ?", Bind::Int(t), &mut conds);
    }
    if let Some(id) = filter.after_id {
        push("id > ?", Bind::Int(id), &mut conds);
    }
    if let Some(id) = filter.through_id {
        push("id <= ?", Bind::Int(id), &mut conds);
    }
    let sql = if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    };
    (sql, binds)
}

/// Events matching `filter` (its `after_id` and `limit` included), oldest first, on `executor`.
async fn list_audit_on<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    filter: &AuditFilter,
) -> Result<Vec<AuditEvent>, StoreError> {
    let (cond, binds) = where_clause(filter);
    let limit = match filter.limit {
        Some(n) => format!(" LIMIT {}", n.max(0)),
        None => String::new(),
    };
    let sql = format!("SELECT {COLUMNS} FROM audit_events {cond} ORDER BY id{limit}");
    let rows = bind_all(sqlx::query(&sql), binds)
        .fetch_all(executor)
        .await?;
    rows.iter().map(from_row).collect()
}

/// [`Store::audit_page`] on `executor`: one more event than the page is read, to know whether
/// another page follows without reading an empty one.
async fn audit_page_on<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    filter: &AuditFilter,
    after_id: Option<i64>,
    limit: i64,
) -> Result<(Vec<AuditEvent>, Option<i64>), StoreError> {
    let limit = limit.max(1);
    let f = AuditFilter {
        after_id,
        limit: Some(limit + 1),
        ..filter.clone()
    };
    let mut events = list_audit_on(executor, &f).await?;
    let more = events.len() as i64 > limit;
    events.truncate(limit as usize);
    let next = if more {
        events.last().map(|e| e.id)
    } else {
        None
    };
    Ok((events, next))
}

/// The last event of a kind about a device (access review's "last session", "last flow").
pub type LastSeen = Option<AuditEvent>;

impl Store {
    /// Events matching `filter` (its `after_id` and `limit` included), oldest first.
    pub async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        list_audit_on(&self.pool, filter).await
    }

    /// Every event of `filter`, oldest first, read in keyset pages of `page` events on one
    /// connection and handed to `sink` page by page; returns how many were handed over.
    ///
    /// Memory stays constant however long the log: one page at a time, and one connection's
    /// SQLite page cache (pages read through the pool would rotate through its idle connections
    /// and fill each one's cache). Each page is its own statement, so no read transaction stays
    /// open across the scan to hold back the WAL checkpoint.
    pub async fn audit_scan<E: From<StoreError>>(
        &self,
        filter: &AuditFilter,
        page: i64,
        mut sink: impl FnMut(&[AuditEvent]) -> Result<(), E>,
    ) -> Result<u64, E> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::from)?;
        let mut after = filter.after_id;
        let mut total = 0u64;
        loop {
            let (events, next) = audit_page_on(&mut *conn, filter, after, page).await?;
            sink(&events)?;
            total += events.len() as u64;
            match next {
                Some(id) => after = Some(id),
                None => return Ok(total),
            }
        }
    }

    /// One keyset page: at most `limit` events of `filter` after `after_id`, and the id to pass
    /// as the next page's `after_id` (`None` on the last page).
    pub async fn audit_page(
        &self,
        filter: &AuditFilter,
        after_id: Option<i64>,
        limit: i64,
    ) -> Result<(Vec<AuditEvent>, Option<i64>), StoreError> {
        audit_page_on(&self.pool, filter, after_id, limit).await
    }

    /// `flow.allowed` records of `resource` with `since <= ts < until`, summed per device (or
    /// static peer), by first use. Reads the records as a stream: memory grows with the number
    /// of devices, not of records.
    pub async fn flows(
        &self,
        resource: &str,
        since: Option<i64>,
        until: Option<i64>,
    ) -> Result<Vec<FlowSummary>, StoreError> {
        let filter = AuditFilter {
            resource: Some(resource.to_string()),
            action: Some(Action::FlowAllowed.as_str().to_string()),
            since,
            until,
            ..AuditFilter::default()
        };
        let (cond, binds) = where_clause(&filter);
        let sql = format!("SELECT {COLUMNS} FROM audit_events {cond}");
        let mut by_peer: BTreeMap<(Option<i64>, String), FlowSummary> = BTreeMap::new();
        let mut rows = bind_all(sqlx::query(&sql), binds).fetch(&self.pool);
        while let Some(row) = rows.try_next().await? {
            let ev = from_row(&row)?;
            let d = &ev.details;
            // Outputs come from the hashed details; the index column only selected the row.
            if d.get("resource").and_then(|v| v.as_str()) != Some(resource) {
                continue;
            }
            let num = |k: &str| d.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
            let time = |k: &str| {
                d.get(k)
                    .and_then(|v| v.as_str())
                    .and_then(|v| crate::time::parse(k, v, ev.ts).ok())
                    .unwrap_or(ev.ts)
            };
            let device_id = d.get("device_id").and_then(serde_json::Value::as_i64);
            let peer = d
                .get("peer")
                .and_then(|v| v.as_str())
                .unwrap_or(&ev.target)
                .to_string();
            let (first, last) = (time("first_seen"), time("last_seen"));
            let s = by_peer
                .entry((device_id, peer.clone()))
                .or_insert_with(|| FlowSummary {
                    username: d
                        .get("username")
                        .and_then(|v| v.as_str())
                        .map(str::to_string),
                    device_id,
                    device_name: d
                        .get("device_name")
                        .and_then(|v| v.as_str())
                        .map(str::to_string),
                    peer,
                    first_seen: first,
                    last_seen: last,
                    bytes: 0,
                    packets: 0,
                    bytes_out: 0,
                    bytes_in: 0,
                    windows: 0,
                    ports: BTreeSet::new(),
                });
            s.first_seen = s.first_seen.min(first);
            s.last_seen = s.last_seen.max(last);
            s.bytes += num("bytes");
            s.packets += num("packets");
            s.bytes_out += num("bytes_out");
            s.bytes_in += num("bytes_in");
            s.windows += 1;
            if let Some(ports) = d.get("ports").and_then(serde_json::Value::as_array) {
                s.ports.extend(
                    ports
                        .iter()
                        .filter_map(serde_json::Value::as_u64)
                        .filter_map(|p| u16::try_from(p).ok()),
                );
            }
        }
        let mut out: Vec<FlowSummary> = by_peer.into_values().collect();
        out.sort_by(|a, b| (a.first_seen, &a.peer).cmp(&(b.first_seen, &b.peer)));
        Ok(out)
    }

    /// The device's last `tunnel.session_started` or `tunnel.session_ended`.
    pub async fn last_session(&self, device_id: i64) -> Result<LastSeen, StoreError> {
        Ok(self.last_sessions(&[device_id]).await?.remove(&device_id))
    }

    /// The device's last `flow.allowed` to `resource`.
    pub async fn last_flow(&self, device_id: i64, resource: &str) -> Result<LastSeen, StoreError> {
        Ok(self
            .last_flows(&[device_id], Some(resource))
            .await?
            .remove(&(device_id, resource.to_string())))
    }

    /// Each device's last `tunnel.session_started` or `tunnel.session_ended` (devices without
    /// one are absent): seeks in the table the append keeps (migration 0007), the events
    /// themselves read from the chain by id.
    pub async fn last_sessions(
        &self,
        device_ids: &[i64],
    ) -> Result<BTreeMap<i64, AuditEvent>, StoreError> {
        let rows = self.last_seen(SEEN_SESSION, device_ids, None).await?;
        Ok(rows.into_iter().map(|((d, _), e)| (d, e)).collect())
    }

    /// Each device's last `flow.allowed` to each resource (to `resource` alone if given), by
    /// (device, resource), as [`Store::last_sessions`].
    pub async fn last_flows(
        &self,
        device_ids: &[i64],
        resource: Option<&str>,
    ) -> Result<BTreeMap<(i64, String), AuditEvent>, StoreError> {
        self.last_seen(SEEN_FLOW, device_ids, resource).await
    }

    async fn last_seen(
        &self,
        kind: &str,
        device_ids: &[i64],
        resource: Option<&str>,
    ) -> Result<BTreeMap<(i64, String), AuditEvent>, StoreError> {
        // Devices per statement: under SQLite's bind limit with room to spare.
        const DEVICES: usize = 500;
        let cols: Vec<String> = COLUMNS.split(", ").map(|c| format!("e.{c}")).collect();
        let mut out = BTreeMap::new();
        for chunk in device_ids.chunks(DEVICES) {
            let first = if resource.is_some() { 3 } else { 2 };
            let list: Vec<String> = (0..chunk.len())
                .map(|i| format!("${}", first + i))
                .collect();
            let sql = format!(
                "SELECT l.device_id AS seen_device, l.resource AS seen_resource, {} \
                 FROM audit_last_seen l JOIN audit_events e ON e.id = l.event_id \
                 WHERE l.kind = $1 {} AND l.device_id IN ({})",
                cols.join(", "),
                if resource.is_some() {
                    "AND l.resource = $2"
                } else {
                    ""
                },
                list.join(", ")
            );
            let mut q = sqlx::query(&sql).bind(kind);
            if let Some(r) = resource {
                q = q.bind(r);
            }
            for d in chunk {
                q = q.bind(*d);
            }
            for row in q.fetch_all(&self.pool).await? {
                let key = (row.try_get("seen_device")?, row.try_get("seen_resource")?);
                out.insert(key, from_row(&row)?);
            }
        }
        Ok(out)
    }

    /// Time (unix ms) of the last `action` event that concerns no device (`directory.sync`…),
    /// found through the device index (its NULL entries), not by scanning the log.
    pub async fn last_deviceless_event_ts(
        &self,
        action: Action,
    ) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "SELECT ts FROM audit_events WHERE device_id IS NULL AND action = $1 \
             ORDER BY id DESC LIMIT 1",
        )
        .bind(action.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| r.try_get("ts")).transpose().map_err(Into::into)
    }

    /// How many events the log holds (retained part), for the bench and sanity checks.
    pub async fn count_audit(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM audit_events")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_clause_holds_only_the_set_conditions() {
        assert_eq!(where_clause(&AuditFilter::default()).0, "");
        let (sql, binds) = where_clause(&AuditFilter {
            user: Some("alice".into()),
            device: Some(3),
            since: Some(10),
            ..AuditFilter::default()
        });
        assert_eq!(
            sql,
            "WHERE (actor = $1 OR username = $1) AND device_id = $2 AND ts >= $3"
        );
        assert_eq!(binds.len(), 3);
        let (sql, binds) = where_clause(&AuditFilter {
            site: Some(SiteFilter::Named("dsden56".into())),
            since: Some(10),
            ..AuditFilter::default()
        });
        assert_eq!(sql, "WHERE site = $1 AND ts >= $2");
        assert_eq!(binds.len(), 2);
        let (sql, binds) = where_clause(&AuditFilter {
            action: Some("flow.allowed".into()),
            site: Some(SiteFilter::Local),
            since: Some(10),
            ..AuditFilter::default()
        });
        assert_eq!(sql, "WHERE action = $1 AND site IS NULL AND ts >= $2");
        assert_eq!(binds.len(), 2);
    }
}
