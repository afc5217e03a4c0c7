//! A portal client for tests: one browser's cookie jar bound to the portal's URL, calling the
//! JSON API by path. Login, the CSRF header a signed-in client sends back, JSON bodies and the
//! error shape are written once here (tests/common/harness.rs hands these out).
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::slapd::password_of;

/// One browser (cookie jar) talking to the portal at `base`. Derefs to the `reqwest::Client`
/// for anything the helpers do not cover (headers, forms).
#[derive(Clone)]
pub struct PortalClient {
    pub http: reqwest::Client,
    pub base: String,
}

impl std::ops::Deref for PortalClient {
    type Target = reqwest::Client;
    fn deref(&self) -> &reqwest::Client {
        &self.http
    }
}

/// What a client is built from: the portal's CA for HTTPS, the CSRF token to send back.
#[derive(Default)]
pub struct ClientOptions<'a> {
    pub ca_pem: Option<&'a [u8]>,
    pub csrf: Option<&'a str>,
    pub jar: Option<Arc<reqwest::cookie::Jar>>,
}

impl PortalClient {
    /// A client with its own cookie jar (or `opts.jar`), 30 s timeout.
    pub fn new(base: &str, opts: ClientOptions<'_>) -> PortalClient {
        let mut b = reqwest::Client::builder();
        if let Some(pem) = opts.ca_pem {
            b = b.add_root_certificate(reqwest::Certificate::from_pem(pem).unwrap());
        }
        if let Some(token) = opts.csrf {
            // What the portal's own scripts do: send back the CSRF cookie's token.
            let mut h = reqwest::header::HeaderMap::new();
            h.insert("x-csrf-token", token.parse().unwrap());
            b = b.default_headers(h);
        }
        let jar = opts.jar.unwrap_or_default();
        PortalClient {
            http: b
                .cookie_provider(jar)
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            base: base.to_string(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path` (named apart from `reqwest::Client::get`, which takes a full URL).
    pub async fn get_at(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn delete_at(&self, path: &str) -> reqwest::Response {
        self.http.delete(self.url(path)).send().await.unwrap()
    }

    /// `POST /api/v1/login` with this password (the answer as is: tests check refusals).
    pub async fn login_with(&self, uid: &str, password: &str) -> reqwest::Response {
        self.post_json(
            "/api/v1/login",
            &json!({"username": uid, "password": password}),
        )
        .await
    }

    /// `POST /api/v1/login` with the fixture password of `uid`.
    pub async fn login(&self, uid: &str) -> reqwest::Response {
        self.login_with(uid, password_of(uid)).await
    }

    /// `POST /api/v1/enrolment-codes` for `uid`'s device `device` (the answer as is).
    pub async fn create_code(&self, uid: &str, device: &str) -> reqwest::Response {
        self.post_json(
            "/api/v1/enrolment-codes",
            &json!({"username": uid, "device_name": device}),
        )
        .await
    }
}

impl PortalClient {
    /// `POST /api/v1/device/rotate` as an agent: the device token as bearer, the new key.
    pub async fn rotate(&self, device_token: &str, public_key: &str) -> reqwest::Response {
        self.http
            .post(self.url("/api/v1/device/rotate"))
            .bearer_auth(device_token)
            .json(&json!({ "public_key": public_key }))
            .send()
            .await
            .unwrap()
    }
}

/// `(status, error code)` of an answer, asserting the error body shape (bilingual message).
pub async fn error_of(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let v: Value = r.json().await.expect("JSON error body");
    let code = v["error"]["code"].as_str().expect("error.code").to_string();
    let message = v["error"]["message"].as_str().expect("error.message");
    assert!(message.contains(" / "), "bilingual message: {message}");
    (status, code)
}

/// The CSRF token a login answer hands over in its `sesame-csrf` cookie.
pub fn csrf_cookie(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| {
            let (name, rest) = c.split_once('=')?;
            name.ends_with("sesame-csrf")
                .then(|| rest.split(';').next().unwrap_or("").to_string())
        })
}
