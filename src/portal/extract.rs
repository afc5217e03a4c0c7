//! Request extractors: JSON bodies with API-shaped rejections, bearer tokens, the client address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::service::ServiceError;

/// `Json<T>` whose rejections are API errors (kept whole, see [`ApiError::Json`]): malformed
/// JSON → 400 `invalid_json`, wrong shape or unknown field → 400 `bad_request`, body over the cap
/// → 413 `payload_too_large`.
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
            Err(rejection) => Err(ApiError::Json(rejection)),
        }
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
            .ok_or(ServiceError::Unauthenticated)?;
        let (scheme, token) = value.split_once(' ').ok_or(ServiceError::Unauthenticated)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.len() > 256 {
            return Err(ServiceError::Unauthenticated.into());
        }
        Ok(BearerToken(token.to_string()))
    }
}

/// The client's address (rate limits, audit): the TCP peer, or, when the peer is one of
/// `portal.trusted_proxies`, the address the proxies saw: walking `X-Forwarded-For` (or the
/// `for=` parameters of `Forwarded`, RFC 7239) from the right, the first address that is not
/// itself a trusted proxy. From any other peer those headers are ignored (anyone can send them).
/// Unspecified when the router is driven without a connection (unit tests with `oneshot`).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

/// The rightmost address of an `X-Forwarded-For` value: the one the local proxy saw.
pub fn forwarded_for(value: &str) -> Option<IpAddr> {
    value.rsplit(',').next()?.trim().parse().ok()
}

/// One `for=` value of a `Forwarded` element: `198.18.0.7`, `"[2001:db8::1]:4711"`, ...
fn forwarded_node(v: &str) -> Option<IpAddr> {
    let v = v.trim().trim_matches('"');
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    v.parse()
        .ok()
        .or_else(|| v.rsplit_once(':').and_then(|(h, _)| h.parse().ok()))
}

/// The client address behind `trusted` proxies, from the headers of a trusted peer.
pub fn client_behind(headers: &axum::http::HeaderMap, trusted: &[ipnet::IpNet]) -> Option<IpAddr> {
    let mut hops: Vec<IpAddr> = Vec::new();
    for v in headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        hops.extend(v.split(',').filter_map(|h| h.trim().parse::<IpAddr>().ok()));
    }
    if hops.is_empty() {
        for v in headers
            .get_all("forwarded")
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            for element in v.split(',') {
                let ip = element.split(';').find_map(|pair| {
                    let (k, val) = pair.trim().split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| forwarded_node(val))?
                });
                hops.extend(ip);
            }
        }
    }
    hops.into_iter()
        .rev()
        .find(|ip| !trusted.iter().any(|n| n.contains(ip)))
}

impl FromRequestParts<super::state::SharedState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &super::state::SharedState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(a)| a.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let config = state.services.config();
        let trusted = &config.portal.trusted_proxies;
        if trusted.iter().any(|n| n.contains(&peer)) {
            if let Some(ip) = client_behind(&parts.headers, trusted) {
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

    fn headers(pairs: &[(&'static str, &'static str)]) -> axum::http::HeaderMap {
        let mut h = axum::http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, axum::http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_client_is_the_first_untrusted_hop_from_the_right() {
        let trusted: Vec<ipnet::IpNet> = vec![
            "127.0.0.1/32".parse().expect("net"),
            "198.18.5.0/24".parse().expect("net"),
        ];
        let ip = |s: &str| Some(s.parse::<IpAddr>().expect("ip"));
        // Two proxies of ours appended their peers; the client forged the leftmost entry.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 198.18.0.7, 198.18.5.9")]);
        assert_eq!(client_behind(&h, &trusted), ip("198.18.0.7"));
        let h = headers(&[(
            "forwarded",
            "for=198.18.0.8;proto=https, for=\"[2001:db8::9]:4711\"",
        )]);
        assert_eq!(client_behind(&h, &trusted), ip("2001:db8::9"));
        let h = headers(&[("forwarded", "For=198.18.0.8:1234")]);
        assert_eq!(client_behind(&h, &trusted), ip("198.18.0.8"));
        assert_eq!(client_behind(&headers(&[]), &trusted), None);
    }
}
