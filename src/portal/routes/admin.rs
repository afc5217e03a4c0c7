//! IT staff routes: enrolment codes, the device list, revocation.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use crate::api::{CreateCodeRequest, CreateCodeResponse, DeviceSummary};
use crate::audit::AuditContext;
use crate::config::parse_duration;
use crate::store::{Device, DeviceStatus, NewCode, StoreError};

use crate::portal::auth::{roles_for, Role, Session};
use crate::portal::error::ApiError;
use crate::portal::extract::{ApiJson, ClientIp};
use crate::portal::state::SharedState;
use crate::portal::time::rfc3339;

/// Longest lifetime of an enrolment code.
pub const MAX_CODE_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

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
    session.require(Role::ItStaff)?;
    let ttl = match req.ttl.as_deref() {
        None | Some("") => crate::store::DEFAULT_CODE_TTL,
        Some(t) => parse_duration(t).map_err(|m| ApiError::BadRequest(format!("ttl: {m}")))?,
    };
    if ttl.as_secs() < 60 || ttl > MAX_CODE_TTL {
        return Err(ApiError::BadRequest(
            "ttl: entre 1 minute et 30 jours / between 1 minute and 30 days".into(),
        ));
    }
    let device_name = req.device_name.trim();
    if device_name.is_empty()
        || device_name.len() > 128
        || device_name.chars().any(char::is_control)
    {
        return Err(ApiError::BadRequest(
            "device_name: 1 à 128 caractères imprimables / 1 to 128 printable characters".into(),
        ));
    }
    let username = req.username.trim();
    let user = state
        .lookup(username)
        .await?
        .ok_or_else(|| ApiError::UnknownUser(username.to_string()))?;
    if user.disabled {
        return Err(ApiError::AccountDisabled);
    }
    if !roles_for(&state.config.roles, &user.groups).contains(&Role::VpnUser) {
        return Err(ApiError::NotVpnUser);
    }
    state.store.upsert_user(&user).await?;
    let created = state
        .store
        .create_code(
            &NewCode {
                username: user.username.clone(),
                device_name: device_name.to_string(),
                ttl,
            },
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
    let devices = if session.has(Role::ItStaff) {
        state.store.list_devices(None).await?
    } else if session.has(Role::VpnUser) {
        state.store.list_devices(Some(&session.username)).await?
    } else {
        return Err(ApiError::Forbidden);
    };
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
    if !session.has(Role::ItStaff) && !session.has(Role::VpnUser) {
        return Err(ApiError::Forbidden);
    }
    let device = state.store.device(id).await?.ok_or(ApiError::NotFound)?;
    if !session.has(Role::ItStaff) && device.username != session.username {
        return Err(ApiError::NotFound);
    }
    if device.status == DeviceStatus::Revoked {
        return Ok(Json(summary(&device)));
    }
    let reason = format!("revoked by {}", session.username);
    let ctx = AuditContext::new(session.username.clone(), Some(ip.to_string()));
    let device = match state.store.revoke_device(id, &reason, &ctx).await {
        Ok(d) => d,
        // Revoked meanwhile (sync, another agent): same answer as above.
        Err(StoreError::DeviceRevoked(_)) => {
            state.store.device(id).await?.ok_or(ApiError::NotFound)?
        }
        Err(e) => return Err(e.into()),
    };
    state.control.publish_now().await;
    state.metrics.revocation();
    Ok(Json(summary(&device)))
}
