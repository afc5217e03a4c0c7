//! Sign-in and sign-out pages: the same service, limits and audit as `POST /api/v1/login`.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::html;

use crate::portal::error::ApiError;
use crate::portal::extract::ClientIp;
use crate::portal::session::csrf_token;
use crate::portal::state::SharedState;
use crate::service::sessions::{self, LoginInput};

use super::{page, Lang};

#[derive(serde::Deserialize, Default)]
pub struct NextQuery {
    next: Option<String>,
}

#[derive(serde::Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    next: Option<String>,
    /// The second factor's code (`[mfa] web_roles` need it); empty when not typed.
    #[serde(default)]
    otp: Option<String>,
}

/// Where to go after signing in: a path of this portal only (no open redirect).
pub fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && n.chars().all(|c| c.is_ascii_graphic()) =>
        {
            n
        }
        _ => "/",
    }
}

fn login_page(
    lang: Lang,
    headers: &HeaderMap,
    state: &SharedState,
    next: &str,
    error: Option<String>,
) -> axum::response::Html<String> {
    // A stale cookie still makes the POST cookie-carrying: the form then needs its token.
    let csrf = state.cookies.read(headers).map(|id| csrf_token(&id));
    let mfa_on = state.services.config().mfa.is_some();
    page(
        lang,
        None,
        lang.t("Connexion", "Sign in"),
        html! {
            @if let Some(e) = &error {
                div.error role="alert" { p { (e) } }
            }
            p { (lang.t("Connectez-vous avec votre identifiant et votre mot de passe de messagerie académique.",
                        "Sign in with your académie username and e-mail password.")) }
            form.stack method="post" action="/login" {
                @if let Some(t) = &csrf { input type="hidden" name="_csrf" value=(t); }
                input type="hidden" name="next" value=(next);
                div {
                    label for="username" { (lang.t("Identifiant", "Username")) }
                    input #username name="username" type="text" autocomplete="username" required autofocus;
                }
                div {
                    label for="password" { (lang.t("Mot de passe", "Password")) }
                    input #password name="password" type="password" autocomplete="current-password" required;
                }
                @if mfa_on {
                    div {
                        label for="otp" { (lang.t("Code de votre application d'authentification (personnels DSI et auditeurs)",
                                                  "Code of your authenticator app (IT staff and auditors)")) }
                        input #otp name="otp" type="text" inputmode="numeric" autocomplete="one-time-code" aria-describedby="otp-help";
                        p #otp-help { (lang.t("Téléphone perdu : appelez le service informatique pour une réinitialisation.",
                                              "Phone lost: call IT support for a reset.")) }
                    }
                }
                div { button type="submit" { (lang.t("Se connecter", "Sign in")) } }
            }
        },
    )
}

/// `GET /login`
pub async fn form(
    State(state): State<SharedState>,
    lang: Lang,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Response {
    login_page(lang, &headers, &state, safe_next(q.next.as_deref()), None).into_response()
}

/// `POST /login`: signs in through the same service as `POST /api/v1/login` (same limits,
/// audit and cookies), then goes to `next` (a local path only).
pub async fn submit(
    State(state): State<SharedState>,
    lang: Lang,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let next = safe_next(f.next.as_deref()).to_string();
    let device = state.cookies.read_device(&headers);
    let input = LoginInput {
        username: &f.username,
        password: &f.password,
        source_ip: ip,
        known_device: device.as_deref(),
        otp: f.otp.as_deref().filter(|c| !c.trim().is_empty()),
    };
    match sessions::login(&state.services, input).await {
        Ok(logged_in) => {
            let mut resp = Redirect::to(&next).into_response();
            state
                .cookies
                .open_session(&mut resp, &logged_in.session_id, &logged_in.device_token);
            resp
        }
        Err(e) => {
            let e = ApiError::from(e);
            let mut resp = (
                e.status(),
                login_page(lang, &headers, &state, &next, Some(e.message())),
            )
                .into_response();
            if let Some(v) = e.into_response().headers().get(header::RETRY_AFTER) {
                resp.headers_mut().insert(header::RETRY_AFTER, v.clone());
            }
            resp
        }
    }
}

/// `POST /logout` (form with the CSRF token): ends the session, back to the login page.
pub async fn logout(
    State(state): State<SharedState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Response {
    let id = state.cookies.read(&headers);
    match sessions::logout(&state.services, id.as_deref(), ip).await {
        Ok(()) => {
            let mut resp = Redirect::to("/login").into_response();
            state.cookies.close_session(&mut resp);
            resp
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_after_login() {
        assert_eq!(safe_next(Some("/it/devices?q=x")), "/it/devices?q=x");
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/\\evil.example",
            "evil",
            "/a b",
            "/\u{0}",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/");
    }
}
