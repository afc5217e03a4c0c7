//! The IT dashboard: figures of `service::dashboard` drawn as server-side SVG bar charts (no
//! script; each chart has a text alternative and its numbers in a table).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};

use crate::service::dashboard::dashboard as figures;

use crate::portal::auth::Role;
use crate::portal::state::SharedState;

use super::{page, Lang, PageError, Viewer};
use crate::time;

const WIDTH: u32 = 720;
const HEIGHT: u32 = 160;

/// A bar chart of `values` labelled by `labels`, with a caption and a data table.
pub fn bar_chart(lang: Lang, id: &str, caption: &str, values: &[u64], labels: &[String]) -> Markup {
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    let n = values.len().max(1) as u32;
    let slot = WIDTH / n;
    let total: u64 = values.iter().sum();
    let alt = format!(
        "{caption} : {} {total}, {} {max}",
        lang.t("total", "total"),
        lang.t("maximum", "maximum")
    );
    html! {
        figure {
            figcaption #(id) { (caption) }
            svg.chart xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby=(id)
                viewBox=(format!("0 0 {WIDTH} {}", HEIGHT + 20)) width=(WIDTH) height=(HEIGHT + 20) {
                title { (alt) }
                line x1="0" y1=(HEIGHT) x2=(WIDTH) y2=(HEIGHT) stroke="#4a4a4a" {}
                @for (i, v) in values.iter().enumerate() {
                    @let h = (*v as f64 / max as f64 * (HEIGHT - 10) as f64).round() as u32;
                    @let x = i as u32 * slot + 2;
                    rect x=(x) y=(HEIGHT - h) width=(slot.saturating_sub(4).max(1)) height=(h) fill="#000091" {
                        title { (labels.get(i).cloned().unwrap_or_default()) " : " (v) }
                    }
                    @if i % (values.len() / 6).max(1) == 0 {
                        text x=(x) y=(HEIGHT + 15) font-size="11" fill="#1b1b1b" { (labels.get(i).cloned().unwrap_or_default()) }
                    }
                }
            }
            details {
                summary { (lang.t("Valeurs", "Values")) }
                table {
                    tbody { @for (i, v) in values.iter().enumerate() {
                        tr { th scope="row" { (labels.get(i).cloned().unwrap_or_default()) } td { (v) } }
                    } }
                }
            }
        }
    }
}

/// `GET /it/dashboard`
pub async fn dashboard(
    State(state): State<SharedState>,
    viewer: Viewer,
) -> Result<Response, PageError> {
    let lang = viewer.lang;
    let session = viewer.require(Role::ItStaff, "/it/dashboard")?;
    let d = figures(&state.services, &session.actor)
        .await
        .map_err(|e| PageError::from((lang, e)))?;
    let hours: Vec<String> = (0..d.sessions_per_hour.len() as i64)
        .map(|i| time::format(d.hours_from + i * 3_600_000)[11..16].to_string())
        .collect();
    let days: Vec<String> = (0..d.enrolments_per_day.len() as i64)
        .map(|i| time::format(d.days_from + i * 86_400_000)[5..10].to_string())
        .collect();
    let body = html! {
        dl.summary {
            dt { (lang.t("Ordinateurs connectés maintenant", "Laptops connected now")) } dd #connected { (d.connected_now) }
            dt { (lang.t("Pairs publiés à la passerelle", "Peers published to the gateway")) } dd #peers { (d.peers) }
        }
        (bar_chart(lang, "c-sessions", lang.t("Sessions ouvertes par heure (24 h, UTC)", "Sessions opened per hour (24 h, UTC)"), &d.sessions_per_hour, &hours))
        (bar_chart(lang, "c-bytes", lang.t("Trafic (octets) par heure (24 h, UTC)", "Traffic (bytes) per hour (24 h, UTC)"), &d.bytes_per_hour, &hours))
        (bar_chart(lang, "c-denied", lang.t("Flux refusés par heure (24 h, UTC)", "Denied flows per hour (24 h, UTC)"), &d.denied_per_hour, &hours))
        (bar_chart(lang, "c-enrol", lang.t("Enrôlements par jour (14 jours)", "Enrolments per day (14 days)"), &d.enrolments_per_day, &days))
    };
    Ok(page(
        lang,
        Some(&viewer),
        lang.t("Tableau de bord", "Dashboard"),
        body,
    )
    .into_response())
}
