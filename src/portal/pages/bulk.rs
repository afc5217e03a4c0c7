//! Bulk codes from a CSV upload (all or nothing, errors by line), the whole batch as one
//! printable document (one A4 sheet per agent), and the batches' progress boards.

use axum::extract::multipart::MultipartError;
use axum::extract::{Multipart, Path, State};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};

use crate::service::codes::{self, LineError, Progress};
use crate::service::ErrorKind;

use crate::portal::auth::Role;
use crate::portal::error::ApiError;
use crate::portal::extract::ClientIp;
use crate::portal::security::CSRF_FIELD;
use crate::portal::state::SharedState;

use super::it::sheet;
use super::{page, Lang, PageError, Viewer};
use crate::time;

/// Largest CSV accepted (hundreds of agents fit easily).
pub const UPLOAD_LIMIT: usize = 1024 * 1024;

fn upload_form(viewer: &Viewer, errors: &[LineError], batches: &[crate::store::Batch]) -> Markup {
    let lang = viewer.lang;
    html! {
        p { (lang.t("Fichier CSV avec l'en-tête ", "CSV file with the header ")) code { "user,device" }
            (lang.t(" : une ligne par ordinateur. Si une ligne est fausse, aucun code n'est créé.", ": one row per laptop. If any row is wrong, no code is issued.")) }
        @if !errors.is_empty() {
            div.error role="alert" {
                p { (lang.t("Aucun code créé. Corrigez ces lignes puis recommencez :", "No code issued. Fix these lines and try again:")) }
                ul { @for e in errors {
                    li { (lang.t("ligne", "line")) " " (e.line) " : " (e.message) }
                } }
            }
        }
        // Multipart bodies are not read by the CSRF check: the token rides in the action's query.
        form.stack method="post" action=(format!("/it/bulk?{CSRF_FIELD}={}", viewer.csrf())) enctype="multipart/form-data" {
            div {
                label for="file" { (lang.t("Fichier CSV", "CSV file")) }
                input #file name="file" type="file" accept=".csv,text/csv" required;
            }
            div {
                label for="ttl" { (lang.t("Validité des codes (30 jours au plus)", "Codes valid for (at most 30 days)")) }
                input #ttl name="ttl" type="text" value="7d";
            }
            div { button type="submit" { (lang.t("Créer les codes", "Issue the codes")) } }
        }
        h2 { (lang.t("Lots précédents", "Previous batches")) }
        @if batches.is_empty() { p { (lang.t("Aucun lot.", "No batch yet.")) } }
        ul { @for b in batches {
            li { a href=(format!("/it/batches/{}", b.id)) { (b.label) } " — " (time::format(b.created_at)) " (" (b.created_by) ")" }
        } }
    }
}

/// `GET /it/bulk`
pub async fn form(State(state): State<SharedState>, viewer: Viewer) -> Result<Response, PageError> {
    let lang = viewer.lang;
    let session = viewer.require(Role::ItStaff, "/it/bulk")?;
    let batches = codes::batches(&state.services, &session.actor)
        .await
        .map_err(|e| PageError::from((lang, e)))?;
    let body = upload_form(&viewer, &[], &batches);
    Ok(page(
        lang,
        Some(&viewer),
        lang.t("Codes en nombre", "Bulk codes"),
        body,
    )
    .into_response())
}

/// `POST /it/bulk` (multipart: `file`, `ttl`): issues every code or none; answers the whole
/// batch as one printable document.
pub async fn upload(
    State(state): State<SharedState>,
    viewer: Viewer,
    ClientIp(ip): ClientIp,
    mut form: Multipart,
) -> Result<Response, PageError> {
    let lang = viewer.lang;
    let session = viewer.require(Role::ItStaff, "/it/bulk")?;
    let title = lang.t("Codes en nombre", "Bulk codes");
    let bad = |m: String| PageError::Api(lang, ApiError::BadRequest(m));
    let unreadable = |e: MultipartError| PageError::Api(lang, ApiError::Form(e));
    let (mut text, mut label, mut ttl) = (None, String::from("import.csv"), None);
    while let Some(field) = form.next_field().await.map_err(unreadable)? {
        match field.name() {
            Some("file") => {
                if let Some(name) = field.file_name() {
                    label = name.to_string();
                }
                let bytes = field.bytes().await.map_err(unreadable)?;
                text = Some(String::from_utf8(bytes.to_vec()).map_err(|_| {
                    bad("le fichier doit être en UTF-8 / the file must be UTF-8".into())
                })?);
            }
            Some("ttl") => ttl = Some(field.text().await.map_err(unreadable)?),
            _ => {}
        }
    }
    let text = text.ok_or_else(|| bad("file: choisissez un fichier / choose a file".into()))?;
    let ttl = codes::parse_ttl(ttl.as_deref()).map_err(|e| PageError::from((lang, e)))?;
    let refuse = |errors: Vec<LineError>, batches: Vec<crate::store::Batch>| {
        let body = upload_form(&viewer, &errors, &batches);
        (
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            page(lang, Some(&viewer), title, body),
        )
            .into_response()
    };
    let batches = codes::batches(&state.services, &session.actor)
        .await
        .map_err(|e| PageError::from((lang, e)))?;
    let requests = match codes::parse_csv(&text, ttl) {
        Ok(r) if r.is_empty() => {
            return Ok(refuse(
                vec![LineError {
                    line: 1,
                    message: lang
                        .t(
                            "le fichier ne contient aucune ligne",
                            "the file has no rows",
                        )
                        .into(),
                }],
                batches,
            ))
        }
        Ok(r) => r,
        Err(errors) => return Ok(refuse(errors, batches)),
    };
    let actor = &session.actor;
    let issued = codes::issue_batch(&state.services, actor, &label, &requests, Some(ip)).await;
    let (id, created) = match issued {
        Ok(v) => v,
        // A user the directory refuses: reported on its CSV line (header is line 1).
        Err((i, e)) => {
            if matches!(
                e.kind(),
                ErrorKind::DirectoryUnavailable
                    | ErrorKind::DatabaseUnavailable
                    | ErrorKind::Internal
            ) {
                return Err(PageError::Api(lang, e.into()));
            }
            let e = ApiError::from(e);
            let line = crate::service::codes::csv_line(&text, i);
            return Ok(refuse(
                vec![LineError {
                    line,
                    message: e.message(),
                }],
                batches,
            ));
        }
    };
    let portal = &state.services.config().portal;
    let body = html! {
        div.no-print {
            p.notice role="status" { (created.len()) " " (lang.t("codes créés. Imprimez les fiches (une page par agent) et suivez l'avancement sur le ", "codes issued. Print the sheets (one page per agent) and follow progress on the "))
                a href=(format!("/it/batches/{id}")) { (lang.t("tableau du lot", "batch board")) } "." }
            p { button type="button" data-print hidden { (lang.t("Imprimer toutes les fiches", "Print every sheet")) } }
        }
        @for c in &created { (sheet(lang, &portal.public_url, &portal.helpdesk, c)) }
    };
    Ok(page(lang, Some(&viewer), title, body).into_response())
}

fn progress_text(lang: Lang, p: Progress) -> &'static str {
    match p {
        Progress::Used => lang.t("enrôlé", "enrolled"),
        Progress::Expired => lang.t("code expiré", "code expired"),
        Progress::Pending => lang.t("pas encore enrôlé", "not enrolled yet"),
    }
}

/// `GET /it/batches/{id}`: issued, used, expired, who has not enrolled yet.
pub async fn board(
    State(state): State<SharedState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let lang = viewer.lang;
    let session = viewer.require(Role::ItStaff, "/it/bulk")?;
    let id: i64 = id.parse().map_err(|_| PageError::NotFound(lang))?;
    let b = codes::board(&state.services, &session.actor, id)
        .await
        .map_err(|e| PageError::from((lang, e)))?;
    let body = html! {
        p { (b.batch.label) " — " (time::format(b.batch.created_at)) " (" (b.batch.created_by) ")" }
        dl.summary {
            dt { (lang.t("Codes émis", "Codes issued")) } dd #issued { (b.rows.len()) }
            dt { (lang.t("Utilisés", "Used")) } dd #used { (b.count(Progress::Used)) }
            dt { (lang.t("Expirés", "Expired")) } dd #expired { (b.count(Progress::Expired)) }
            dt { (lang.t("Pas encore enrôlés", "Not enrolled yet")) } dd #pending { (b.count(Progress::Pending)) }
        }
        div.table-wrap tabindex="0" role="region" aria-label=(lang.t("Tableau défilant", "Scrollable table")) {
            table {
                thead { tr {
                    th scope="col" { (lang.t("Agent", "Agent")) }
                    th scope="col" { (lang.t("Appareil", "Device")) }
                    th scope="col" { (lang.t("Expire le", "Expires")) }
                    th scope="col" { (lang.t("Avancement", "Progress")) }
                } }
                tbody { @for (c, p) in &b.rows { tr {
                    td { (c.username) }
                    td { (c.device_name) }
                    td { (time::format(c.expires_at)) }
                    td { (progress_text(lang, *p)) }
                } } }
            }
        }
    };
    Ok(page(
        lang,
        Some(&viewer),
        lang.t("Avancement du lot", "Batch progress"),
        body,
    )
    .into_response())
}
