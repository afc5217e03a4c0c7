//! Auditor pages (read-only): the log with filters, links to the exports, the chain status.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};

use crate::audit::FilterParams;
use crate::portal::extract::ClientIp;
use crate::service::audit as audit_service;
use crate::service::ServiceError;
use crate::store::AuditVerification;

use crate::portal::auth::Role;
use crate::portal::state::SharedState;

use super::{encode_component, page, when, Lang, PageError, Viewer};

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
    /// `now`: verify the chain again instead of showing the last verification.
    #[serde(default)]
    verify: Option<String>,
    /// The previous page's last event id.
    #[serde(default)]
    after: Option<String>,
}

/// A trimmed, non-empty form value.
pub(super) fn non_empty(s: &Option<String>) -> Option<String> {
    s.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// `&k=v…` of the set values, for export links carrying the page's filters.
pub(super) fn query_tail(pairs: &[(&str, Option<String>)]) -> String {
    pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("&{k}={}", encode_component(v))))
        .collect()
}

/// A bad filter (time, resource…) is shown above the form, which keeps what was typed; other
/// failures are error pages.
pub(super) fn inline_error(lang: Lang, e: ServiceError) -> Result<String, PageError> {
    match e {
        ServiceError::Query(q) => Ok(q.to_string()),
        ServiceError::Invalid(m) => Ok(m),
        other => Err(PageError::from((lang, other))),
    }
}

/// The chain's state, as the verify API and `sesame audit verify` see it, verified `age` ago.
fn chain_status(lang: Lang, chain: &AuditVerification, age: Duration) -> Markup {
    let minutes = age.as_secs() / 60;
    html! {
        @match chain {
            AuditVerification::Intact { events } => {
                p.notice role="status" #chain {
                    strong { (lang.t("Chaîne d'audit intacte", "Audit chain intact")) }
                    " : " (events) " " (lang.t("événements vérifiés, signatures des points de contrôle comprises", "events checked, checkpoint signatures included"))
                    @if minutes > 0 {
                        @match lang {
                            Lang::Fr => { " (vérifiée il y a " (minutes) " min)" }
                            Lang::En => { " (verified " (minutes) " min ago)" }
                        }
                    }
                    ". "
                    a.no-print href="/audit/log?verify=now" { (lang.t("Vérifier maintenant", "Verify now")) }
                }
            }
            AuditVerification::Broken { id, reason } => {
                div.error role="alert" #chain {
                    p {
                        strong { (lang.t("Chaîne d'audit rompue", "Audit chain broken")) }
                        " : " (lang.t("premier événement en cause", "first event at fault")) " #" (id) " — " (reason)
                    }
                    p { (lang.t("Prévenez le responsable de la sécurité et conservez une copie exportée du journal.",
                                "Tell the security officer and keep an exported copy of the log.")) }
                }
            }
        }
    }
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
    let params = FilterParams {
        user: non_empty(&q.user),
        action: non_empty(&q.action),
        since: non_empty(&q.since),
        until: non_empty(&q.until),
        ..FilterParams::default()
    };
    let after = non_empty(&q.after).and_then(|a| a.parse::<i64>().ok());
    let (events, next, error) = match params.to_filter() {
        Ok(filter) => match audit_service::events_page(
            &state.store,
            &session.actor,
            Some(ip),
            &params,
            &filter,
            after,
            audit_service::PAGE_SIZE,
        )
        .await
        {
            Ok((events, next)) => (events, next, None),
            Err(e) => (Vec::new(), None, Some(inline_error(lang, e)?)),
        },
        Err(e) => (Vec::new(), None, Some(e.to_string())),
    };
    // A chain that cannot be checked (checkpoint file unreadable…) is said; the log still shows.
    let chain = audit_service::verify_cached(
        &state.chain_status,
        &state.store,
        &state.config,
        &session.actor,
        audit_service::CHAIN_STATUS_MAX_AGE,
        q.verify.as_deref() == Some("now"),
    )
    .await;
    let export = query_tail(&[
        ("user", params.user.clone()),
        ("action", params.action.clone()),
        ("since", params.since.clone()),
        ("until", params.until.clone()),
    ]);
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    let body = html! {
        @match &chain {
            Ok((chain, age)) => (chain_status(lang, chain, *age)),
            Err(e) => div.error role="alert" #chain {
                p { strong { (lang.t("Vérification de la chaîne impossible", "Cannot verify the chain")) } " : " (e) }
            },
        }
        @if let Some(e) = &error { div.error role="alert" { p { (e) } } }
        form.inline method="get" action="/audit/log" role="search" aria-label=(lang.t("Filtrer le journal", "Filter the log")) {
            div { label for="user" { (lang.t("Agent (uid)", "User (uid)")) } input #user name="user" type="text" value=(value(&params.user)); }
            div { label for="action" { (lang.t("Action", "Action")) } input #action name="action" type="text" placeholder="device.revoked" value=(value(&params.action)); }
            div { label for="since" { (lang.t("Depuis (AAAA-MM-JJ ou RFC 3339)", "Since (YYYY-MM-DD or RFC 3339)")) } input #since name="since" type="text" placeholder="2026-01-01" value=(value(&params.since)); }
            div { label for="until" { (lang.t("Jusqu'à (exclu)", "Until (excluded)")) } input #until name="until" type="text" value=(value(&params.until)); }
            div { button type="submit" { (lang.t("Filtrer", "Filter")) } }
        }
        p.no-print {
            (lang.t("Exporter ces événements : ", "Export these events: "))
            a href=(format!("/api/v1/audit/events?format=csv{export}")) { "CSV" }
            " · "
            a href=(format!("/api/v1/audit/events?format=jsonl{export}")) { "JSONL" }
            " · "
            a href="/api/v1/audit/verify" { (lang.t("vérification (JSON)", "verification (JSON)")) }
        }
        div.table-wrap tabindex="0" role="region" aria-label=(lang.t("Événements d'audit (tableau défilant)", "Audit events (scrollable table)")) {
            table {
                caption.muted {
                    (events.len()) " " (lang.t("événement(s), les plus anciens d'abord", "event(s), oldest first"))
                    @if after.is_some() || next.is_some() { " " (lang.t("sur cette page", "on this page")) }
                }
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
        @if after.is_some() || next.is_some() {
            nav.no-print aria-label=(lang.t("Pages du journal", "Log pages")) {
                ul.pager {
                    @if after.is_some() {
                        li { a href=(format!("/audit/log?{}", export.trim_start_matches('&'))) { (lang.t("Première page", "First page")) } }
                    }
                    @if let Some(next) = next {
                        li { a rel="next" href=(format!("/audit/log?after={next}{export}")) { (lang.t("Page suivante", "Next page")) } }
                    }
                }
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
