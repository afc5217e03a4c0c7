//! `sesame mfa code|reset --user UID`: one-time second-factor registration codes handed out by IT, printed alone on stdout.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;

use super::{cli_admin, open_services_issuing, runtime};
use crate::service::{mfa, ServiceError};

/// What to do for the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MfaAction {
    /// A registration code; the current factor stays until a new one is confirmed.
    Code,
    /// Remove the factor (phone lost), close open windows, then a registration code.
    Reset,
}

/// Runs `action` for `user`; the code goes alone to stdout, what to do with it to stderr.
pub fn run(config: &Path, user: &str, action: MfaAction) -> anyhow::Result<ExitCode> {
    let result = runtime()?.block_on(async {
        let svc = open_services_issuing(config).await?;
        let admin = cli_admin();
        let r = match action {
            MfaAction::Code => mfa::issue_code(&svc, &admin, user, None).await,
            MfaAction::Reset => mfa::reset(&svc, &admin, user, None).await,
        };
        svc.close().await;
        anyhow::Ok(r)
    })?;
    match result {
        Ok(code) => {
            writeln!(std::io::stdout().lock(), "{code}")?;
            eprintln!(
                "code d'enregistrement du second facteur pour {user}, valable 7 jours, à usage unique : \
                 à remettre en main propre ; la personne le saisit avec son mot de passe sur la page \
                 de connexion du portail ou lors de l'enrôlement / one-time second-factor \
                 registration code for {user}, valid 7 days: hand it over in person; they type it \
                 with their password on the portal's sign-in page"
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(ServiceError::NotWired(_)) => bail!(
            "le second facteur n'est pas activé : ajoutez une section [mfa] à la configuration / \
             the second factor is off: add an [mfa] section to the configuration"
        ),
        Err(e) => Err(e.into()),
    }
}
