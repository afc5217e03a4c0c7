//! HTTP client of the portal API: HTTPS by default, never a silent fall-back to HTTP, errors by stable code.

use std::path::Path;
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::StatusCode;
use sesame::api::mfa::{CodeRequest, RecoveryCodes, UnlockResponse};
use sesame::api::{DeviceConfig, EnrolRequest, ErrorBody, RotateRequest, API_PREFIX};

use crate::i18n::Lang;

#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    #[error("invalid portal address {0:?}")]
    BadUrl(String),
    #[error("refused: {0} is plain HTTP outside this machine: the password and the device token would cross the network unencrypted; use the portal's https:// address, or add --insecure (labs only)")]
    PlainHttp(String),
    #[error("CA file {path}: {detail}")]
    CaFile { path: String, detail: String },
    #[error("portal {url} unreachable: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("TLS certificate of {url} refused: {source}")]
    Tls { url: String, source: reqwest::Error },
    #[error("portal answered {status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("unexpected answer from the portal: HTTP {status}")]
    Unexpected { status: u16 },
    #[error("HTTP client: {0}")]
    Client(reqwest::Error),
}

impl PortalError {
    /// The API's stable error code, if the portal answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            PortalError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
    /// True when the request may or may not have reached the portal.
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            PortalError::Unreachable { .. } | PortalError::Client(_)
        )
    }
}

/// Normalises a portal address: `https://` is assumed when no scheme is given; `http://` is kept
/// only when written explicitly (labs). Returns the base URL without a trailing slash.
pub fn normalize_url(url: &str) -> Result<String, PortalError> {
    let raw = url.trim();
    let full = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("https://{raw}")
    };
    let parsed = reqwest::Url::parse(&full).map_err(|_| PortalError::BadUrl(raw.to_string()))?;
    if !matches!(parsed.scheme(), "https" | "http") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(PortalError::BadUrl(raw.to_string()));
    }
    Ok(full.trim_end_matches('/').to_string())
}

/// Refuses a plain `http://` portal outside loopback unless `insecure` (`--insecure`, labs):
/// the password and the device token would cross the network in clear. Loopback stays
/// allowed (a portal on this machine, tests).
pub fn check_transport(base: &str, insecure: bool) -> Result<(), PortalError> {
    use reqwest::Url;
    let parsed = Url::parse(base).map_err(|_| PortalError::BadUrl(base.to_string()))?;
    // host_str writes an IPv6 address in brackets.
    let host = parsed.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if parsed.scheme() == "http" && !loopback && !insecure {
        return Err(PortalError::PlainHttp(base.to_string()));
    }
    Ok(())
}

/// A client bound to one portal.
#[derive(Debug, Clone)]
pub struct Portal {
    base: String,
    client: Client,
    lang: Lang,
}

impl Portal {
    /// `ca_file`: PEM of a private CA; when given, only that CA is trusted. `insecure` allows
    /// a plain `http://` portal outside loopback ([`check_transport`]).
    pub fn new(
        url: &str,
        ca_file: Option<&Path>,
        insecure: bool,
        timeout: Duration,
        lang: Lang,
    ) -> Result<Portal, PortalError> {
        let base = normalize_url(url)?;
        check_transport(&base, insecure)?;
        let https = base.starts_with("https://");
        let mut builder = Client::builder()
            .use_rustls_tls()
            .https_only(https)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .timeout(timeout)
            .user_agent(concat!("sesame-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_file {
            let ca_err = |detail: String| PortalError::CaFile {
                path: path.display().to_string(),
                detail,
            };
            let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_err(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_err("no certificate in the file".into()));
            }
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(PortalError::Client)?;
        Ok(Portal { base, client, lang })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn is_plain_http(&self) -> bool {
        self.base.starts_with("http://")
    }

    fn url(&self, route: &str) -> String {
        format!("{}{API_PREFIX}{route}", self.base)
    }

    fn send(&self, request: RequestBuilder) -> Result<Response, PortalError> {
        let lang = match self.lang {
            Lang::Fr => "fr",
            Lang::En => "en",
        };
        request
            .header("Accept-Language", lang)
            .send()
            .map_err(|e| classify(&self.base, e))
    }

    /// `POST /api/v1/enrol`, showing `device_cookie` (`NAME=VALUE`, from an earlier
    /// enrolment) if any; returns the config and the portal's new device cookie, if it sent
    /// a well-formed one.
    pub fn enrol(
        &self,
        request: &EnrolRequest,
        device_cookie: Option<&str>,
    ) -> Result<(DeviceConfig, Option<String>), PortalError> {
        let mut post = self.client.post(self.url("/enrol")).json(request);
        if let Some(cookie) = device_cookie.filter(|c| device_cookie_pair(c).is_some()) {
            post = post.header(reqwest::header::COOKIE, cookie);
        }
        let response = self.send(post)?;
        let cookie = response
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| device_cookie_pair(v.split(';').next().unwrap_or_default()));
        Ok((json_answer(response)?, cookie))
    }

    /// `GET /api/v1/device/config`.
    pub fn device_config(&self, token: &str) -> Result<DeviceConfig, PortalError> {
        let response = self.send(
            self.client
                .get(self.url("/device/config"))
                .bearer_auth(token),
        )?;
        json_answer(response)
    }

    /// `POST /api/v1/device/rotate`; returns the new config when the portal sends one.
    pub fn rotate(
        &self,
        token: &str,
        public_key: &str,
    ) -> Result<Option<DeviceConfig>, PortalError> {
        let body = RotateRequest {
            public_key: public_key.to_string(),
        };
        let response = self.send(
            self.client
                .post(self.url("/device/rotate"))
                .bearer_auth(token)
                .json(&body),
        )?;
        let status = response.status();
        if !status.is_success() {
            return Err(api_error(status, response));
        }
        let text = response.text().unwrap_or_default();
        Ok(serde_json::from_str(&text).ok())
    }
}

impl Portal {
    /// `POST route` with the device token and `{"code": …}`: the second factor's device routes
    /// (`/device/unlock`, `/device/mfa/confirm`).
    fn post_code<T: serde::de::DeserializeOwned>(
        &self,
        route: &str,
        token: &str,
        code: &str,
    ) -> Result<T, PortalError> {
        let body = CodeRequest {
            code: code.trim().to_string(),
        };
        let response = self.send(
            self.client
                .post(self.url(route))
                .bearer_auth(token)
                .json(&body),
        )?;
        let status = response.status();
        if !status.is_success() {
            return Err(api_error(status, response));
        }
        response.json().map_err(|_| PortalError::Unexpected {
            status: status.as_u16(),
        })
    }

    /// `POST /api/v1/device/unlock`: opens the access window to protected resources.
    pub fn unlock(&self, token: &str, code: &str) -> Result<UnlockResponse, PortalError> {
        self.post_code("/device/unlock", token, code)
    }

    /// `POST /api/v1/device/mfa/confirm`: the first code of the factor the enrolment handed out.
    pub fn confirm_mfa(&self, token: &str, code: &str) -> Result<RecoveryCodes, PortalError> {
        self.post_code("/device/mfa/confirm", token, code)
    }

    /// `POST /api/v1/device/lock`: closes the access window (`sesame-agent down`).
    pub fn lock(&self, token: &str) -> Result<(), PortalError> {
        let response = self.send(
            self.client
                .post(self.url("/device/lock"))
                .bearer_auth(token),
        )?;
        let status = response.status();
        if !status.is_success() {
            return Err(api_error(status, response));
        }
        Ok(())
    }
}

/// Names the portal gives its device cookie (`__Host-` over HTTPS).
const DEVICE_COOKIE_NAMES: [&str; 2] = ["__Host-sesame-device", "sesame-device"];

/// `NAME=VALUE` if it is the portal's device cookie with a plausible value (base64url, at
/// most 128 characters); anything else (control characters, other cookies) is dropped.
fn device_cookie_pair(pair: &str) -> Option<String> {
    let (name, value) = pair.trim().split_once('=')?;
    let plausible = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (DEVICE_COOKIE_NAMES.contains(&name) && plausible).then(|| format!("{name}={value}"))
}

fn json_answer(response: Response) -> Result<DeviceConfig, PortalError> {
    let status = response.status();
    if !status.is_success() {
        return Err(api_error(status, response));
    }
    response.json().map_err(|_| PortalError::Unexpected {
        status: status.as_u16(),
    })
}

fn api_error(status: StatusCode, response: Response) -> PortalError {
    let text = response.text().unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => PortalError::Api {
            status: status.as_u16(),
            code: body.error.code,
            message: body.error.message,
        },
        Err(_) => PortalError::Unexpected {
            status: status.as_u16(),
        },
    }
}

/// TLS failures (bad certificate, a plain-HTTP server behind an https:// address) are told apart
/// from an unreachable portal by finding rustls' error in the source chain.
fn classify(base: &str, error: reqwest::Error) -> PortalError {
    let url = base.to_string();
    if is_tls_error(&error) {
        PortalError::Tls { url, source: error }
    } else if error.is_connect() || error.is_timeout() || error.is_request() {
        PortalError::Unreachable { url, source: error }
    } else {
        PortalError::Client(error)
    }
}

fn is_tls_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(err) = current {
        if err.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if inner.is::<rustls::Error>() || is_tls_error(inner) {
                    return true;
                }
            }
        }
        current = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_default_to_https_and_keep_explicit_http() {
        assert_eq!(
            normalize_url("vpn.example.org/").expect("url"),
            "https://vpn.example.org"
        );
        assert_eq!(
            normalize_url("http://127.0.0.1:8080").expect("url"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            normalize_url("https://vpn.example.org").expect("url"),
            "https://vpn.example.org"
        );
        assert!(matches!(
            normalize_url("ftp://x"),
            Err(PortalError::BadUrl(_))
        ));
        assert!(matches!(
            normalize_url("https://"),
            Err(PortalError::BadUrl(_))
        ));
    }

    #[test]
    fn only_the_portal_device_cookie_is_kept() {
        assert_eq!(
            device_cookie_pair("sesame-device=AbC-_9").as_deref(),
            Some("sesame-device=AbC-_9")
        );
        assert_eq!(
            device_cookie_pair(" __Host-sesame-device=x1 ").as_deref(),
            Some("__Host-sesame-device=x1")
        );
        for bad in [
            "sesame-session=abc",
            "sesame-device=",
            "sesame-device=a\nb",
            "sesame-device=a b",
            "sesame-device=a;b",
            "nothing",
        ] {
            assert_eq!(device_cookie_pair(bad), None, "{bad:?}");
        }
        assert_eq!(
            device_cookie_pair(&format!("sesame-device={}", "a".repeat(129))),
            None
        );
    }

    #[test]
    fn plain_http_is_refused_outside_loopback_unless_insecure() {
        for url in [
            "http://198.18.1.1:8080",
            "http://vpn.example.org",
            "http://[2001:db8::1]",
        ] {
            assert!(
                matches!(check_transport(url, false), Err(PortalError::PlainHttp(u)) if u == url),
                "{url}"
            );
            assert!(check_transport(url, true).is_ok(), "{url} with --insecure");
        }
        for url in [
            "http://127.0.0.1:8080",
            "http://127.8.9.10",
            "http://localhost:8080",
            "http://[::1]:8080",
            "https://vpn.example.org",
            "https://198.18.1.1",
        ] {
            assert!(check_transport(url, false).is_ok(), "{url}");
        }
        // The client is never built for a refused address.
        let err = Portal::new(
            "http://198.18.1.1:8080",
            None,
            false,
            Duration::from_secs(1),
            Lang::Fr,
        )
        .expect_err("must fail");
        assert!(matches!(err, PortalError::PlainHttp(_)));
    }

    #[test]
    fn missing_ca_file_is_reported() {
        let err = Portal::new(
            "https://x",
            Some(Path::new("/nonexistent/ca.pem")),
            false,
            Duration::from_secs(1),
            Lang::Fr,
        )
        .expect_err("must fail");
        assert!(matches!(err, PortalError::CaFile { .. }));
    }
}
