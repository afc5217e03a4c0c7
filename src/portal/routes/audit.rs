//! Auditor routes: query and export the audit log, verify its hash chain.

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::audit::checkpoint;
use crate::audit::{AuditEvent, AUDIT_CSV_HEADER};
use crate::store::{AuditFilter, AuditVerification, StoreError};

use crate::portal::auth::{Role, Session};
use crate::portal::error::ApiError;
use crate::portal::state::SharedState;
use crate::portal::time::{parse_rfc3339, rfc3339};

/// Longest answer; narrow the time range to see more.
pub const MAX_EVENTS: i64 = 10_000;

/// Query string of `GET /api/v1/audit/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    pub user: Option<String>,
    pub action: Option<String>,
    /// RFC 3339 or YYYY-MM-DD (UTC).
    pub since: Option<String>,
    pub until: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
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

/// `GET /api/v1/audit/events` (auditors)
#[utoipa::path(get, path = "/api/v1/audit/events", params(EventsQuery), security(("session" = [])),
    responses((status = 200, body = Vec<EventView>), (status = 400), (status = 401), (status = 403)))]
pub async fn events(
    State(state): State<SharedState>,
    session: Session,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    session.require(Role::Auditor)?;
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let filter = AuditFilter {
        user: q.user.filter(|s| !s.is_empty()),
        action: q.action.filter(|s| !s.is_empty()),
        since: q
            .since
            .as_deref()
            .map(|s| parse_rfc3339("since", s))
            .transpose()?,
        until: q
            .until
            .as_deref()
            .map(|s| parse_rfc3339("until", s))
            .transpose()?,
        after_id: None,
        limit: Some(MAX_EVENTS),
    };
    let events = state.store.list_audit(&filter).await?;
    match q.format.as_deref().unwrap_or("json") {
        "json" => Ok(Json(events.into_iter().map(view).collect::<Vec<_>>()).into_response()),
        "csv" => {
            let mut w = csv::Writer::from_writer(Vec::new());
            let write = |w: &mut csv::Writer<Vec<u8>>| -> Result<(), csv::Error> {
                w.write_record(AUDIT_CSV_HEADER)?;
                for e in &events {
                    w.write_record(e.csv_record())?;
                }
                Ok(())
            };
            write(&mut w).map_err(|e| ApiError::Internal(e.to_string()))?;
            let body = w
                .into_inner()
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response())
        }
        other => Err(ApiError::BadRequest(format!(
            "format {other:?} : utilisez json ou csv / use json or csv"
        ))),
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
) -> Result<Json<VerifyView>, ApiError> {
    session.require(Role::Auditor)?;
    // The chain and every signed checkpoint, as `sesame audit verify` checks them.
    let audit = &state.config.audit;
    let key = checkpoint::load_public_key(&audit.signing_key_file).map_err(StoreError::from)?;
    let cps = checkpoint::read_file(&audit.checkpoint_file).map_err(StoreError::from)?;
    let view = match state
        .store
        .verify_audit_with(Some((key.as_ref(), &cps)))
        .await?
    {
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
