//! "Mon accès": an agent's devices, what each may reach (and why), how to enrol a new laptop.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::html;

use crate::service::access::{self, MyAccess};
use crate::store::DeviceStatus;

use crate::portal::auth::Role;
use crate::portal::state::SharedState;

use super::{page, Lang, PageError, Viewer};
use crate::time;

/// A device's status, in words.
pub fn status_text(lang: Lang, s: DeviceStatus) -> &'static str {
    match s {
        DeviceStatus::Active => lang.t("actif", "active"),
        DeviceStatus::Suspended => lang.t("suspendu", "suspended"),
        DeviceStatus::Revoked => lang.t("révoqué", "revoked"),
    }
}

/// `GET /mon-acces`
pub async fn my_access(
    State(state): State<SharedState>,
    viewer: Viewer,
) -> Result<Response, PageError> {
    let lang = viewer.lang;
    let session = viewer.require(Role::VpnUser, "/mon-acces")?;
    let MyAccess {
        devices: mine,
        last_connected: last,
        grants,
    } = access::mine(&state.services, &session.actor)
        .await
        .map_err(|e| PageError::from((lang, e)))?;
    let never = lang.t("jamais", "never");
    let body = html! {
        h2 { (lang.t("Mes appareils", "My devices")) }
        @if mine.is_empty() {
            p.notice { (lang.t("Aucun appareil enrôlé pour l'instant.", "No device enrolled yet.")) }
        } @else {
            div.table-wrap tabindex="0" role="region" aria-label=(lang.t("Tableau défilant", "Scrollable table")) {
                table {
                    caption.muted { (lang.t("Vos ordinateurs enrôlés et leur état", "Your enrolled laptops and their status")) }
                    thead { tr {
                        th scope="col" { (lang.t("Nom", "Name")) }
                        th scope="col" { (lang.t("Enrôlé le", "Enrolled on")) }
                        th scope="col" { (lang.t("Dernière connexion", "Last connection")) }
                        th scope="col" { (lang.t("Clé valable jusqu'au", "Key valid until")) }
                        th scope="col" { (lang.t("État", "Status")) }
                        th scope="col" { (lang.t("Peut joindre", "May reach")) }
                    } }
                    tbody {
                        @for d in &mine {
                            tr {
                                td { (d.name) br; span.muted { (d.hostname) } }
                                td { (time::format(d.created_at)) }
                                td { (last.get(&d.id).map(|t| time::format(*t)).unwrap_or_else(|| never.to_string())) }
                                td { (d.expires_at.map(time::format).unwrap_or_else(|| "—".into())) }
                                td class=(format!("status-{}", d.status.as_str())) { (status_text(lang, d.status)) }
                                td {
                                    @if d.status == DeviceStatus::Revoked {
                                        (lang.t("rien (appareil révoqué)", "nothing (device revoked)"))
                                    } @else if grants.is_empty() {
                                        (lang.t("rien", "nothing"))
                                    } @else {
                                        (grants.iter().map(|g| g.resource.as_str()).collect::<Vec<_>>().join(", "))
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { (lang.t("Ce que mon compte permet de joindre", "What my account may reach")) }
        @if grants.is_empty() {
            p { (lang.t("Aucune application : aucun de vos groupes n'en donne l'accès.", "No application: none of your groups grants one.")) }
        } @else {
            ul {
                @for g in &grants {
                    li {
                        strong { (g.resource) }
                        @if !g.description.is_empty() { " — " (g.description) }
                        br;
                        span.muted { (lang.t("par le groupe", "through the group")) " " (g.via_groups.join(", ")) }
                    }
                }
            }
        }
        h2 { (lang.t("Enrôler un nouvel ordinateur", "Enrolling a new laptop")) }
        ol {
            li { (lang.t("Demandez un code d'enrôlement au service informatique (il est à usage unique et expire).",
                         "Ask IT support for an enrolment code (single use, it expires).")) }
            li { (lang.t("Sur l'ordinateur, installez l'agent Sesame puis lancez :", "On the laptop, install the Sesame agent, then run:"))
                 pre.cmd { "sesame-agent enrol --portal " (state.services.config().portal.public_url) " --code CODE --user " (session.username) } }
            li { (lang.t("Saisissez votre mot de passe, puis connectez-vous :", "Type your password, then connect:"))
                 pre.cmd { "sesame-agent up" } }
        }
    };
    Ok(page(lang, Some(&viewer), lang.t("Mon accès", "My access"), body).into_response())
}
