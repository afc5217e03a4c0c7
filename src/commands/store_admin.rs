//! Store-backed admin commands: `sesame enrol-code create` and `sesame devices list|revoke`.
//!
//! These talk to the database named in the configuration directly; they do not check the
//! directory (the user named on an enrolment code is checked when the code is redeemed).
//! Scripts rely on the output shapes: `enrol-code create` prints the code alone on stdout and
//! its details on stderr; `--csv` prints CSV `user,device,code,expires_at`.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::audit::AuditContext;
use crate::config::{parse_duration, Config};
use crate::store::{rfc3339, CreatedCode, NewCode, Store, StoreError};

/// `sesame devices list` output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFormat {
    Table,
    Json,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

async fn open(config: &Path) -> anyhow::Result<Store> {
    let config = Config::load(config)?;
    Store::connect(&config.database.url).await.with_context(|| {
        "impossible d'ouvrir la base de données : vérifiez [database] url / cannot open the database: check [database] url"
    })
}

/// Who runs the command, for the audit log: `cli:<login>` (the sudo caller when under sudo).
pub(crate) fn cli_actor() -> AuditContext {
    let who = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| format!("uid={}", unsafe { libc::getuid() }));
    AuditContext::new(format!("cli:{who}"), None)
}

fn parse_ttl(ttl: &str) -> anyhow::Result<Duration> {
    let d = parse_duration(ttl).map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
    if d.is_zero() {
        bail!("--ttl: la durée doit être positive / the duration must be positive (e.g. 72h)");
    }
    Ok(d)
}

/// `sesame enrol-code create --user UID --device NAME [--ttl 72h]`, or `--csv FILE` for bulk.
pub fn enrol_code_create(
    config: &Path,
    user: Option<&str>,
    device: Option<&str>,
    ttl: &str,
    csv: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let ttl = parse_ttl(ttl)?;
    let requests = match (csv, user, device) {
        (Some(file), None, None) => match read_csv(file, ttl)? {
            Ok(requests) => requests,
            Err(problems) => {
                let mut err = std::io::stderr().lock();
                for p in &problems {
                    writeln!(err, "{}:{p}", file.display())?;
                }
                writeln!(
                    err,
                    "aucun code créé : corrigez ces lignes et relancez / no code issued: fix these lines and run again"
                )?;
                return Ok(ExitCode::FAILURE);
            }
        },
        (None, Some(user), Some(device)) => vec![NewCode {
            username: user.to_string(),
            device_name: device.to_string(),
            ttl,
        }],
        _ => bail!("use either --user UID --device NAME, or --csv FILE"),
    };
    if requests.is_empty() {
        bail!("le fichier ne contient aucune ligne / the file has no rows: nothing to do");
    }
    let codes = runtime()?.block_on(async {
        let store = open(config).await?;
        let codes = store.create_codes(&requests, &cli_actor()).await;
        store.close().await;
        codes.map_err(|e| match e {
            StoreError::InvalidInput(m) => anyhow::anyhow!("invalid request: {m}"),
            other => anyhow::Error::new(other),
        })
    })?;
    if csv.is_some() {
        write_csv(&codes)?;
    } else if let Some(c) = codes.first() {
        print_one(c)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_one(c: &CreatedCode) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", c.code)?;
    out.flush()?;
    let mut err = std::io::stderr().lock();
    writeln!(
        err,
        "code pour / code for {} (appareil / device {:?}), valable jusqu'au / valid until {}, usage unique / single use",
        c.username,
        c.device_name,
        rfc3339(c.expires_at)
    )?;
    Ok(())
}

fn write_csv(codes: &[CreatedCode]) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_writer(std::io::stdout().lock());
    w.write_record(["user", "device", "code", "expires_at"])?;
    for c in codes {
        w.write_record([
            c.username.as_str(),
            c.device_name.as_str(),
            c.code.as_str(),
            rfc3339(c.expires_at).as_str(),
        ])?;
    }
    w.flush()?;
    eprintln!("{} codes créés / codes issued", codes.len());
    Ok(())
}

/// Reads `user,device` rows. `Ok(Err(problems))`: the file was read but some rows are bad
/// (each problem starts with its line number).
fn read_csv(file: &Path, ttl: Duration) -> anyhow::Result<Result<Vec<NewCode>, Vec<String>>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.trim_start_matches('\u{feff}').as_bytes());
    let headers = reader
        .headers()
        .with_context(|| format!("{}:1: cannot read the header", file.display()))?
        .clone();
    let names: Vec<String> = headers.iter().map(str::to_ascii_lowercase).collect();
    if names != ["user", "device"] {
        return Ok(Err(vec![format!(
            "1: l'en-tête doit être `user,device` / the header must be `user,device` (found {:?})",
            headers.iter().collect::<Vec<_>>().join(",")
        )]));
    }
    let mut problems = Vec::new();
    let mut requests = Vec::new();
    let mut seen: HashMap<(String, String), u64> = HashMap::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                problems.push(format!("{line}: ligne illisible / unreadable line: {e}"));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        if record.len() != 2 {
            problems.push(format!(
                "{line}: 2 champs attendus (user,device), {} trouvés / expected 2 fields (user,device), found {}",
                record.len(),
                record.len()
            ));
            continue;
        }
        let new = NewCode {
            username: record[0].to_string(),
            device_name: record[1].to_string(),
            ttl,
        };
        if let Err(StoreError::InvalidInput(m)) = crate::store::validate_code_request(&new) {
            problems.push(format!("{line}: ligne invalide / invalid row: {m}"));
            continue;
        }
        let k = (new.username.to_lowercase(), new.device_name.clone());
        if let Some(first) = seen.insert(k, line) {
            problems.push(format!(
                "{line}: même utilisateur et appareil qu'à la ligne {first} / same user and device as line {first}"
            ));
            continue;
        }
        requests.push(new);
    }
    Ok(if problems.is_empty() {
        Ok(requests)
    } else {
        Err(problems)
    })
}

/// `sesame devices list [--user UID] [--format table|json]`.
pub fn devices_list(
    config: &Path,
    user: Option<&str>,
    format: ListFormat,
) -> anyhow::Result<ExitCode> {
    let devices = runtime()?.block_on(async {
        let store = open(config).await?;
        let d = store.list_devices(user).await;
        store.close().await;
        anyhow::Ok(d?)
    })?;
    if devices.is_empty() && format == ListFormat::Table {
        eprintln!("aucun appareil enrôlé / no enrolled device");
    }
    let mut out = std::io::stdout().lock();
    match format {
        ListFormat::Json => {
            let summaries: Vec<_> = devices.iter().map(|d| d.summary()).collect();
            serde_json::to_writer_pretty(&mut out, &summaries)?;
            writeln!(out)?;
        }
        ListFormat::Table => {
            let rows: Vec<[String; 8]> = devices
                .iter()
                .map(|d| {
                    [
                        d.id.to_string(),
                        d.username.clone(),
                        d.name.clone(),
                        d.hostname.clone(),
                        d.tunnel_address.to_string(),
                        d.status.as_str().to_string(),
                        rfc3339(d.created_at),
                        d.public_key_base64(),
                    ]
                })
                .collect();
            let header = [
                "ID",
                "USER",
                "NAME",
                "HOSTNAME",
                "ADDRESS",
                "STATUS",
                "CREATED",
                "PUBLIC_KEY",
            ];
            // Hostnames and names are user-supplied: escaped, one device per line.
            out.write_all(crate::audit::export::text_table(&header, &rows).as_bytes())?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `sesame devices revoke ID [--reason TEXT]`. Revoking an already revoked device succeeds
/// (and says so); an unknown id fails.
pub fn devices_revoke(config: &Path, id: i64, reason: Option<&str>) -> anyhow::Result<ExitCode> {
    let reason = reason.unwrap_or("revoked with sesame devices revoke");
    let result = runtime()?.block_on(async {
        let store = open(config).await?;
        let r = store.revoke_device(id, reason, &cli_actor()).await;
        store.close().await;
        anyhow::Ok(r)
    })?;
    match result {
        Ok(d) => {
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "appareil / device {} ({}, {}, {}) révoqué / revoked",
                d.id, d.username, d.name, d.tunnel_address
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Err(StoreError::DeviceRevoked(id)) => {
            eprintln!("appareil / device {id} déjà révoqué / already revoked");
            Ok(ExitCode::SUCCESS)
        }
        Err(StoreError::DeviceNotFound(id)) => bail!(
            "aucun appareil numéro {id} : voyez `sesame devices list` / no device with id {id}: see `sesame devices list`"
        ),
        Err(e) => Err(e.into()),
    }
}
