//! Sign-in and sign-out pages: the same service, limits and audit as `POST /api/v1/login`.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup, PreEscaped};

use crate::api::mfa::{MfaConfirmRequest, MfaRegisterRequest};
use crate::portal::error::ApiError;
use crate::portal::extract::ClientIp;
use crate::portal::session::csrf_token;
use crate::portal::state::SharedState;
use crate::service::mfa::register;
use crate::service::sessions::{self, LoginInput};
use crate::service::ErrorKind;

use super::{page, Lang, Refusal};

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
        // The password was right and no factor is registered: the registration code next.
        Err(e) if e.kind() == ErrorKind::MfaNotRegistered => register_step(
            lang,
            &headers,
            &state,
            &Carried {
                username: f.username.trim(),
                password: &f.password,
                next: &next,
            },
            Some(ApiError::from(e).message()),
        ),
        Err(e) => {
            let refusal = Refusal::of(e);
            refusal.answer(
                login_page(lang, &headers, &state, &next, Some(refusal.message.clone()))
                    .into_response(),
            )
        }
    }
}

/// What the registration steps carry from one form to the next (hidden fields): the password
/// is checked again at each step, with the registration code (never the password alone).
struct Carried<'a> {
    username: &'a str,
    password: &'a str,
    next: &'a str,
}

#[derive(serde::Deserialize)]
pub struct RegisterForm {
    username: String,
    password: String,
    registration_code: String,
    /// The first code of the new factor (the confirming step); absent on the first step.
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    next: Option<String>,
}

/// The CSRF field a form needs when the browser carries a (possibly stale) session cookie.
fn csrf_field(headers: &HeaderMap, state: &SharedState) -> Markup {
    html! {
        @if let Some(id) = state.cookies.read(headers) {
            input type="hidden" name="_csrf" value=(csrf_token(&id));
        }
    }
}

fn carried_fields(c: &Carried<'_>) -> Markup {
    html! {
        input type="hidden" name="username" value=(c.username);
        input type="hidden" name="password" value=(c.password);
        input type="hidden" name="next" value=(c.next);
    }
}

fn error_box(error: Option<&str>) -> Markup {
    html! {
        @if let Some(e) = error {
            div.error role="alert" { p { (e) } }
        }
    }
}

/// A page of the registration steps: never cached (the form carries the password).
fn no_store(status: axum::http::StatusCode, body: axum::response::Html<String>) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    resp
}

fn lost_phone(lang: Lang) -> Markup {
    html! {
        p.muted { (lang.t("Pas de code d'enregistrement, ou téléphone perdu : appelez le service informatique (il vous remettra un code d'enregistrement en main propre).",
                          "No registration code, or phone lost: call IT support (they will hand you a registration code in person).")) }
    }
}

/// Step 1 of registering a factor: the registration code IT handed out (the password was
/// typed on `/login`, or is typed here when `carried` is `None`).
fn register_step(
    lang: Lang,
    headers: &HeaderMap,
    state: &SharedState,
    carried: &Carried<'_>,
    error: Option<String>,
) -> Response {
    let ask_password = carried.password.is_empty();
    let body = html! {
        (error_box(error.as_deref()))
        p { (lang.t("Votre compte doit utiliser un second facteur (une application d'authentification sur votre téléphone, p. ex. FreeOTP, Google Authenticator, Microsoft Authenticator). Pour l'enregistrer, saisissez le code d'enregistrement remis par le service informatique.",
                    "Your account must use a second factor (an authenticator app on your phone, e.g. FreeOTP, Google Authenticator, Microsoft Authenticator). To register it, type the registration code IT support handed you.")) }
        form.stack method="post" action="/login/mfa" {
            (csrf_field(headers, state))
            @if ask_password {
                input type="hidden" name="next" value=(carried.next);
                div {
                    label for="username" { (lang.t("Identifiant", "Username")) }
                    input #username name="username" type="text" autocomplete="username" required value=(carried.username);
                }
                div {
                    label for="password" { (lang.t("Mot de passe", "Password")) }
                    input #password name="password" type="password" autocomplete="current-password" required;
                }
            } @else {
                (carried_fields(carried))
            }
            div {
                label for="registration_code" { (lang.t("Code d'enregistrement", "Registration code")) }
                input #registration_code name="registration_code" type="text" autocomplete="off" required autofocus;
            }
            div { button type="submit" { (lang.t("Continuer", "Continue")) } }
        }
        (lost_phone(lang))
    };
    registration_page(lang, body)
}

/// `GET /login/mfa`: registering a factor with IT's registration code (user name, password,
/// code), e.g. from `/mon-acces` for a VPN user after an IT reset.
pub async fn register_form(
    State(state): State<SharedState>,
    lang: Lang,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Response {
    let next = safe_next(q.next.as_deref());
    register_step(
        lang,
        &headers,
        &state,
        &Carried {
            username: "",
            password: "",
            next,
        },
        None,
    )
}

/// `POST /login/mfa`: without `code`, password + registration code → the secret (QR code and
/// text) and a field for the first code; with `code`, the factor is confirmed and the ten
/// recovery codes are shown once. The same service as `POST /api/v1/mfa/register|confirm`.
pub async fn register_submit(
    State(state): State<SharedState>,
    lang: Lang,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(f): Form<RegisterForm>,
) -> Response {
    let next = safe_next(f.next.as_deref()).to_string();
    let carried = Carried {
        username: f.username.trim(),
        password: &f.password,
        next: &next,
    };
    let code = f.code.as_deref().map(str::trim).filter(|c| !c.is_empty());
    let Some(code) = code else {
        let req = MfaRegisterRequest {
            username: carried.username.to_string(),
            password: f.password.clone(),
            registration_code: f.registration_code.trim().to_string(),
        };
        return match register::register(&state.services, &req, ip).await {
            Ok(reg) => confirm_step(
                lang,
                &headers,
                &state,
                &carried,
                &req.registration_code,
                Some(&reg),
                None,
            ),
            Err(e) => step_error(lang, &headers, &state, &carried, e, |l, h, s, c, m| {
                register_step(l, h, s, c, Some(m))
            }),
        };
    };
    let req = MfaConfirmRequest {
        username: carried.username.to_string(),
        password: f.password.clone(),
        registration_code: f.registration_code.trim().to_string(),
        code: code.to_string(),
    };
    match register::confirm(&state.services, &req, ip).await {
        Ok(codes) => {
            let body = html! {
                div.notice role="status" { p { (lang.t("Votre second facteur est enregistré.", "Your second factor is registered.")) } }
                p { (lang.t("Voici vos 10 codes de secours. Ils ne seront plus jamais affichés : imprimez-les ou recopiez-les et gardez-les à l'abri, loin de votre téléphone. Chacun remplace une fois un code de l'application (téléphone oublié ou perdu).",
                            "Here are your 10 recovery codes. They will never be shown again: print or copy them and keep them safe, away from your phone. Each one replaces an app code once (phone forgotten or lost).")) }
                ol.codes #recovery-codes { @for c in &codes.recovery_codes { li { code { (c) } } } }
                p { a href=(format!("/login?next={}", crate::text::percent_encode(&next))) { (lang.t("Se connecter avec le code suivant de l'application", "Sign in with the app's next code")) } }
            };
            no_store(
                axum::http::StatusCode::OK,
                page(
                    lang,
                    None,
                    lang.t("Codes de secours", "Recovery codes"),
                    body,
                ),
            )
        }
        Err(e) => step_error(lang, &headers, &state, &carried, e, |l, h, s, c, m| {
            confirm_step(l, h, s, c, &req.registration_code, None, Some(m))
        }),
    }
}

/// A refused step: the same step again with the message (status and `Retry-After` kept); a
/// wrong password or registration code goes back to the registration code's step.
fn step_error(
    lang: Lang,
    headers: &HeaderMap,
    state: &SharedState,
    carried: &Carried<'_>,
    e: crate::service::ServiceError,
    again: impl FnOnce(Lang, &HeaderMap, &SharedState, &Carried<'_>, String) -> Response,
) -> Response {
    let back_to_start = matches!(
        e.kind(),
        ErrorKind::InvalidCredentials | ErrorKind::InvalidRegistrationCode
    );
    let refusal = Refusal::of(e);
    let message = refusal.message.clone();
    let resp = if back_to_start {
        register_step(
            lang,
            headers,
            state,
            &Carried {
                username: carried.username,
                password: "",
                next: carried.next,
            },
            Some(message),
        )
    } else {
        again(lang, headers, state, carried, message)
    };
    refusal.answer(resp)
}

/// Step 2: the secret as a QR code (inline SVG) and as text, and the first code that confirms
/// it (`reg` is `None` when a wrong first code is typed again: the secret is in the app).
fn confirm_step(
    lang: Lang,
    headers: &HeaderMap,
    state: &SharedState,
    carried: &Carried<'_>,
    registration_code: &str,
    reg: Option<&crate::api::mfa::MfaRegistration>,
    error: Option<String>,
) -> Response {
    let body = html! {
        (error_box(error.as_deref()))
        @if let Some(reg) = reg {
            p { (lang.t("Ouvrez votre application d'authentification, ajoutez un compte et scannez ce QR code :",
                        "Open your authenticator app, add an account and scan this QR code:")) }
            div.qr role="img" aria-label=(lang.t("QR code du secret Sesame", "QR code of the Sesame secret")) {
                (PreEscaped(reg.qr_svg.get(reg.qr_svg.find("<svg").unwrap_or(0)..).unwrap_or("")))
            }
            p { (lang.t("Ou saisissez ce secret à la main :", "Or type this secret by hand:")) " "
                code #mfa-secret { (reg.secret) } }
        }
        form.stack method="post" action="/login/mfa" {
            (csrf_field(headers, state))
            (carried_fields(carried))
            input type="hidden" name="registration_code" value=(registration_code);
            div {
                label for="code" { (lang.t("Premier code affiché par l'application", "First code the app shows")) }
                input #code name="code" type="text" inputmode="numeric" autocomplete="one-time-code" required autofocus;
            }
            div { button type="submit" { (lang.t("Confirmer", "Confirm")) } }
        }
        (lost_phone(lang))
    };
    registration_page(lang, body)
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

/// A step of the factor registration: never cached (it carries the password and the secret).
fn registration_page(lang: Lang, body: Markup) -> Response {
    no_store(
        axum::http::StatusCode::OK,
        page(
            lang,
            None,
            lang.t("Enregistrer un second facteur", "Register a second factor"),
            body,
        ),
    )
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
