//! IT staff routes: enrolment codes, the device list, revocation (thin: the rules are in
//! `service`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use crate::api::{CreateCodeRequest, CreateCodeResponse, DeviceSummary};
use crate::audit::AuditContext;
use crate::service::{codes, devices};
use crate::store::Device;

use crate::portal::auth::Session;
use crate::portal::error::ApiError;
use crate::portal::extract::{ApiJson, ClientIp};
use crate::portal::state::SharedState;
use crate::portal::time::rfc3339;

pub(crate) fn summary(d: &Device) -> DeviceSummary {
    DeviceSummary {
        id: d.id,
        username: d.username.clone(),
        name: d.name.clone(),
        hostname: d.hostname.clone(),
        public_key: d.public_key_base64(),
        tunnel_address: d.tunnel_address.to_string(),
        status: d.status.as_str().to_string(),
        created_at: rfc3339(d.created_at),
        revoked_at: d.revoked_at.map(rfc3339),
    }
}

/// `POST /api/v1/enrolment-codes` (IT staff)
#[utoipa::path(post, path = "/api/v1/enrolment-codes", request_body = CreateCodeRequest, security(("session" = [])),
    responses((status = 201, body = CreateCodeResponse), (status = 400), (status = 401), (status = 403), (status = 404), (status = 503)))]
pub async fn create_code(
    State(state): State<SharedState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<CreateCodeRequest>,
) -> Result<(StatusCode, Json<CreateCodeResponse>), ApiError> {
    session.require(crate::service::Role::ItStaff)?;
    let created = codes::issue_one(
        &state.code_deps(),
        &session.actor,
        &req.username,
        &req.device_name,
        req.ttl.as_deref(),
        &AuditContext::new(session.username.clone(), Some(ip.to_string())),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreateCodeResponse {
            code: created.code,
            username: created.username,
            device_name: created.device_name,
            expires_at: rfc3339(created.expires_at),
        }),
    ))
}

/// `GET /api/v1/devices`: every device for IT staff; a VPN user sees their own.
#[utoipa::path(get, path = "/api/v1/devices", security(("session" = [])),
    responses((status = 200, body = Vec<DeviceSummary>), (status = 401), (status = 403)))]
pub async fn list_devices(
    State(state): State<SharedState>,
    session: Session,
) -> Result<Json<Vec<DeviceSummary>>, ApiError> {
    let devices = devices::list(&state.store, &session.actor, &Default::default()).await?;
    Ok(Json(devices.iter().map(summary).collect()))
}

/// `DELETE /api/v1/devices/{id}`: revokes at once (the gateway cuts the session). IT staff, or
/// the owner; anyone else gets 404, as if the device did not exist.
#[utoipa::path(delete, path = "/api/v1/devices/{id}", params(("id" = i64, Path)), security(("session" = [])),
    responses((status = 200, body = DeviceSummary), (status = 401), (status = 403), (status = 404)))]
pub async fn revoke_device(
    State(state): State<SharedState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Path(id): Path<String>,
) -> Result<Json<DeviceSummary>, ApiError> {
    let id: i64 = id.parse().map_err(|_| ApiError::NotFound)?;
    let ctx = AuditContext::new(session.username.clone(), Some(ip.to_string()));
    let (device, revoked_now) = devices::revoke(
        &state.store,
        Some(&*state.control),
        &session.actor,
        id,
        "",
        &ctx,
    )
    .await?;
    if revoked_now {
        state.metrics.revocation();
    }
    Ok(Json(summary(&device)))
}
