//! Request extractors: JSON bodies with API-shaped rejections, bearer tokens, the client address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// `Json<T>` whose rejections are API errors: malformed JSON → 400 `invalid_json`, wrong shape or
/// unknown field → 400 `bad_request`, body over the cap → 413 `payload_too_large`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(map_json_rejection(rejection)),
        }
    }
}

fn map_json_rejection(rejection: JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge;
    }
    match rejection {
        JsonRejection::JsonDataError(e) => ApiError::BadRequest(e.body_text()),
        JsonRejection::JsonSyntaxError(e) => ApiError::InvalidJson(e.body_text()),
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::InvalidJson("expected Content-Type: application/json".into())
        }
        other => ApiError::InvalidJson(other.body_text()),
    }
}

/// The `Authorization: Bearer TOKEN` of a device route.
#[derive(Debug, Clone)]
pub struct BearerToken(pub String);

impl<S: Send + Sync> FromRequestParts<S> for BearerToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthenticated)?;
        let (scheme, token) = value.split_once(' ').ok_or(ApiError::Unauthenticated)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.len() > 256 {
            return Err(ApiError::Unauthenticated);
        }
        Ok(BearerToken(token.to_string()))
    }
}

/// The client's address (rate limits, audit): the TCP peer, or, when the peer is a reverse
/// proxy on this host (loopback), the last address it appended to `X-Forwarded-For`.
/// Unspecified when the router is driven without a connection (unit tests with `oneshot`).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

/// The rightmost address of an `X-Forwarded-For` value: the one the local proxy saw.
pub fn forwarded_for(value: &str) -> Option<IpAddr> {
    value.rsplit(',').next()?.trim().parse().ok()
}

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(a)| a.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        if peer.is_loopback() {
            if let Some(ip) = parts
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(forwarded_for)
            {
                return Ok(ClientIp(ip));
            }
        }
        Ok(ClientIp(peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rightmost_forwarded_address_is_used() {
        assert_eq!(
            forwarded_for("198.18.0.9, 198.18.0.7"),
            Some("198.18.0.7".parse().expect("ip"))
        );
        assert_eq!(
            forwarded_for("198.18.0.7"),
            Some("198.18.0.7".parse().expect("ip"))
        );
        assert_eq!(forwarded_for("garbage"), None);
        assert_eq!(forwarded_for(""), None);
    }
}
