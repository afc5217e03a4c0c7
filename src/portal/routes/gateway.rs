//! Site gateway routes: the peer feed (long-poll) and the events batches, authenticated by the
//! site's token.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;

use crate::api::feed::{EventsAccepted, FeedUpdate, GatewayEvents, DEFAULT_WAIT_SECS};
use crate::service::sites::{self, FeedQuery};

use crate::portal::error::ApiError;
use crate::portal::extract::{ApiJson, BearerToken, ClientIp};
use crate::portal::state::SharedState;

/// The feed's path (its request time limit is longer: see `routes::log_and_time_limit`).
pub const FEED_PATH: &str = "/api/v1/gateway/feed";

/// Largest events batch body ([`crate::service::sites::MAX_EVENTS`] records of about 600 bytes).
pub const EVENTS_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Query string of `GET /api/v1/gateway/feed`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedParams {
    /// The site the gateway serves: a token of another site is refused (401).
    pub site: Option<String>,
    /// `version` of the last answer applied; absent: the full set.
    pub since: Option<u64>,
    /// `generation` of that answer: another portal's (or a restarted one's) gets the full set.
    pub generation: Option<String>,
    /// Seconds to hold the request when nothing changed (default 25, at most 30).
    pub wait: Option<u64>,
}

/// `GET /api/v1/gateway/feed`
#[utoipa::path(get, path = "/api/v1/gateway/feed", params(FeedParams), security(("site_token" = [])),
    responses((status = 200, body = FeedUpdate), (status = 400), (status = 401)))]
pub async fn feed(
    State(state): State<SharedState>,
    BearerToken(token): BearerToken,
    ClientIp(ip): ClientIp,
    params: Result<Query<FeedParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<FeedUpdate>, ApiError> {
    let Query(p) = params.map_err(ApiError::Query)?;
    let query = FeedQuery {
        site: p.site,
        since: p.since,
        generation: p.generation,
        wait: Duration::from_secs(p.wait.unwrap_or(DEFAULT_WAIT_SECS)),
    };
    Ok(Json(
        sites::feed(&state.services, &token, Some(ip), query).await?,
    ))
}

/// Query string of `POST /api/v1/gateway/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsParams {
    /// The site the gateway serves: a token of another site is refused (401).
    pub site: Option<String>,
}

/// `POST /api/v1/gateway/events`
#[utoipa::path(post, path = "/api/v1/gateway/events", params(EventsParams), request_body = GatewayEvents, security(("site_token" = [])),
    responses((status = 200, body = EventsAccepted), (status = 400), (status = 401), (status = 413)))]
pub async fn events(
    State(state): State<SharedState>,
    BearerToken(token): BearerToken,
    ClientIp(ip): ClientIp,
    params: Result<Query<EventsParams>, axum::extract::rejection::QueryRejection>,
    ApiJson(batch): ApiJson<GatewayEvents>,
) -> Result<Json<EventsAccepted>, ApiError> {
    let Query(p) = params.map_err(ApiError::Query)?;
    Ok(Json(
        sites::ingest_events(&state.services, &token, p.site.as_deref(), Some(ip), batch).await?,
    ))
}
