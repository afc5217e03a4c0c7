//! Data-plane audit events in the shapes agreed with the gateway (DESIGN §6, issue 7):
//! `tunnel.session_*`, `flow.allowed`, `flow.denied`, for tests that query them.
#![allow(dead_code)]

use serde_json::json;
use sesame::audit::{Action, AuditContext, AuditEvent, NewAuditEvent, Outcome};
use sesame::time;

pub fn device_ctx(user: &str) -> AuditContext {
    AuditContext::new(user, Some("198.18.1.20".into()))
}

pub fn session_started(device: i64, user: &str, at: i64) -> NewAuditEvent {
    NewAuditEvent::new(
        Action::TunnelSessionStarted,
        &device_ctx(user),
        format!("device:{device}"),
    )
    .details(json!({
        "device_id": device, "username": user, "peer": format!("device:{device}:{user}"),
        "public_key": "AAAA", "endpoint": "198.18.1.20:40000", "started_at": time::format(at),
    }))
}

pub fn session_ended(device: i64, user: &str, start: i64, end: i64) -> NewAuditEvent {
    NewAuditEvent::new(
        Action::TunnelSessionEnded,
        &device_ctx(user),
        format!("device:{device}"),
    )
    .details(json!({
        "device_id": device, "username": user, "peer": format!("device:{device}:{user}"),
        "public_key": "AAAA", "endpoint": "198.18.1.20:40000", "started_at": time::format(start),
        "ended_at": time::format(end), "duration_ms": end - start, "rx_bytes": 10, "tx_bytes": 20,
        "rx_packets": 1, "tx_packets": 2, "reason": "expired",
    }))
}

/// A `flow.allowed` window: `bytes` split 1/4 out, 3/4 in; packets = bytes / 100.
pub fn flow(
    device: Option<i64>,
    user: Option<&str>,
    resource: &str,
    at: i64,
    bytes: u64,
) -> NewAuditEvent {
    let (ctx, target, peer) = match (device, user) {
        (Some(d), Some(u)) => (
            device_ctx(u),
            format!("device:{d}"),
            format!("device:{d}:{u}"),
        ),
        _ => (
            AuditContext::system(),
            "peer:supervision".to_string(),
            "static:supervision".to_string(),
        ),
    };
    NewAuditEvent::new(Action::FlowAllowed, &ctx, target).details(json!({
        "device_id": device, "username": user, "peer": peer, "resource": resource,
        "window_start": time::format(at), "first_seen": time::format(at + 1_000),
        "last_seen": time::format(at + 50_000), "packets": bytes / 100, "bytes": bytes,
        "packets_in": bytes / 400 * 3, "bytes_in": bytes / 4 * 3,
        "packets_out": bytes / 400, "bytes_out": bytes / 4,
        "protocols": ["tcp"], "ports": [443], "ports_truncated": false,
    }))
}

/// A `flow.denied` window at `at` (no grant for 198.18.30.1 tcp:22, 3 packets).
pub fn denied(device: i64, user: &str, at: i64) -> NewAuditEvent {
    NewAuditEvent::new(
        Action::FlowDenied,
        &device_ctx(user),
        format!("device:{device}"),
    )
    .outcome(Outcome::Denied)
    .details(json!({
        "device_id": device, "username": user, "peer": format!("device:{device}:{user}"),
        "dst": "198.18.30.1", "protocol": "tcp", "port": 22, "count": 3, "reason": "no_grant",
        "window_start": time::format(at), "first_seen": time::format(at), "last_seen": time::format(at),
    }))
}

/// `ev` as a site gateway delivers it (`POST /api/v1/gateway/events`): `details.site` set.
pub fn at_site(mut ev: NewAuditEvent, site: &str) -> NewAuditEvent {
    if let Some(map) = ev.details.as_object_mut() {
        map.insert("site".into(), site.into());
    }
    ev
}

/// The event the chain should hold for `ev` as number `id` at `ts` after `prev_hash`, its hash
/// recomputed here from the fields (the chain rule of DESIGN §6, independently of the store).
pub fn chained(ev: &NewAuditEvent, id: i64, ts: i64, prev_hash: &str) -> AuditEvent {
    let mut e = AuditEvent {
        id,
        ts,
        actor: ev.actor.clone(),
        action: ev.action.as_str().to_string(),
        target: ev.target.clone(),
        outcome: ev.outcome,
        source_ip: ev.source_ip.clone(),
        details: ev.details.clone(),
        prev_hash: prev_hash.to_string(),
        hash: String::new(),
    };
    e.hash = e.compute_hash();
    e
}
