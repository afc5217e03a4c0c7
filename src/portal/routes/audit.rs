//! Auditor routes: query and export the audit log, flows to a resource, access review, verify
//! the hash chain. Every call by an auditor is itself audited (`audit.read`).

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::audit::export::{csv_document, render_page, ExportFormat};
use crate::audit::query::page_size;
use crate::audit::review::{
    review_csv_record, FlowView, Review, FLOWS_CSV_HEADER, REVIEW_CSV_HEADER,
};
use crate::audit::{AuditEvent, AuditFilter, Cursor, FilterParams, QueryError};
use crate::service::audit as audit_service;
use crate::store::{AuditVerification, Store};

use crate::portal::auth::{Role, Session};
use crate::portal::error::ApiError;
use crate::portal::extract::ClientIp;
use crate::portal::state::SharedState;
use crate::portal::time::rfc3339;

/// Events read per query while streaming an export.
const STREAM_PAGE: i64 = 1_000;

type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

fn query<T>(q: QueryResult<T>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

/// Query string of `GET /api/v1/audit/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Events whose actor is this uid or which concern it (target, details.username).
    pub user: Option<String>,
    /// Device id (`12` or `device:12`).
    pub device: Option<String>,
    /// Action name (`auth.login`, `flow.allowed`…).
    pub action: Option<String>,
    /// Resource name (flows).
    pub resource: Option<String>,
    /// `success`, `failure` or `denied`.
    pub outcome: Option<String>,
    /// Client address as recorded (no port).
    pub source_ip: Option<String>,
    /// From (included): RFC 3339 or YYYY-MM-DD (UTC).
    pub since: Option<String>,
    /// Until (excluded): RFC 3339 or YYYY-MM-DD (UTC).
    pub until: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size (JSON), 1 to 10000, default 1000.
    pub limit: Option<String>,
    /// `json` (default: one page), `csv` or `jsonl` (the whole filtered result, streamed).
    pub format: Option<String>,
}

impl EventsQuery {
    fn filter_params(&self) -> FilterParams {
        FilterParams {
            user: self.user.clone(),
            device: self.device.clone(),
            action: self.action.clone(),
            resource: self.resource.clone(),
            outcome: self.outcome.clone(),
            source_ip: self.source_ip.clone(),
            since: self.since.clone(),
            until: self.until.clone(),
        }
    }
}

/// One audit event as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventView {
    pub id: i64,
    pub ts: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub source_ip: Option<String>,
    pub details: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// A page of events and where the next one starts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventsPage {
    pub events: Vec<EventView>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

fn view(e: AuditEvent) -> EventView {
    EventView {
        id: e.id,
        ts: rfc3339(e.ts),
        actor: e.actor,
        action: e.action,
        target: e.target,
        outcome: e.outcome.as_str().to_string(),
        source_ip: e.source_ip,
        details: e.details,
        prev_hash: e.prev_hash,
        hash: e.hash,
    }
}

/// The whole filtered result, page by page, as a streamed body: constant memory.
fn stream_events(
    store: Store,
    filter: AuditFilter,
    after: Option<i64>,
    format: ExportFormat,
) -> Body {
    struct St {
        store: Store,
        filter: AuditFilter,
        after: Option<i64>,
        first: bool,
        done: bool,
    }
    let st = St {
        store,
        filter,
        after,
        first: true,
        done: false,
    };
    let stream = futures_util::stream::unfold(st, move |mut st| async move {
        if st.done {
            return None;
        }
        let page = st.store.audit_page(&st.filter, st.after, STREAM_PAGE).await;
        let (events, next) = match page {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "audit export stopped: database error");
                st.done = true;
                return Some((Err(std::io::Error::other(e)), st));
            }
        };
        let bytes = render_page(format, &events, st.first).map_err(std::io::Error::other);
        st.first = false;
        st.after = next;
        st.done = next.is_none();
        Some((bytes.map(Bytes::from), st))
    });
    Body::from_stream(stream)
}

/// `GET /api/v1/audit/events` (auditors)
#[utoipa::path(get, path = "/api/v1/audit/events", params(EventsQuery), security(("session" = [])),
    responses((status = 200, body = EventsPage), (status = 400), (status = 401), (status = 403)))]
pub async fn events(
    State(state): State<SharedState>,
    session: Session,
    ClientIp(ip): ClientIp,
    q: QueryResult<EventsQuery>,
) -> Result<Response, ApiError> {
    session.require(Role::Auditor)?;
    let q = query(q)?;
    let params = q.filter_params();
    let filter = params.to_filter()?;
    let after = q
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(Cursor::decode)
        .transpose()?
        .map(|c| c.after_id);
    let limit = page_size(q.limit.as_deref())?;
    let format = q.format.as_deref().unwrap_or("json");
    let mut logged = params.to_json();
    if let (Some(map), Some(c)) = (
        logged.as_object_mut(),
        q.cursor.as_ref().filter(|c| !c.is_empty()),
    ) {
        map.insert("cursor".into(), serde_json::Value::String(c.clone()));
    }
    if format == "json" {
        audit_service::record_read(
            &state.store,
            &session.actor,
            Some(ip),
            "events",
            format,
            logged,
        )
        .await?;
        let (events, next) = state.store.audit_page(&filter, after, limit).await?;
        return Ok(Json(EventsPage {
            events: events.into_iter().map(view).collect(),
            next_cursor: next.map(|after_id| Cursor { after_id }.encode()),
        })
        .into_response());
    }
    let export = ExportFormat::parse(format)
        .map_err(|_| QueryError::BadFormat(format.to_string(), "json, csv, jsonl"))?;
    let read_id = audit_service::record_read(
        &state.store,
        &session.actor,
        Some(ip),
        "export",
        format,
        logged,
    )
    .await?;
    let filter = AuditFilter {
        through_id: Some(read_id - 1),
        ..filter
    };
    let body = stream_events(state.store.clone(), filter, after, export);
    Ok(([(header::CONTENT_TYPE, export.content_type())], body).into_response())
}

/// Query string of `GET /api/v1/audit/flows`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FlowsQuery {
    /// Resource name (`[[resource]] name`).
    pub resource: String,
    /// From (included): RFC 3339 or YYYY-MM-DD (UTC).
    pub since: Option<String>,
    /// Until (excluded).
    pub until: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

/// Answer of `GET /api/v1/audit/flows`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FlowsView {
    pub resource: String,
    pub flows: Vec<FlowView>,
}

fn csv_response(body: Result<Vec<u8>, csv::Error>) -> Result<Response, ApiError> {
    let body = body.map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response())
}

fn json_or_csv(format: Option<&str>) -> Result<bool, ApiError> {
    match format.unwrap_or("json") {
        "json" => Ok(true),
        "csv" => Ok(false),
        other => Err(QueryError::BadFormat(other.to_string(), "json, csv").into()),
    }
}

/// `GET /api/v1/audit/flows` (auditors)
#[utoipa::path(get, path = "/api/v1/audit/flows", params(FlowsQuery), security(("session" = [])),
    responses((status = 200, body = FlowsView), (status = 400), (status = 401), (status = 403)))]
pub async fn flows(
    State(state): State<SharedState>,
    session: Session,
    ClientIp(ip): ClientIp,
    q: QueryResult<FlowsQuery>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let json = json_or_csv(q.format.as_deref())?;
    let asked = audit_service::FlowsQuery {
        resource: q.resource,
        since: q.since,
        until: q.until,
    };
    let flows = audit_service::flows(
        &state.store,
        &session.actor,
        Some(ip),
        q.format.as_deref().unwrap_or("json"),
        &asked,
    )
    .await?;
    let resource = asked.resource.trim().to_string();
    if json {
        Ok(Json(FlowsView { resource, flows }).into_response())
    } else {
        csv_response(csv_document(
            FLOWS_CSV_HEADER,
            flows.iter().map(FlowView::csv_record),
        ))
    }
}

/// Query string of `GET /api/v1/audit/access-review`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReviewQuery {
    /// Who can reach this resource now.
    pub resource: Option<String>,
    /// Or: what this user's devices can reach now.
    pub user: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

/// `GET /api/v1/audit/access-review` (auditors)
#[utoipa::path(get, path = "/api/v1/audit/access-review", params(ReviewQuery), security(("session" = [])),
    responses((status = 200, body = Review), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn access_review_route(
    State(state): State<SharedState>,
    session: Session,
    ClientIp(ip): ClientIp,
    q: QueryResult<ReviewQuery>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let json = json_or_csv(q.format.as_deref())?;
    let review = audit_service::access_review(
        &state.store,
        &state.config,
        &session.actor,
        Some(ip),
        q.format.as_deref().unwrap_or("json"),
        q.resource.as_deref(),
        q.user.as_deref(),
    )
    .await?;
    if json {
        Ok(Json(review).into_response())
    } else {
        csv_response(csv_document(
            REVIEW_CSV_HEADER,
            review.entries.iter().map(review_csv_record),
        ))
    }
}

/// Result of `GET /api/v1/audit/verify`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VerifyView {
    /// True when every event's hash matches and links to its predecessor, and the chain agrees
    /// with every signed checkpoint of `[audit] checkpoint_file`.
    pub intact: bool,
    /// Events checked (when intact).
    pub events: i64,
    /// Id of the first event whose hash or link is wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_broken: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `GET /api/v1/audit/verify` (auditors)
#[utoipa::path(get, path = "/api/v1/audit/verify", security(("session" = [])),
    responses((status = 200, body = VerifyView), (status = 401), (status = 403)))]
pub async fn verify(
    State(state): State<SharedState>,
    session: Session,
    ClientIp(ip): ClientIp,
) -> Result<Json<VerifyView>, ApiError> {
    session.require(Role::Auditor)?;
    audit_service::record_read(
        &state.store,
        &session.actor,
        Some(ip),
        "verify",
        "json",
        serde_json::json!({}),
    )
    .await?;
    // The chain and every signed checkpoint, as `sesame audit verify` checks them.
    let view = match audit_service::verify(&state.store, &state.config, &session.actor).await? {
        AuditVerification::Intact { events } => VerifyView {
            intact: true,
            events: i64::try_from(events).unwrap_or(i64::MAX),
            first_broken: None,
            reason: None,
        },
        AuditVerification::Broken { id, reason } => VerifyView {
            intact: false,
            events: 0,
            first_broken: Some(id),
            reason: Some(reason),
        },
    };
    Ok(Json(view))
}
