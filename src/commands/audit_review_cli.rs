//! `sesame audit flows` and `sesame audit access-review`: who reached a resource, who can reach
//! it now (the same audit service, and answers, as the API).

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use crate::audit::export::{csv_document, text_table, write_csv_record};
use crate::audit::review::{
    review_csv_record, FlowView, Review, ReviewEntry, FLOWS_CSV_HEADER, REVIEW_CSV_HEADER,
};
use crate::service::audit::{self, FlowsQuery, ReviewQuery};
use crate::service::review::ReviewPages;

use super::audit_cli::time_flag;
use super::{cli_admin, open_services, runtime};

/// Output of `flows` and `access-review`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// CSV, cells neutralised against spreadsheet formulas.
    Csv,
    /// Pretty JSON, as the API answers.
    Json,
    /// Aligned text for a terminal, control characters escaped.
    Table,
}

impl ReportFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportFormat::Csv => "csv",
            ReportFormat::Json => "json",
            ReportFormat::Table => "table",
        }
    }
}

fn write_report<const N: usize, T: serde::Serialize>(
    format: ReportFormat,
    json: &T,
    header: [&str; N],
    rows: Vec<[String; N]>,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        ReportFormat::Json => {
            serde_json::to_writer_pretty(&mut out, json)?;
            writeln!(out)?;
        }
        ReportFormat::Csv => out.write_all(&csv_document(header, rows)?)?,
        ReportFormat::Table => out.write_all(text_table(&header, &rows).as_bytes())?,
    }
    out.flush()?;
    Ok(())
}

/// `sesame audit flows --resource NAME [--since T] [--until T] [--format csv|json|table]`.
pub fn flows(
    config: &Path,
    resource: &str,
    since: Option<&str>,
    until: Option<&str>,
    format: ReportFormat,
) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let svc = open_services(config).await?;
        let now = svc.now_ms();
        let asked = FlowsQuery {
            resource: resource.to_string(),
            since: time_flag("--since", since, now)?,
            until: time_flag("--until", until, now)?,
        };
        let flows = audit::flows(&svc, &cli_admin(), None, format.as_str(), &asked).await;
        svc.close().await;
        let flows = flows?;
        let rows = flows.iter().map(FlowView::csv_record).collect();
        write_report(
            format,
            &serde_json::json!({ "resource": resource, "flows": flows }),
            FLOWS_CSV_HEADER,
            rows,
        )?;
        eprintln!("{} appareils / devices", flows.len());
        Ok(ExitCode::SUCCESS)
    })
}

/// Entries read per page by `sesame audit access-review`.
const REVIEW_PAGE: usize = 1_000;

/// `sesame audit access-review (--resource NAME | --user UID | --site NAME) [--format
/// csv|json|table]`: every entry, read and written page by page (a table is aligned, so it is
/// written at the end).
pub fn access_review_cmd(
    config: &Path,
    asked: ReviewQuery<'_>,
    format: ReportFormat,
) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let svc = open_services(config).await?;
        let written = match audit::access_review_pages(
            &svc,
            &cli_admin(),
            None,
            format.as_str(),
            asked,
        )
        .await
        {
            Ok(pages) => write_review(pages, format).await,
            Err(e) => Err(e.into()),
        };
        svc.close().await;
        eprintln!("{} accès / accesses", written?);
        Ok(ExitCode::SUCCESS)
    })
}

/// Writes every page of the review to stdout in `format`; returns how many entries.
async fn write_review(mut pages: ReviewPages, format: ReportFormat) -> anyhow::Result<u64> {
    let mut out = std::io::stdout().lock();
    let mut json: Option<ReviewJson> = None;
    let mut table: Vec<[String; 20]> = Vec::new();
    let mut written = 0u64;
    let mut first = true;
    while let Some(page) = pages.next_page(REVIEW_PAGE).await {
        let page = page?;
        match format {
            ReportFormat::Csv => {
                let mut csv = csv::Writer::from_writer(Vec::new());
                if first {
                    csv.write_record(REVIEW_CSV_HEADER)?;
                }
                for e in &page.entries {
                    write_csv_record(&mut csv, review_csv_record(e))?;
                }
                out.write_all(&csv.into_inner().map_err(|e| e.into_error())?)?;
            }
            ReportFormat::Json => {
                let j = json.get_or_insert_with(|| ReviewJson::start(&page));
                out.write_all(j.entries(&page.entries)?.as_bytes())?;
            }
            ReportFormat::Table => table.extend(page.entries.iter().map(review_csv_record)),
        }
        out.flush()?;
        written += page.entries.len() as u64;
        first = false;
    }
    match format {
        ReportFormat::Json => {
            let end = json.map(|j| j.end(written)).unwrap_or_default();
            out.write_all(end.as_bytes())?;
        }
        ReportFormat::Table => out.write_all(text_table(&REVIEW_CSV_HEADER, &table).as_bytes())?,
        ReportFormat::Csv => {}
    }
    out.flush()?;
    Ok(written)
}

/// The review as pretty JSON, written as its pages come: the same text as
/// `serde_json::to_writer_pretty` of the whole answer (`next_cursor` null), and a newline.
struct ReviewJson {
    /// Entries written so far.
    count: u64,
    /// The head (`{`, the subject, `"entries": [`) until the first entries are written.
    head: Option<String>,
}

impl ReviewJson {
    fn start(first: &Review) -> ReviewJson {
        let mut head = String::from("{\n");
        for (k, v) in [
            ("resource", &first.resource),
            ("user", &first.user),
            ("site", &first.site),
        ] {
            if let Some(v) = v {
                head.push_str(&format!(
                    "  \"{k}\": {},\n",
                    serde_json::Value::from(v.as_str())
                ));
            }
        }
        head.push_str("  \"entries\": [");
        ReviewJson {
            count: 0,
            head: Some(head),
        }
    }

    /// The text of `entries`, each indented as an element of `entries`.
    fn entries(&mut self, entries: &[ReviewEntry]) -> serde_json::Result<String> {
        let mut text = self.head.take().unwrap_or_default();
        for e in entries {
            text.push_str(if self.count == 0 { "\n" } else { ",\n" });
            let pretty = serde_json::to_string_pretty(e)?;
            for (i, line) in pretty.lines().enumerate() {
                if i > 0 {
                    text.push('\n');
                }
                text.push_str("    ");
                text.push_str(line);
            }
            self.count += 1;
        }
        Ok(text)
    }

    /// The end: the array closed, `total` and `next_cursor`.
    fn end(mut self, total: u64) -> String {
        let mut text = self.head.take().unwrap_or_default();
        text.push_str(if self.count == 0 { "]" } else { "\n  ]" });
        text.push_str(&format!(
            ",\n  \"total\": {total},\n  \"next_cursor\": null\n}}\n"
        ));
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::review::Via;

    fn entry(resource: &str, id: i64) -> ReviewEntry {
        ReviewEntry {
            resource: resource.into(),
            site: "local".into(),
            username: Some("alice".into()),
            display_name: Some("Alice \"A\"\nB".into()),
            device_id: Some(id),
            device_name: "pc".into(),
            hostname: None,
            tunnel_address: "100.64.0.2".into(),
            via: vec![Via {
                group: Some("cn=g".into()),
                grants: vec![1, 2],
                peer: None,
            }],
            last_session: None,
            last_flow: None,
            mfa: false,
            factor: None,
        }
    }

    /// Written page by page, the JSON is the very text of the whole answer written at once.
    #[test]
    fn the_streamed_json_is_the_whole_answers_pretty_text() {
        for (subject, pages) in [
            (
                ("paie", ""),
                vec![
                    vec![entry("paie", 1), entry("paie", 2)],
                    vec![entry("paie", 3)],
                ],
            ),
            (("", "alice"), vec![vec![]]),
            (("paie", ""), vec![vec![entry("paie", 1)], vec![]]),
        ] {
            let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
            let review = |entries: Vec<ReviewEntry>| Review {
                resource: opt(subject.0),
                user: opt(subject.1),
                site: None,
                total: entries.len() as u64,
                entries,
                next_cursor: None,
            };
            let all: Vec<ReviewEntry> = pages.iter().flatten().cloned().collect();
            let want = serde_json::to_string_pretty(&review(all.clone())).expect("json") + "\n";
            let mut j = ReviewJson::start(&review(Vec::new()));
            let mut got = String::new();
            for p in &pages {
                got.push_str(&j.entries(p).expect("json"));
            }
            got.push_str(&j.end(all.len() as u64));
            assert_eq!(got, want);
        }
    }
}
