//! Auditor pages (read-only): the log with filters, links to the exports, the chain status.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};

use crate::audit::AuditEvent;
use crate::audit::FilterParams;
use crate::portal::extract::ClientIp;
use crate::service::audit as audit_service;
use crate::service::ServiceError;

use crate::portal::auth::Role;
use crate::portal::state::SharedState;

use super::{page, Lang, PageError, Viewer};
use crate::audit::AuditVerification;
use crate::text::percent_encode;
use crate::time;

#[derive(serde::Deserialize, Default)]
pub struct LogQuery {
    /// The form shows user, action, site, since and until; links may carry any of the filter.
    #[serde(flatten)]
    filter: FilterParams,
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
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("&{k}={}", percent_encode(v))))
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

/// `local` (the portal host's own events and gateway) then the configured `[[site]]` names.
pub(super) fn site_names(state: &SharedState) -> Vec<String> {
    let config = state.services.config();
    std::iter::once(crate::config::LOCAL_SITE.to_string())
        .chain(config.sites.iter().map(|s| s.name.clone()))
        .collect()
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

/// One page of events, oldest first, and the links to the first and next pages (`export`:
/// the filter as a query tail).
fn events_table(
    lang: Lang,
    events: &[AuditEvent],
    after: Option<i64>,
    next: Option<i64>,
    export: &str,
) -> Markup {
    html! {
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
            tbody { @for e in events { tr {
                td { (e.id) }
                td { (time::format(e.ts)) }
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
    }
}

/// `GET /audit/log?user=&action=&site=&since=&until=`
pub async fn log(
    State(state): State<SharedState>,
    viewer: Viewer,
    ClientIp(ip): ClientIp,
    Query(q): Query<LogQuery>,
) -> Result<Response, PageError> {
    let lang = viewer.lang;
    let session = viewer.require(Role::Auditor, "/audit/log")?;
    let params = FilterParams {
        user: non_empty(&q.filter.user),
        device: non_empty(&q.filter.device),
        action: non_empty(&q.filter.action),
        resource: non_empty(&q.filter.resource),
        site: non_empty(&q.filter.site),
        outcome: non_empty(&q.filter.outcome),
        source_ip: non_empty(&q.filter.source_ip),
        since: non_empty(&q.filter.since),
        until: non_empty(&q.filter.until),
    };
    let after = non_empty(&q.after).and_then(|a| a.parse::<i64>().ok());
    let actor = &session.actor;
    let (events, next, error) =
        match audit_service::events_page(&state.services, actor, Some(ip), &params, after).await {
            Ok((events, next)) => (events, next, None),
            Err(e) => (Vec::new(), None, Some(inline_error(lang, e)?)),
        };
    // A chain that cannot be checked (checkpoint file unreadable…) is said; the log still shows.
    let refresh = q.verify.as_deref() == Some("now");
    let chain = audit_service::verify_cached(&state.services, actor, refresh).await;
    let export = query_tail(&[
        ("user", params.user.clone()),
        ("device", params.device.clone()),
        ("action", params.action.clone()),
        ("resource", params.resource.clone()),
        ("site", params.site.clone()),
        ("outcome", params.outcome.clone()),
        ("source_ip", params.source_ip.clone()),
        ("since", params.since.clone()),
        ("until", params.until.clone()),
    ]);
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    let sites = site_names(&state);
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
            div {
                label for="site" { (lang.t("Site (local : sans site)", "Site (local: no site)")) }
                input #site name="site" type="text" list="sites" placeholder="local" value=(value(&params.site));
                datalist #sites { @for name in &sites { option value=(name) {} } }
            }
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
        (events_table(lang, &events, after, next, &export))
    };
    Ok(page(
        lang,
        Some(&viewer),
        lang.t("Journal d'audit", "Audit log"),
        body,
    )
    .into_response())
}
