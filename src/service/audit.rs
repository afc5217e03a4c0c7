//! Audit reads for auditors (API, pages and CLI alike): the log page by page, its export, flows
//! to a resource, the access review and the chain's verification.
//!
//! The query engine (filters, paging) belongs to `store` and `audit/`; this is the one place the
//! adapters call it, behind the auditor role. Every read is itself audited (`audit.read`), here:
//! a query that cannot be audited is not answered.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::audit::checkpoint;
use crate::audit::export::{render_page, ExportFormat};
use crate::audit::query::{page_size, read_event};
use crate::audit::review::{FlowView, Review, ReviewCursor, ReviewSubject};
use crate::audit::{AuditContext, AuditEvent, AuditVerification, Cursor, FilterParams, QueryError};
use crate::store::{AuditFilter, Store, StoreError};

use super::review::{self, ReviewError, ReviewPages, ReviewPolicy};
use super::roles::{Actor, Role};
use super::{ServiceError, Services};

/// Most events one page of the web log shows.
pub const PAGE_SIZE: i64 = 200;
/// Events read per query while exporting.
pub const EXPORT_PAGE: i64 = 1_000;

/// Records the auditor's query (`audit.read`) before it is answered; returns the event's id.
pub async fn record_read(
    svc: &Services,
    actor: &Actor,
    source_ip: Option<IpAddr>,
    query: &str,
    format: &str,
    shown: serde_json::Value,
) -> Result<i64, ServiceError> {
    actor.require(Role::Auditor)?;
    let ctx = AuditContext::new(actor.username.clone(), source_ip.map(|ip| ip.to_string()));
    let ev = svc
        .store()
        .append_audit(&read_event(&ctx, query, format, shown))
        .await?;
    Ok(ev.id)
}

/// A query of the log as the API and the CLI take it: the filter, where to start, how many,
/// and in which form.
#[derive(Debug, Clone, Copy)]
pub struct EventsRequest<'a> {
    pub filter: &'a FilterParams,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<&'a str>,
    /// Page size (`json`), 1 to 10000; default 1000.
    pub limit: Option<&'a str>,
    /// `json` (default: one page), `csv` or `jsonl` (the whole filtered result).
    pub format: Option<&'a str>,
}

/// The answer to an [`EventsRequest`].
pub enum Events {
    /// One page (`json`) and the cursor of the next one (`None`: last page).
    Page {
        events: Vec<AuditEvent>,
        next_cursor: Option<String>,
    },
    /// The whole filtered log, to read chunk by chunk (boxed: it holds a store handle).
    Export(Box<Export>),
}

/// Events matching the request (auditors only): one page, or an export of everything (recorded
/// as `export`, and the log as it stood then, without that record).
pub async fn events(
    svc: &Services,
    actor: &Actor,
    source_ip: Option<IpAddr>,
    req: EventsRequest<'_>,
) -> Result<Events, ServiceError> {
    actor.require(Role::Auditor)?;
    let filter = req.filter.to_filter(svc.now_ms())?;
    let cursor = req.cursor.filter(|c| !c.is_empty());
    let after = cursor.map(Cursor::decode).transpose()?.map(|c| c.after_id);
    let limit = page_size(req.limit)?;
    let format = req.format.unwrap_or("json");
    let mut shown = req.filter.to_json();
    if let (Some(map), Some(c)) = (shown.as_object_mut(), cursor) {
        map.insert("cursor".into(), serde_json::Value::String(c.to_string()));
    }
    if format == "json" {
        record_read(svc, actor, source_ip, "events", format, shown).await?;
        let (events, next) = svc.store().audit_page(&filter, after, limit).await?;
        return Ok(Events::Page {
            events,
            next_cursor: next.map(|after_id| Cursor { after_id }.encode()),
        });
    }
    let format = ExportFormat::parse(format)
        .map_err(|_| QueryError::BadFormat(format.to_string(), "json, csv, jsonl"))?;
    let filter = AuditFilter {
        after_id: after,
        ..filter
    };
    Ok(Events::Export(Box::new(
        start_export(svc, actor, source_ip, filter, shown, format).await?,
    )))
}

/// The whole log matching `params` (auditors only; `sesame audit export`), recorded as
/// `export`: the log as it stood then, without that record.
pub async fn export(
    svc: &Services,
    actor: &Actor,
    source_ip: Option<IpAddr>,
    params: &FilterParams,
    format: ExportFormat,
) -> Result<Export, ServiceError> {
    actor.require(Role::Auditor)?;
    let filter = params.to_filter(svc.now_ms())?;
    start_export(svc, actor, source_ip, filter, params.to_json(), format).await
}

async fn start_export(
    svc: &Services,
    actor: &Actor,
    source_ip: Option<IpAddr>,
    filter: AuditFilter,
    shown: serde_json::Value,
    format: ExportFormat,
) -> Result<Export, ServiceError> {
    let read_id = record_read(svc, actor, source_ip, "export", format.as_str(), shown).await?;
    Ok(Export {
        store: svc.store().clone(),
        filter: AuditFilter {
            through_id: Some(read_id - 1),
            ..filter
        },
        format,
        first: true,
        done: false,
    })
}

/// One page of the web log (auditors only), oldest first: at most [`PAGE_SIZE`] events with an
/// id above `after`, and the id to pass as the next page's `after` (`None`: last page).
pub async fn events_page(
    svc: &Services,
    actor: &Actor,
    source_ip: Option<IpAddr>,
    params: &FilterParams,
    after: Option<i64>,
) -> Result<(Vec<AuditEvent>, Option<i64>), ServiceError> {
    actor.require(Role::Auditor)?;
    let filter = params.to_filter(svc.now_ms())?;
    let mut shown = params.to_json();
    if let (Some(map), Some(after)) = (shown.as_object_mut(), after) {
        map.insert("after".into(), after.into());
    }
    record_read(svc, actor, source_ip, "events", "html", shown).await?;
    Ok(svc.store().audit_page(&filter, after, PAGE_SIZE).await?)
}

/// An export under way: the filtered log as it stood when it was asked for, rendered page by
/// page (constant memory whatever the log's size).
pub struct Export {
    store: Store,
    /// `after_id` is where the next chunk starts.
    filter: AuditFilter,
    format: ExportFormat,
    first: bool,
    done: bool,
}

impl Export {
    pub fn format(&self) -> ExportFormat {
        self.format
    }

    /// The next [`EXPORT_PAGE`] events, rendered (the CSV header first); `None` once all were
    /// read.
    pub async fn next_chunk(&mut self) -> Option<Result<Vec<u8>, ServiceError>> {
        if self.done {
            return None;
        }
        let page = self
            .store
            .audit_page(&self.filter, self.filter.after_id, EXPORT_PAGE)
            .await;
        let (events, next) = match page {
            Ok(p) => p,
            Err(e) => {
                self.done = true;
                return Some(Err(e.into()));
            }
        };
        let bytes = render_page(self.format, &events, self.first).map_err(ServiceError::from);
        self.first = false;
        self.filter.after_id = next;
        self.done = next.is_none();
        Some(bytes)
    }

    /// Every chunk into `sink`, read on one connection (its page cache stays that of one
    /// connection: flat memory on a long log); returns how many events were written.
    pub async fn write_all<E: From<ServiceError>>(
        self,
        mut sink: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        let format = self.format;
        let mut first = true;
        self.store
            .audit_scan(&self.filter, EXPORT_PAGE, |page| -> Result<(), Stop<E>> {
                let bytes = render_page(format, page, first)
                    .map_err(|e| Stop::Service(ServiceError::from(e)))?;
                first = false;
                sink(&bytes).map_err(Stop::Sink)
            })
            .await
            .map_err(|stop| match stop {
                Stop::Service(e) => E::from(e),
                Stop::Sink(e) => e,
            })
    }
}

/// Why [`Export::write_all`] stopped: the log could not be read or rendered, or the sink failed.
enum Stop<E> {
    Service(ServiceError),
    Sink(E),
}

impl<E> From<StoreError> for Stop<E> {
    fn from(e: StoreError) -> Self {
        Stop::Service(e.into())
    }
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
    svc: &Services,
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
    let filter = params.to_filter(svc.now_ms())?;
    let resource = filter.resource.clone().ok_or_else(|| {
        ServiceError::Invalid("resource : précisez une ressource / give a resource".into())
    })?;
    record_read(svc, actor, source_ip, "flows", format, params.to_json()).await?;
    // A resource without a site is `sesame serve`'s own gateway's.
    let site = review::resource_site(&svc.config().policy, &resource);
    let mut views = Vec::new();
    for mut f in svc
        .store()
        .flows(&resource, filter.since, filter.until)
        .await?
    {
        // `sesame serve`'s own records name the device by id only: its name as IT gave it.
        if f.device_name.is_none() {
            if let Some(id) = f.device_id {
                f.device_name = svc.store().device(id).await?.map(|d| d.name);
            }
        }
        views.push(FlowView::new(f, &site));
    }
    Ok(views)
}

/// Who can reach a resource now, what a user's devices can reach, or who can reach each
/// resource of a site (auditors only): exactly one of `resource`, `user` and `site` (a
/// `[[site]]` of the configuration, or `local`); all the entries, or one page of them.
pub async fn access_review(
    svc: &Services,
    actor: &Actor,
    source_ip: Option<IpAddr>,
    format: &str,
    asked: ReviewQuery<'_>,
    page: ReviewPage<'_>,
) -> Result<Review, ServiceError> {
    let (subject, mut shown) = review_subject(svc, actor, asked)?;
    let cursor = page.cursor.map(str::trim).filter(|c| !c.is_empty());
    let limit = page.limit.map(str::trim).filter(|l| !l.is_empty());
    let ask = review::PageAsk {
        after: cursor.map(ReviewCursor::decode).transpose()?,
        limit: match limit {
            Some(l) => Some(usize::try_from(page_size(Some(l))?).unwrap_or(usize::MAX)),
            None => page.default_limit,
        },
    };
    if let Some(map) = shown.as_object_mut() {
        for (k, v) in [("cursor", cursor), ("limit", limit)] {
            if let Some(v) = v {
                map.insert(k.into(), serde_json::Value::String(v.to_string()));
            }
        }
    }
    record_read(svc, actor, source_ip, "access_review", format, shown).await?;
    let config = svc.config();
    let cfg = ReviewPolicy::of(&config);
    Ok(
        review::access_review_counted(svc.store(), &cfg, &subject, &ask, &svc.review_counts)
            .await?,
    )
}

/// The whole review (auditors only), recorded once, to read page after page (`sesame audit
/// access-review`).
pub async fn access_review_pages(
    svc: &Services,
    actor: &Actor,
    source_ip: Option<IpAddr>,
    format: &str,
    asked: ReviewQuery<'_>,
) -> Result<ReviewPages, ServiceError> {
    let (subject, shown) = review_subject(svc, actor, asked)?;
    record_read(svc, actor, source_ip, "access_review", format, shown).await?;
    if let ReviewSubject::Resource(r) = &subject {
        if svc.config().policy.resource(r).is_none() {
            return Err(QueryError::UnknownResource(r.clone()).into());
        }
    }
    Ok(ReviewPages::new(
        svc.store().clone(),
        svc.config(),
        subject,
        None,
    ))
}

/// The review's subject (an auditor's only; a site must be `local` or configured) and how the
/// `audit.read` record shows it.
fn review_subject(
    svc: &Services,
    actor: &Actor,
    asked: ReviewQuery<'_>,
) -> Result<(ReviewSubject, serde_json::Value), ServiceError> {
    actor.require(Role::Auditor)?;
    let subject = review::subject(asked.resource, asked.user, asked.site)?;
    if let ReviewSubject::Site(s) = &subject {
        if s != crate::config::LOCAL_SITE && svc.config().site(s).is_none() {
            return Err(QueryError::UnknownSite(s.clone()).into());
        }
    }
    let shown = subject.to_json();
    Ok((subject, shown))
}

impl From<ReviewError> for ServiceError {
    fn from(e: ReviewError) -> Self {
        match e {
            ReviewError::Query(q) => ServiceError::Query(q),
            ReviewError::Store(s) => ServiceError::Store(s),
        }
    }
}

/// Which page of the review: after `cursor` (a `next_cursor`), at most `limit` entries (1 to
/// 10000, as given), else `default_limit` (`None`: every entry).
#[derive(Debug, Clone, Copy, Default)]
pub struct ReviewPage<'a> {
    pub cursor: Option<&'a str>,
    pub limit: Option<&'a str>,
    pub default_limit: Option<usize>,
}

/// What the access review is about, as the API, the CLI and the page take it: exactly one of
/// the three.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReviewQuery<'a> {
    /// Who can reach this resource now.
    pub resource: Option<&'a str>,
    /// What this user's devices can reach now.
    pub user: Option<&'a str>,
    /// Who can reach each resource of this site now (`local`: the resources without a site).
    pub site: Option<&'a str>,
}

/// What a verification trusts: the audit public key (default: the public half of `[audit]
/// signing_key_file`) and the checkpoint file (default: `[audit] checkpoint_file`), which may
/// also be the checkpoints' log lines captured off the server (`checkpoint::parse_text`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Trust<'a> {
    /// Base64 Ed25519 public key.
    pub public_key: Option<&'a str>,
    pub checkpoints: Option<&'a Path>,
}

/// The hash chain checked against every signed checkpoint (no role check, no record).
async fn walk(svc: &Services, trust: Trust<'_>) -> Result<AuditVerification, ServiceError> {
    let config = svc.config();
    let audit = &config.audit;
    let key = match trust.public_key {
        Some(k) => Some(checkpoint::parse_public_key(k)?),
        None => checkpoint::load_public_key(&audit.signing_key_file)?,
    };
    let cps = checkpoint::read_file(trust.checkpoints.unwrap_or(&audit.checkpoint_file))?;
    Ok(svc
        .store()
        .verify_audit_with(Some((key.as_ref(), &cps)))
        .await?)
}

/// Whether the hash chain is intact and agrees with every signed checkpoint of `[audit]
/// checkpoint_file` (auditors only; the verify API). The query is recorded first: a walk that
/// fails is on record too.
pub async fn verify(
    svc: &Services,
    actor: &Actor,
    source_ip: Option<IpAddr>,
) -> Result<AuditVerification, ServiceError> {
    let shown = serde_json::json!({});
    record_read(svc, actor, source_ip, "verify", "json", shown).await?;
    walk(svc, Trust::default()).await
}

/// `sesame audit verify`: the same walk, trusting `trust`; recorded after the walk (`text`,
/// with the checkpoint file when given), so the verdict is about the log as found.
pub async fn verify_with(
    svc: &Services,
    actor: &Actor,
    trust: Trust<'_>,
) -> Result<AuditVerification, ServiceError> {
    actor.require(Role::Auditor)?;
    let verdict = walk(svc, trust).await?;
    let shown = match trust.checkpoints {
        Some(p) => serde_json::json!({ "checkpoints": p.display().to_string() }),
        None => serde_json::json!({}),
    };
    record_read(svc, actor, None, "verify", "text", shown).await?;
    Ok(verdict)
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

/// The chain status for a page (auditors only): the cached verification if younger than
/// [`CHAIN_STATUS_MAX_AGE`] (and not `refresh`), else a new one. Returns it with its age.
/// Failures are not cached.
pub async fn verify_cached(
    svc: &Services,
    actor: &Actor,
    refresh: bool,
) -> Result<(AuditVerification, Duration), ServiceError> {
    actor.require(Role::Auditor)?;
    // Held across the walk: concurrent page views wait for the one verification under way.
    let mut last = svc.chain_status.last.lock().await;
    if let Some((at, result)) = last.as_ref() {
        if !refresh && at.elapsed() < CHAIN_STATUS_MAX_AGE {
            return Ok((result.clone(), at.elapsed()));
        }
    }
    match walk(svc, Trust::default()).await {
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
