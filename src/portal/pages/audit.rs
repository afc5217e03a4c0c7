//! Auditor pages (read-only): the log with filters, links to the exports, the chain status.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::html;

use crate::portal::extract::ClientIp;
use crate::service::audit as audit_service;
use crate::store::{parse_rfc3339, AuditFilter, AuditVerification};

use crate::portal::auth::Role;
use crate::portal::state::SharedState;

use super::{encode_component, page, when, PageError, Viewer};

#[derive(serde::Deserialize, Default)]
pub struct LogQuery {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
}

fn non_empty(s: &Option<String>) -> Option<String> {
    s.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// `GET /audit/log?user=&action=&since=&until=`
pub async fn log(
    State(state): State<SharedState>,
    viewer: Viewer,
    ClientIp(ip): ClientIp,
    Query(q): Query<LogQuery>,
) -> Result<Response, PageError> {
    let lang = viewer.lang;
    let session = viewer.require(Role::Auditor, "/audit/log")?;
    let filter = AuditFilter {
        user: non_empty(&q.user),
        action: non_empty(&q.action),
        since: non_empty(&q.since).and_then(|s| parse_rfc3339(&s)),
        until: non_empty(&q.until).and_then(|s| parse_rfc3339(&s)),
        limit: Some(audit_service::PAGE_SIZE),
        ..Default::default()
    };
    let events = audit_service::events(&state.store, &session.actor, Some(ip), &filter)
        .await
        .map_err(|e| PageError::from((lang, e)))?;
    let chain = audit_service::verify(&state.store, &session.actor)
        .await
        .map_err(|e| PageError::from((lang, e)))?;
    let mut export = String::new();
    for (k, v) in [
        ("user", &filter.user),
        ("action", &filter.action),
        ("since", &non_empty(&q.since)),
        ("until", &non_empty(&q.until)),
    ] {
        if let Some(v) = v {
            export.push_str(&format!("&{k}={}", encode_component(v)));
        }
    }
    let body = html! {
        @match &chain {
            AuditVerification::Intact { events } => {
                p.notice role="status" { (lang.t("Chaîne d'audit intacte", "Audit chain intact")) " (" (events) " " (lang.t("événements", "events")) ")" }
            }
            other => {
                div.error role="alert" { p { (lang.t("Chaîne d'audit rompue : ", "Audit chain broken: ")) (format!("{other:?}")) } }
            }
        }
        form.inline method="get" action="/audit/log" role="search" {
            div { label for="user" { (lang.t("Agent (uid)", "User (uid)")) } input #user name="user" type="text" value=(filter.user.clone().unwrap_or_default()); }
            div { label for="action" { (lang.t("Action", "Action")) } input #action name="action" type="text" placeholder="device.revoked" value=(filter.action.clone().unwrap_or_default()); }
            div { label for="since" { (lang.t("Depuis (RFC 3339)", "Since (RFC 3339)")) } input #since name="since" type="text" placeholder="2026-01-01T00:00:00Z" value=(non_empty(&q.since).unwrap_or_default()); }
            div { label for="until" { (lang.t("Jusqu'à (RFC 3339)", "Until (RFC 3339)")) } input #until name="until" type="text" value=(non_empty(&q.until).unwrap_or_default()); }
            div { button type="submit" { (lang.t("Filtrer", "Filter")) } }
        }
        p {
            (lang.t("Exporter ces événements : ", "Export these events: "))
            a href=(format!("/api/v1/audit/events?format=csv{export}")) { "CSV" }
            " · "
            a href=(format!("/api/v1/audit/events?format=jsonl{export}")) { "JSONL" }
        }
        div.table-wrap tabindex="0" role="region" aria-label=(lang.t("Tableau défilant", "Scrollable table")) {
            table {
                caption.muted { (events.len()) " " (lang.t("événement(s), les plus anciens d'abord", "event(s), oldest first")) }
                thead { tr {
                    th scope="col" { "#" }
                    th scope="col" { (lang.t("Date", "Time")) }
                    th scope="col" { (lang.t("Auteur", "Actor")) }
                    th scope="col" { (lang.t("Action", "Action")) }
                    th scope="col" { (lang.t("Cible", "Target")) }
                    th scope="col" { (lang.t("Résultat", "Outcome")) }
                    th scope="col" { (lang.t("Détails", "Details")) }
                } }
                tbody { @for e in &events { tr {
                    td { (e.id) }
                    td { (when(e.ts)) }
                    td { (e.actor) }
                    td { (e.action) }
                    td { (e.target) }
                    td { (e.outcome.as_str()) }
                    td { code { (e.details.to_string()) } }
                } } }
            }
        }
    };
    Ok(page(
        lang,
        Some(&viewer),
        lang.t("Journal d'audit", "Audit log"),
        body,
    )
    .into_response())
}
