//! `sesame site token`: a new token for a site's gateway, printed once.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use super::{cli_admin, open_services, runtime};
use crate::service::sites;

/// Prints a new token for `site` on stdout (alone on its line, for `> token-file`); the
/// previous token of the site stops working at once. What to do with it goes to stderr.
pub fn token(config: &Path, site: &str) -> anyhow::Result<ExitCode> {
    let token = runtime()?.block_on(async {
        let svc = open_services(config).await?;
        let r = sites::create_token(&svc, &cli_admin(), site).await;
        svc.close().await;
        anyhow::Ok(r)
    })??;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{token}").context("writing to stdout")?;
    out.flush().context("writing to stdout")?;
    eprintln!(
        "nouveau jeton du site {site:?} : copiez-le (0600) dans [gateway] portal_token_file de sa passerelle ; l'ancien ne sert plus / new token of site {site:?}: copy it (0600) to its gateway's [gateway] portal_token_file; the previous one no longer works"
    );
    Ok(ExitCode::SUCCESS)
}
