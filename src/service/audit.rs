//! Audit queries for auditors (pages and API): the log, flows to a resource, the access review
//! and the chain status.
//!
//! Thin on purpose: the query engine (filters, paging, export) belongs to `store::audit` and
//! `audit/`; this is the one place the web layer calls it, behind the auditor role. Every query
//! is itself audited (`audit.read`) before it is answered: a query that cannot be audited is not
//! answered.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::audit::checkpoint;
use crate::audit::query::read_event;
use crate::audit::review::{self, FlowView, Review, ReviewError, ReviewPolicy, ReviewSubject};
use crate::audit::{AuditContext, AuditEvent, FilterParams};
use crate::config::Config;
use crate::store::{AuditFilter, AuditVerification, Store, StoreError};

use super::roles::{Actor, Role};
use super::ServiceError;

/// Most events one page of the web log shows.
pub const PAGE_SIZE: i64 = 200;

/// Records the auditor's query (`audit.read`) before it is answered; returns the event's id.
pub async fn record_read(
    store: &Store,
    actor: &Actor,
    source_ip: Option<IpAddr>,
    query: &str,
    format: &str,
    shown: serde_json::Value,
) -> Result<i64, ServiceError> {
    actor.require(Role::Auditor)?;
    let ctx = AuditContext::new(actor.username.clone(), source_ip.map(|ip| ip.to_string()));
    let ev = store
        .append_audit(&read_event(&ctx, query, format, shown))
        .await?;
    Ok(ev.id)
}

/// One page of events matching `filter` (auditors only), oldest first: at most `limit` events
/// with an id above `after`, and the id to pass as the next page's `after` (`None`: last page).
pub async fn events_page(
    store: &Store,
    actor: &Actor,
    source_ip: Option<IpAddr>,
    params: &FilterParams,
    filter: &AuditFilter,
    after: Option<i64>,
    limit: i64,
) -> Result<(Vec<AuditEvent>, Option<i64>), ServiceError> {
    let mut shown = params.to_json();
    if let (Some(map), Some(after)) = (shown.as_object_mut(), after) {
        map.insert("after".into(), after.into());
    }
    record_read(store, actor, source_ip, "events", "html", shown).await?;
    Ok(store.audit_page(filter, after, limit).await?)
}

/// What the flows view is about: a resource (also one no longer configured: its history stays)
/// and a time range (`since` included, `until` excluded; RFC 3339 or YYYY-MM-DD).
#[derive(Debug, Clone, Default)]
pub struct FlowsQuery {
    pub resource: String,
    pub since: Option<String>,
    pub until: Option<String>,
}

/// Who reached the resource over the range (auditors only): one row per device or static peer,
/// first/last seen, bytes in/out, ports. `format` is what the answer is rendered as (recorded in
/// `audit.read`).
pub async fn flows(
    store: &Store,
    actor: &Actor,
    source_ip: Option<IpAddr>,
    format: &str,
    q: &FlowsQuery,
) -> Result<Vec<FlowView>, ServiceError> {
    actor.require(Role::Auditor)?;
    let params = FilterParams {
        resource: Some(q.resource.clone()),
        since: q.since.clone(),
        until: q.until.clone(),
        ..FilterParams::default()
    };
    let filter = params.to_filter()?;
    let resource = filter.resource.clone().ok_or_else(|| {
        ServiceError::Invalid("resource : précisez une ressource / give a resource".into())
    })?;
    record_read(store, actor, source_ip, "flows", format, params.to_json()).await?;
    Ok(store
        .flows(&resource, filter.since, filter.until)
        .await?
        .into_iter()
        .map(FlowView::from)
        .collect())
}

/// Who can reach a resource now, or what a user's devices can reach (auditors only): exactly one
/// of `resource` and `user`.
pub async fn access_review(
    store: &Store,
    config: &Config,
    actor: &Actor,
    source_ip: Option<IpAddr>,
    format: &str,
    resource: Option<&str>,
    user: Option<&str>,
) -> Result<Review, ServiceError> {
    actor.require(Role::Auditor)?;
    let subject = ReviewSubject::from_params(resource, user)?;
    record_read(
        store,
        actor,
        source_ip,
        "access_review",
        format,
        subject.to_json(),
    )
    .await?;
    let policy = ReviewPolicy {
        policy: &config.policy,
        vpn_users: &config.roles.vpn_users,
        static_peers: &config.peers,
    };
    review::access_review(store, &policy, &subject)
        .await
        .map_err(|e| match e {
            ReviewError::Query(q) => ServiceError::Query(q),
            ReviewError::Store(s) => ServiceError::Store(s),
        })
}

/// Whether the hash chain is intact and agrees with every signed checkpoint of
/// `[audit] checkpoint_file` (auditors only), as `sesame audit verify` checks it.
pub async fn verify(
    store: &Store,
    config: &Config,
    actor: &Actor,
) -> Result<AuditVerification, ServiceError> {
    actor.require(Role::Auditor)?;
    let audit = &config.audit;
    let key = checkpoint::load_public_key(&audit.signing_key_file).map_err(StoreError::from)?;
    let cps = checkpoint::read_file(&audit.checkpoint_file).map_err(StoreError::from)?;
    Ok(store.verify_audit_with(Some((key.as_ref(), &cps))).await?)
}

/// How long the audit log page reuses one verification of the whole chain. Verifying reads
/// every event (seconds on a log of millions): page views share one result per interval and
/// never run two walks at once. The verify API and `sesame audit verify` always walk afresh.
pub const CHAIN_STATUS_MAX_AGE: Duration = Duration::from_secs(300);

/// The last chain verification made for the web pages, with when it was made.
#[derive(Debug, Default)]
pub struct ChainStatusCache {
    last: tokio::sync::Mutex<Option<(Instant, AuditVerification)>>,
}

/// The chain status for a page: the cached verification if younger than `max_age` (and not
/// `refresh`), else a new one. Returns it with its age. Failures are not cached.
pub async fn verify_cached(
    cache: &ChainStatusCache,
    store: &Store,
    config: &Config,
    actor: &Actor,
    max_age: Duration,
    refresh: bool,
) -> Result<(AuditVerification, Duration), ServiceError> {
    actor.require(Role::Auditor)?;
    // Held across the walk: concurrent page views wait for the one verification under way.
    let mut last = cache.last.lock().await;
    if let Some((at, result)) = last.as_ref() {
        if !refresh && at.elapsed() < max_age {
            return Ok((result.clone(), at.elapsed()));
        }
    }
    match verify(store, config, actor).await {
        Ok(result) => {
            *last = Some((Instant::now(), result.clone()));
            Ok((result, Duration::ZERO))
        }
        Err(e) => {
            // The next view tries again rather than showing a result older than this failure.
            *last = None;
            Err(e)
        }
    }
}
