//! Site gateways: their tokens (created by IT at the command line, checked on each feed and
//! events request).

use std::net::IpAddr;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use crate::api::feed::{EventsAccepted, FeedUpdate, GatewayEvent, GatewayEvents, MAX_WAIT_SECS};
use crate::audit::{Action, AuditContext, Outcome};
use crate::gateway::flowlog::WindowEnd;

use super::context::Record;
use super::roles::{Actor, Role};
use super::{ServiceError, Services};

/// Bytes of randomness in a site token (printed as 64 hex digits).
const TOKEN_BYTES: usize = 32;

/// What is stored of a token: hex SHA-256. A 256-bit random token needs no slow hash (it is
/// not a password a dictionary could find).
fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

/// A new random token for `site` (a `[[site]]` of the configuration), replacing the previous
/// one at once, audited `site.token_created`. Returned once: only its hash is stored.
pub async fn create_token(
    svc: &Services,
    actor: &Actor,
    site: &str,
) -> Result<String, ServiceError> {
    actor.require(Role::ItStaff)?;
    if svc.config().site(site).is_none() {
        return Err(ServiceError::Invalid(format!(
            "site inconnu {site:?} : déclarez-le dans une section [[site]] de la configuration / unknown site {site:?}: declare it in a [[site]] section of the configuration"
        )));
    }
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    let token = hex::encode(bytes);
    let ctx = AuditContext::new(actor.username.clone(), None);
    svc.store()
        .replace_site_token(site, &token_hash(&token), &ctx)
        .await?;
    Ok(token)
}

/// The site a gateway's bearer token stands for: its current token, of a site still in the
/// configuration, and the site the gateway says it serves (`claimed`, when it says one).
/// Anything else is refused (audited `site.token_refused`, with the caller's address and the
/// reason) as [`ServiceError::InvalidSiteToken`].
pub async fn authenticate(
    svc: &Services,
    token: &str,
    claimed: Option<&str>,
    source_ip: Option<IpAddr>,
) -> Result<String, ServiceError> {
    let site = svc.store().site_of_token(&token_hash(token)).await?;
    match site {
        Some(site) if svc.config().site(&site).is_some() && claimed.is_none_or(|c| c == site) => {
            Ok(site)
        }
        Some(site) if svc.config().site(&site).is_some() => {
            svc.audit(Record {
                actor: "anonymous",
                action: Action::SiteTokenRefused,
                target: &format!("site:{site}"),
                outcome: Outcome::Denied,
                source_ip,
                details: serde_json::json!({
                    "reason": "other_site",
                    "claimed_site": claimed,
                }),
            })
            .await;
            Err(ServiceError::InvalidSiteToken)
        }
        other => {
            svc.audit(Record {
                actor: "anonymous",
                action: Action::SiteTokenRefused,
                target: &other
                    .as_deref()
                    .map_or("site:?".into(), |s| format!("site:{s}")),
                outcome: Outcome::Denied,
                source_ip,
                details: serde_json::json!({ "reason": "invalid_site_token" }),
            })
            .await;
            Err(ServiceError::InvalidSiteToken)
        }
    }
}

/// What a site gateway asks the feed: its last version and generation (none: the full set)
/// and how long it may wait for a change.
#[derive(Debug, Clone, Default)]
pub struct FeedQuery {
    /// The site the gateway serves (older gateways do not say).
    pub site: Option<String>,
    pub since: Option<u64>,
    pub generation: Option<String>,
    pub wait: Duration,
}

/// `GET /api/v1/gateway/feed`: the token's site's set, full or the changes since `since` of
/// this portal's generation, held up to `wait` (at most [`MAX_WAIT_SECS`]) when nothing is new.
/// A token only ever yields its own site.
pub async fn feed(
    svc: &Services,
    token: &str,
    source_ip: Option<IpAddr>,
    query: FeedQuery,
) -> Result<FeedUpdate, ServiceError> {
    let site = authenticate(svc, token, query.site.as_deref(), source_ip).await?;
    let _waiting = svc.metrics().feed_request(&site);
    let hub = svc.feeds()?;
    let same_generation = query
        .generation
        .as_deref()
        .is_none_or(|g| g == hub.generation());
    let since = query.since.filter(|_| same_generation);
    let wait = query.wait.min(Duration::from_secs(MAX_WAIT_SECS));
    let mut update = hub
        .wait_update(&site, since, wait, || svc.now_ms())
        .await
        .ok_or(ServiceError::NotFound)?;
    update.mfa_idle_ms = svc
        .config()
        .mfa
        .as_ref()
        .map(|m| u64::try_from(m.idle.as_millis()).unwrap_or(u64::MAX));
    Ok(update)
}

/// Most records one events batch may carry.
pub const MAX_EVENTS: usize = 5_000;

/// What a site gateway may report (its sessions, flows, second-factor windows, losses).
const SITE_ACTIONS: [&str; 6] = [
    "tunnel.session_started",
    "tunnel.session_ended",
    "flow.allowed",
    "flow.denied",
    "mfa.window_closed",
    "audit.overflow",
];

/// `POST /api/v1/gateway/events`: the batch's records appended to the audit log with the
/// token's `site` (never the body's) and the device as IT named it, in one transaction.
/// Idempotent: records at or below the last `seq` stored for the site are acknowledged and
/// skipped (a gateway sends its spool oldest first, so a retried batch is skipped whole).
pub async fn ingest_events(
    svc: &Services,
    token: &str,
    claimed_site: Option<&str>,
    source_ip: Option<IpAddr>,
    batch: GatewayEvents,
) -> Result<EventsAccepted, ServiceError> {
    let site = authenticate(svc, token, claimed_site, source_ip).await?;
    check_batch(&batch)?;
    let mut events = Vec::with_capacity(batch.records.len());
    let mut names: std::collections::HashMap<i64, Option<crate::store::Device>> =
        std::collections::HashMap::new();
    for r in &batch.records {
        let device = match r.device_id {
            Some(id) => match names.get(&id) {
                Some(d) => d.clone(),
                None => {
                    let d = svc.store().device(id).await?;
                    names.insert(id, d.clone());
                    d
                }
            },
            None => None,
        };
        events.push((r.seq, site_event(&site, source_ip, r, device.as_ref())));
    }
    svc.store().append_site_events(&site, &events).await?;
    gateway_closed_windows(svc, &batch.records).await?;
    Ok(EventsAccepted {
        accepted: batch.records.len() as u64,
    })
}

/// The access windows the site's gateway closed on its own (`expired`, `idle`) are closed in
/// the store too, so that the feed stops sending them and the user's pages say so: only the
/// window that ended (a late report never closes a newer one), the feed told at once.
async fn gateway_closed_windows(
    svc: &Services,
    records: &[GatewayEvent],
) -> Result<(), ServiceError> {
    let mut closed = false;
    for r in records.iter().filter(|r| r.action == "mfa.window_closed") {
        let Some(device_id) = r.device_id else {
            continue;
        };
        let reason = r.details.get("reason").and_then(|v| v.as_str());
        let until = r.details.get("until").and_then(|v| v.as_str());
        let (Some(reason), Some(until)) = (reason.and_then(WindowEnd::parse), until) else {
            tracing::warn!(
                device_id,
                seq = r.seq,
                "mfa.window_closed without a gateway reason or end: the window is left to expire"
            );
            continue;
        };
        let Ok(until_ms) = crate::time::parse("until", until, svc.now_ms()) else {
            tracing::warn!(
                device_id,
                seq = r.seq,
                until,
                "mfa.window_closed with an unreadable end: the window is left to expire"
            );
            continue;
        };
        closed |= svc
            .store()
            .mfa_gateway_closed_window(device_id, until_ms, reason.as_str())
            .await?;
    }
    if closed {
        if let Some(p) = svc.publisher() {
            p.publish_now().await;
        }
    }
    Ok(())
}

/// A batch is at most [`MAX_EVENTS`] records of known actions and outcomes, `seq` increasing.
fn check_batch(batch: &GatewayEvents) -> Result<(), ServiceError> {
    let bad = |m: String| Err(ServiceError::Invalid(m));
    if batch.records.len() > MAX_EVENTS {
        return bad(format!(
            "lot trop grand : au plus {MAX_EVENTS} enregistrements / batch too large: at most {MAX_EVENTS} records"
        ));
    }
    for (i, r) in batch.records.iter().enumerate() {
        if !SITE_ACTIONS.contains(&r.action.as_str()) || Action::parse(&r.action).is_none() {
            return bad(format!(
                "records[{i}].action : action inconnue {:?} / unknown action",
                r.action
            ));
        }
        if Outcome::parse(&r.outcome).is_none() {
            return bad(format!(
                "records[{i}].outcome : success, failure ou denied / success, failure or denied"
            ));
        }
        if !(r.details.is_object() || r.details.is_null()) {
            return bad(format!(
                "records[{i}].details : un objet JSON / a JSON object"
            ));
        }
        if i > 0 && r.seq <= batch.records[i - 1].seq {
            return bad(format!(
                "records[{i}].seq : croissant dans le lot / increasing within the batch"
            ));
        }
    }
    Ok(())
}

/// One record as an audit event: the device's owner acts (as for `sesame serve`'s own
/// gateway), the target is the device, `details` gain `site`, the device's name and the
/// gateway's time and sequence number.
fn site_event(
    site: &str,
    source_ip: Option<IpAddr>,
    r: &GatewayEvent,
    device: Option<&crate::store::Device>,
) -> crate::audit::NewAuditEvent {
    let action = Action::parse(&r.action).unwrap_or(Action::AuditOverflow);
    let actor = device.map_or("system", |d| d.username.as_str());
    let ctx = AuditContext::new(actor, source_ip.map(|ip| ip.to_string()));
    let target = match (r.device_id, action) {
        (Some(id), _) => format!("device:{id}"),
        (None, Action::AuditOverflow) => "audit_queue".to_string(),
        (None, _) => format!("site:{site}"),
    };
    let mut details = match &r.details {
        serde_json::Value::Object(m) => m.clone(),
        _ => serde_json::Map::new(),
    };
    details.insert("site".into(), site.into());
    details.insert("spool_seq".into(), r.seq.into());
    details.insert("gateway_at".into(), crate::time::format(r.ts_ms).into());
    if let Some(d) = device {
        details.insert("device_id".into(), d.id.into());
        details.insert("device_name".into(), d.name.clone().into());
        details.insert("username".into(), d.username.clone().into());
    }
    if let Some(k) = &r.public_key {
        details.insert("public_key".into(), k.clone().into());
    }
    crate::audit::NewAuditEvent::new(action, &ctx, target)
        .outcome(Outcome::parse(&r.outcome).unwrap_or(Outcome::Success))
        .details(serde_json::Value::Object(details))
}
