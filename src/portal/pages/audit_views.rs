//! Auditor pages (read-only): flows per resource and the access review, with their exports.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};

use crate::audit::review::{review_csv_record, FlowView, Review, ReviewEntry, REVIEW_CSV_HEADER};
use crate::portal::extract::ClientIp;
use crate::service::audit as audit_service;

use crate::portal::auth::Role;
use crate::portal::state::SharedState;

use super::audit::{inline_error, non_empty, query_tail, site_names};
use super::{page, Lang, PageError, Viewer};
use crate::text::percent_encode;

#[derive(serde::Deserialize, Default)]
pub struct FlowsForm {
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
}

#[derive(serde::Deserialize, Default)]
pub struct ReviewForm {
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    site: Option<String>,
    /// The next page's start (the answer's `next_cursor`).
    #[serde(default)]
    cursor: Option<String>,
}

/// Entries on one page of the access review.
pub const REVIEW_PAGE: usize = 100;

/// A `<select>` of the configured resources, `chosen` selected, an empty first choice.
fn resource_select(state: &SharedState, lang: Lang, id: &str, chosen: Option<&str>) -> Markup {
    let config = state.services.config();
    let mut names: Vec<(&str, &str)> = config
        .policy
        .resources()
        .map(|r| (r.name.as_str(), r.description.as_str()))
        .collect();
    names.sort();
    html! {
        label for=(id) { (lang.t("Ressource", "Resource")) }
        select #(id) name="resource" {
            option value="" { (lang.t("— choisir —", "— choose —")) }
            @for (name, description) in names {
                option value=(name) selected[chosen == Some(name)] {
                    (name) @if !description.is_empty() { " — " (description) }
                }
            }
        }
    }
}

/// An RFC 3339 instant as people read it (`2026-01-31 08:00:00.000 UTC`), in a `<time>`.
fn instant(s: &str) -> Markup {
    let shown = s.replacen('T', " ", 1).trim_end_matches('Z').to_string() + " UTC";
    html! { time datetime=(s) { (shown) } }
}

fn flow_rows(lang: Lang, resource: &str, flows: &[FlowView]) -> Markup {
    html! {
        div.table-wrap tabindex="0" role="region" aria-label=(lang.t("Flux (tableau défilant)", "Flows (scrollable table)")) {
            table #flows {
                caption {
                    (flows.len()) " " (lang.t("appareil(s) ont joint", "device(s) reached")) " " strong { (resource) }
                    @if let Some(f) = flows.first() { " (" (lang.t("site", "site")) " " (f.site) ")" }
                }
                thead { tr {
                    th scope="col" { (lang.t("Agent", "User")) }
                    th scope="col" { (lang.t("Appareil", "Device")) }
                    th scope="col" { (lang.t("Premier vu", "First seen")) }
                    th scope="col" { (lang.t("Dernier vu", "Last seen")) }
                    th scope="col" { abbr title=(lang.t("octets reçus de la ressource", "bytes received from the resource")) { (lang.t("Octets reçus", "Bytes in")) } }
                    th scope="col" { abbr title=(lang.t("octets envoyés à la ressource", "bytes sent to the resource")) { (lang.t("Octets envoyés", "Bytes out")) } }
                    th scope="col" { (lang.t("Ports", "Ports")) }
                } }
                tbody { @for f in flows { tr {
                    td { (f.username.as_deref().unwrap_or("—")) }
                    td {
                        @if let Some(id) = f.device_id { "#" (id) " " }
                        @if let Some(name) = &f.device_name { (name) " " }
                        span.muted { (f.peer) }
                    }
                    td { (instant(&f.first_seen)) }
                    td { (instant(&f.last_seen)) }
                    td { (f.bytes_in) }
                    td { (f.bytes_out) }
                    td { @if f.ports.is_empty() { "—" } @else {
                        (f.ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", "))
                    } }
                } } }
            }
        }
    }
}

/// `GET /audit/flows?resource=&since=&until=`: who reached a resource, from which device.
pub async fn flows(
    State(state): State<SharedState>,
    viewer: Viewer,
    ClientIp(ip): ClientIp,
    Query(q): Query<FlowsForm>,
) -> Result<Response, PageError> {
    let lang = viewer.lang;
    let session = viewer.require(Role::Auditor, "/audit/flows")?;
    let (resource, since, until) = (
        non_empty(&q.resource),
        non_empty(&q.since),
        non_empty(&q.until),
    );
    let mut error = None;
    let mut found = None;
    if let Some(resource) = &resource {
        let asked = audit_service::FlowsQuery {
            resource: resource.clone(),
            since: since.clone(),
            until: until.clone(),
        };
        match audit_service::flows(&state.services, &session.actor, Some(ip), "html", &asked).await
        {
            Ok(f) => found = Some(f),
            Err(e) => error = Some(inline_error(lang, e)?),
        }
    }
    let export = query_tail(&[
        ("resource", resource.clone()),
        ("since", since.clone()),
        ("until", until.clone()),
    ]);
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    let body = html! {
        p { (lang.t("Qui a joint une ressource, depuis quel appareil, quand, et combien d'octets : la somme des enregistrements flow.allowed de la passerelle.",
                    "Who reached a resource, from which device, when, and how many bytes: the sum of the gateway's flow.allowed records.")) }
        @if let Some(e) = &error { div.error role="alert" { p { (e) } } }
        form.inline method="get" action="/audit/flows" role="search" aria-label=(lang.t("Choisir la ressource et la période", "Choose the resource and the period")) {
            div { (resource_select(&state, lang, "resource", resource.as_deref())) }
            div { label for="since" { (lang.t("Depuis (AAAA-MM-JJ ou RFC 3339)", "Since (YYYY-MM-DD or RFC 3339)")) } input #since name="since" type="text" placeholder="2026-01-01" value=(value(&since)); }
            div { label for="until" { (lang.t("Jusqu'à (exclu)", "Until (excluded)")) } input #until name="until" type="text" value=(value(&until)); }
            div { button type="submit" { (lang.t("Afficher", "Show")) } }
        }
        @if let (Some(resource), Some(flows)) = (&resource, &found) {
            p.no-print {
                (lang.t("Exporter : ", "Export: "))
                a href=(format!("/api/v1/audit/flows?format=csv{export}")) { "CSV" }
                " · "
                a href=(format!("/api/v1/audit/flows?format=json{export}")) { "JSON" }
            }
            (flow_rows(lang, resource, flows))
        }
    };
    Ok(page(
        lang,
        Some(&viewer),
        lang.t("Flux par ressource", "Flows per resource"),
        body,
    )
    .into_response())
}

/// The entry's groups and grants as the CSV export writes them (one rule for both), for people.
fn via_text(e: &ReviewEntry) -> (String, String) {
    let cells = review_csv_record(e);
    let cell = |name: &str| {
        REVIEW_CSV_HEADER
            .iter()
            .position(|h| *h == name)
            .map(|i| cells[i].replace(';', ", "))
            .unwrap_or_default()
    };
    (cell("groups"), cell("grants"))
}

/// Which entries this page shows, and links to the first and the next page (`subject`: the
/// subject's query string).
fn review_pager(lang: Lang, subject: &str, paged: bool, review: &Review) -> Markup {
    let keep = if lang == Lang::En { "&lang=en" } else { "" };
    html! {
        @if paged || review.next_cursor.is_some() {
            p role="status" {
                (review.entries.len()) " " (lang.t("accès sur cette page, sur", "access(es) on this page, of")) " " (review.total)
            }
            nav.no-print aria-label=(lang.t("Pages de la revue", "Review pages")) {
                ul.pager {
                    @if paged {
                        li { a href=(format!("/audit/access-review?{subject}{keep}")) { (lang.t("Première page", "First page")) } }
                    }
                    @if let Some(next) = &review.next_cursor {
                        li { a rel="next" href=(format!("/audit/access-review?{subject}&cursor={}{keep}", percent_encode(next))) { (lang.t("Page suivante", "Next page")) } }
                    }
                }
            }
        }
    }
}

fn review_rows(lang: Lang, review: &Review) -> Markup {
    let subject = review
        .resource
        .as_deref()
        .or(review.user.as_deref())
        .map(str::to_string)
        .or_else(|| review.site.as_ref().map(|s| format!("site {s}")))
        .unwrap_or_default();
    html! {
        div.table-wrap tabindex="0" role="region" aria-label=(lang.t("Revue des accès (tableau défilant)", "Access review (scrollable table)")) {
            table #review {
                caption { (review.total) " " (lang.t("accès ouvert(s) maintenant :", "access(es) open now:")) " " strong { (subject) } }
                thead { tr {
                    th scope="col" { (lang.t("Ressource", "Resource")) }
                    th scope="col" { (lang.t("Site", "Site")) }
                    th scope="col" { (lang.t("Agent", "User")) }
                    th scope="col" { (lang.t("Appareil", "Device")) }
                    th scope="col" { (lang.t("Groupe", "Group")) }
                    th scope="col" { (lang.t("Autorisation ([[grant]])", "Grant ([[grant]])")) }
                    th scope="col" { (lang.t("Dernière session", "Last session")) }
                    th scope="col" { (lang.t("Dernier flux", "Last flow")) }
                    th scope="col" { (lang.t("Second facteur", "Second factor")) }
                } }
                tbody { @for e in &review.entries {
                    @let (groups, grants) = via_text(e);
                    tr {
                        td { (e.resource) }
                        td.site { (e.site) }
                        td { @if let Some(u) = &e.username { (u) @if let Some(n) = e.display_name.as_deref().filter(|n| !n.is_empty()) { br; span.muted { (n) } } } @else { "—" } }
                        td { @if let Some(id) = e.device_id { "#" (id) " " } (e.device_name) br; span.muted { (e.tunnel_address) } }
                        td { (groups) }
                        td { (grants) }
                        td { @if let Some(s) = &e.last_session { (instant(&s.at)) br; span.muted { (s.action) @if let Some(r) = &s.reason { " (" (r) ")" } } } @else { (lang.t("jamais", "never")) } }
                        td { @if let Some(f) = &e.last_flow { (instant(&f.last_seen)) br; span.muted { (f.bytes) " " (lang.t("octets", "bytes")) } } @else { (lang.t("jamais", "never")) } }
                        td.factor {
                            @if e.mfa { strong { (lang.t("exigé", "required")) } } @else { (lang.t("non exigé", "not required")) }
                            br;
                            span.muted {
                                @if let Some(k) = &e.factor {
                                    (k.kind)
                                    @if let Some(at) = &k.registered_at { " — " (lang.t("enregistré le", "registered on")) " " (instant(at)) }
                                    " — " (lang.t("dernier usage", "last used")) " "
                                    @if let Some(at) = &k.last_used_at { (instant(at)) } @else { (lang.t("jamais", "never")) }
                                } @else if e.username.is_some() {
                                    (lang.t("aucun facteur", "no factor"))
                                }
                            }
                        }
                    }
                } }
            }
        }
    }
}

/// `GET /audit/access-review?resource=|user=|site=`: who can reach a resource now (or what a
/// user's devices can reach, or each resource of a site), through which group and grant, last
/// session and last flow.
pub async fn access_review(
    State(state): State<SharedState>,
    viewer: Viewer,
    ClientIp(ip): ClientIp,
    Query(q): Query<ReviewForm>,
) -> Result<Response, PageError> {
    let lang = viewer.lang;
    let session = viewer.require(Role::Auditor, "/audit/access-review")?;
    let (resource, user, site) = (
        non_empty(&q.resource),
        non_empty(&q.user),
        non_empty(&q.site),
    );
    let mut error = None;
    let mut found = None;
    if resource.is_some() || user.is_some() || site.is_some() {
        let asked = audit_service::ReviewQuery {
            resource: resource.as_deref(),
            user: user.as_deref(),
            site: site.as_deref(),
        };
        let page = audit_service::ReviewPage {
            cursor: q.cursor.as_deref(),
            limit: None,
            default_limit: Some(REVIEW_PAGE),
        };
        match audit_service::access_review(
            &state.services,
            &session.actor,
            Some(ip),
            "html",
            asked,
            page,
        )
        .await
        {
            Ok(r) => found = Some(r),
            Err(e) => error = Some(inline_error(lang, e)?),
        }
    }
    let export = match (&resource, &user, &site) {
        (Some(r), None, None) => format!("resource={}", percent_encode(r)),
        (None, Some(u), None) => format!("user={}", percent_encode(u)),
        (None, None, Some(s)) => format!("site={}", percent_encode(s)),
        _ => String::new(),
    };
    let sites = site_names(&state);
    let body = html! {
        p { (lang.t("Qui peut joindre une ressource maintenant (ou ce que peuvent joindre les appareils d'un agent, ou les ressources d'un site), par quel groupe de l'annuaire et quelle section [[grant]], avec la dernière session et le dernier flux.",
                    "Who can reach a resource now (or what a user's devices can reach, or the resources of a site), through which directory group and [[grant]] section, with the last session and the last flow.")) }
        @if let Some(e) = &error { div.error role="alert" { p { (e) } } }
        div.cols {
            form.inline method="get" action="/audit/access-review" role="search" aria-label=(lang.t("Revue par ressource", "Review by resource")) {
                div { (resource_select(&state, lang, "review-resource", resource.as_deref())) }
                div { button type="submit" #by-resource { (lang.t("Revue par ressource", "Review by resource")) } }
            }
            form.inline method="get" action="/audit/access-review" role="search" aria-label=(lang.t("Revue par agent", "Review by user")) {
                div { label for="review-user" { (lang.t("Agent (uid)", "User (uid)")) } input #review-user name="user" type="text" value=(user.clone().unwrap_or_default()); }
                div { button type="submit" #by-user { (lang.t("Revue par agent", "Review by user")) } }
            }
            form.inline method="get" action="/audit/access-review" role="search" aria-label=(lang.t("Revue par site", "Review by site")) {
                div {
                    label for="review-site" { (lang.t("Site", "Site")) }
                    select #review-site name="site" {
                        option value="" { (lang.t("— choisir —", "— choose —")) }
                        @for name in &sites {
                            option value=(name) selected[site.as_deref() == Some(name.as_str())] { (name) }
                        }
                    }
                }
                div { button type="submit" #by-site { (lang.t("Revue par site", "Review by site")) } }
            }
        }
        @if let Some(review) = &found {
            p.no-print {
                (lang.t("Exporter : ", "Export: "))
                a href=(format!("/api/v1/audit/access-review?format=csv&{export}")) { "CSV" }
                " · "
                a href=(format!("/api/v1/audit/access-review?format=json&{export}")) { "JSON" }
            }
            (review_rows(lang, review))
            (review_pager(lang, &export, non_empty(&q.cursor).is_some(), review))
        }
    };
    Ok(page(
        lang,
        Some(&viewer),
        lang.t("Revue des accès", "Access review"),
        body,
    )
    .into_response())
}
