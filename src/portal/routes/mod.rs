//! The router: every route of DESIGN §5, body cap, timeouts, request logging, OpenAPI.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod device;

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, MethodRouter};
use axum::{Json, Router};
use utoipa::OpenApi;

use super::error::{ApiError, ErrorCause};
use super::state::SharedState;

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 16 * 1024;
/// Longest time a request may take before the portal answers 503 `request_timeout`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sesame API",
        description = "Enrolment portal of the Sesame VPN access broker."
    ),
    paths(
        device::enrol,
        device::config,
        device::rotate,
        auth::login,
        auth::logout,
        admin::create_code,
        admin::list_devices,
        admin::revoke_device,
        audit::events,
        audit::flows,
        audit::access_review_route,
        audit::verify,
        healthz,
        readyz
    ),
    components(schemas(crate::api::ErrorBody, crate::api::ErrorDetail)),
    modifiers(&SecuritySchemes)
)]
pub struct ApiDoc;

/// Declares how callers authenticate: agents with a bearer device token, people with the
/// session cookie set by `/api/v1/login`.
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "device_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("__Host-sesame"))),
        );
    }
}

/// One route: method, path (full, `{param}` for a path parameter) and handler.
pub type RouteEntry = (Method, &'static str, MethodRouter<SharedState>);

/// Every route of the portal. The router is built from this list and the router-wide tests
/// walk it (CSRF on each state change, security headers on each answer), so a new route cannot
/// escape them.
pub fn routes() -> Vec<RouteEntry> {
    vec![
        (Method::POST, "/api/v1/enrol", post(device::enrol)),
        (Method::GET, "/api/v1/device/config", get(device::config)),
        (Method::POST, "/api/v1/device/rotate", post(device::rotate)),
        (Method::POST, "/api/v1/login", post(auth::login)),
        (Method::POST, "/api/v1/logout", post(auth::logout)),
        (
            Method::POST,
            "/api/v1/enrolment-codes",
            post(admin::create_code),
        ),
        (Method::GET, "/api/v1/devices", get(admin::list_devices)),
        (
            Method::DELETE,
            "/api/v1/devices/{id}",
            delete(admin::revoke_device),
        ),
        (Method::GET, "/api/v1/audit/events", get(audit::events)),
        (Method::GET, "/api/v1/audit/flows", get(audit::flows)),
        (
            Method::GET,
            "/api/v1/audit/access-review",
            get(audit::access_review_route),
        ),
        (Method::GET, "/api/v1/audit/verify", get(audit::verify)),
        (Method::GET, "/api/v1/openapi.json", get(openapi)),
        (Method::GET, "/healthz", get(healthz)),
        (Method::GET, "/readyz", get(readyz)),
    ]
    .into_iter()
    .chain(crate::portal::pages::routes())
    .collect()
}

/// The whole HTTP application.
pub fn router(state: SharedState) -> Router {
    routes()
        .into_iter()
        .fold(Router::new(), |r, (_, path, handler)| {
            r.route(path, handler)
        })
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::portal::security::csrf,
        ))
        .layer(middleware::from_fn(log_and_time_limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::portal::security::add_headers,
        ))
        .with_state(state)
}

/// Bounds each request in time and logs every error answer with its stable code and cause.
async fn log_and_time_limit(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::TimedOut.into_response(),
    };
    let status = resp.status();
    if status.is_server_error() || status.is_client_error() {
        let cause = resp
            .extensions()
            .get::<ErrorCause>()
            .map_or("", |c| c.0.as_str());
        if status.is_server_error() {
            tracing::warn!(%method, %path, status = status.as_u16(), cause, "request failed");
        } else {
            tracing::info!(%method, %path, status = status.as_u16(), cause, "request refused");
        }
    } else {
        tracing::debug!(%method, %path, status = status.as_u16(), "request");
    }
    resp
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// `GET /healthz`: the process answers.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = String)))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: the database answers (503 `database_unavailable` otherwise).
#[utoipa::path(get, path = "/readyz", responses((status = 200, body = String), (status = 503)))]
pub async fn readyz(State(state): State<SharedState>) -> Result<&'static str, ApiError> {
    match tokio::time::timeout(Duration::from_secs(3), state.store.ping()).await {
        Ok(Ok(())) => Ok("ready\n"),
        Ok(Err(e)) => Err(ApiError::DatabaseUnavailable(e.to_string())),
        Err(_) => Err(ApiError::DatabaseUnavailable("timed out".into())),
    }
}

#[cfg(test)]
mod tests;
