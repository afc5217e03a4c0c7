//! Web sign-in: `POST /api/v1/login` opens a session (cookie), `POST /api/v1/logout` closes it.

use std::time::Instant;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::{LoginRequest, LoginResponse};
use crate::audit::{Action, AuditContext, NewAuditEvent, Outcome};
use crate::directory::DirectoryUser;
use crate::store::NewSession;

use crate::portal::auth::roles_for;
use crate::portal::error::ApiError;
use crate::portal::extract::{ApiJson, ClientIp};
use crate::portal::ratelimit::Refusal;
use crate::portal::routes::device::outcome_of;
use crate::portal::session::ABSOLUTE_TIMEOUT;
use crate::portal::state::{audit, SharedState};

/// `POST /api/v1/login`
#[utoipa::path(post, path = "/api/v1/login", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 400), (status = 401), (status = 403), (status = 429), (status = 503)))]
pub async fn login(
    State(state): State<SharedState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let username = req.username.trim().to_string();
    let device = state.cookies.read_device(&headers);
    if let Err(refusal) =
        state
            .limiter
            .check_device(&username, ip, device.as_deref(), Instant::now())
    {
        return Err(too_many_attempts(&state, "login", &username, ip, refusal).await);
    }
    let result = match login_inner(&state, &username, &req.password).await {
        // The user row, the session and its `auth.login` event are written together, in one
        // transaction shared with concurrent logins (store::group): one fsync for the batch.
        Ok((user, body)) => state
            .store
            .record_login(
                &user,
                &NewSession {
                    username: user.username.clone(),
                    roles: body.roles.clone(),
                    ttl: ABSOLUTE_TIMEOUT,
                },
                login_event(&username, Outcome::Success, ip, serde_json::json!({})),
            )
            .await
            .map(|(id, _)| (id, body))
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    state.metrics.login(result.is_ok());
    match &result {
        Ok(_) => state.limiter.record_success(&username),
        Err(ApiError::InvalidCredentials | ApiError::EmptyPassword) => {
            state.limiter.record_failure(&username, ip, Instant::now())
        }
        Err(_) => {}
    }
    if let Err(e) = &result {
        audit(
            &state.store,
            &username,
            Action::AuthLogin,
            &username,
            outcome_of(e),
            Some(ip),
            serde_json::json!({ "reason": e.code() }),
        )
        .await;
    }
    let (id, body) = result?;
    let mut resp = Json(body).into_response();
    resp.headers_mut()
        .append(header::SET_COOKIE, state.cookies.set_cookie(&id));
    resp.headers_mut()
        .append(header::SET_COOKIE, state.cookies.set_csrf_cookie(&id));
    // This browser is now a known device of the account (renewed at each login).
    let token = state.limiter.issue_device_token(&username);
    resp.headers_mut()
        .append(header::SET_COOKIE, state.cookies.set_device_cookie(&token));
    Ok(resp)
}

/// The 429 answer to an attempt refused by the failure limiter: counted, and audited
/// (`auth.rate_limited`, with the limited keys) before answering.
pub(crate) async fn too_many_attempts(
    state: &SharedState,
    route: &str,
    username: &str,
    ip: std::net::IpAddr,
    limited: Refusal,
) -> ApiError {
    state.metrics.rate_limited();
    let retry_after_secs = limited.retry_after.as_secs().max(1);
    audit(
        &state.store,
        username,
        Action::AuthRateLimited,
        username,
        Outcome::Denied,
        Some(ip),
        serde_json::json!({
            "route": route,
            "key": limited.keys.first(),
            "keys": limited.keys,
            "retry_after_secs": retry_after_secs,
            "account_locked": limited.account_locked,
        }),
    )
    .await;
    ApiError::TooManyAttempts { retry_after_secs }
}

fn login_event(
    username: &str,
    outcome: Outcome,
    ip: std::net::IpAddr,
    details: serde_json::Value,
) -> NewAuditEvent {
    let ctx = AuditContext::new(username, Some(ip.to_string()));
    NewAuditEvent::new(Action::AuthLogin, &ctx, username)
        .outcome(outcome)
        .details(details)
}

/// Checks the password and the roles; writes nothing (the caller records the outcome).
async fn login_inner(
    state: &SharedState,
    username: &str,
    password: &str,
) -> Result<(DirectoryUser, LoginResponse), ApiError> {
    let user = state.authenticate(username, password).await?;
    if user.disabled {
        return Err(ApiError::AccountDisabled);
    }
    let roles = roles_for(&state.config.roles, &user.groups);
    if roles.is_empty() {
        return Err(ApiError::Forbidden);
    }
    let roles: Vec<String> = roles.iter().map(|r| r.as_str().to_string()).collect();
    let body = LoginResponse {
        username: user.username.clone(),
        display_name: user.display_name.clone(),
        roles,
    };
    Ok((user, body))
}

/// `POST /api/v1/logout`: forgets the session (if any) and clears the cookie. Always 204.
/// Closing a live session is audited (`auth.logout`).
#[utoipa::path(post, path = "/api/v1/logout", responses((status = 204)))]
pub async fn logout(
    State(state): State<SharedState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(id) = state.cookies.read(&headers) {
        let session = state.store.session(&id).await?;
        if state.store.delete_session(&id).await? {
            if let Some(s) = session {
                let started = crate::store::rfc3339_ms(s.created_at);
                audit(
                    &state.store,
                    &s.username,
                    Action::AuthLogout,
                    &s.username,
                    Outcome::Success,
                    Some(ip),
                    serde_json::json!({ "session_started_at": started }),
                )
                .await;
            }
        }
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, state.cookies.clear_cookie());
    resp.headers_mut()
        .append(header::SET_COOKIE, state.cookies.clear_csrf_cookie());
    Ok(resp)
}
