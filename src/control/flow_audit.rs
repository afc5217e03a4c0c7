//! The flow audit consumer: merges the gateway workers' flow and session records into audit events and writes them in batches.
//!
//! The gateway's workers offer records to a bounded queue ([`FlowLog`]) and never wait; this
//! task drains it every [`DRAIN_PERIOD`], merges the records of one window that several workers
//! produced, and appends the events with [`Store::append_audit_batch`] (`sesame serve`) or logs
//! them as structured tracing events (`sesame gateway`, no database). While it waits for a slow
//! database, the queue absorbs; beyond its capacity the workers count losses, and once the queue
//! is drained again one `audit.overflow` event says how many records of which kind were lost.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::mpsc::TryRecvError;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;

use crate::audit::{Action, AuditContext, NewAuditEvent, Outcome};
use crate::gateway::flowlog::{
    AllowedFlow, DeniedFlow, DenyReason, FlowLog, FlowReceiver, FlowRecord, LostCounts, PeerRef,
    SessionEnd, SessionStart, WindowClosed, WindowEnd, MAX_DENIED_PER_PEER, MAX_PORTS,
};
use crate::ip_proto;
use crate::key::PublicKey;
use crate::policy::{Policy, ResourceId};
use crate::store::{Store, StoreError};
use crate::time;

use super::PeerIdentity;

/// How often the queue is drained.
pub const DRAIN_PERIOD: Duration = Duration::from_millis(200);
/// Most records turned into events per batch.
const MAX_BATCH: usize = 4_096;
/// Events kept while the database refuses them.
pub const MAX_PENDING: usize = 65_536;
/// How long after a window's end the consumer waits for every worker's records of it.
const GRACE_MS: i64 = 1_000;

/// Where the events go.
#[derive(Clone)]
pub enum Destination {
    /// The audit chain (`sesame serve`).
    Store(Store),
    /// Structured log lines, target `sesame::audit` (`sesame gateway`, no database).
    Log,
    /// The portals, through the spool on disk (`sesame gateway --site`).
    Portal(Arc<crate::control::site_gateway::spool::Spool>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct AllowedKey {
    window: i64,
    peer: PublicKey,
    resource: ResourceId,
}

/// The summary of a device's excess destinations has `dst: None` and no protocol, port or reason
/// in its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct DeniedKey {
    window: i64,
    peer: PublicKey,
    dst: Option<IpAddr>,
    proto: u8,
    port: Option<u16>,
    reason: Option<DenyReason>,
}

/// The records of open windows, merged across workers, with the per-device cap applied again.
#[derive(Debug, Default)]
struct Merge {
    allowed: HashMap<AllowedKey, AllowedFlow>,
    denied: HashMap<DeniedKey, DeniedFlow>,
    distinct: HashMap<(i64, PublicKey), usize>,
}

impl Merge {
    fn allowed(&mut self, a: AllowedFlow) {
        let key = AllowedKey {
            window: a.window_start_ms,
            peer: a.peer.public_key,
            resource: a.resource,
        };
        let Some(m) = self.allowed.get_mut(&key) else {
            self.allowed.insert(key, a);
            return;
        };
        m.first_ms = m.first_ms.min(a.first_ms);
        m.last_ms = m.last_ms.max(a.last_ms);
        m.packets_out += a.packets_out;
        m.bytes_out += a.bytes_out;
        m.packets_in += a.packets_in;
        m.bytes_in += a.bytes_in;
        m.protocols.union(a.protocols);
        m.ports.extend(a.ports);
        m.ports.sort_unstable();
        m.ports.dedup();
        m.ports_truncated |= a.ports_truncated || m.ports.len() > MAX_PORTS;
        m.ports.truncate(MAX_PORTS);
    }

    fn denied(&mut self, d: DeniedFlow) {
        let mut key = DeniedKey {
            window: d.window_start_ms,
            peer: d.peer.public_key,
            dst: d.dst,
            proto: d.proto,
            port: d.port,
            reason: Some(d.reason),
        };
        if d.dst.is_some() && !self.denied.contains_key(&key) {
            let n = self.distinct.entry((key.window, key.peer)).or_default();
            if *n < MAX_DENIED_PER_PEER {
                *n += 1;
                self.denied.insert(key, d);
                return;
            }
        }
        if d.dst.is_none() || !self.denied.contains_key(&key) {
            // Beyond the cap: folded into the device's one summary of this window.
            key = DeniedKey {
                dst: None,
                proto: 0,
                port: None,
                reason: None,
                ..key
            };
        }
        let Some(m) = self.denied.get_mut(&key) else {
            let summary = DeniedFlow {
                dst: None,
                proto: 0,
                port: None,
                ..d
            };
            self.denied.insert(key, summary);
            return;
        };
        m.count += d.count;
        m.first_ms = m.first_ms.min(d.first_ms);
        m.last_ms = m.last_ms.max(d.last_ms);
        if m.dst.is_none() {
            m.destinations += d.destinations;
        }
    }

    /// The records of windows that started at or before `before_ms` (all with None), in a stable
    /// order: window, then device, then allowed before denied.
    fn take(&mut self, before_ms: Option<i64>) -> Vec<FlowRecord> {
        let open = |w: i64| before_ms.is_some_and(|b| w > b);
        let mut out: Vec<(i64, PublicKey, FlowRecord)> = Vec::new();
        let allowed: Vec<AllowedKey> = self
            .allowed
            .keys()
            .filter(|k| !open(k.window))
            .copied()
            .collect();
        for k in allowed {
            if let Some(a) = self.allowed.remove(&k) {
                out.push((k.window, k.peer, FlowRecord::Allowed(a)));
            }
        }
        let denied: Vec<DeniedKey> = self
            .denied
            .keys()
            .filter(|k| !open(k.window))
            .copied()
            .collect();
        for k in denied {
            if let Some(d) = self.denied.remove(&k) {
                out.push((k.window, k.peer, FlowRecord::Denied(d)));
            }
        }
        self.distinct.retain(|(w, _), _| open(*w));
        out.sort_by(|a, b| {
            let rank = |r: &FlowRecord| match r {
                FlowRecord::Allowed(a) => (0, a.resource, None, 0),
                FlowRecord::Denied(d) => (1, 0, d.dst, d.port.unwrap_or(0)),
                _ => (2, 0, None, 0),
            };
            (a.0, a.1, rank(&a.2)).cmp(&(b.0, b.1, rank(&b.2)))
        });
        out.into_iter().map(|(_, _, r)| r).collect()
    }
}

/// Where the consumer reads the current policy (resource names of the rules that matched).
pub type PolicySource = Box<dyn Fn() -> Arc<Policy> + Send + Sync>;

/// A [`PolicySource`] that never changes (tests, tools).
pub fn fixed_policy(policy: Policy) -> PolicySource {
    let policy = Arc::new(policy);
    Box::new(move || Arc::clone(&policy))
}

/// Drains the gateway's queue and turns records into audit events.
pub struct FlowAudit {
    log: Arc<FlowLog>,
    rx: FlowReceiver,
    /// The running configuration's policy (a reload may rename or add resources).
    policy: PolicySource,
    merge: Merge,
    /// Losses already reported in an `audit.overflow` event.
    reported: LostCounts,
    /// Each peer's laptop address, as its last session record said: the `source_ip` of its flows.
    endpoints: HashMap<PublicKey, IpAddr>,
    /// Access windows the gateway closed (device id, why), for the store (`sesame serve`): the
    /// portal then shows them closed, and a restart does not reopen them.
    /// Windows the gateway closed: device, the window's end, why.
    closes: Vec<(i64, i64, WindowEnd)>,
}

impl FlowAudit {
    pub fn new(log: Arc<FlowLog>, rx: FlowReceiver, policy: PolicySource) -> FlowAudit {
        FlowAudit {
            log,
            rx,
            policy,
            merge: Merge::default(),
            reported: LostCounts::default(),
            endpoints: HashMap::new(),
            closes: Vec::new(),
        }
    }

    /// One pass at wall time `now_ms`: up to [`MAX_BATCH`] records drained; session events at
    /// once, flow events of the windows over (all of them with `finish`), and `audit.overflow`
    /// when the queue was drained after losses. Returns the events and whether the queue is
    /// now empty.
    pub fn poll(&mut self, now_ms: i64, finish: bool) -> (Vec<NewAuditEvent>, bool) {
        let mut events = Vec::new();
        let mut drained = false;
        for _ in 0..MAX_BATCH {
            match self.rx.try_recv() {
                Ok(FlowRecord::SessionStarted(s)) => {
                    self.endpoints.insert(s.peer.public_key, s.endpoint.ip());
                    events.push(session_started(&s));
                }
                Ok(FlowRecord::SessionEnded(e)) => {
                    // Kept after the end: the session's last window is written later.
                    self.endpoints.insert(e.peer.public_key, e.endpoint.ip());
                    events.push(session_ended(&e));
                }
                Ok(FlowRecord::Allowed(a)) => self.merge.allowed(a),
                Ok(FlowRecord::Denied(d)) => self.merge.denied(d),
                Ok(FlowRecord::WindowClosed(w)) => {
                    if let PeerIdentity::Device { id, .. } = PeerIdentity::parse(&w.peer.label) {
                        self.closes.push((id, w.until_ms, w.reason));
                    }
                    events.push(window_closed(&w));
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => {
                    drained = true;
                    break;
                }
            }
        }
        let window = i64::try_from(self.log.window().as_millis()).unwrap_or(i64::MAX);
        let before = (!finish).then(|| now_ms.saturating_sub(window + GRACE_MS));
        let policy = (self.policy)();
        for r in self.merge.take(before) {
            match r {
                FlowRecord::Allowed(a) => {
                    let ip = self.endpoints.get(&a.peer.public_key).copied();
                    events.push(flow_allowed(&a, ip, &policy));
                }
                FlowRecord::Denied(d) => {
                    let ip = self.endpoints.get(&d.peer.public_key).copied();
                    events.push(flow_denied(&d, ip));
                }
                _ => {}
            }
        }
        if drained {
            events.extend(self.overflow(now_ms));
        }
        (events, drained)
    }

    /// The `audit.overflow` event for losses not reported yet, if any.
    fn overflow(&mut self, now_ms: i64) -> Option<NewAuditEvent> {
        let lost = self.log.lost();
        if lost.total() == self.reported.total() {
            return None;
        }
        let since = self.log.take_first_loss().unwrap_or(now_ms);
        let mut by_kind = serde_json::Map::new();
        for (kind, n) in lost.iter() {
            by_kind.insert(
                kind.name().into(),
                json!(n.saturating_sub(self.reported.get(kind))),
            );
        }
        self.reported = lost;
        Some(
            NewAuditEvent::new(
                Action::AuditOverflow,
                &AuditContext::system(),
                "audit_queue",
            )
            .outcome(Outcome::Failure)
            .details(json!({
                "lost": by_kind,
                "since": time::format(since),
                "until": time::format(now_ms),
            })),
        )
    }

    /// Runs until `finish` turns true, then drains every record left (the gateway has stopped
    /// and flushed by then), writes the last windows and returns.
    ///
    /// Events the database refuses (outage, locked) are kept and retried every
    /// [`DRAIN_PERIOD`], up to [`MAX_PENDING`]; beyond that the oldest are dropped (logged).
    pub async fn run(mut self, dest: Destination, mut finish: watch::Receiver<bool>) {
        let mut pending: Vec<NewAuditEvent> = Vec::new();
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(DRAIN_PERIOD) => {}
                _ = finish.changed() => {}
            }
            let finishing = *finish.borrow();
            loop {
                let (events, drained) = self.poll(time::now_ms(), finishing);
                pending.extend(events);
                if pending.len() > MAX_PENDING {
                    let excess = pending.len() - MAX_PENDING;
                    pending.drain(..excess);
                    tracing::error!(
                        dropped = excess,
                        "audit events dropped: the database refused them for too long"
                    );
                }
                let written = match write(&dest, &mut pending).await {
                    Ok(()) => close_windows(&dest, &mut self.closes).await,
                    Err(e) => Err(e),
                };
                match written {
                    Ok(()) => {
                        if std::mem::take(&mut failing) {
                            tracing::info!("flow audit events are written again");
                        }
                    }
                    Err(e) => {
                        if !std::mem::replace(&mut failing, true) {
                            tracing::warn!(error = %e, events = pending.len(), "cannot write flow audit events; keeping them to retry");
                        }
                        break;
                    }
                }
                if drained {
                    break;
                }
            }
            if finishing {
                if !pending.is_empty() {
                    tracing::error!(
                        events = pending.len(),
                        "audit events not written before exit: the database refused them"
                    );
                }
                return;
            }
        }
    }
}

/// Writes `events` in batches, removing each batch once written; on error the rest stays.
async fn write(dest: &Destination, events: &mut Vec<NewAuditEvent>) -> Result<(), StoreError> {
    match dest {
        Destination::Store(store) => {
            while !events.is_empty() {
                let n = events.len().min(MAX_BATCH);
                store.append_audit_batch(&events[..n]).await?;
                events.drain(..n);
            }
        }
        Destination::Portal(spool) => spool.append(events.drain(..)),
        Destination::Log => {
            for ev in events.drain(..) {
                tracing::info!(
                    target: "sesame::audit",
                    action = ev.action.as_str(),
                    actor = %ev.actor,
                    target_ = %ev.target,
                    outcome = ev.outcome.as_str(),
                    source_ip = ev.source_ip.as_deref().unwrap_or(""),
                    details = %ev.details,
                    "audit event"
                );
            }
        }
    }
    Ok(())
}

/// Marks the windows the gateway closed as closed in the store (`sesame serve`); on error the
/// rest stays to retry. Nothing to do without a store: a site gateway's records reach its
/// portal, which does the same (`service::sites::ingest_events`).
async fn close_windows(
    dest: &Destination,
    closes: &mut Vec<(i64, i64, WindowEnd)>,
) -> Result<(), StoreError> {
    let Destination::Store(store) = dest else {
        closes.clear();
        return Ok(());
    };
    while let Some(&(device_id, until_ms, reason)) = closes.first() {
        store
            .mfa_gateway_closed_window(device_id, until_ms, reason.as_str())
            .await?;
        closes.remove(0);
    }
    Ok(())
}

/// Actor, target, and the `device_id`/`username`/`peer` details of a peer.
fn who(peer: &PeerRef, source_ip: Option<IpAddr>) -> (AuditContext, String, Value) {
    let ip = source_ip.map(|ip| ip.to_string());
    match PeerIdentity::parse(&peer.label) {
        PeerIdentity::Device { id, username } => (
            AuditContext::new(username.clone(), ip),
            format!("device:{id}"),
            json!({"device_id": id, "username": username, "peer": peer.label.as_str()}),
        ),
        PeerIdentity::Static { name } => (
            AuditContext::new("system", ip),
            format!("peer:{name}"),
            json!({"device_id": null, "username": null, "peer": peer.label.as_str()}),
        ),
    }
}

fn with(mut base: Value, more: Value) -> Value {
    if let (Value::Object(b), Value::Object(m)) = (&mut base, more) {
        b.extend(m);
    }
    base
}

fn session_started(s: &SessionStart) -> NewAuditEvent {
    let (ctx, target, ids) = who(&s.peer, Some(s.endpoint.ip()));
    NewAuditEvent::new(Action::TunnelSessionStarted, &ctx, target).details(with(
        ids,
        json!({
            "public_key": s.peer.public_key.to_base64(),
            "endpoint": s.endpoint.to_string(),
            "started_at": time::format(s.started_ms),
        }),
    ))
}

fn session_ended(e: &SessionEnd) -> NewAuditEvent {
    let (ctx, target, ids) = who(&e.peer, Some(e.endpoint.ip()));
    NewAuditEvent::new(Action::TunnelSessionEnded, &ctx, target).details(with(
        ids,
        json!({
            "public_key": e.peer.public_key.to_base64(),
            "endpoint": e.endpoint.to_string(),
            "started_at": time::format(e.started_ms),
            "ended_at": time::format(e.ended_ms),
            "duration_ms": e.ended_ms.saturating_sub(e.started_ms).max(0),
            "rx_bytes": e.rx_bytes,
            "tx_bytes": e.tx_bytes,
            "rx_packets": e.rx_packets,
            "tx_packets": e.tx_packets,
            "reason": e.reason.as_str(),
        }),
    ))
}

/// An access window the gateway closed (expiry, idleness): the system acted, the device's
/// live flows to protected resources were cut.
fn window_closed(w: &WindowClosed) -> NewAuditEvent {
    let (_, target, ids) = who(&w.peer, None);
    NewAuditEvent::new(Action::MfaWindowClosed, &AuditContext::system(), target).details(with(
        ids,
        json!({
            "public_key": w.peer.public_key.to_base64(),
            "until": time::format(w.until_ms),
            "closed_at": time::format(w.closed_ms),
            "reason": w.reason.as_str(),
            "flows_cut": w.flows_cut,
        }),
    ))
}

/// `"tcp"`, `"udp"`, `"icmp"`, or the protocol number.
fn protocol(p: u8) -> Value {
    match p {
        ip_proto::TCP => json!("tcp"),
        ip_proto::UDP => json!("udp"),
        ip_proto::ICMP | ip_proto::ICMPV6 => json!("icmp"),
        other => json!(other),
    }
}

fn flow_allowed(a: &AllowedFlow, source_ip: Option<IpAddr>, policy: &Policy) -> NewAuditEvent {
    let (ctx, target, ids) = who(&a.peer, source_ip);
    let protocols: Vec<Value> = a.protocols.iter().map(protocol).collect();
    NewAuditEvent::new(Action::FlowAllowed, &ctx, target).details(with(
        ids,
        json!({
            "resource": policy.resource_name(a.resource),
            "window_start": time::format(a.window_start_ms),
            "first_seen": time::format(a.first_ms),
            "last_seen": time::format(a.last_ms),
            "packets": a.packets_out + a.packets_in,
            "bytes": a.bytes_out + a.bytes_in,
            "packets_in": a.packets_in,
            "bytes_in": a.bytes_in,
            "packets_out": a.packets_out,
            "bytes_out": a.bytes_out,
            "protocols": protocols,
            "ports": a.ports,
            "ports_truncated": a.ports_truncated,
        }),
    ))
}

fn flow_denied(d: &DeniedFlow, source_ip: Option<IpAddr>) -> NewAuditEvent {
    let (ctx, target, ids) = who(&d.peer, source_ip);
    let mut details = with(
        ids,
        json!({
            "dst": d.dst.map_or_else(|| "*".to_string(), |ip| ip.to_string()),
            "protocol": d.dst.map_or(Value::Null, |_| protocol(d.proto)),
            "port": d.port,
            "count": d.count,
            "reason": d.reason.as_str(),
            "window_start": time::format(d.window_start_ms),
            "first_seen": time::format(d.first_ms),
            "last_seen": time::format(d.last_ms),
        }),
    );
    if d.dst.is_none() {
        details = with(details, json!({"destinations": d.destinations}));
    }
    NewAuditEvent::new(Action::FlowDenied, &ctx, target)
        .outcome(Outcome::Denied)
        .details(details)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "flow_audit_tests.rs"]
mod tests;
