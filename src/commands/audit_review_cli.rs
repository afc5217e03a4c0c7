//! `sesame audit flows` and `sesame audit access-review`: who reached a resource, who can reach
//! it now (the same audit service, and answers, as the API).

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use crate::audit::export::{csv_document, text_table};
use crate::audit::review::{review_csv_record, FlowView, FLOWS_CSV_HEADER, REVIEW_CSV_HEADER};
use crate::service::audit::{self, FlowsQuery, ReviewQuery};

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

/// `sesame audit access-review (--resource NAME | --user UID | --site NAME) [--format
/// csv|json|table]`.
pub fn access_review_cmd(
    config: &Path,
    asked: ReviewQuery<'_>,
    format: ReportFormat,
) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let svc = open_services(config).await?;
        let review = audit::access_review(&svc, &cli_admin(), None, format.as_str(), asked).await;
        svc.close().await;
        let review = review?;
        let rows = review.entries.iter().map(review_csv_record).collect();
        write_report(format, &review, REVIEW_CSV_HEADER, rows)?;
        eprintln!("{} accès / accesses", review.entries.len());
        Ok(ExitCode::SUCCESS)
    })
}
