//! The agent's error type at the command edge, and its mapping to a user message (i18n table).

use sesame::api::codes;

use crate::files::FileError;
use crate::i18n::Msg;
use crate::portal::PortalError;
use crate::state::StateError;
use crate::wgconf::ConfError;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Portal(Box<PortalError>),
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    State(Box<StateError>),
    #[error("{path}: {source}")]
    Conf { path: String, source: ConfError },
    #[error("no password given")]
    NoPassword,
    /// The second factor's code was asked and none was typed.
    #[error("no second-factor code given")]
    NoCode,
    #[error("reading the password: {0}")]
    PasswordIo(std::io::Error),
    #[error("already running as pid {0}")]
    AlreadyRunning(i32),
    #[error("tunnel failed: {detail}")]
    Tunnel { detail: String, log: String },
    #[error("tunnel not supported on this system")]
    Unsupported { conf: String },
    #[error("key rotation interrupted")]
    RotationInterrupted,
    #[error("system error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<PortalError> for AgentError {
    fn from(err: PortalError) -> Self {
        AgentError::Portal(Box::new(err))
    }
}

impl From<StateError> for AgentError {
    fn from(err: StateError) -> Self {
        AgentError::State(Box::new(err))
    }
}

impl AgentError {
    /// The message a user sees for this error; `user` is the account given to `enrol`, if any.
    pub fn to_msg(&self, user: Option<&str>) -> Msg {
        match self {
            AgentError::Portal(err) => portal_msg(err, user),
            AgentError::File(err) => file_msg(err),
            AgentError::State(state) => match state.as_ref() {
                StateError::File(err) => file_msg(err),
                StateError::NotEnrolled(path) => Msg::NotEnrolled {
                    dir: path
                        .parent()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                },
                StateError::Toml { path, line, source } => Msg::ConfigInvalid {
                    path: path.display().to_string(),
                    line: *line,
                    detail: source.message().to_string(),
                },
            },
            AgentError::Conf { path, source } => match source {
                ConfError::Invalid { line, detail } => Msg::ConfigInvalid {
                    path: path.clone(),
                    line: *line,
                    detail: detail.clone(),
                },
                ConfError::BadAnswer(detail) => Msg::PortalRefused {
                    code: "bad_answer".into(),
                    message: detail.clone(),
                },
            },
            AgentError::NoPassword => Msg::NoPassword,
            AgentError::NoCode => Msg::MfaCodeNeeded,
            AgentError::PasswordIo(_) => Msg::NoPassword,
            AgentError::AlreadyRunning(pid) => Msg::AlreadyRunning { pid: *pid },
            AgentError::Tunnel { detail, log } => Msg::TunnelFailed {
                detail: detail.clone(),
                log: log.clone(),
            },
            AgentError::Unsupported { conf } => Msg::UnsupportedPlatform { conf: conf.clone() },
            AgentError::RotationInterrupted => Msg::RotationInterrupted,
            AgentError::Io(err) => Msg::TunnelFailed {
                detail: err.to_string(),
                log: String::new(),
            },
        }
    }
}

fn file_msg(err: &FileError) -> Msg {
    match err {
        FileError::Insecure { path, mode } => Msg::InsecureFile {
            path: path.display().to_string(),
            mode: *mode,
        },
        FileError::Io { path, source } => Msg::FileError {
            path: path.display().to_string(),
            detail: source.to_string(),
        },
    }
}

/// Maps the API's stable codes (and transport failures) to the agent's messages.
pub fn portal_msg(err: &PortalError, user: Option<&str>) -> Msg {
    match err {
        PortalError::BadUrl(url) => Msg::BadPortalUrl { url: url.clone() },
        PortalError::PlainHttp(url) => Msg::PlainHttpRefused { url: url.clone() },
        PortalError::CaFile { path, detail } => Msg::CaFileUnreadable {
            path: path.clone(),
            detail: detail.clone(),
        },
        PortalError::Unreachable { url, .. } => Msg::PortalUnreachable { url: url.clone() },
        PortalError::Client(_) => Msg::PortalUnreachable { url: String::new() },
        PortalError::Tls { url, .. } => Msg::TlsInvalid { url: url.clone() },
        PortalError::Unexpected { status } => Msg::UnexpectedAnswer { status: *status },
        PortalError::Api { code, message, .. } => match code.as_str() {
            codes::INVALID_CODE => Msg::WrongCode,
            codes::CODE_EXPIRED => Msg::CodeExpired,
            codes::CODE_ALREADY_USED => Msg::CodeAlreadyUsed,
            codes::CODE_WRONG_USER => Msg::CodeWrongUser {
                user: user.unwrap_or_default().to_string(),
            },
            codes::INVALID_CREDENTIALS | codes::UNKNOWN_USER => Msg::WrongPassword,
            codes::EMPTY_PASSWORD => Msg::EmptyPassword,
            codes::NOT_VPN_USER => Msg::NotVpnUser,
            codes::ACCOUNT_DISABLED => Msg::AccountDisabled,
            codes::TOO_MANY_ATTEMPTS => Msg::TooManyAttempts,
            codes::DEVICE_REVOKED => Msg::DeviceRevoked,
            codes::UNAUTHENTICATED | codes::NOT_FOUND => Msg::DeviceUnknown,
            codes::INVALID_PUBLIC_KEY | codes::PUBLIC_KEY_IN_USE => {
                Msg::KeyRejected { code: code.clone() }
            }
            codes::ADDRESS_POOL_EXHAUSTED => Msg::PoolExhausted,
            codes::MFA_REQUIRED => Msg::MfaCodeNeeded,
            codes::INVALID_OTP => Msg::WrongOtp,
            codes::MFA_NOT_REGISTERED | codes::INVALID_REGISTRATION_CODE => Msg::MfaNotRegistered,
            codes::REAUTH_REQUIRED => Msg::ReauthRequired,
            codes::DIRECTORY_UNAVAILABLE | codes::DATABASE_UNAVAILABLE | codes::INTERNAL => {
                Msg::PortalTrouble { code: code.clone() }
            }
            _ => Msg::PortalRefused {
                code: code.clone(),
                message: message.clone(),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: &str) -> PortalError {
        PortalError::Api {
            status: 400,
            code: code.into(),
            message: "m".into(),
        }
    }

    #[test]
    fn every_stable_code_has_a_specific_message() {
        let cases = [
            (codes::INVALID_CODE, Msg::WrongCode),
            (codes::CODE_EXPIRED, Msg::CodeExpired),
            (codes::CODE_ALREADY_USED, Msg::CodeAlreadyUsed),
            (
                codes::CODE_WRONG_USER,
                Msg::CodeWrongUser {
                    user: "mdupont".into(),
                },
            ),
            (codes::INVALID_CREDENTIALS, Msg::WrongPassword),
            (codes::NOT_VPN_USER, Msg::NotVpnUser),
            (codes::ACCOUNT_DISABLED, Msg::AccountDisabled),
            (codes::DEVICE_REVOKED, Msg::DeviceRevoked),
            (codes::TOO_MANY_ATTEMPTS, Msg::TooManyAttempts),
            (
                codes::DIRECTORY_UNAVAILABLE,
                Msg::PortalTrouble {
                    code: codes::DIRECTORY_UNAVAILABLE.into(),
                },
            ),
        ];
        for (code, expected) in cases {
            assert_eq!(portal_msg(&api(code), Some("mdupont")), expected, "{code}");
        }
        assert_eq!(
            portal_msg(&api("brand_new_code"), None),
            Msg::PortalRefused {
                code: "brand_new_code".into(),
                message: "m".into()
            }
        );
    }

    #[test]
    fn local_errors_map_to_messages() {
        let err = AgentError::File(FileError::Insecure {
            path: "/d/sesame.conf".into(),
            mode: 0o644,
        });
        assert_eq!(
            err.to_msg(None),
            Msg::InsecureFile {
                path: "/d/sesame.conf".into(),
                mode: 0o644
            }
        );
        let err = AgentError::from(StateError::NotEnrolled("/d/agent.toml".into()));
        assert_eq!(err.to_msg(None), Msg::NotEnrolled { dir: "/d".into() });
    }
}
