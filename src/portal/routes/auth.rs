//! Web sign-in: `POST /api/v1/login` opens a session (cookie), `POST /api/v1/logout` closes it.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::{LoginRequest, LoginResponse};
use crate::service::sessions::{self, LoginInput};

use crate::portal::error::ApiError;
use crate::portal::extract::{ApiJson, ClientIp};
use crate::portal::state::SharedState;

/// `POST /api/v1/login`
#[utoipa::path(post, path = "/api/v1/login", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 400), (status = 401), (status = 403), (status = 429), (status = 503)))]
pub async fn login(
    State(state): State<SharedState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let device = state.cookies.read_device(&headers);
    let input = LoginInput {
        username: &req.username,
        password: &req.password,
        source_ip: ip,
        known_device: device.as_deref(),
        otp: req.otp.as_deref(),
    };
    let logged_in = sessions::login(&state.services, input).await?;
    let mut resp = Json(&logged_in.answer).into_response();
    state
        .cookies
        .open_session(&mut resp, &logged_in.session_id, &logged_in.device_token);
    Ok(resp)
}

/// `POST /api/v1/logout`: forgets the session (if any) and clears the cookie. Always 204.
/// Closing a live session is audited (`auth.logout`).
#[utoipa::path(post, path = "/api/v1/logout", responses((status = 204)))]
pub async fn logout(
    State(state): State<SharedState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = state.cookies.read(&headers);
    sessions::logout(&state.services, id.as_deref(), ip).await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    state.cookies.close_session(&mut resp);
    Ok(resp)
}
