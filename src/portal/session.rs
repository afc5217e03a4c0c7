//! Web sessions: cookie name and attributes, timeouts (the store keeps ids hashed).

use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue};

/// A session unused for this long is refused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// A session older than this is refused, however active.
pub const ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(12 * 3600);

/// The CSRF token of a session: derived from its (secret, HttpOnly) id, so a page of another
/// site can neither read nor guess it; the store keeps only another hash of the id.
pub fn csrf_token(session_id: &str) -> String {
    crate::store::hash_secret(&format!("sesame-csrf\0{session_id}"))
}

/// Cookie attributes derived from `portal.public_url`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookiePolicy {
    /// HTTPS: `__Host-sesame` with `Secure`; plain HTTP (a lab): `sesame`.
    pub secure: bool,
}

impl CookiePolicy {
    pub fn for_public_url(public_url: &str) -> Self {
        CookiePolicy {
            secure: public_url.starts_with("https://"),
        }
    }

    pub fn name(self) -> &'static str {
        if self.secure {
            "__Host-sesame"
        } else {
            "sesame"
        }
    }

    fn attributes(self) -> &'static str {
        if self.secure {
            "; Path=/; HttpOnly; SameSite=Strict; Secure"
        } else {
            "; Path=/; HttpOnly; SameSite=Strict"
        }
    }

    /// `Set-Cookie` value carrying a new session id (a session cookie: no Max-Age, the server
    /// enforces both timeouts).
    pub fn set_cookie(self, id: &str) -> HeaderValue {
        let v = format!("{}={id}{}", self.name(), self.attributes());
        HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// Name of the cookie that hands the CSRF token to the portal's scripts (double submit).
    pub fn csrf_name(self) -> &'static str {
        if self.secure {
            "__Host-sesame-csrf"
        } else {
            "sesame-csrf"
        }
    }

    /// `Set-Cookie` carrying the CSRF token of session `id` (readable by scripts: not HttpOnly).
    pub fn set_csrf_cookie(self, id: &str) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let v = format!(
            "{}={}; Path=/; SameSite=Strict{secure}",
            self.csrf_name(),
            csrf_token(id)
        );
        HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// `Set-Cookie` deleting the CSRF cookie.
    pub fn clear_csrf_cookie(self) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let v = format!(
            "{}=; Path=/; SameSite=Strict; Max-Age=0{secure}",
            self.csrf_name()
        );
        HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// `Set-Cookie` value that deletes the cookie.
    pub fn clear_cookie(self) -> HeaderValue {
        let v = format!("{}={}; Max-Age=0", self.name(), self.attributes());
        HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The session id sent by the browser, if any.
    pub fn read(self, headers: &HeaderMap) -> Option<String> {
        read_cookie(headers, self.name())
    }

    /// Name of the device cookie: the browser logged in successfully before (it lets the
    /// owner in while others have the account locked, see `ratelimit`).
    pub fn device_name(self) -> &'static str {
        if self.secure {
            "__Host-sesame-device"
        } else {
            "sesame-device"
        }
    }

    /// `Set-Cookie` value carrying a device token (kept 180 days).
    pub fn set_device_cookie(self, token: &str) -> HeaderValue {
        let v = format!(
            "{}={token}{}; Max-Age={}",
            self.device_name(),
            self.attributes(),
            super::ratelimit::DEVICE_TOKEN_LIFETIME.as_secs()
        );
        HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The device token sent by the browser, if any.
    pub fn read_device(self, headers: &HeaderMap) -> Option<String> {
        read_cookie(headers, self.device_name())
    }
}

fn read_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

impl CookiePolicy {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_gets_host_prefixed_secure_cookie() {
        let p = CookiePolicy::for_public_url("https://vpn.example.org");
        let c = p.set_cookie("abc");
        assert_eq!(
            c.to_str().expect("ascii"),
            "__Host-sesame=abc; Path=/; HttpOnly; SameSite=Strict; Secure"
        );
        let p = CookiePolicy::for_public_url("http://127.0.0.1:8080");
        assert_eq!(
            p.set_cookie("abc").to_str().expect("ascii"),
            "sesame=abc; Path=/; HttpOnly; SameSite=Strict"
        );
    }

    #[test]
    fn reads_its_own_cookie_among_others() {
        let p = CookiePolicy { secure: false };
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("other=1; sesame=xyz ; third=3"),
        );
        assert_eq!(p.read(&h).as_deref(), Some("xyz"));
        let secure = CookiePolicy { secure: true };
        assert_eq!(secure.read(&h), None);
    }
}
