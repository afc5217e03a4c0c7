//! Web session cookies: names and attributes, the CSRF token derived from the session id (the
//! sessions themselves, their timeouts included, are `service::sessions`').

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use cookie::time::Duration as CookieDuration;
use cookie::{Cookie, CookieBuilder, SameSite};

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

    /// A cookie for scripts too (not HttpOnly): `Path=/`, `SameSite=Strict`, `Secure` on HTTPS.
    fn readable(self, name: &'static str, value: String) -> CookieBuilder<'static> {
        Cookie::build((name, value))
            .path("/")
            .same_site(SameSite::Strict)
            .secure(self.secure)
    }

    /// A cookie scripts cannot read: [`CookiePolicy::readable`] and `HttpOnly`.
    fn private(self, name: &'static str, value: String) -> CookieBuilder<'static> {
        self.readable(name, value).http_only(true)
    }

    /// `Set-Cookie` value carrying a new session id (a session cookie: no Max-Age, the server
    /// enforces both timeouts).
    pub fn set_cookie(self, id: &str) -> HeaderValue {
        header_value(self.private(self.name(), id.to_string()))
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
        header_value(self.readable(self.csrf_name(), csrf_token(id)))
    }

    /// `Set-Cookie` deleting the CSRF cookie.
    pub fn clear_csrf_cookie(self) -> HeaderValue {
        header_value(
            self.readable(self.csrf_name(), String::new())
                .max_age(CookieDuration::ZERO),
        )
    }

    /// `Set-Cookie` value that deletes the cookie.
    pub fn clear_cookie(self) -> HeaderValue {
        header_value(
            self.private(self.name(), String::new())
                .max_age(CookieDuration::ZERO),
        )
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
        let lifetime = crate::service::ratelimit::DEVICE_TOKEN_LIFETIME.as_secs();
        header_value(self.private(self.device_name(), token.to_string()).max_age(
            CookieDuration::seconds(i64::try_from(lifetime).unwrap_or(i64::MAX)),
        ))
    }

    /// The device token sent by the browser, if any.
    pub fn read_device(self, headers: &HeaderMap) -> Option<String> {
        read_cookie(headers, self.device_name())
    }
}

impl CookiePolicy {
    /// The cookies of a new session: its id, its CSRF token, and the browser's device token
    /// (it is now a known device of the account, renewed at each login).
    pub fn open_session(self, resp: &mut Response, session_id: &str, device_token: &str) {
        let h = resp.headers_mut();
        h.append(header::SET_COOKIE, self.set_cookie(session_id));
        h.append(header::SET_COOKIE, self.set_csrf_cookie(session_id));
        h.append(header::SET_COOKIE, self.set_device_cookie(device_token));
    }

    /// The cookies that end a session in the browser.
    pub fn close_session(self, resp: &mut Response) {
        let h = resp.headers_mut();
        h.insert(header::SET_COOKIE, self.clear_cookie());
        h.append(header::SET_COOKIE, self.clear_csrf_cookie());
    }
}

/// The `Set-Cookie` header value of `cookie` (ids, tokens and names are ASCII: never empty).
fn header_value(cookie: CookieBuilder<'static>) -> HeaderValue {
    HeaderValue::from_str(&cookie.build().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The value of cookie `name` in the request's `Cookie` headers: absent, empty or longer than
/// any id or token Sesame hands out means none.
fn read_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `Set-Cookie` value parsed back: name, value and each attribute.
    fn parsed(v: &HeaderValue) -> Cookie<'static> {
        Cookie::parse(v.to_str().expect("ascii").to_string()).expect("a Set-Cookie value")
    }

    #[test]
    fn https_gets_host_prefixed_secure_cookie() {
        let p = CookiePolicy::for_public_url("https://vpn.example.org");
        let c = parsed(&p.set_cookie("abc"));
        assert_eq!((c.name(), c.value()), ("__Host-sesame", "abc"));
        assert_eq!(c.path(), Some("/"));
        assert_eq!(c.http_only(), Some(true));
        assert_eq!(c.same_site(), Some(SameSite::Strict));
        assert_eq!(c.secure(), Some(true));
        assert_eq!(c.max_age(), None, "a session cookie");
        let p = CookiePolicy::for_public_url("http://127.0.0.1:8080");
        let v = p.set_cookie("abc");
        assert_eq!(
            v.to_str().expect("ascii"),
            "sesame=abc; HttpOnly; SameSite=Strict; Path=/"
        );
        assert_eq!(parsed(&v).secure(), None, "no Secure on plain HTTP");
    }

    #[test]
    fn csrf_device_and_clearing_cookies_keep_their_attributes() {
        for secure in [true, false] {
            let p = CookiePolicy { secure };
            let csrf = parsed(&p.set_csrf_cookie("id"));
            assert_eq!(
                (csrf.name(), csrf.value()),
                (p.csrf_name(), csrf_token("id").as_str())
            );
            assert_eq!(csrf.http_only(), None, "scripts read it");
            assert_eq!(csrf.same_site(), Some(SameSite::Strict));
            assert_eq!(csrf.secure(), secure.then_some(true));
            let device = parsed(&p.set_device_cookie("tok"));
            assert_eq!((device.name(), device.value()), (p.device_name(), "tok"));
            assert_eq!(device.http_only(), Some(true));
            assert_eq!(device.max_age(), Some(CookieDuration::days(180)));
            for (cleared, name) in [
                (p.clear_cookie(), p.name()),
                (p.clear_csrf_cookie(), p.csrf_name()),
            ] {
                let c = parsed(&cleared);
                assert_eq!((c.name(), c.value()), (name, ""));
                assert_eq!(c.max_age(), Some(CookieDuration::ZERO));
                assert_eq!(c.path(), Some("/"));
                assert_eq!(c.secure(), secure.then_some(true));
            }
        }
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
        // A second Cookie header, an empty value, an over-long value, garbage.
        h.append(
            header::COOKIE,
            HeaderValue::from_static("sesame-device=; junk"),
        );
        assert_eq!(p.read_device(&h), None);
        let long = format!("sesame-device={}", "a".repeat(129));
        h.append(header::COOKIE, HeaderValue::from_str(&long).expect("ascii"));
        assert_eq!(p.read_device(&h), None);
    }
}
