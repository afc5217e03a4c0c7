//! Router unit tests with `oneshot`: a stand-in directory, a fresh SQLite file, a recording
//! gateway. The same behaviour is proven against slapd in tests/portal_*.rs.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use parking_lot::Mutex;
use tower::ServiceExt as _;

use crate::config::Config;
use crate::control::{ControlPlane, DesiredPeer, GatewayStats, PeerSink};
use crate::directory::{DirFuture, Directory, DirectoryError, DirectoryUser};
use crate::portal::metrics::Metrics;
use crate::portal::{router, AppState};
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
                return Err(DirectoryError::Unavailable("stand-in down".into()));
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

#[derive(Default)]
struct Sink(Mutex<Vec<DesiredPeer>>);

impl PeerSink for Sink {
    fn set_peers(&self, peers: Vec<DesiredPeer>) {
        *self.0.lock() = peers;
    }
    fn public_key(&self) -> [u8; 32] {
        [9; 32]
    }
    fn stats(&self) -> GatewayStats {
        GatewayStats::default()
    }
}

async fn app(down: bool) -> (axum::Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sesame.toml");
    let text = format!(
        "[database]\nurl = \"sqlite://{}\"\n[roles]\nvpn_users = [\"{VPN}\"]\n",
        dir.path().join("s.db").display()
    );
    let config = Arc::new(Config::parse(&path, &text).unwrap());
    let store = Store::connect(&config.database.url).await.unwrap();
    let control = ControlPlane::new(
        store.clone(),
        Arc::clone(&config),
        Arc::new(Sink::default()),
    );
    let state = AppState::new(
        config,
        store,
        Arc::new(StandInDirectory { down }),
        control,
        Arc::new(Metrics::default()),
    );
    (router(state), dir)
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
}
