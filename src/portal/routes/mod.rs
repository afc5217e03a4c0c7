//! The router: every route of DESIGN §5, body cap, timeouts, request logging, and the OpenAPI document derived from it.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod device;
pub mod gateway;
pub mod mfa;

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::{Json, Router};
use utoipa::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

use super::error::{ApiError, ErrorCause};
use super::state::SharedState;

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 16 * 1024;
/// Longest time a request may take before the portal answers 503 `request_timeout`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Where the OpenAPI document of the JSON API is served.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// The document's frame: title, shared schemas, security schemes. Its paths come from the
/// router ([`api`]): each handler's `#[utoipa::path]` gives both its route and its operation.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sesame API",
        description = "Enrolment portal of the Sesame VPN access broker."
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
            "site_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("__Host-sesame"))),
        );
    }
}

/// One page route: method, path (full, `{param}` for a path parameter) and handler.
pub type RouteEntry = (Method, &'static str, MethodRouter<SharedState>);

/// The JSON API: every route registered with its OpenAPI operation, so the document lists
/// exactly what the router serves. Operations are tagged by handler module.
fn api() -> OpenApiRouter<SharedState> {
    let groups = [
        (
            "device",
            vec![
                routes!(device::enrol),
                routes!(device::config),
                routes!(device::rotate),
                routes!(mfa::device_confirm),
                routes!(mfa::unlock),
                routes!(mfa::lock),
            ],
        ),
        ("mfa", vec![routes!(mfa::register), routes!(mfa::confirm)]),
        ("auth", vec![routes!(auth::login), routes!(auth::logout)]),
        (
            "gateway",
            vec![
                routes!(gateway::feed),
                body_limit(routes!(gateway::events), gateway::EVENTS_BODY_LIMIT),
            ],
        ),
        (
            "admin",
            vec![
                routes!(admin::create_code),
                routes!(admin::list_devices),
                routes!(admin::revoke_device),
            ],
        ),
        (
            "audit",
            vec![
                routes!(audit::events),
                routes!(audit::flows),
                routes!(audit::access_review_route),
                routes!(audit::verify),
            ],
        ),
    ];
    groups
        .into_iter()
        .flat_map(|(tag, group)| group.into_iter().map(move |r| tagged(tag, r)))
        .fold(
            OpenApiRouter::with_openapi(ApiDoc::openapi()),
            OpenApiRouter::routes,
        )
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// `route` taking bodies up to `limit` bytes (instead of [`BODY_LIMIT`]).
fn body_limit(
    route: UtoipaMethodRouter<SharedState>,
    limit: usize,
) -> UtoipaMethodRouter<SharedState> {
    let (schemas, paths, router) = route;
    (schemas, paths, router.layer(DefaultBodyLimit::max(limit)))
}

/// `route` with each of its operations tagged `tag`.
fn tagged(tag: &str, route: UtoipaMethodRouter<SharedState>) -> UtoipaMethodRouter<SharedState> {
    let (schemas, mut paths, router) = route;
    for item in paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            operation
                .tags
                .get_or_insert_with(Vec::new)
                .push(tag.to_string());
        }
    }
    (schemas, paths, router)
}

/// The OpenAPI document of the JSON API, as `GET /api/v1/openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().into_openapi()
}

/// Every route of the portal, as (method, path): the API's (read from its OpenAPI document),
/// the document's own and the pages'. The router-wide tests walk it (CSRF on each state change,
/// security headers on each answer), so a new route cannot escape them.
pub fn routes() -> Vec<(Method, String)> {
    let mut out = Vec::new();
    for (path, item) in openapi().paths.paths {
        for (method, operation) in [
            (Method::GET, &item.get),
            (Method::PUT, &item.put),
            (Method::POST, &item.post),
            (Method::DELETE, &item.delete),
            (Method::OPTIONS, &item.options),
            (Method::HEAD, &item.head),
            (Method::PATCH, &item.patch),
            (Method::TRACE, &item.trace),
        ] {
            if operation.is_some() {
                out.push((method, path.clone()));
            }
        }
    }
    out.push((Method::GET, OPENAPI_PATH.to_string()));
    let pages = crate::portal::pages::routes().into_iter();
    out.extend(pages.map(|(method, path, _)| (method, path.to_string())));
    out
}

/// The whole HTTP application.
pub fn router(state: SharedState) -> Router {
    let (api, doc) = api().split_for_parts();
    let doc = Json(doc);
    crate::portal::pages::routes()
        .into_iter()
        .fold(api, |r, (_, path, handler)| r.route(path, handler))
        .route(OPENAPI_PATH, get(move || std::future::ready(doc.clone())))
        .fallback(|| async { ApiError::NoRoute })
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
    // The site feed's long-poll holds its request up to its wait, then answers.
    let limit = if path == gateway::FEED_PATH {
        REQUEST_TIMEOUT + Duration::from_secs(crate::api::feed::MAX_WAIT_SECS)
    } else {
        REQUEST_TIMEOUT
    };
    let resp = match tokio::time::timeout(limit, next.run(req)).await {
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

/// `GET /healthz`: the process answers.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = String)))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: the database answers (503 `database_unavailable` otherwise).
#[utoipa::path(get, path = "/readyz", responses((status = 200, body = String), (status = 503)))]
pub async fn readyz(State(state): State<SharedState>) -> Result<&'static str, ApiError> {
    state.services.ready().await?;
    Ok("ready\n")
}

#[cfg(test)]
mod tests;
