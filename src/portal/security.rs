//! Router-wide protections: security headers on every response, CSRF checks on every
//! state change (same-origin for any browser request, the token too with the session cookie),
//! whatever the route.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::routes::BODY_LIMIT;
use super::session::csrf_token;
use super::state::SharedState;

/// The header a script sends the CSRF token in (forms send the `_csrf` field instead).
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The form field (urlencoded body, or the query of a multipart form's action).
pub const CSRF_FIELD: &str = "_csrf";

/// No inline script or style, nothing from elsewhere, never framed.
pub const CSP: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// HSTS for a portal reached over HTTPS: one year, subdomains included.
pub const HSTS: &str = "max-age=31536000; includeSubDomains";

/// The headers every response carries (`hsts`: the portal is reached over HTTPS).
pub fn security_headers(hsts: bool) -> Vec<(HeaderName, HeaderValue)> {
    let mut h = vec![
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            // Not `no-referrer`: under it browsers send `Origin: null` on form posts, which the
            // CSRF check must then refuse.
            HeaderValue::from_static("same-origin"),
        ),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ];
    if hsts {
        h.push((
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        ));
    }
    h
}

/// Middleware: adds [`security_headers`] to every response, errors and timeouts included.
pub async fn add_headers(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    for (k, v) in security_headers(state.cookies.secure) {
        headers.insert(k, v);
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// The scheme://host[:port] of a URL.
fn origin_of(url: &str) -> &str {
    let after = url.find("://").map_or(0, |i| i + 3);
    match url[after..].find('/') {
        Some(i) => &url[..after + i],
        None => url,
    }
}

/// Whether the request comes from a page of this portal (`Origin` when the browser sends one,
/// else `Sec-Fetch-Site`); a request with neither (a script, curl) passes on its token alone.
pub fn same_origin(headers: &HeaderMap, public_url: &str) -> bool {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        if origin.eq_ignore_ascii_case(origin_of(public_url)) {
            return true;
        }
        // Reached under another name than public_url (a lab, a test on port 0): the browser's
        // Host and Origin still agree for a same-origin request, never for a forged one.
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let origin_host = origin.split_once("://").map(|(_, h)| h);
        if origin != "null" {
            return host.is_some() && origin_host == host;
        }
        // `Origin: null` (a privacy setting, a sandboxed frame): only the browser's own
        // Sec-Fetch-Site can still vouch for the request.
        return fetch_site(headers) == Some("same-origin");
    }
    match fetch_site(headers) {
        Some(site) => site == "same-origin" || site == "none",
        None => true,
    }
}

fn fetch_site(headers: &HeaderMap) -> Option<&str> {
    headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
}

fn is_state_changing(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn query_field<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Middleware: a state-changing request without a bearer token (which a browser never adds by
/// itself) that a browser sent from another origin (`Origin`, else `Sec-Fetch-Site`) is refused,
/// with or without the session cookie: a forged cross-site login would sign the victim into the
/// attacker's account (login CSRF). One without either header (the agent, curl) passes. A
/// request carrying the session cookie also needs the session's CSRF token (header, form field
/// or, for multipart forms, query field). Else 403 `csrf_rejected`.
pub async fn csrf(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    if !is_state_changing(req.method()) {
        return next.run(req).await;
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer "));
    if bearer {
        return next.run(req).await;
    }
    if !same_origin(req.headers(), &state.services.config().portal.public_url) {
        return ApiError::CsrfRejected("foreign origin").into_response();
    }
    let Some(session_id) = state.cookies.read(req.headers()) else {
        return next.run(req).await;
    };
    let expected = csrf_token(&session_id);
    let header_token = req
        .headers()
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let token = match header_token
        .or_else(|| query_field(req.uri().query(), CSRF_FIELD).map(str::to_string))
    {
        Some(t) => Some(t),
        None if is_form(req.headers()) => {
            // Read the (small) form body for its `_csrf` field, then hand it on unchanged.
            let (parts, body) = req.into_parts();
            let bytes = match axum::body::to_bytes(body, BODY_LIMIT).await {
                Ok(b) => b,
                Err(_) => return ApiError::PayloadTooLarge.into_response(),
            };
            let token = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
                .ok()
                .and_then(|fields| {
                    fields
                        .into_iter()
                        .find(|(k, _)| k == CSRF_FIELD)
                        .map(|(_, v)| v)
                });
            if token.as_deref() != Some(expected.as_str()) {
                return ApiError::CsrfRejected("missing or wrong token").into_response();
            }
            return next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
        }
        None => None,
    };
    if token.as_deref() != Some(expected.as_str()) {
        return ApiError::CsrfRejected("missing or wrong token").into_response();
    }
    next.run(req).await
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn origins_are_compared_with_public_url_or_host() {
        let url = "https://vpn.example.org";
        assert!(same_origin(
            &headers(&[("origin", "https://vpn.example.org")]),
            url
        ));
        assert!(!same_origin(
            &headers(&[("origin", "https://evil.example")]),
            url
        ));
        assert!(!same_origin(&headers(&[("origin", "null")]), url));
        assert!(!same_origin(
            &headers(&[("origin", "null"), ("sec-fetch-site", "cross-site")]),
            url
        ));
        assert!(same_origin(
            &headers(&[("origin", "null"), ("sec-fetch-site", "same-origin")]),
            url
        ));
        assert!(same_origin(
            &headers(&[
                ("origin", "http://127.0.0.1:8080"),
                ("host", "127.0.0.1:8080")
            ]),
            url
        ));
        assert!(!same_origin(
            &headers(&[
                ("origin", "http://127.0.0.1:9999"),
                ("host", "127.0.0.1:8080")
            ]),
            url
        ));
        assert!(!same_origin(
            &headers(&[("sec-fetch-site", "cross-site")]),
            url
        ));
        assert!(same_origin(
            &headers(&[("sec-fetch-site", "same-origin")]),
            url
        ));
        assert!(same_origin(&HeaderMap::new(), url));
        assert_eq!(
            origin_of("https://vpn.example.org/x/y"),
            "https://vpn.example.org"
        );
    }

    #[test]
    fn hsts_only_over_https() {
        let names = |hsts| {
            security_headers(hsts)
                .into_iter()
                .map(|(k, _)| k)
                .collect::<Vec<_>>()
        };
        assert!(names(true).contains(&header::STRICT_TRANSPORT_SECURITY));
        assert!(!names(false).contains(&header::STRICT_TRANSPORT_SECURITY));
        assert!(CSP.contains("frame-ancestors 'none'") && !CSP.contains("unsafe-inline"));
    }
}
