//! The second factor on the laptop: reading a code, drawing a registration's QR code in the terminal, confirming the factor, unlocking the access window.

use std::io::BufRead as _;
use std::time::Duration;

use qrcode::render::unicode::Dense1x2;
use qrcode::QrCode;

use crate::error::AgentError;
use crate::i18n::Lang;
use crate::portal::Portal;
use crate::state::{AgentState, Paths};

/// Where a code comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeSource {
    /// A prompt on the terminal (the code is shown as typed: it is good for 30 seconds once).
    Prompt,
    /// The next line of standard input (`--code-stdin`, or after `--password-stdin`).
    Stdin,
}

/// Reads one code (6 digits, or a recovery code); refuses an empty one.
pub fn read_code(source: CodeSource, lang: Lang) -> Result<String, AgentError> {
    if source == CodeSource::Prompt {
        let prompt = match lang {
            Lang::Fr => "Code de votre application d'authentification (ou code de secours) : ",
            Lang::En => "Code of your authenticator app (or a recovery code): ",
        };
        eprint!("{prompt}");
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(AgentError::PasswordIo)?;
    let code = line.trim().to_string();
    if code.is_empty() {
        return Err(AgentError::NoCode);
    }
    Ok(code)
}

/// The QR code of `data` drawn with Unicode half blocks (dark on light, with a quiet zone),
/// for an authenticator application to scan from the screen.
pub fn qr_terminal(data: &str) -> String {
    match QrCode::new(data.as_bytes()) {
        Ok(code) => code
            .render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
        Err(_) => String::new(),
    }
}

fn portal_of(agent: &AgentState, lang: Lang) -> Result<Portal, AgentError> {
    Ok(Portal::new(
        &agent.portal,
        agent.ca_file.as_deref(),
        agent.insecure,
        Duration::from_secs(30),
        lang,
    )?)
}

/// Confirms the factor the enrolment handed out with its first `code`: the recovery codes.
pub fn confirm(paths: &Paths, code: &str, lang: Lang) -> Result<Vec<String>, AgentError> {
    let agent = AgentState::load(paths)?;
    let answer = portal_of(&agent, lang)?.confirm_mfa(&agent.device_token, code)?;
    Ok(answer.recovery_codes)
}

/// Opens the access window with `code`: its end (RFC 3339).
pub fn unlock(paths: &Paths, code: &str, lang: Lang) -> Result<String, AgentError> {
    let agent = AgentState::load(paths)?;
    let answer = portal_of(&agent, lang)?.unlock(&agent.device_token, code)?;
    Ok(answer.expires_at)
}

/// Closes the access window (`down`); the portal unreachable is not an error (the window
/// then ends at its time, or after `[mfa] idle` without traffic).
pub fn lock(paths: &Paths, lang: Lang) {
    let Ok(agent) = AgentState::load(paths) else {
        return;
    };
    if let Ok(portal) = Portal::new(
        &agent.portal,
        agent.ca_file.as_deref(),
        agent.insecure,
        Duration::from_secs(5),
        lang,
    ) {
        let _ = portal.lock(&agent.device_token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_terminal_qr_code_is_drawn_in_half_blocks() {
        let art =
            qr_terminal("otpauth://totp/Sesame:mdupont?secret=JBSWY3DPEHPK3PXP&issuer=Sesame");
        assert!(art.lines().count() > 10, "{art}");
        assert!(
            art.contains('▀') || art.contains('▄') || art.contains('█'),
            "{art}"
        );
    }
}
