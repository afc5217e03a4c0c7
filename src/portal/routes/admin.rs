//! IT staff routes: enrolment codes, the device list, revocation (thin: the rules are in
//! `service`).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::{CreateCodeRequest, CreateCodeResponse, DeviceSummary};
use crate::service::{codes, devices};
use crate::store::DeviceStatus;

use crate::portal::auth::Session;
use crate::portal::error::ApiError;
use crate::portal::extract::{ApiJson, ClientIp};
use crate::portal::state::SharedState;
use crate::time;

/// `POST /api/v1/enrolment-codes` (IT staff)
#[utoipa::path(post, path = "/api/v1/enrolment-codes", request_body = CreateCodeRequest, security(("session" = [])),
    responses((status = 201, body = CreateCodeResponse), (status = 400), (status = 401), (status = 403), (status = 404), (status = 503)))]
pub async fn create_code(
    State(state): State<SharedState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<CreateCodeRequest>,
) -> Result<(StatusCode, Json<CreateCodeResponse>), ApiError> {
    let created = codes::issue_one(
        &state.services,
        &session.actor,
        &req.username,
        &req.device_name,
        req.ttl.as_deref(),
        Some(ip),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreateCodeResponse {
            code: created.code,
            username: created.username,
            device_name: created.device_name,
            expires_at: time::format(created.expires_at),
        }),
    ))
}

/// Query string of `GET /api/v1/devices` (every parameter optional).
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DevicesQuery {
    /// Substring of the owner, device name, host name or tunnel address (case and accents ignored).
    pub q: Option<String>,
    /// `active`, `suspended` or `revoked`.
    pub status: Option<String>,
    /// Only this user's devices (IT staff).
    pub user: Option<String>,
    /// Page size, 1 to 10000; without it, every matching device. The next page's URL is in the
    /// `Link` header (`rel="next"`).
    pub limit: Option<String>,
    /// The previous page's last device id.
    pub after: Option<String>,
}

fn bad(param: &str, value: &str, want: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "{param} {value:?} : attendu {want} / expected {want}"
    ))
}

/// `GET /api/v1/devices`: every device for IT staff (a delegated technician: their scope); a
/// VPN user sees their own. Filtered and paged by the query.
#[utoipa::path(get, path = "/api/v1/devices", params(DevicesQuery), security(("session" = [])),
    responses((status = 200, body = Vec<DeviceSummary>), (status = 400), (status = 401), (status = 403)))]
pub async fn list_devices(
    State(state): State<SharedState>,
    session: Session,
    q: Result<Query<DevicesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(ApiError::Query)?;
    let set = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let status = match set(&q.status) {
        None => None,
        Some(s) => Some(
            DeviceStatus::parse(&s)
                .ok_or_else(|| bad("status", &s, "active, suspended, revoked"))?,
        ),
    };
    let limit = match set(&q.limit) {
        None => None,
        Some(l) => Some(
            l.parse::<i64>()
                .ok()
                .filter(|n| (1..=10_000).contains(n))
                .ok_or_else(|| bad("limit", &l, "1..10000"))?,
        ),
    };
    let after = match set(&q.after) {
        None => None,
        Some(a) => Some(
            a.parse::<i64>()
                .map_err(|_| bad("after", &a, "a device id"))?,
        ),
    };
    let filter = devices::DeviceFilter {
        user: set(&q.user),
        status,
        query: set(&q.q),
    };
    let page = devices::list_page(&state.services, &session.actor, &filter, after, limit).await?;
    let body: Vec<DeviceSummary> = page.devices.iter().map(|d| d.summary()).collect();
    let mut resp = Json(body).into_response();
    if let (Some(next), Some(limit)) = (page.next_after, limit) {
        let mut url = format!("/api/v1/devices?limit={limit}&after={next}");
        for (k, v) in [
            ("q", &filter.query),
            ("status", &q.status),
            ("user", &filter.user),
        ] {
            if let Some(v) = set(v) {
                url.push_str(&format!("&{k}={}", crate::text::percent_encode(&v)));
            }
        }
        if let Ok(v) = axum::http::HeaderValue::from_str(&format!("<{url}>; rel=\"next\"")) {
            resp.headers_mut().insert(axum::http::header::LINK, v);
        }
    }
    Ok(resp)
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
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::from(crate::service::ServiceError::NotFound))?;
    let (device, _) = devices::revoke(&state.services, &session.actor, id, "", Some(ip)).await?;
    Ok(Json(device.summary()))
}
