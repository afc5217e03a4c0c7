//! `sesame audit export` and `sesame audit verify`: the audit service on the configured database
//! (or, for verify, an exported copy checked offline).
//!
//! Export columns (CSV) and fields (JSON lines) are those of `GET /api/v1/audit/events`: id, ts
//! (RFC 3339 UTC, millisecond precision), actor, action, target, outcome, source_ip, details
//! (canonical JSON), prev_hash, hash.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context as _};

use crate::audit::checkpoint::{self, AuditKey};
pub use crate::audit::export::ExportFormat;
use crate::audit::{AuditVerification, FilterParams};
use crate::service::audit::{self, Trust};
use crate::time;

use super::{cli_admin, open_services, runtime};

/// `--since`/`--until` ([`time::parse`]: RFC 3339, a date, or an age such as `7d`) resolved to
/// the instant it means, as `audit.read` records it.
pub(crate) fn time_flag(
    flag: &str,
    s: Option<&str>,
    now_ms: i64,
) -> Result<Option<String>, time::TimeError> {
    s.map(|s| time::parse(flag, s, now_ms).map(time::format))
        .transpose()
}

/// `sesame audit export [filters] [--format csv|jsonl]`: the whole filtered log, oldest first,
/// read page by page and written as it is read (constant memory).
pub fn export(
    config: &Path,
    params: &FilterParams,
    format: ExportFormat,
) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let svc = open_services(config).await?;
        let now = svc.now_ms();
        let params = FilterParams {
            since: time_flag("--since", params.since.as_deref(), now)?,
            until: time_flag("--until", params.until.as_deref(), now)?,
            ..params.clone()
        };
        let export = audit::export(&svc, &cli_admin(), None, &params, format).await?;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let total = export
            .write_all(|chunk| -> anyhow::Result<()> { Ok(out.write_all(chunk)?) })
            .await?;
        out.flush()?;
        svc.close().await;
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
            let trust = Trust {
                public_key: args.public_key,
                checkpoints: args.checkpoints,
            };
            runtime()?.block_on(async {
                let svc = open_services(path).await?;
                let r = audit::verify_with(&svc, &cli_admin(), trust).await;
                svc.close().await;
                anyhow::Ok(r?)
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
    fn time_flags_resolve_to_the_instant_they_mean() {
        let now = 1_767_603_600_000; // 2026-01-05T09:00:00Z
        let flag = |s| time_flag("--since", Some(s), now);
        assert_eq!(
            flag("2026-01-05").expect("date").as_deref(),
            Some("2026-01-05T00:00:00.000Z")
        );
        assert_eq!(
            flag("2h").expect("age").as_deref(),
            Some("2026-01-05T07:00:00.000Z")
        );
        assert_eq!(time_flag("--since", None, now).expect("none"), None);
        let e = flag("yesterday").expect_err("refused");
        assert_eq!(e.field, "--since");
    }
}
