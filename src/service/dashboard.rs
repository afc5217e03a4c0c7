//! The IT dashboard's figures: laptops connected now (gateway), and from the audit log over
//! the last 24 h by hour (sessions started, traffic, denied flows) and enrolments by day.

use std::collections::BTreeSet;

use crate::audit::{index_keys, Action, AuditEvent};
use crate::store::AuditFilter;

use super::roles::{Actor, Role, Scope};
use super::{ServiceError, Services};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Days of enrolments shown.
pub const ENROLMENT_DAYS: usize = 14;

/// What the dashboard draws. Series are oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dashboard {
    pub connected_now: u64,
    pub peers: u64,
    /// Start of the first hour bucket (unix ms).
    pub hours_from: i64,
    pub sessions_per_hour: Vec<u64>,
    pub bytes_per_hour: Vec<u64>,
    pub denied_per_hour: Vec<u64>,
    /// Start of the first day bucket (unix ms).
    pub days_from: i64,
    pub enrolments_per_day: Vec<u64>,
}

/// Adds `n` to the bucket of `ts` (buckets of `width` ms from `from`), if inside.
fn bucket(series: &mut [u64], from: i64, width: i64, ts: i64, n: u64) {
    if ts < from {
        return;
    }
    if let Some(slot) = usize::try_from((ts - from) / width)
        .ok()
        .and_then(|i| series.get_mut(i))
    {
        *slot += n;
    }
}

/// Bytes of a `tunnel.session_ended` event (whatever direction fields it carries).
fn bytes_of(details: &serde_json::Value) -> u64 {
    ["bytes_in", "bytes_out", "rx_bytes", "tx_bytes"]
        .iter()
        .filter_map(|k| details.get(k).and_then(serde_json::Value::as_u64))
        .sum()
}

/// Whose figures a technician sees: everyone's, or the users of their delegated scope.
enum Users {
    All,
    Only(BTreeSet<String>),
}

impl Users {
    fn of(&self, e: &AuditEvent) -> bool {
        match self {
            Users::All => true,
            Users::Only(names) => index_keys(&e.target, &e.details)
                .username
                .is_some_and(|u| names.contains(&u)),
        }
    }
}

/// Peers and laptops connected now among `users`' active devices: a device is connected when
/// its last session event is a start.
async fn connected_in(
    svc: &Services,
    users: &BTreeSet<String>,
) -> Result<(u64, u64), ServiceError> {
    let store = svc.store();
    let ids: Vec<i64> = store
        .active_devices()
        .await?
        .into_iter()
        .filter(|d| users.contains(&d.user.username))
        .map(|d| d.device.id)
        .collect();
    let last = store.last_sessions(&ids).await?;
    let connected = last
        .values()
        .filter(|e| e.action == Action::TunnelSessionStarted.as_str())
        .count();
    Ok((connected as u64, ids.len() as u64))
}

/// The figures now (IT staff only). A delegated technician's figures count their scope's users
/// only (their devices, sessions, traffic, refusals and enrolments); académie-wide IT staff see
/// the gateway's own counters.
pub async fn dashboard(svc: &Services, actor: &Actor) -> Result<Dashboard, ServiceError> {
    actor.require(Role::ItStaff)?;
    let stats = svc
        .publisher()
        .ok_or(ServiceError::NotWired("the gateway"))?
        .gateway_stats();
    let store = svc.store();
    let (users, connected_now, peers) = match &actor.scope {
        Scope::All => (Users::All, stats.active_sessions, stats.peers),
        Scope::Groups(groups) => {
            let groups: Vec<String> = groups.iter().cloned().collect();
            let names = store.usernames_in_groups(&groups).await?;
            let (connected, peers) = connected_in(svc, &names).await?;
            (Users::Only(names), connected, peers)
        }
    };
    let now = svc.now_ms();
    let hours_from = (now / HOUR_MS - 23) * HOUR_MS;
    let days_from = (now / DAY_MS - (ENROLMENT_DAYS as i64 - 1)) * DAY_MS;
    let mut d = Dashboard {
        connected_now,
        peers,
        hours_from,
        sessions_per_hour: vec![0; 24],
        bytes_per_hour: vec![0; 24],
        denied_per_hour: vec![0; 24],
        days_from,
        enrolments_per_day: vec![0; ENROLMENT_DAYS],
    };
    let since = |from: i64, action: Action| AuditFilter {
        action: Some(action.as_str().to_string()),
        since: Some(from),
        ..Default::default()
    };
    for e in store
        .list_audit(&since(hours_from, Action::TunnelSessionStarted))
        .await?
        .iter()
        .filter(|e| users.of(e))
    {
        bucket(&mut d.sessions_per_hour, hours_from, HOUR_MS, e.ts, 1);
    }
    for e in store
        .list_audit(&since(hours_from, Action::TunnelSessionEnded))
        .await?
        .iter()
        .filter(|e| users.of(e))
    {
        bucket(
            &mut d.bytes_per_hour,
            hours_from,
            HOUR_MS,
            e.ts,
            bytes_of(&e.details),
        );
    }
    for e in store
        .list_audit(&since(hours_from, Action::FlowDenied))
        .await?
        .iter()
        .filter(|e| users.of(e))
    {
        let n = e
            .details
            .get("count")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(1);
        bucket(&mut d.denied_per_hour, hours_from, HOUR_MS, e.ts, n);
    }
    for e in store
        .list_audit(&since(days_from, Action::EnrolCompleted))
        .await?
        .iter()
        .filter(|e| users.of(e))
    {
        if e.outcome == crate::audit::Outcome::Success {
            bucket(&mut d.enrolments_per_day, days_from, DAY_MS, e.ts, 1);
        }
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_fall_in_their_bucket() {
        let mut s = vec![0; 3];
        bucket(&mut s, 1000, 10, 999, 1);
        bucket(&mut s, 1000, 10, 1000, 1);
        bucket(&mut s, 1000, 10, 1019, 2);
        bucket(&mut s, 1000, 10, 1030, 5);
        assert_eq!(s, vec![1, 2, 0]);
        assert_eq!(
            bytes_of(&serde_json::json!({"bytes_in": 5, "bytes_out": 7})),
            12
        );
        assert_eq!(bytes_of(&serde_json::json!({})), 0);
    }
}
