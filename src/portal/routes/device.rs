//! Laptop routes: enrolment with a one-time code, current configuration, key rotation.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::{DeviceConfig, EnrolRequest, RotateRequest};
use crate::service::devices;
use crate::service::enrol::{self, EnrolInput};

use crate::portal::error::ApiError;
use crate::portal::extract::{ApiJson, BearerToken, ClientIp};
use crate::portal::state::SharedState;

/// `POST /api/v1/enrol`. Like a login, a successful enrolment makes the client a known device
/// of the account (the signed `sesame-device` cookie, which the agent keeps): its next
/// enrolment passes while strangers hold the account's lock (see `service::ratelimit`).
#[utoipa::path(post, path = "/api/v1/enrol", request_body = EnrolRequest,
    responses((status = 201, body = DeviceConfig), (status = 400), (status = 401), (status = 403),
        (status = 404), (status = 409), (status = 410), (status = 429), (status = 503)))]
pub async fn enrol(
    State(state): State<SharedState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(req): ApiJson<EnrolRequest>,
) -> Result<Response, ApiError> {
    let known = state.cookies.read_device(&headers);
    let input = EnrolInput {
        code: &req.code,
        username: &req.username,
        password: &req.password,
        public_key: &req.public_key,
        hostname: &req.hostname,
        source_ip: ip,
        known_device: known.as_deref(),
        otp: req.otp.as_deref(),
    };
    let enrolled = enrol::enrol(&state.services, input).await?;
    let device = state.cookies.set_device_cookie(&enrolled.device_token);
    Ok((
        StatusCode::CREATED,
        [(header::SET_COOKIE, device)],
        Json(enrolled.config),
    )
        .into_response())
}

/// `GET /api/v1/device/config`
#[utoipa::path(get, path = "/api/v1/device/config", security(("device_token" = [])),
    responses((status = 200, body = DeviceConfig), (status = 401), (status = 403)))]
pub async fn config(
    State(state): State<SharedState>,
    BearerToken(token): BearerToken,
) -> Result<Json<DeviceConfig>, ApiError> {
    Ok(Json(
        devices::current_config(&state.services, &token).await?,
    ))
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
    Ok(Json(
        devices::rotate(&state.services, &token, &req.public_key, ip).await?,
    ))
}
