//! Router unit tests with `oneshot`: a stand-in directory, a fresh SQLite file, a recording
//! gateway. The same behaviour is proven against slapd in tests/portal_*.rs.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use parking_lot::Mutex;
use tower::ServiceExt as _;

use crate::config::{Config, LiveConfig};
use crate::directory::{DirFuture, Directory, DirectoryError, DirectoryUser};
use crate::portal::metrics::Metrics;
use crate::portal::{router, AppState};
use crate::service::{BoxFuture, GatewayStats, Publisher, Services};
use crate::store::Store;

const VPN: &str = "cn=vpn,dc=test";

/// Knows one user, `marie` / `secret`, unless `down`.
struct StandInDirectory {
    down: bool,
}

impl Directory for StandInDirectory {
    fn authenticate<'a>(
        &'a self,
        username: &'a str,
        password: &'a str,
    ) -> DirFuture<'a, DirectoryUser> {
        Box::pin(async move {
            if self.down {
                return Err(crate::directory::Unavailable::Timeout {
                    url: "ldap://stand-in".into(),
                    timeout: std::time::Duration::from_secs(5),
                }
                .into());
            }
            if password.trim().is_empty() {
                return Err(DirectoryError::EmptyPassword);
            }
            if username == "marie" && password == "secret" {
                Ok(marie())
            } else {
                Err(DirectoryError::InvalidCredentials)
            }
        })
    }

    fn lookup<'a>(&'a self, username: &'a str) -> DirFuture<'a, Option<DirectoryUser>> {
        Box::pin(async move { Ok((username == "marie").then(marie)) })
    }
}

fn marie() -> DirectoryUser {
    DirectoryUser {
        username: "marie".into(),
        dn: "uid=marie,dc=test".into(),
        display_name: "Marie".into(),
        groups: vec![VPN.into()],
        disabled: false,
    }
}

/// Counts publications (the real control plane is proven in tests/portal_*.rs).
#[derive(Default)]
struct CountingPublisher(Mutex<usize>);

impl Publisher for CountingPublisher {
    fn gateway_public_key(&self) -> crate::key::PublicKey {
        crate::key::PublicKey::from_bytes([9; 32]).expect("key")
    }
    fn gateway_stats(&self) -> GatewayStats {
        GatewayStats::default()
    }
    fn publish_now(&self) -> BoxFuture<'_, ()> {
        *self.0.lock() += 1;
        Box::pin(async {})
    }
}

async fn app(down: bool) -> (axum::Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sesame.toml");
    let text = format!(
        "[database]\nurl = \"sqlite://{}\"\n[roles]\nvpn_users = [\"{VPN}\"]\n",
        dir.path().join("s.db").display()
    );
    let config = Config::parse(&path, &text).unwrap();
    let store = Store::connect(&config.database.url).await.unwrap();
    let services = Services::new(LiveConfig::new(config), store)
        .with_directory(Arc::new(StandInDirectory { down }))
        .with_publisher(Arc::new(CountingPublisher::default()))
        .with_metrics(Arc::new(Metrics::default()));
    (router(AppState::new(Arc::new(services))), dir)
}

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

fn code(v: &serde_json::Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn request_shape_errors_are_json() {
    let (app, _dir) = app(false).await;
    let (s, v) = call(&app, "POST", "/api/v1/login", "{\"username\":").await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_json"));
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/login",
        "{\"username\":\"a\",\"password\":\"b\",\"x\":1}",
    )
    .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "bad_request"));
    let big = format!(
        "{{\"username\":\"a\",\"password\":\"{}\"}}",
        "p".repeat(17 * 1024)
    );
    let (s, v) = call(&app, "POST", "/api/v1/login", &big).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    let (s, v) = call(&app, "GET", "/api/v1/login", "").await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::METHOD_NOT_ALLOWED, "bad_request")
    );
    let (s, v) = call(&app, "GET", "/nowhere", "").await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    let (s, v) = call(&app, "GET", "/api/v1/devices", "").await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "unauthenticated"));
}

#[tokio::test]
async fn login_outcomes_map_to_stable_codes() {
    let (app, _dir) = app(false).await;
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/login",
        r#"{"username":"marie","password":"secret"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["roles"], serde_json::json!(["vpn_user"]));
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/login",
        r#"{"username":"marie","password":"nope"}"#,
    )
    .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNAUTHORIZED, "invalid_credentials")
    );
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/login",
        r#"{"username":"marie","password":" "}"#,
    )
    .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "empty_password"));
    let (app, _dir) = self::app(true).await;
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/login",
        r#"{"username":"marie","password":"secret"}"#,
    )
    .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::SERVICE_UNAVAILABLE, "directory_unavailable")
    );
    let (s, _) = call(&app, "GET", "/readyz", "").await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn openapi_documents_routes_and_security_schemes() {
    let (app, _dir) = app(false).await;
    let (s, v) = call(&app, "GET", "/api/v1/openapi.json", "").await;
    assert_eq!(s, StatusCode::OK);
    for p in [
        "/api/v1/enrol",
        "/api/v1/device/config",
        "/api/v1/device/rotate",
        "/api/v1/login",
        "/api/v1/logout",
        "/api/v1/enrolment-codes",
        "/api/v1/devices",
        "/api/v1/devices/{id}",
        "/api/v1/audit/events",
        "/api/v1/audit/flows",
        "/api/v1/audit/access-review",
        "/api/v1/audit/verify",
        "/healthz",
        "/readyz",
    ] {
        assert!(v["paths"].get(p).is_some(), "{p} missing");
    }
    assert!(
        v["paths"].get("/metrics").is_none(),
        "metrics have their own listener"
    );
    assert!(v["components"]["securitySchemes"]["device_token"].is_object());
    assert!(v["components"]["securitySchemes"]["session"].is_object());
    // The events query: the one audit filter type, then paging and format.
    let names: Vec<&str> = v["paths"]["/api/v1/audit/events"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "user",
            "device",
            "action",
            "resource",
            "site",
            "outcome",
            "source_ip",
            "since",
            "until",
            "cursor",
            "limit",
            "format"
        ]
    );
}

/// A request for `path` (`{param}` filled with 1), with the given extra headers.
fn request(method: &axum::http::Method, path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    // Every `{param}` becomes 1.
    let mut uri = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                uri.push('1');
            }
            '}' => in_param = false,
            c if !in_param => uri.push(c),
            _ => {}
        }
    }
    let mut b = Request::builder()
        .method(method.clone())
        .uri(uri)
        .header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Body::from("{}")).unwrap()
}

fn assert_security_headers(resp: &axum::response::Response, what: &str) {
    for h in [
        "content-security-policy",
        "x-content-type-options",
        "x-frame-options",
        "referrer-policy",
    ] {
        assert!(resp.headers().contains_key(h), "{what}: no {h}");
    }
    let csp = resp.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert_eq!(
        resp.headers()["x-content-type-options"],
        "nosniff",
        "{what}"
    );
}

#[tokio::test]
async fn every_state_changing_route_refuses_a_missing_token_and_a_foreign_origin() {
    use crate::portal::session::csrf_token;
    let (app, _dir) = app(false).await;
    let token = csrf_token("stolen-or-not");
    let cookie = "sesame=stolen-or-not";
    let mut checked = 0;
    for (method, path) in super::routes() {
        if matches!(method, axum::http::Method::GET | axum::http::Method::HEAD) {
            continue;
        }
        checked += 1;
        let cases: [(&str, Vec<(&str, &str)>); 3] = [
            ("no token", vec![("cookie", cookie)]),
            (
                "foreign origin",
                vec![
                    ("cookie", cookie),
                    ("x-csrf-token", &token),
                    ("origin", "https://evil.example"),
                ],
            ),
            (
                "wrong token",
                vec![("cookie", cookie), ("x-csrf-token", "0000")],
            ),
        ];
        for (what, headers) in cases {
            let resp = app
                .clone()
                .oneshot(request(&method, &path, &headers))
                .await
                .unwrap();
            assert_eq!(
                resp.status(),
                StatusCode::FORBIDDEN,
                "{method} {path}: {what}"
            );
            assert_security_headers(&resp, &path);
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(code(&v), "csrf_rejected", "{method} {path}: {what}");
        }
        // The right token from the same origin passes the check (the handler then decides).
        let resp = app
            .clone()
            .oneshot(request(
                &method,
                &path,
                &[
                    ("cookie", cookie),
                    ("x-csrf-token", &token),
                    ("origin", "http://127.0.0.1:8080"),
                ],
            ))
            .await
            .unwrap();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        assert_ne!(code(&v), "csrf_rejected", "{method} {path}");
    }
    assert!(checked >= 5, "state-changing routes walked: {checked}");
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let (app, _dir) = app(false).await;
    for (method, path) in super::routes() {
        let resp = app
            .clone()
            .oneshot(request(&method, &path, &[]))
            .await
            .unwrap();
        assert_security_headers(&resp, &format!("{method} {path} ({})", resp.status()));
    }
    // 404, 405, 413 and a foreign-origin refusal.
    let not_found = app
        .clone()
        .oneshot(request(&axum::http::Method::GET, "/nope", &[]))
        .await
        .unwrap();
    assert_eq!(not_found.status(), StatusCode::NOT_FOUND);
    assert_security_headers(&not_found, "404");
    let not_allowed = app
        .clone()
        .oneshot(request(&axum::http::Method::PUT, "/api/v1/login", &[]))
        .await
        .unwrap();
    assert_eq!(not_allowed.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_security_headers(&not_allowed, "405");
    let big = Request::builder()
        .method("POST")
        .uri("/api/v1/login")
        .header("content-type", "application/json")
        .body(Body::from(vec![b' '; super::BODY_LIMIT + 10]))
        .unwrap();
    let too_large = app.clone().oneshot(big).await.unwrap();
    assert_eq!(too_large.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_security_headers(&too_large, "413");
}

/// The OpenAPI document is derived from the router: it lists exactly the JSON API of DESIGN §5
/// (each path with its one method), and every API route the router serves is in it.
#[tokio::test]
async fn openapi_lists_every_api_route_and_only_those() {
    let (app, _dir) = app(false).await;
    let resp = app
        .oneshot(request(&axum::http::Method::GET, super::OPENAPI_PATH, &[]))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let mut documented: Vec<String> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    documented.sort();
    let mut expected = vec![
        "POST /api/v1/enrol",
        "GET /api/v1/device/config",
        "POST /api/v1/device/rotate",
        "POST /api/v1/device/mfa/confirm",
        "POST /api/v1/device/unlock",
        "POST /api/v1/device/lock",
        "POST /api/v1/mfa/register",
        "POST /api/v1/mfa/confirm",
        "POST /api/v1/login",
        "POST /api/v1/logout",
        "POST /api/v1/enrolment-codes",
        "GET /api/v1/devices",
        "DELETE /api/v1/devices/{id}",
        "GET /api/v1/audit/events",
        "GET /api/v1/audit/flows",
        "GET /api/v1/audit/access-review",
        "GET /api/v1/audit/verify",
        "GET /api/v1/gateway/feed",
        "POST /api/v1/gateway/events",
        "GET /healthz",
        "GET /readyz",
    ];
    expected.sort();
    assert_eq!(documented, expected);
    assert_eq!(doc["info"]["title"], "Sesame API");
    assert_eq!(
        doc["paths"]["/api/v1/devices/{id}"]["delete"]["tags"],
        serde_json::json!(["admin"]),
        "grouped by handler module"
    );
    for scheme in ["device_token", "session"] {
        assert!(
            doc["components"]["securitySchemes"].get(scheme).is_some(),
            "{scheme}"
        );
    }
    // The router's own list is built from the same document: nothing served is undocumented.
    let api: Vec<String> = super::routes()
        .into_iter()
        .filter(|(_, p)| p.starts_with("/api/") || p.ends_with("z"))
        .filter(|(_, p)| p != super::OPENAPI_PATH)
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    assert_eq!(api.len(), expected.len(), "{api:?}");
}
