//! Web pages (server-rendered with maud): layout, language, page errors, static assets, routes.

pub mod audit;
pub mod audit_views;
pub mod bulk;
pub mod dashboard;
pub mod it;
pub mod login;
pub mod me;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{html, Markup, DOCTYPE};

use crate::service::{ErrorKind, ServiceError};

use super::auth::{Role, Session};
use super::error::ApiError;
use super::routes::RouteEntry;
use super::session::csrf_token;
use super::state::SharedState;
use axum::http::Method;

/// The language of a page: French unless `?lang=en` or the browser prefers English.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Fr,
    En,
}

impl Lang {
    /// `?lang=` first, then the first French or English tag of `Accept-Language`.
    pub fn negotiate(query: Option<&str>, accept_language: Option<&str>) -> Lang {
        match query {
            Some("en") => return Lang::En,
            Some("fr") => return Lang::Fr,
            _ => {}
        }
        for tag in accept_language.unwrap_or("").split(',') {
            let tag = tag
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if tag.starts_with("fr") {
                return Lang::Fr;
            }
            if tag.starts_with("en") {
                return Lang::En;
            }
        }
        Lang::Fr
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::Fr => "fr",
            Lang::En => "en",
        }
    }

    /// Picks the sentence of this language.
    pub fn t(self, fr: &'static str, en: &'static str) -> &'static str {
        match self {
            Lang::Fr => fr,
            Lang::En => en,
        }
    }
}

#[derive(serde::Deserialize)]
struct LangQuery {
    lang: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Lang {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let q = Query::<LangQuery>::from_request_parts(parts, state)
            .await
            .ok()
            .and_then(|Query(q)| q.lang);
        let accept = parts
            .headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok());
        Ok(Lang::negotiate(q.as_deref(), accept))
    }
}

/// Who is viewing a page (if signed in), in which language.
pub struct Viewer {
    pub session: Option<Session>,
    pub lang: Lang,
}

impl Viewer {
    /// The session holding `role`: else the login page (not signed in) or the 403 page.
    pub fn require(&self, role: Role, path: &str) -> Result<&Session, PageError> {
        let Some(s) = &self.session else {
            return Err(PageError::SignIn(path.to_string()));
        };
        if s.has(role) {
            Ok(s)
        } else {
            Err(PageError::Forbidden(self.lang))
        }
    }

    /// The CSRF token forms of this viewer carry.
    pub fn csrf(&self) -> String {
        self.session
            .as_ref()
            .map(|s| csrf_token(&s.id))
            .unwrap_or_default()
    }
}

impl FromRequestParts<SharedState> for Viewer {
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let Ok(lang) = Lang::from_request_parts(parts, state).await;
        let session = match Session::from_request_parts(parts, state).await {
            Ok(s) => Some(s),
            Err(ApiError::Service(ServiceError::Unauthenticated)) => None,
            Err(e) => return Err(PageError::Api(lang, e)),
        };
        Ok(Viewer { session, lang })
    }
}

/// Why a page is not shown; each renders as a page (never a blank one).
#[derive(Debug)]
pub enum PageError {
    /// Not signed in: to the login page, back here afterwards.
    SignIn(String),
    Forbidden(Lang),
    NotFound(Lang),
    Api(Lang, ApiError),
}

impl From<(Lang, ServiceError)> for PageError {
    fn from((lang, e): (Lang, ServiceError)) -> Self {
        match e.kind() {
            ErrorKind::Forbidden => PageError::Forbidden(lang),
            ErrorKind::NotFound => PageError::NotFound(lang),
            _ => PageError::Api(lang, e.into()),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::SignIn(next) => {
                Redirect::to(&format!("/login?next={}", crate::text::percent_encode(&next))).into_response()
            }
            PageError::Forbidden(lang) => (
                StatusCode::FORBIDDEN,
                page(
                    lang,
                    None,
                    lang.t("Accès refusé", "Access denied"),
                    html! {
                        p { (lang.t("Votre compte n'a pas accès à cette page. Si vous en avez besoin, demandez-le au service informatique.",
                                    "Your account may not open this page. If you need it, ask IT support.")) }
                        p { a href="/" { (lang.t("Retour à l'accueil", "Back to the home page")) } }
                    },
                ),
            )
                .into_response(),
            PageError::NotFound(lang) => (
                StatusCode::NOT_FOUND,
                page(
                    lang,
                    None,
                    lang.t("Page introuvable", "Page not found"),
                    html! { p { a href="/" { (lang.t("Retour à l'accueil", "Back to the home page")) } } },
                ),
            )
                .into_response(),
            PageError::Api(lang, e) => {
                let status = e.status();
                let mut resp = (
                    status,
                    page(
                        lang,
                        None,
                        lang.t("Opération impossible", "Cannot do this"),
                        html! { div.error role="alert" { p { (e.message()) } } },
                    ),
                )
                    .into_response();
                resp.extensions_mut()
                    .insert(super::error::ErrorCause(e.to_string()));
                resp
            }
        }
    }
}

/// The whole HTML document around `body`: skip link, navigation by role, language switch,
/// logout, one stylesheet and one script from this server.
pub fn page(
    lang: Lang,
    viewer: Option<&Viewer>,
    title: &str,
    body: Markup,
) -> axum::response::Html<String> {
    let session = viewer.and_then(|v| v.session.as_ref());
    let other = match lang {
        Lang::Fr => ("?lang=en", "English", "en"),
        Lang::En => ("?lang=fr", "Français", "fr"),
    };
    let doc = html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — Sesame" }
                link rel="stylesheet" href="/static/sesame.css";
                script src="/static/sesame.js" defer {}
            }
            body {
                a.skip href="#main" { (lang.t("Aller au contenu", "Skip to content")) }
                header {
                    div.bar {
                        a.brand href="/" { "Sesame" }
                        nav aria-label=(lang.t("Navigation principale", "Main navigation")) {
                            ul {
                                @if let Some(s) = session {
                                    @if s.has(Role::VpnUser) {
                                        li { a href="/mon-acces" { (lang.t("Mon accès", "My access")) } }
                                    }
                                    @if s.has(Role::ItStaff) {
                                        li { a href="/it/dashboard" { (lang.t("Tableau de bord", "Dashboard")) } }
                                        li { a href="/it/devices" { (lang.t("Appareils", "Devices")) } }
                                        li { a href="/it/codes" { (lang.t("Codes d'enrôlement", "Enrolment codes")) } }
                                        li { a href="/it/bulk" { (lang.t("Codes en nombre", "Bulk codes")) } }
                                    }
                                    @if s.has(Role::Auditor) {
                                        li { a href="/audit/log" { (lang.t("Journal d'audit", "Audit log")) } }
                                        li { a href="/audit/flows" { (lang.t("Flux par ressource", "Flows per resource")) } }
                                        li { a href="/audit/access-review" { (lang.t("Revue des accès", "Access review")) } }
                                    }
                                }
                                li { a href=(other.0) hreflang=(other.2) lang=(other.2) { (other.1) } }
                                @if let Some(v) = viewer.filter(|v| v.session.is_some()) {
                                    li {
                                        form method="post" action="/logout" {
                                            input type="hidden" name="_csrf" value=(v.csrf());
                                            button.link type="submit" { (lang.t("Se déconnecter", "Sign out")) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
                footer { (lang.t("Sesame — accès à distance aux applications de l'académie.", "Sesame — remote access to the académie's applications.")) }
            }
        }
    };
    axum::response::Html(doc.into_string())
}

async fn stylesheet() -> Response {
    static_asset(
        "text/css; charset=utf-8",
        include_str!("../assets/sesame.css"),
    )
}

async fn script() -> Response {
    static_asset(
        "text/javascript; charset=utf-8",
        include_str!("../assets/sesame.js"),
    )
}

fn static_asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// `/`: each person's home.
async fn home(viewer: Viewer) -> Response {
    let target = match &viewer.session {
        None => "/login",
        Some(s) if s.has(Role::ItStaff) => "/it/devices",
        Some(s) if s.has(Role::Auditor) => "/audit/log",
        Some(_) => "/mon-acces",
    };
    Redirect::to(target).into_response()
}

/// A refused request as a page shows it: the API error's status and message (French first),
/// and its `Retry-After` when there is one (429). One rule for every page that re-renders a
/// form with the refusal.
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
    retry_after: Option<axum::http::HeaderValue>,
}

impl Refusal {
    pub fn of(e: ServiceError) -> Refusal {
        let e = ApiError::from(e);
        let status = e.status();
        let message = e.message();
        let retry_after = e
            .into_response()
            .headers()
            .get(header::RETRY_AFTER)
            .cloned();
        Refusal {
            status,
            message,
            retry_after,
        }
    }

    /// `resp` (the page showing [`Refusal::message`]) answered with this status and Retry-After.
    pub fn answer(&self, mut resp: Response) -> Response {
        *resp.status_mut() = self.status;
        if let Some(v) = &self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, v.clone());
        }
        resp
    }
}

/// The `Accept-Language`-free language of a request (tests, redirects).
pub fn lang_of(headers: &HeaderMap) -> Lang {
    Lang::negotiate(
        None,
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    )
}

/// The page routes (merged into `routes::routes()`).
pub fn routes() -> Vec<RouteEntry> {
    vec![
        (Method::GET, "/", get(home)),
        (Method::GET, "/static/sesame.css", get(stylesheet)),
        (Method::GET, "/static/sesame.js", get(script)),
        (Method::GET, "/login", get(login::form)),
        (Method::POST, "/login", post(login::submit)),
        (Method::GET, "/login/mfa", get(login::register_form)),
        (Method::POST, "/login/mfa", post(login::register_submit)),
        (Method::POST, "/logout", post(login::logout)),
        (Method::GET, "/mon-acces", get(me::my_access)),
        (Method::POST, "/mon-acces/unlock", post(me::unlock)),
        (Method::GET, "/it/codes", get(it::code_form)),
        (Method::POST, "/it/codes", post(it::create_code)),
        (Method::GET, "/it/dashboard", get(dashboard::dashboard)),
        (Method::GET, "/it/bulk", get(bulk::form)),
        (
            Method::POST,
            "/it/bulk",
            post(bulk::upload).layer(axum::extract::DefaultBodyLimit::max(bulk::UPLOAD_LIMIT)),
        ),
        (Method::GET, "/it/batches/{id}", get(bulk::board)),
        (Method::GET, "/it/devices", get(it::devices)),
        (Method::GET, "/it/devices/{id}/revoke", get(it::revoke_form)),
        (Method::POST, "/it/devices/{id}/revoke", post(it::revoke)),
        (Method::GET, "/it/users/{username}", get(it::user)),
        (
            Method::POST,
            "/it/users/{username}/mfa-reset",
            post(it::mfa_reset),
        ),
        (Method::GET, "/audit/log", get(audit::log)),
        (Method::GET, "/audit/flows", get(audit_views::flows)),
        (
            Method::GET,
            "/audit/access-review",
            get(audit_views::access_review),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn french_first_english_on_request() {
        assert_eq!(Lang::negotiate(None, None), Lang::Fr);
        assert_eq!(Lang::negotiate(None, Some("en-GB,en;q=0.9")), Lang::En);
        assert_eq!(
            Lang::negotiate(None, Some("de,fr;q=0.8,en;q=0.5")),
            Lang::Fr
        );
        assert_eq!(Lang::negotiate(Some("en"), Some("fr")), Lang::En);
        assert_eq!(Lang::negotiate(Some("fr"), Some("en")), Lang::Fr);
        assert_eq!(Lang::negotiate(Some("xx"), Some("de")), Lang::Fr);
    }
}
