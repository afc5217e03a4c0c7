//! Laptop routes: enrolment with a one-time code, current configuration, key rotation.

use std::time::Instant;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::{DeviceConfig, EnrolRequest, RotateRequest};
use crate::audit::{Action, AuditContext, Outcome};
use crate::service::enrol::{EnrolDeps, EnrolInput};
use crate::store::{Device, DeviceStatus};

use crate::portal::error::ApiError;
use crate::portal::extract::{ApiJson, BearerToken, ClientIp};
use crate::portal::state::{audit, AppState, SharedState};

pub use crate::service::enrol::parse_public_key;
/// Least time between two key rotations of one device: a copied token cannot churn keys.
pub const ROTATION_MIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);

/// The configuration a device receives (see `service::enrol::device_config`).
pub fn device_config(state: &AppState, device: &Device, groups: &[String]) -> DeviceConfig {
    crate::service::enrol::device_config(
        &state.config,
        &state.control.gateway_public_key(),
        device,
        groups,
    )
}

/// `POST /api/v1/enrol`. Like a login, a successful enrolment makes the client a known device
/// of the account (the signed `sesame-device` cookie, which the agent keeps): its next
/// enrolment passes while strangers hold the account's lock (see `ratelimit`).
#[utoipa::path(post, path = "/api/v1/enrol", request_body = EnrolRequest,
    responses((status = 201, body = DeviceConfig), (status = 400), (status = 401), (status = 403),
        (status = 404), (status = 409), (status = 410), (status = 429), (status = 503)))]
pub async fn enrol(
    State(state): State<SharedState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(req): ApiJson<EnrolRequest>,
) -> Result<Response, ApiError> {
    let username = req.username.trim().to_string();
    let known = state.cookies.read_device(&headers);
    if let Err(limited) =
        state
            .limiter
            .check_device(&username, ip, known.as_deref(), Instant::now())
    {
        return Err(crate::portal::routes::auth::too_many_attempts(
            &state, "enrol", &username, ip, limited,
        )
        .await);
    }
    let result = enrol_inner(&state, &username, ip, &req).await;
    match &result {
        Ok(_) => {
            state.limiter.record_success(&username);
            state.metrics.enrolment(true);
        }
        Err(e) => {
            state.metrics.enrolment(false);
            if counts_as_failure(e) {
                state.limiter.record_failure(&username, ip, Instant::now());
            }
            audit(
                &state.store,
                &username,
                Action::EnrolRejected,
                &username,
                outcome_of(e),
                Some(ip),
                serde_json::json!({ "reason": e.code(), "hostname": req.hostname }),
            )
            .await;
        }
    }
    let cfg = result?;
    let device = state
        .cookies
        .set_device_cookie(&state.limiter.issue_device_token(&username));
    Ok((
        StatusCode::CREATED,
        [(header::SET_COOKIE, device)],
        Json(cfg),
    )
        .into_response())
}

/// Errors that a guesser produces: wrong password, wrong or stale code.
fn counts_as_failure(e: &ApiError) -> bool {
    matches!(
        e,
        ApiError::InvalidCredentials
            | ApiError::EmptyPassword
            | ApiError::InvalidCode
            | ApiError::CodeExpired
            | ApiError::CodeAlreadyUsed
            | ApiError::CodeWrongUser
    )
}

pub(crate) fn outcome_of(e: &ApiError) -> Outcome {
    if e.status() == StatusCode::FORBIDDEN || e.status() == StatusCode::UNAUTHORIZED {
        Outcome::Denied
    } else {
        Outcome::Failure
    }
}

async fn enrol_inner(
    state: &AppState,
    username: &str,
    ip: std::net::IpAddr,
    req: &EnrolRequest,
) -> Result<DeviceConfig, ApiError> {
    let deps = EnrolDeps {
        config: &state.config,
        store: &state.store,
        directory: &*state.directory,
        deadline: state.deadline(),
        publisher: &*state.control,
    };
    let input = EnrolInput {
        code: &req.code,
        username,
        password: &req.password,
        public_key: &req.public_key,
        hostname: &req.hostname,
        source_ip: ip,
    };
    Ok(crate::service::enrol::enrol(&deps, input).await?)
}

/// The active device holding this bearer token; a revoked one answers `device_revoked`, a
/// suspended one `device_suspended`.
async fn device_for_token(state: &AppState, token: &str) -> Result<Device, ApiError> {
    let device = state
        .store
        .device_by_token(token)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    match device.status {
        // The token dies with the key (the expiry sweep revokes it within a minute).
        DeviceStatus::Active if device.expires_at.is_some_and(|e| e <= state.store.now_ms()) => {
            Err(ApiError::DeviceExpired)
        }
        DeviceStatus::Active => Ok(device),
        DeviceStatus::Suspended => Err(ApiError::DeviceSuspended),
        DeviceStatus::Revoked => Err(ApiError::DeviceRevoked),
    }
}

/// `GET /api/v1/device/config`
#[utoipa::path(get, path = "/api/v1/device/config", security(("device_token" = [])),
    responses((status = 200, body = DeviceConfig), (status = 401), (status = 403)))]
pub async fn config(
    State(state): State<SharedState>,
    BearerToken(token): BearerToken,
) -> Result<Json<DeviceConfig>, ApiError> {
    let device = device_for_token(&state, &token).await?;
    let groups = user_groups(&state, &device.username).await?;
    Ok(Json(device_config(&state, &device, &groups)))
}

async fn user_groups(state: &AppState, username: &str) -> Result<Vec<String>, ApiError> {
    Ok(state
        .store
        .user(username)
        .await?
        .map(|u| u.groups)
        .unwrap_or_default())
}

/// `POST /api/v1/device/rotate`
#[utoipa::path(post, path = "/api/v1/device/rotate", request_body = RotateRequest, security(("device_token" = [])),
    responses((status = 200, body = DeviceConfig), (status = 400), (status = 401), (status = 403), (status = 409)))]
pub async fn rotate(
    State(state): State<SharedState>,
    BearerToken(token): BearerToken,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<RotateRequest>,
) -> Result<Json<DeviceConfig>, ApiError> {
    let device = device_for_token(&state, &token).await?;
    let old_key = device.public_key;
    let rules = crate::store::Rotation {
        key_lifetime: Some(state.config.devices.key_lifetime),
        max_lifetime: Some(state.config.devices.max_lifetime),
        min_interval: ROTATION_MIN_INTERVAL,
    };
    let rotated = match parse_public_key(&req.public_key, &state.control.gateway_public_key())
        .map_err(ApiError::from)
    {
        Ok(key) => state
            .store
            .rotate_key(
                device.id,
                &key,
                &rules,
                &AuditContext::new(device.username.clone(), Some(ip.to_string())),
            )
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    let (device, new_token) = match rotated {
        Ok(r) => r,
        Err(e) => {
            // Failed rotations are audited: a copied token trying its luck shows up.
            audit(
                &state.store,
                &device.username,
                Action::DeviceRotated,
                &format!("device:{}", device.id),
                outcome_of(&e),
                Some(ip),
                serde_json::json!({
                    "username": device.username,
                    "old_public_key": device.public_key_base64(),
                    "reason": e.code(),
                }),
            )
            .await;
            return Err(e);
        }
    };
    state.metrics.rotation();
    let groups = match user_groups(&state, &device.username).await {
        Ok(groups) => groups,
        Err(e) => {
            // The rotation committed: the gateway must get it even though this answer fails.
            state.control.publish_now().await;
            return Err(e);
        }
    };
    state
        .control
        .publish_device(&device, &groups, Some(old_key))
        .await;
    let mut cfg = device_config(&state, &device, &groups);
    cfg.device_token = Some(new_token);
    Ok(Json(cfg))
}
