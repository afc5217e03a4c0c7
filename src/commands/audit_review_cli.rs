//! `sesame audit flows` and `sesame audit access-review`: who reached a resource, who can reach
//! it now (the same answers as the API, from the shared `audit::review` code).

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use crate::audit::export::{csv_document, text_table};
use crate::audit::review::{
    access_review, review_csv_record, FlowView, ReviewPolicy, ReviewSubject, FLOWS_CSV_HEADER,
    REVIEW_CSV_HEADER,
};
use crate::audit::FilterParams;

use super::audit_cli::{open, record_read, runtime, time_flag};

/// Output of `flows` and `access-review`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
        let (_, store) = open(config).await?;
        let now = store.now_ms();
        let params = FilterParams {
            resource: Some(resource.to_string()),
            since: time_flag("--since", since, now)?,
            until: time_flag("--until", until, now)?,
            ..FilterParams::default()
        };
        let filter = params.to_filter()?;
        record_read(&store, "flows", format.as_str(), params.to_json()).await?;
        let flows: Vec<FlowView> = store
            .flows(resource, filter.since, filter.until)
            .await?
            .into_iter()
            .map(FlowView::from)
            .collect();
        store.close().await;
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

/// `sesame audit access-review (--resource NAME | --user UID) [--format csv|json|table]`.
pub fn access_review_cmd(
    config: &Path,
    resource: Option<&str>,
    user: Option<&str>,
    format: ReportFormat,
) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let (config, store) = open(config).await?;
        let subject = ReviewSubject::from_params(resource, user)?;
        record_read(&store, "access_review", format.as_str(), subject.to_json()).await?;
        let review = access_review(
            &store,
            &ReviewPolicy {
                policy: &config.policy,
                vpn_users: &config.roles.vpn_users,
                static_peers: &config.peers,
            },
            &subject,
        )
        .await;
        store.close().await;
        let review = review?;
        let rows = review.entries.iter().map(review_csv_record).collect();
        write_report(format, &review, REVIEW_CSV_HEADER, rows)?;
        eprintln!("{} accès / accesses", review.entries.len());
        Ok(ExitCode::SUCCESS)
    })
}
