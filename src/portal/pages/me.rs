//! "Mon accès": an agent's devices, what each may reach (and why), how to enrol a new laptop.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Form;
use maud::{html, Markup};

use crate::service::access::{self, MyAccess};
use crate::service::mfa::{self, WebAccess};
use crate::service::ErrorKind;
use crate::store::DeviceStatus;

use crate::portal::auth::Role;
use crate::portal::extract::ClientIp;
use crate::portal::state::SharedState;

use super::{page, Lang, PageError, Refusal, Viewer};
use crate::time;

/// A device's status, in words.
pub fn status_text(lang: Lang, s: DeviceStatus) -> &'static str {
    match s {
        DeviceStatus::Active => lang.t("actif", "active"),
        DeviceStatus::Suspended => lang.t("suspendu", "suspended"),
        DeviceStatus::Revoked => lang.t("révoqué", "revoked"),
    }
}

/// What the last `POST /mon-acces/unlock` did, shown above the access section.
enum Outcome {
    Opened { device_id: i64, until: i64 },
    Refused(String),
}

/// `GET /mon-acces`
pub async fn my_access(
    State(state): State<SharedState>,
    viewer: Viewer,
) -> Result<Response, PageError> {
    render(&state, &viewer, None).await
}

#[derive(serde::Deserialize)]
pub struct UnlockForm {
    device: String,
    #[serde(default)]
    code: String,
}

/// `POST /mon-acces/unlock` (CSRF-checked like every form): the second-factor code opens the
/// access window of one of the user's devices (a laptop with a stock WireGuard client).
pub async fn unlock(
    State(state): State<SharedState>,
    viewer: Viewer,
    ClientIp(ip): ClientIp,
    Form(f): Form<UnlockForm>,
) -> Result<Response, PageError> {
    let lang = viewer.lang;
    let session = viewer.require(Role::VpnUser, "/mon-acces")?;
    let Ok(device_id) = f.device.trim().parse::<i64>() else {
        return Err(PageError::NotFound(lang));
    };
    match mfa::unlock_web(&state.services, &session.actor, device_id, &f.code, ip).await {
        Ok(until) => render(&state, &viewer, Some(Outcome::Opened { device_id, until })).await,
        Err(e) if e.kind() == ErrorKind::NotFound => Err(PageError::NotFound(lang)),
        Err(e) => {
            let refusal = Refusal::of(e);
            let resp = render(
                &state,
                &viewer,
                Some(Outcome::Refused(refusal.message.clone())),
            )
            .await?;
            Ok(refusal.answer(resp))
        }
    }
}

async fn render(
    state: &SharedState,
    viewer: &Viewer,
    outcome: Option<Outcome>,
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
    let granted: Vec<String> = grants.iter().map(|g| g.resource.clone()).collect();
    let web = mfa::web_access(&state.services, &session.actor, &granted, &mine)
        .await
        .map_err(|e| PageError::from((lang, e)))?;
    let never = lang.t("jamais", "never");
    let body = html! {
        @if web.needed {
            (access_section(lang, viewer, &web, &mine, outcome.as_ref()))
        }
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
    Ok(page(lang, Some(viewer), lang.t("Mon accès", "My access"), body).into_response())
}

/// "Accès aux applications protégées": each active device's window (open until / closed) and a
/// form asking for the code that opens it.
fn access_section(
    lang: Lang,
    viewer: &Viewer,
    web: &WebAccess,
    devices: &[crate::store::Device],
    outcome: Option<&Outcome>,
) -> Markup {
    let active: Vec<&crate::store::Device> = devices
        .iter()
        .filter(|d| d.status == DeviceStatus::Active)
        .collect();
    html! {
        section #acces-protege aria-labelledby="acces-protege-titre" {
            h2 #acces-protege-titre { (lang.t("Accès aux applications protégées", "Access to protected applications")) }
            @match outcome {
                Some(Outcome::Opened { device_id, until }) => {
                    div.notice role="status" {
                        p { (lang.t("Accès ouvert", "Access open"))
                            @if let Some(d) = devices.iter().find(|d| d.id == *device_id) { " (" (d.name) ")" }
                            " "
                            (lang.t("jusqu'au", "until")) " " strong { (time::format(*until)) } "." }
                    }
                }
                Some(Outcome::Refused(message)) => {
                    div.error role="alert" { p { (message) } }
                }
                None => {}
            }
            p { (lang.t("Ces applications demandent un code de votre application d'authentification :",
                        "These applications need a code of your authenticator app:"))
                " " strong { (web.protected.join(", ")) } ". "
                (lang.t("Le code ouvre l'accès d'un ordinateur pour quelques heures ; l'agent Sesame le demande de lui-même (sesame-agent unlock). Pour un ordinateur avec le client WireGuard standard, saisissez le code ici.",
                        "The code opens a laptop's access for a few hours; the Sesame agent asks for it itself (sesame-agent unlock). For a laptop with the stock WireGuard client, type the code here.")) }
            @if !web.has_factor {
                p.notice {
                    (lang.t("Aucun second facteur n'est enregistré pour votre compte. Avec le code d'enregistrement remis par le service informatique, ",
                            "No second factor is registered for your account. With the registration code IT support handed you, "))
                    a href="/login/mfa" { (lang.t("enregistrez votre application d'authentification", "register your authenticator app")) } "."
                }
            } @else if active.is_empty() {
                p { (lang.t("Aucun appareil actif.", "No active device.")) }
            } @else {
                ul.windows {
                    @for d in &active {
                        li {
                            strong { (d.name) } " — "
                            @if let Some(until) = web.windows.get(&d.id) {
                                span.status-active { (lang.t("accès ouvert jusqu'au", "access open until")) " " (time::format(*until)) }
                            } @else {
                                span { (lang.t("accès fermé", "access closed")) }
                            }
                        }
                    }
                }
                form.stack method="post" action="/mon-acces/unlock" {
                    input type="hidden" name="_csrf" value=(viewer.csrf());
                    div {
                        label for="unlock-device" { (lang.t("Ordinateur", "Laptop")) }
                        select #unlock-device name="device" {
                            @for d in &active {
                                option value=(d.id) { (d.name) " (" (d.hostname) ")" }
                            }
                        }
                    }
                    div {
                        label for="unlock-code" { (lang.t("Code de votre application d'authentification (ou un code de secours)",
                                                          "Code of your authenticator app (or a recovery code)")) }
                        input #unlock-code name="code" type="text" inputmode="numeric" autocomplete="one-time-code" required aria-describedby="unlock-help";
                        p #unlock-help { (lang.t("Code refusé : attendez le code suivant et réessayez. Après 5 codes faux, patientez une minute. Téléphone perdu : appelez le service informatique pour une réinitialisation.",
                                                 "Code refused: wait for the next code and try again. After 5 wrong codes, wait a minute. Phone lost: call IT support for a reset.")) }
                    }
                    div { button type="submit" { (lang.t("Ouvrir l'accès", "Open access")) } }
                }
            }
        }
    }
}
