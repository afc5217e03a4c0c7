//! Store-backed admin commands: `sesame enrol-code create` and `sesame devices list|revoke`.
//!
//! These run the services on the database named in the configuration; they do not check the
//! directory (the user named on an enrolment code is checked when the code is redeemed).
//! Scripts rely on the output shapes: `enrol-code create` prints the code alone on stdout and
//! its details on stderr; `--csv` prints CSV `user,device,code,expires_at`.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::config::Config;
use crate::service::devices::{self, DeviceFilter};
use crate::service::{codes, ErrorKind};
use crate::store::CreatedCode;
use crate::time;

use super::{cli_admin, cli_login, open_services, open_services_issuing, runtime};

/// `sesame devices list` output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    /// Aligned text, one device per line.
    Table,
    /// The API's device summaries.
    Json,
}

/// The same TTL bounds as the API's (`service::codes`), named after the flag.
fn parse_ttl(ttl: &str) -> anyhow::Result<Duration> {
    codes::parse_ttl(Some(ttl)).map_err(|e| anyhow::anyhow!("--{e}"))
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
        (Some(file), None, None) => match codes::parse_csv(
            &std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?,
            ttl,
        ) {
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
        (None, Some(user), Some(device)) => {
            vec![codes::code_request(user, device, ttl).map_err(|e| anyhow::anyhow!("{e}"))?]
        }
        _ => bail!("use either --user UID --device NAME, or --csv FILE"),
    };
    if requests.is_empty() {
        bail!("le fichier ne contient aucune ligne / the file has no rows: nothing to do");
    }
    let issued = runtime()?.block_on(async {
        let svc = open_services_issuing(config).await?;
        let issued = codes::issue_unchecked(&svc, &cli_admin(), &requests).await;
        svc.close().await;
        issued.map_err(anyhow::Error::new)
    })?;
    if csv.is_some() {
        write_csv(&issued)?;
    } else if let Some(c) = issued.first() {
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
        time::format(c.expires_at)
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
            time::format(c.expires_at).as_str(),
        ])?;
    }
    w.flush()?;
    eprintln!("{} codes créés / codes issued", codes.len());
    Ok(())
}

/// `sesame devices list [--user UID] [--format table|json]`.
pub fn devices_list(
    config: &Path,
    user: Option<&str>,
    format: ListFormat,
) -> anyhow::Result<ExitCode> {
    let filter = DeviceFilter {
        user: user.map(str::to_string),
        ..Default::default()
    };
    let devices = runtime()?.block_on(async {
        let svc = open_services(config).await?;
        let d = devices::list(&svc, &cli_admin(), &filter).await;
        svc.close().await;
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
                        time::format(d.created_at),
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
        let svc = open_services(config).await?;
        // The running server's control plane sees the change within its devices-table poll.
        let r = devices::revoke(&svc, &cli_admin(), id, reason, None).await;
        svc.close().await;
        anyhow::Ok(r)
    })?;
    match result {
        Ok((d, false)) => {
            eprintln!(
                "appareil / device {} déjà révoqué / already revoked",
                d.id
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok((d, true)) => {
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "appareil / device {} ({}, {}, {}) révoqué / revoked",
                d.id, d.username, d.name, d.tunnel_address
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => bail!(
            "aucun appareil numéro {id} : voyez `sesame devices list` / no device with id {id}: see `sesame devices list`"
        ),
        Err(e) => Err(e.into()),
    }
}

/// `sesame devices revoke ID --emergency`: through the running gateway's admin socket, without
/// the database (see [`crate::control::emergency`]).
pub fn devices_revoke_emergency(
    config: &Path,
    id: i64,
    reason: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(config)?;
    let dir = config
        .gateway
        .private_key_file
        .parent()
        .unwrap_or(Path::new("."));
    let key = crate::control::emergency::request(
        dir,
        id,
        &cli_login(),
        reason.unwrap_or("emergency revocation"),
    )
    .context(
        "révocation d'urgence impossible : `sesame serve` tourne-t-il sur cette machine ? / emergency revocation failed: is `sesame serve` running on this machine?",
    )?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "device {id} ({key}) cut at the gateway; the database is updated when it answers"
    )?;
    out.flush().context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}
