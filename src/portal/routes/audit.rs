//! Auditor routes: query and export the audit log, flows to a resource, access review, verify
//! the hash chain. Every call by an auditor is itself audited (`audit.read`).

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::audit::export::csv_document;
use crate::audit::review::{
    review_csv_record, FlowView, Review, FLOWS_CSV_HEADER, REVIEW_CSV_HEADER,
};
use crate::audit::AuditVerification;
use crate::audit::{AuditEvent, FilterParams, QueryError};
use crate::service::audit::{self as audit_service, Events, EventsRequest, Export};

use crate::portal::auth::{Role, Session};
use crate::portal::error::ApiError;
use crate::portal::extract::ClientIp;
use crate::portal::state::SharedState;
use crate::time;

type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

fn query<T>(q: QueryResult<T>) -> Result<T, ApiError> {
    q.map(|Query(q)| q).map_err(ApiError::Query)
}

/// Query string of `GET /api/v1/audit/events`: the filter ([`FilterParams`]) and these.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    #[serde(flatten)]
    #[param(ignore)]
    pub filter: FilterParams,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size (JSON), 1 to 10000, default 1000.
    pub limit: Option<String>,
    /// `json` (default: one page), `csv` or `jsonl` (the whole filtered result, streamed).
    pub format: Option<String>,
    /// Any other parameter: refused (a flattened struct cannot deny unknown fields itself).
    #[serde(flatten)]
    #[param(ignore)]
    pub unknown: BTreeMap<String, String>,
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
        ts: time::format(e.ts),
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

/// The export, chunk by chunk, as a streamed body: constant memory.
fn stream_export(export: Export) -> Body {
    let stream = futures_util::stream::unfold(export, |mut export| async move {
        let chunk = export.next_chunk().await?;
        let chunk = chunk.map(Bytes::from).map_err(|e| {
            tracing::warn!(error = %e, "audit export stopped");
            std::io::Error::other(e)
        });
        Some((chunk, export))
    });
    Body::from_stream(stream)
}

/// `GET /api/v1/audit/events` (auditors)
#[utoipa::path(get, path = "/api/v1/audit/events", params(FilterParams, EventsQuery), security(("session" = [])),
    responses((status = 200, body = EventsPage), (status = 400), (status = 401), (status = 403)))]
pub async fn events(
    State(state): State<SharedState>,
    session: Session,
    ClientIp(ip): ClientIp,
    q: QueryResult<EventsQuery>,
) -> Result<Response, ApiError> {
    // The role first: a non-auditor learns nothing about the parameters.
    session.actor.require(Role::Auditor)?;
    let q = query(q)?;
    if let Some(name) = q.unknown.keys().next() {
        return Err(ApiError::BadRequest(format!(
            "paramètre inconnu `{name}` / unknown parameter `{name}`"
        )));
    }
    let req = EventsRequest {
        filter: &q.filter,
        cursor: q.cursor.as_deref(),
        limit: q.limit.as_deref(),
        format: q.format.as_deref(),
    };
    match audit_service::events(&state.services, &session.actor, Some(ip), req).await? {
        Events::Page {
            events,
            next_cursor,
        } => Ok(Json(EventsPage {
            events: events.into_iter().map(view).collect(),
            next_cursor,
        })
        .into_response()),
        Events::Export(export) => Ok((
            [(header::CONTENT_TYPE, export.format().content_type())],
            stream_export(*export),
        )
            .into_response()),
    }
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
    let body = body.map_err(crate::service::ServiceError::from)?;
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
        &state.services,
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
    /// Or: who can reach each resource of this site now (`local`: the resources without a site,
    /// those of `sesame serve`'s own gateway).
    pub site: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
    /// The `next_cursor` of the previous page (same subject).
    pub cursor: Option<String>,
    /// `json`: at most this many entries (1 to 10000) and the `next_cursor` of the next page;
    /// absent: every entry. `csv` is every entry (from `cursor`).
    pub limit: Option<String>,
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
        &state.services,
        &session.actor,
        Some(ip),
        q.format.as_deref().unwrap_or("json"),
        audit_service::ReviewQuery {
            resource: q.resource.as_deref(),
            user: q.user.as_deref(),
            site: q.site.as_deref(),
        },
        audit_service::ReviewPage {
            cursor: q.cursor.as_deref(),
            limit: q.limit.as_deref().filter(|_| json),
            default_limit: None,
        },
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
    // The chain and every signed checkpoint, as `sesame audit verify` checks them.
    let view = match audit_service::verify(&state.services, &session.actor, Some(ip)).await? {
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
