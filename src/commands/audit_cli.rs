//! `sesame audit export` and `sesame audit verify`: the audit log read straight from the database (or, for verify, from an exported copy).
//!
//! Export columns (CSV) and fields (JSON lines) are those of `GET /api/v1/audit/events`: id, ts
//! (RFC 3339 UTC, millisecond precision), actor, action, target, outcome, source_ip, details
//! (canonical JSON), prev_hash, hash.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context as _};

use crate::audit::checkpoint::{self, AuditKey};
use crate::audit::export::render_page;
pub use crate::audit::export::ExportFormat;
use crate::audit::{read_event, AuditFilter, FilterParams};
use crate::config::{parse_duration, Config};
use crate::store::{rfc3339_ms, AuditVerification, Store};

/// Events read per query while exporting.
const PAGE: i64 = 1000;

/// `--since`/`--until`: RFC 3339, a date `YYYY-MM-DD` (midnight UTC), or a duration meaning
/// "that long ago" (`24h`, `7d`).
pub fn parse_time(flag: &str, s: &str, now_ms: i64) -> anyhow::Result<i64> {
    if let Ok(ms) = crate::audit::query::parse_time(flag, s) {
        return Ok(ms);
    }
    if let Ok(d) = parse_duration(s) {
        return Ok(now_ms.saturating_sub(crate::store::duration_ms(d)));
    }
    bail!(
        "{flag} {s:?} : écrivez 2026-01-31, 2026-01-31T08:00:00Z ou 7d / write 2026-01-31, 2026-01-31T08:00:00Z or 7d (7 days ago)"
    )
}

/// `--since`/`--until` as the RFC 3339 text the shared filter parser takes (durations resolved).
pub(crate) fn time_flag(
    flag: &str,
    s: Option<&str>,
    now_ms: i64,
) -> anyhow::Result<Option<String>> {
    s.map(|s| parse_time(flag, s, now_ms).map(rfc3339_ms))
        .transpose()
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub(crate) async fn open(config: &Path) -> anyhow::Result<(Config, Store)> {
    let config = Config::load(config)?;
    let store = Store::connect(&config.database.url).await.context(
        "impossible d'ouvrir la base de données : vérifiez [database] url / cannot open the database: check [database] url",
    )?;
    Ok((config, store))
}

/// Records a CLI read of the log (`audit.read`, actor `cli:<login>`); returns the event's id.
pub(crate) async fn record_read(
    store: &Store,
    query: &str,
    format: &str,
    filter: serde_json::Value,
) -> anyhow::Result<i64> {
    let ctx = super::store_admin::cli_actor();
    let ev = store
        .append_audit(&read_event(&ctx, query, format, filter))
        .await
        .context("cannot write the audit.read event")?;
    Ok(ev.id)
}

/// `sesame audit export [filters] [--format csv|jsonl]`: the whole filtered log, oldest first,
/// read page by page and written as it is read (constant memory).
pub fn export(
    config: &Path,
    params: &FilterParams,
    format: ExportFormat,
) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let (_, store) = open(config).await?;
        let now = store.now_ms();
        let params = FilterParams {
            since: time_flag("--since", params.since.as_deref(), now)?,
            until: time_flag("--until", params.until.as_deref(), now)?,
            ..params.clone()
        };
        let filter = params.to_filter()?;
        let read_id = record_read(&store, "export", format.as_str(), params.to_json()).await?;
        // The log as it stood when the export started, without its own audit.read.
        let filter = AuditFilter {
            through_id: Some(read_id - 1),
            ..filter
        };
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let mut first = true;
        let total = store
            .audit_scan(&filter, PAGE, |page| -> anyhow::Result<()> {
                out.write_all(&render_page(format, page, first)?)?;
                first = false;
                Ok(())
            })
            .await?;
        out.flush()?;
        store.close().await;
        eprintln!("{total} événements exportés / events exported");
        Ok(ExitCode::SUCCESS)
    })
}

/// Where `sesame audit verify` reads the events and what it trusts.
#[derive(Debug, Clone, Default)]
pub struct VerifyArgs<'a> {
    /// The configuration (database, key and checkpoint file); not needed with `export`.
    pub config: Option<&'a Path>,
    /// Checkpoint file; defaults to `[audit] checkpoint_file`.
    pub checkpoints: Option<&'a Path>,
    /// Base64 Ed25519 public key; defaults to the public half of `[audit] signing_key_file`.
    pub public_key: Option<&'a str>,
    /// Offline: a `sesame audit export --format jsonl` file instead of the database.
    pub export: Option<&'a Path>,
}

/// `sesame audit verify`: exit 0 only if the chain is intact and consistent with every signed
/// checkpoint; otherwise prints the id of the first bad event on stdout (what is wrong on
/// stderr) and exits 1. A verification of the database is recorded as `audit.read` (actor
/// `cli:<login>`, query `verify`), as the export is.
pub fn verify(args: &VerifyArgs<'_>) -> anyhow::Result<ExitCode> {
    let result = match args.export {
        Some(export) => {
            let (Some(checkpoints), Some(public_key)) = (args.checkpoints, args.public_key) else {
                bail!(
                    "--export demande --checkpoints FICHIER et --public-key CLÉ / --export needs --checkpoints FILE and --public-key KEY (printed by `sesame keygen --audit`)"
                );
            };
            let key = checkpoint::parse_public_key(public_key)?;
            let cps = checkpoint::read_file(checkpoints)?;
            crate::audit::verify::verify_export(export, Some(&key), &cps)?
        }
        None => {
            let path = args
                .config
                .context("--config FILE is required without --export")?;
            let config = Config::load(path)?;
            let key = match args.public_key {
                Some(k) => Some(checkpoint::parse_public_key(k)?),
                None => checkpoint::load_public_key(&config.audit.signing_key_file)?,
            };
            let file = args
                .checkpoints
                .map_or_else(|| config.audit.checkpoint_file.clone(), Path::to_path_buf);
            let cps = checkpoint::read_file(&file)?;
            runtime()?.block_on(async {
                let (_, store) = open(path).await?;
                let r = store.verify_audit_with(Some((key.as_ref(), &cps))).await;
                // The read is recorded after the walk: the verdict is about the log as the
                // auditor found it.
                let filter = match args.checkpoints {
                    Some(p) => serde_json::json!({ "checkpoints": p.display().to_string() }),
                    None => serde_json::json!({}),
                };
                let r = match r {
                    Ok(v) => record_read(&store, "verify", "text", filter)
                        .await
                        .map(|_| v),
                    Err(e) => Err(e.into()),
                };
                store.close().await;
                r
            })?
        }
    };
    let mut out = std::io::stdout().lock();
    match result {
        AuditVerification::Intact { events } => {
            writeln!(out, "intact: {events} events")?;
            Ok(ExitCode::SUCCESS)
        }
        AuditVerification::Broken { id, reason } => {
            writeln!(out, "{id}")?;
            out.flush()?;
            eprintln!(
                "journal d'audit altéré à partir de l'événement {id} ({reason}) : conservez une copie de la base et prévenez la sécurité / audit log altered from event {id} ({reason}): keep a copy of the database and alert security"
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `sesame keygen --audit --out FILE`: a new Ed25519 audit signing key (0600, never
/// overwriting); prints its public key in base64 (what `--public-key` takes).
pub fn keygen(out: &Path, if_missing: bool) -> anyhow::Result<ExitCode> {
    let public = if if_missing && out.exists() {
        AuditKey::load(out)?.public_base64()
    } else {
        AuditKey::generate(out)?.public_base64()
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{public}")?;
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_three_forms() {
        let now = 1_767_603_600_000; // 2026-01-05T09:00:00Z
        assert_eq!(
            parse_time("--since", "2026-01-05T09:00:00Z", now).ok(),
            Some(now)
        );
        assert_eq!(
            parse_time("--since", "2026-01-05", now).ok(),
            Some(now - 9 * 3_600_000)
        );
        assert_eq!(parse_time("--since", "2h", now).ok(), Some(now - 7_200_000));
        let e = parse_time("--since", "yesterday", now).expect_err("refused");
        assert!(e.to_string().contains("--since"));
        assert_eq!(rfc3339_ms(now + 250), "2026-01-05T09:00:00.250Z");
    }
}
