//! IT staff pages: a code for one agent (with its printable sheet), devices with search,
//! filters and revocation (confirmation and reason), a user's groups and effective access.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};

use crate::service::access::{self, UserView};
use crate::service::codes;
use crate::service::devices::{self, DeviceFilter};
use crate::service::mfa;
use crate::store::{CreatedCode, Device, DeviceStatus};

use crate::portal::auth::Role;
use crate::portal::extract::ClientIp;
use crate::portal::state::SharedState;

use super::me::status_text;
use super::{page, Lang, PageError, Viewer};
use crate::text::percent_encode;
use crate::time;

#[derive(serde::Deserialize)]
pub struct CodeForm {
    username: String,
    device_name: String,
    #[serde(default)]
    ttl: Option<String>,
}

fn code_form_markup(viewer: &Viewer, error: Option<String>) -> Markup {
    let lang = viewer.lang;
    html! {
        @if let Some(e) = &error { div.error role="alert" { p { (e) } } }
        form.stack method="post" action="/it/codes" {
            input type="hidden" name="_csrf" value=(viewer.csrf());
            div {
                label for="username" { (lang.t("Identifiant de l'agent", "Agent's username")) }
                input #username name="username" type="text" required autocomplete="off";
            }
            div {
                label for="device_name" { (lang.t("Nom de l'appareil", "Device name")) }
                input #device_name name="device_name" type="text" required maxlength="128";
            }
            div {
                label for="ttl" { (lang.t("Validité (ex. 72h, 7d ; 30 jours au plus)", "Valid for (e.g. 72h, 7d; at most 30 days)")) }
                input #ttl name="ttl" type="text" value="72h";
            }
            div { button type="submit" { (lang.t("Créer le code", "Create the code")) } }
        }
    }
}

/// `GET /it/codes`
pub async fn code_form(viewer: Viewer) -> Result<Response, PageError> {
    let lang = viewer.lang;
    viewer.require(Role::ItStaff, "/it/codes")?;
    let body = code_form_markup(&viewer, None);
    Ok(page(
        lang,
        Some(&viewer),
        lang.t("Code d'enrôlement", "Enrolment code"),
        body,
    )
    .into_response())
}

/// One printable A4 sheet for an agent: code, expiry, the three commands, helpdesk.
pub fn sheet(lang: Lang, public_url: &str, helpdesk: &str, c: &CreatedCode) -> Markup {
    html! {
        section.sheet aria-label=(format!("{} {}", lang.t("Fiche de", "Sheet for"), c.username)) {
            h2 { (lang.t("Accès à distance Sesame", "Sesame remote access")) " — " (c.username) }
            p { (lang.t("Appareil", "Device")) " : " strong { (c.device_name) } }
            p { (lang.t("Code d'enrôlement (usage unique)", "Enrolment code (single use)")) " :" }
            p.code { (c.code) }
            p { (lang.t("Valable jusqu'au", "Valid until")) " " strong { (time::format(c.expires_at)) } }
            ol {
                li { (lang.t("Enrôler l'ordinateur :", "Enrol the laptop:"))
                     pre.cmd { "sesame-agent enrol --portal " (public_url) " --code " (c.code) " --user " (c.username) } }
                li { (lang.t("Se connecter :", "Connect:")) pre.cmd { "sesame-agent up" } }
                li { (lang.t("Vérifier la connexion :", "Check the connection:")) pre.cmd { "sesame-agent status" } }
            }
            p.muted {
                @if helpdesk.is_empty() {
                    (lang.t("En cas de difficulté, contactez le service informatique.", "If anything goes wrong, contact IT support."))
                } @else { (helpdesk) }
            }
        }
    }
}

/// `POST /it/codes`: creates the code (the same service as the API) and shows its sheet.
pub async fn create_code(
    State(state): State<SharedState>,
    viewer: Viewer,
    ClientIp(ip): ClientIp,
    Form(f): Form<CodeForm>,
) -> Result<Response, PageError> {
    let lang = viewer.lang;
    let session = viewer.require(Role::ItStaff, "/it/codes")?;
    let title = lang.t("Code d'enrôlement", "Enrolment code");
    let issued = codes::issue_one(
        &state.services,
        &session.actor,
        &f.username,
        &f.device_name,
        f.ttl.as_deref(),
        Some(ip),
    )
    .await
    .map(|c| vec![c]);
    match issued {
        Ok(created) => {
            let portal = &state.services.config().portal;
            let body = html! {
                p.notice.no-print role="status" { (lang.t("Code créé. Imprimez la fiche et remettez-la à l'agent.", "Code created. Print the sheet and hand it to the agent.")) }
                p.no-print { button type="button" data-print hidden { (lang.t("Imprimer", "Print")) } }
                @for c in &created { (sheet(lang, &portal.public_url, &portal.helpdesk, c)) }
            };
            Ok(page(lang, Some(&viewer), title, body).into_response())
        }
        Err(e) => {
            let e = crate::portal::error::ApiError::from(e);
            let body = code_form_markup(&viewer, Some(e.message()));
            Ok((e.status(), page(lang, Some(&viewer), title, body)).into_response())
        }
    }
}

#[derive(serde::Deserialize, Default)]
pub struct DeviceQuery {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    status: Option<String>,
    /// The previous page's last device id.
    #[serde(default)]
    after: Option<String>,
}

/// The devices of one page, each with a link to its user and to its revocation.
fn devices_table(lang: Lang, list: &[Device]) -> Markup {
    html! {
    div.table-wrap tabindex="0" role="region" aria-label=(lang.t("Tableau défilant", "Scrollable table")) {
        table {
            thead { tr {
                th scope="col" { (lang.t("Agent", "Agent")) }
                th scope="col" { (lang.t("Appareil", "Device")) }
                th scope="col" { (lang.t("Adresse VPN", "VPN address")) }
                th scope="col" { (lang.t("Enrôlé le", "Enrolled on")) }
                th scope="col" { (lang.t("État", "Status")) }
                th scope="col" { (lang.t("Action", "Action")) }
            } }
            tbody {
                @for d in list {
                    tr {
                        td { a href=(format!("/it/users/{}", percent_encode(&d.username))) { (d.username) } }
                        td { (d.name) br; span.muted { (d.hostname) } }
                        td { (d.tunnel_address.to_string()) }
                        td { (time::format(d.created_at)) }
                        td class=(format!("status-{}", d.status.as_str())) {
                            (status_text(lang, d.status))
                            @if let Some(r) = &d.revoke_reason { br; span.muted { (r) } }
                        }
                        td {
                            @if d.status != DeviceStatus::Revoked {
                                a href=(format!("/it/devices/{}/revoke", d.id)) { (lang.t("Révoquer", "Revoke")) span.skip { " " (d.name) } }
                            }
                        }
                    }
                }
            }
        }
    }
    }
}

/// `GET /it/devices?q=&status=&after=`: one page of [`devices::PAGE_SIZE`] devices.
pub async fn devices(
    State(state): State<SharedState>,
    viewer: Viewer,
    Query(q): Query<DeviceQuery>,
) -> Result<Response, PageError> {
    let lang = viewer.lang;
    let session = viewer.require(Role::ItStaff, "/it/devices")?;
    let status = q.status.as_deref().and_then(DeviceStatus::parse);
    let filter = DeviceFilter {
        user: None,
        status,
        query: q.q.clone(),
    };
    let after = q
        .after
        .as_deref()
        .and_then(|a| a.trim().parse::<i64>().ok());
    let found = devices::list_page(
        &state.services,
        &session.actor,
        &filter,
        after,
        Some(devices::PAGE_SIZE),
    )
    .await
    .map_err(|e| PageError::from((lang, e)))?;
    let list = &found.devices;
    let mut keep = String::new();
    for (k, v) in [("q", &q.q), ("status", &q.status)] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            keep.push_str(&format!("&{k}={}", percent_encode(v)));
        }
    }
    if lang == Lang::En {
        keep.push_str("&lang=en");
    }
    let selected = |s: &str| q.status.as_deref() == Some(s);
    let body = html! {
        @if session.actor.is_delegated() {
            p.notice { (lang.t("Administration déléguée : seuls les agents de votre périmètre apparaissent.", "Delegated administration: only the agents in your scope are shown.")) }
        }
        form.inline method="get" action="/it/devices" role="search" {
            div {
                label for="q" { (lang.t("Rechercher (agent, nom, poste, adresse)", "Search (agent, name, host, address)")) }
                input #q name="q" type="search" value=(q.q.clone().unwrap_or_default());
            }
            div {
                label for="status" { (lang.t("État", "Status")) }
                select #status name="status" {
                    option value="" { (lang.t("tous", "all")) }
                    option value="active" selected[selected("active")] { (lang.t("actifs", "active")) }
                    option value="suspended" selected[selected("suspended")] { (lang.t("suspendus", "suspended")) }
                    option value="revoked" selected[selected("revoked")] { (lang.t("révoqués", "revoked")) }
                }
            }
            @if lang == Lang::En { input type="hidden" name="lang" value="en"; }
            div { button type="submit" { (lang.t("Filtrer", "Filter")) } }
        }
        p role="status" {
            (list.len()) " " (lang.t("appareil(s)", "device(s)"))
            @if after.is_some() || found.next_after.is_some() {
                " " (lang.t("sur cette page", "on this page"))
            }
        }
        (devices_table(lang, list))
        @if after.is_some() || found.next_after.is_some() {
            nav.no-print aria-label=(lang.t("Pages", "Pages")) {
                ul.pager {
                    @if after.is_some() {
                        li { a href=(format!("/it/devices?{}", keep.trim_start_matches('&'))) { (lang.t("Première page", "First page")) } }
                    }
                    @if let Some(next) = found.next_after {
                        li { a rel="next" href=(format!("/it/devices?after={next}{keep}")) { (lang.t("Page suivante", "Next page")) } }
                    }
                }
            }
        }
    };
    Ok(page(lang, Some(&viewer), lang.t("Appareils", "Devices"), body).into_response())
}

/// `GET /it/devices/{id}/revoke`: asks for confirmation and a reason.
pub async fn revoke_form(
    State(state): State<SharedState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let lang = viewer.lang;
    let path = format!("/it/devices/{id}/revoke");
    let session = viewer.require(Role::ItStaff, &path)?;
    let id: i64 = id.parse().map_err(|_| PageError::NotFound(lang))?;
    let d = devices::get(&state.services, &session.actor, id)
        .await
        .map_err(|e| PageError::from((lang, e)))?;
    let body = html! {
        p { (lang.t("L'appareil perdra immédiatement l'accès au VPN. Cette action est définitive : l'agent devra enrôler à nouveau.",
                    "The device loses VPN access at once. This cannot be undone: the agent will have to enrol again.")) }
        dl {
            dt { (lang.t("Agent", "Agent")) } dd { (d.username) }
            dt { (lang.t("Appareil", "Device")) } dd { (d.name) " (" (d.hostname) ")" }
            dt { (lang.t("Adresse VPN", "VPN address")) } dd { (d.tunnel_address.to_string()) }
        }
        form.stack method="post" action=(path) {
            input type="hidden" name="_csrf" value=(viewer.csrf());
            div {
                label for="reason" { (lang.t("Motif (obligatoire, conservé dans le journal d'audit)", "Reason (required, kept in the audit log)")) }
                textarea #reason name="reason" required maxlength="500" rows="3" {}
            }
            div {
                button.danger type="submit" { (lang.t("Confirmer la révocation", "Confirm the revocation")) }
                " "
                a href="/it/devices" { (lang.t("Annuler", "Cancel")) }
            }
        }
    };
    Ok(page(
        lang,
        Some(&viewer),
        lang.t("Révoquer un appareil", "Revoke a device"),
        body,
    )
    .into_response())
}

#[derive(serde::Deserialize)]
pub struct RevokeForm {
    reason: String,
}

/// `POST /it/devices/{id}/revoke`
pub async fn revoke(
    State(state): State<SharedState>,
    viewer: Viewer,
    ClientIp(ip): ClientIp,
    Path(id): Path<String>,
    Form(f): Form<RevokeForm>,
) -> Result<Response, PageError> {
    let lang = viewer.lang;
    let session = viewer.require(Role::ItStaff, "/it/devices")?;
    let id: i64 = id.parse().map_err(|_| PageError::NotFound(lang))?;
    if f.reason.trim().is_empty() {
        return Err(PageError::Api(
            lang,
            crate::portal::error::ApiError::BadRequest(
                "reason: indiquez un motif / give a reason".into(),
            ),
        ));
    }
    devices::revoke(&state.services, &session.actor, id, &f.reason, Some(ip))
        .await
        .map_err(|e| PageError::from((lang, e)))?;
    Ok(Redirect::to("/it/devices").into_response())
}

/// `GET /it/users/{username}`: groups, and which group grants which resource.
pub async fn user(
    State(state): State<SharedState>,
    viewer: Viewer,
    Path(username): Path<String>,
) -> Result<Response, PageError> {
    let lang = viewer.lang;
    let session = viewer.require(Role::ItStaff, "/it/devices")?;
    let UserView {
        user,
        roles,
        grants,
        devices: owned,
    } = access::user_view(&state.services, &session.actor, &username)
        .await
        .map_err(|e| PageError::from((lang, e)))?;
    let mfa_on = state.services.config().mfa.is_some();
    let factor = mfa::factor_of(&state.services, &session.actor, &user.username)
        .await
        .map_err(|e| PageError::from((lang, e)))?;
    let reset_path = format!("/it/users/{}/mfa-reset", user.username);
    let body = html! {
        p { strong { (user.display_name) } " (" (user.username) ")"
            @if user.disabled { " — " span.status-revoked { (lang.t("compte désactivé", "account disabled")) } } }
        p { (lang.t("Rôles", "Roles")) " : "
            @if roles.is_empty() { (lang.t("aucun", "none")) } @else { (roles.names().join(", ")) } }
        h2 { (lang.t("Groupes de l'annuaire", "Directory groups")) }
        ul { @for g in &user.groups { li { (g) } } }
        h2 { (lang.t("Accès effectif", "Effective access")) }
        @if grants.is_empty() {
            p { (lang.t("Aucune ressource : aucun groupe de cet agent n'a d'autorisation.", "No resource: none of this agent's groups has a grant.")) }
        } @else {
            table {
                thead { tr {
                    th scope="col" { (lang.t("Ressource", "Resource")) }
                    th scope="col" { (lang.t("Accordée par le groupe", "Granted by the group")) }
                } }
                tbody { @for g in &grants { tr {
                    td { strong { (g.resource) } @if !g.description.is_empty() { br; span.muted { (g.description) } } }
                    td { (g.via_groups.join(", ")) }
                } } }
            }
        }
        h2 { (lang.t("Appareils", "Devices")) }
        ul { @for d in &owned { li { (d.name) " — " (status_text(lang, d.status)) } } }
        @if owned.is_empty() { p { (lang.t("Aucun appareil.", "No device.")) } }
        @if mfa_on {
            h2 { (lang.t("Second facteur", "Second factor")) }
            @match &factor {
                Some(f) => p { (f.kind) " — " (lang.t("enregistré le", "registered on")) " "
                    (f.registered_at.map(crate::time::format).unwrap_or_default()) ", "
                    (lang.t("dernier usage", "last used")) " "
                    (f.last_used_at.map(crate::time::format).unwrap_or_default()) },
                None => p { (lang.t("Aucun facteur enregistré.", "No factor registered.")) },
            }
            form method="post" action=(reset_path) {
                input type="hidden" name="_csrf" value=(viewer.csrf());
                button.danger type="submit" { (lang.t("Réinitialiser le second facteur", "Reset the second factor")) }
            }
        }
    };
    let mut resp = page(lang, Some(&viewer), lang.t("Agent", "Agent"), body).into_response();
    *resp.status_mut() = StatusCode::OK;
    Ok(resp)
}

/// `POST /it/users/{username}/mfa-reset` (phone lost): the factor goes, open windows close, and
/// the one-time registration code is shown once, to hand over in person.
pub async fn mfa_reset(
    State(state): State<SharedState>,
    viewer: Viewer,
    ClientIp(ip): ClientIp,
    Path(username): Path<String>,
) -> Result<Response, PageError> {
    let lang = viewer.lang;
    let session = viewer.require(Role::ItStaff, "/it/devices")?;
    let code = mfa::reset(&state.services, &session.actor, &username, Some(ip))
        .await
        .map_err(|e| PageError::from((lang, e)))?;
    let body = html! {
        p { (lang.t("Le second facteur est supprimé et les accès ouverts sont fermés. Remettez ce code d'enregistrement en main propre ; il sert une fois, pendant 7 jours, avec le mot de passe de la personne :",
                    "The second factor is removed and open access windows are closed. Hand this registration code over in person; it works once, for 7 days, with the person's password:")) }
        p.code { strong { (code) } }
        p { a href=(format!("/it/users/{username}")) { (lang.t("Retour à la fiche", "Back to the user page")) } }
    };
    Ok(page(
        lang,
        Some(&viewer),
        lang.t("Second facteur réinitialisé", "Second factor reset"),
        body,
    )
    .into_response())
}
