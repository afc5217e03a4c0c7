//! Second-factor routes: a device confirms the factor its enrolment handed out, opens and closes its access window; a person registers a factor with IT's registration code.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use crate::api::mfa::{
    CodeRequest, MfaConfirmRequest, MfaRegisterRequest, MfaRegistration, RecoveryCodes,
    UnlockResponse,
};
use crate::service::mfa::{self, register};

use crate::portal::error::ApiError;
use crate::portal::extract::{ApiJson, BearerToken, ClientIp};
use crate::portal::state::SharedState;

/// `POST /api/v1/device/mfa/confirm`: the first code of the factor the enrolment answer
/// carried (`mfa_registration`); answers the ten recovery codes, shown once.
#[utoipa::path(post, path = "/api/v1/device/mfa/confirm", request_body = CodeRequest,
    security(("device_token" = [])),
    responses((status = 200, body = RecoveryCodes), (status = 401), (status = 403), (status = 429), (status = 503)))]
pub async fn device_confirm(
    State(state): State<SharedState>,
    BearerToken(token): BearerToken,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<CodeRequest>,
) -> Result<Json<RecoveryCodes>, ApiError> {
    Ok(Json(
        register::confirm_device(&state.services, &token, &req.code, ip).await?,
    ))
}

/// `POST /api/v1/device/unlock`: a code of the device owner's factor (or a recovery code)
/// opens the device's access window to `mfa = true` resources for `[mfa] session`.
#[utoipa::path(post, path = "/api/v1/device/unlock", request_body = CodeRequest,
    security(("device_token" = [])),
    responses((status = 200, body = UnlockResponse), (status = 401), (status = 403), (status = 429), (status = 503)))]
pub async fn unlock(
    State(state): State<SharedState>,
    BearerToken(token): BearerToken,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<CodeRequest>,
) -> Result<Json<UnlockResponse>, ApiError> {
    Ok(Json(
        mfa::unlock(&state.services, &token, &req.code, ip).await?,
    ))
}

/// `POST /api/v1/device/lock` (`sesame-agent down`): closes the device's access window now.
/// Always 204 for a valid token, window or not.
#[utoipa::path(post, path = "/api/v1/device/lock", security(("device_token" = [])),
    responses((status = 204), (status = 401), (status = 403)))]
pub async fn lock(
    State(state): State<SharedState>,
    BearerToken(token): BearerToken,
    ClientIp(ip): ClientIp,
) -> Result<StatusCode, ApiError> {
    mfa::lock(&state.services, &token, ip).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/mfa/register`: password + a registration code from IT → a factor to confirm.
#[utoipa::path(post, path = "/api/v1/mfa/register", request_body = MfaRegisterRequest,
    responses((status = 200, body = MfaRegistration), (status = 401), (status = 403), (status = 429), (status = 503)))]
pub async fn register(
    State(state): State<SharedState>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<MfaRegisterRequest>,
) -> Result<Json<MfaRegistration>, ApiError> {
    Ok(Json(register::register(&state.services, &req, ip).await?))
}

/// `POST /api/v1/mfa/confirm`: the same with a first code; spends the registration code and
/// answers the ten recovery codes, shown once.
#[utoipa::path(post, path = "/api/v1/mfa/confirm", request_body = MfaConfirmRequest,
    responses((status = 200, body = RecoveryCodes), (status = 401), (status = 403), (status = 429), (status = 503)))]
pub async fn confirm(
    State(state): State<SharedState>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<MfaConfirmRequest>,
) -> Result<Json<RecoveryCodes>, ApiError> {
    Ok(Json(register::confirm(&state.services, &req, ip).await?))
}
