//! Why a flow refused or failed: one error type for every flow, its stable code and its audit
//! outcome (the portal maps it to HTTP once, the CLI prints it).

use crate::api::codes;
use crate::audit::checkpoint::CheckpointError;
use crate::audit::{Outcome, QueryError};
use crate::directory::DirectoryError;
use crate::store::StoreError;

/// Why a flow refused or failed. Sources are kept (directory, store, query) so the log shows the
/// whole chain; [`ServiceError::kind`] flattens them into what the caller needs to know.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A field is wrong; the message names it (French / English).
    #[error("{0}")]
    Invalid(String),
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    #[error("account disabled")]
    AccountDisabled,
    #[error("not a VPN user")]
    NotVpnUser,
    /// The actor's roles or delegated scope do not allow this.
    #[error("forbidden")]
    Forbidden,
    /// No such object, or not one the actor may see (same answer, nothing leaks).
    #[error("not found")]
    NotFound,
    /// No session, or one that expired or was closed; an unknown device token.
    #[error("not authenticated")]
    Unauthenticated,
    #[error("invalid public key: {0}")]
    InvalidPublicKey(#[source] crate::key::KeyError),
    /// Not a code at all (empty, too long); unknown codes come from the store.
    #[error("invalid enrolment code")]
    InvalidCode,
    #[error("device revoked")]
    DeviceRevoked,
    /// A site gateway's token that is unknown, replaced, or of a site no longer configured.
    #[error("invalid site token")]
    InvalidSiteToken,
    /// Suspended by the directory sync; restored if the user comes back in time.
    #[error("device suspended")]
    DeviceSuspended,
    /// The device's key (and token) expired.
    #[error("device expired")]
    DeviceExpired,
    /// The failure limiter refused the attempt (see `service::ratelimit`).
    #[error("too many attempts, retry after {retry_after_secs}s")]
    TooManyAttempts { retry_after_secs: u64 },
    /// A password attempt refused for a reason that must not leak (account disabled, unknown,
    /// no role or no VPN access once the password is right): answered exactly like a wrong
    /// password; the reason stays here for the audit log.
    #[error("credentials refused: {0}")]
    CredentialsRefused(#[source] Box<ServiceError>),
    #[error("directory: {0}")]
    Directory(#[from] DirectoryError),
    #[error("directory timed out")]
    DirectoryTimeout,
    #[error("database timed out")]
    DatabaseTimeout,
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A bad audit query parameter (time, format, review subject, unknown resource).
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The audit key or checkpoint file cannot be read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// An export page cannot be rendered.
    #[error("cannot render the export: {0}")]
    Render(#[from] csv::Error),
    /// This process was built without the part the flow needs (the CLI has no gateway).
    #[error("{0} is not available in this process")]
    NotWired(&'static str),
    /// The second factor's code is needed (none was sent, or the device has no open window).
    #[error("second factor required")]
    MfaRequired,
    /// The code is wrong, replayed or from another time step.
    #[error("invalid second-factor code")]
    InvalidOtp,
    /// The user has no factor: IT hands out a registration code.
    #[error("no second factor registered")]
    MfaNotRegistered,
    /// The owner has not used the second factor for `[devices] reauth_interval`.
    #[error("re-authentication with the second factor required")]
    ReauthRequired,
    /// The provider could not answer (RADIUS servers down, a secret that does not decrypt).
    #[error("second factor: {0}")]
    Mfa(#[from] crate::mfa::ProviderError),
}

/// What a [`ServiceError`] means to the caller, its sources flattened: one kind per stable code
/// of `api::codes` (audit query errors carry their own codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    InvalidCredentials,
    EmptyPassword,
    NotVpnUser,
    AccountDisabled,
    InvalidCode,
    CodeExpired,
    CodeAlreadyUsed,
    CodeWrongUser,
    InvalidPublicKey,
    PublicKeyInUse,
    AddressPoolExhausted,
    Unauthenticated,
    Forbidden,
    NotFound,
    DeviceRevoked,
    DeviceSuspended,
    DeviceExpired,
    InvalidSiteToken,
    TooManyAttempts,
    UnknownUser,
    DirectoryUnavailable,
    DatabaseUnavailable,
    InvalidQuery,
    Internal,
    MfaRequired,
    InvalidOtp,
    MfaNotRegistered,
    InvalidRegistrationCode,
    ReauthRequired,
    MfaUnavailable,
}

impl ErrorKind {
    /// The stable code scripts rely on (`api::codes`); an invalid query's code is its own
    /// ([`ServiceError::code`]).
    pub fn code(self) -> &'static str {
        use ErrorKind::*;
        match self {
            BadRequest => codes::BAD_REQUEST,
            InvalidCredentials => codes::INVALID_CREDENTIALS,
            EmptyPassword => codes::EMPTY_PASSWORD,
            NotVpnUser => codes::NOT_VPN_USER,
            AccountDisabled => codes::ACCOUNT_DISABLED,
            InvalidCode => codes::INVALID_CODE,
            CodeExpired => codes::CODE_EXPIRED,
            CodeAlreadyUsed => codes::CODE_ALREADY_USED,
            CodeWrongUser => codes::CODE_WRONG_USER,
            InvalidPublicKey => codes::INVALID_PUBLIC_KEY,
            PublicKeyInUse => codes::PUBLIC_KEY_IN_USE,
            AddressPoolExhausted => codes::ADDRESS_POOL_EXHAUSTED,
            Unauthenticated => codes::UNAUTHENTICATED,
            Forbidden => codes::FORBIDDEN,
            NotFound => codes::NOT_FOUND,
            DeviceRevoked => codes::DEVICE_REVOKED,
            DeviceSuspended => codes::DEVICE_SUSPENDED,
            DeviceExpired => codes::DEVICE_EXPIRED,
            InvalidSiteToken => codes::INVALID_SITE_TOKEN,
            TooManyAttempts => codes::TOO_MANY_ATTEMPTS,
            UnknownUser => codes::UNKNOWN_USER,
            DirectoryUnavailable => codes::DIRECTORY_UNAVAILABLE,
            DatabaseUnavailable => codes::DATABASE_UNAVAILABLE,
            InvalidQuery => codes::BAD_REQUEST,
            Internal => codes::INTERNAL,
            MfaRequired => codes::MFA_REQUIRED,
            InvalidOtp => codes::INVALID_OTP,
            MfaNotRegistered => codes::MFA_NOT_REGISTERED,
            InvalidRegistrationCode => codes::INVALID_REGISTRATION_CODE,
            ReauthRequired => codes::REAUTH_REQUIRED,
            MfaUnavailable => codes::SERVICE_UNAVAILABLE,
        }
    }
}

impl ServiceError {
    /// What the error means to the caller, whatever its source.
    pub fn kind(&self) -> ErrorKind {
        use ErrorKind as K;
        match self {
            ServiceError::Invalid(_) => K::BadRequest,
            ServiceError::UnknownUser(_) => K::UnknownUser,
            ServiceError::AccountDisabled => K::AccountDisabled,
            ServiceError::NotVpnUser => K::NotVpnUser,
            ServiceError::Forbidden => K::Forbidden,
            ServiceError::NotFound => K::NotFound,
            ServiceError::Unauthenticated => K::Unauthenticated,
            ServiceError::InvalidPublicKey(_) => K::InvalidPublicKey,
            ServiceError::InvalidCode => K::InvalidCode,
            ServiceError::DeviceRevoked => K::DeviceRevoked,
            ServiceError::InvalidSiteToken => K::InvalidSiteToken,
            ServiceError::DeviceSuspended => K::DeviceSuspended,
            ServiceError::DeviceExpired => K::DeviceExpired,
            ServiceError::TooManyAttempts { .. } => K::TooManyAttempts,
            ServiceError::Directory(DirectoryError::InvalidCredentials)
            | ServiceError::CredentialsRefused(_) => K::InvalidCredentials,
            ServiceError::Directory(DirectoryError::EmptyPassword) => K::EmptyPassword,
            ServiceError::Directory(DirectoryError::Disabled) => K::AccountDisabled,
            ServiceError::Directory(_) | ServiceError::DirectoryTimeout => K::DirectoryUnavailable,
            ServiceError::DatabaseTimeout => K::DatabaseUnavailable,
            ServiceError::Store(e) => store_kind(e),
            ServiceError::Query(_) => K::InvalidQuery,
            ServiceError::Checkpoint(_) | ServiceError::Render(_) | ServiceError::NotWired(_) => {
                K::Internal
            }
            ServiceError::MfaRequired => K::MfaRequired,
            ServiceError::InvalidOtp => K::InvalidOtp,
            ServiceError::MfaNotRegistered => K::MfaNotRegistered,
            ServiceError::ReauthRequired => K::ReauthRequired,
            ServiceError::Mfa(crate::mfa::ProviderError::Store(e)) => store_kind(e),
            ServiceError::Mfa(_) => K::MfaUnavailable,
        }
    }

    /// The stable code of the API answer, recorded as `reason` in refusal audit events.
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::Query(q) => q.code(),
            other => other.kind().code(),
        }
    }

    /// The `reason` of a refusal's audit event: the real one behind a
    /// [`ServiceError::CredentialsRefused`] (the caller saw `invalid_credentials`).
    pub fn audit_reason(&self) -> &'static str {
        match self {
            ServiceError::CredentialsRefused(inner) => inner.audit_reason(),
            other => other.code(),
        }
    }

    /// How a refusal is recorded in the audit log: `denied` when the caller was not allowed
    /// (wrong password, role, account, device, owner), `failure` otherwise (bad input, a part
    /// of the system unavailable, too many attempts).
    pub fn outcome(&self) -> Outcome {
        use ErrorKind::*;
        match self.kind() {
            InvalidCredentials
            | Unauthenticated
            | NotVpnUser
            | AccountDisabled
            | Forbidden
            | DeviceRevoked
            | DeviceSuspended
            | DeviceExpired
            | CodeWrongUser
            | MfaRequired
            | InvalidOtp
            | MfaNotRegistered
            | InvalidRegistrationCode
            | ReauthRequired
            | InvalidSiteToken => Outcome::Denied,
            _ => Outcome::Failure,
        }
    }

    /// The wait an attempt refused for its rate asks for, in seconds.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ServiceError::TooManyAttempts { retry_after_secs }
            | ServiceError::Store(StoreError::RotationTooSoon { retry_after_secs }) => {
                Some(*retry_after_secs)
            }
            _ => None,
        }
    }

    /// The sentence naming a bad field, for a [`ErrorKind::BadRequest`].
    pub fn detail(&self) -> Option<&str> {
        match self {
            ServiceError::Invalid(m) | ServiceError::Store(StoreError::InvalidInput(m)) => Some(m),
            _ => None,
        }
    }
}

fn store_kind(e: &StoreError) -> ErrorKind {
    use ErrorKind as K;
    match e {
        StoreError::Unavailable(_) => K::DatabaseUnavailable,
        StoreError::InvalidInput(_) => K::BadRequest,
        StoreError::CodeNotFound => K::InvalidCode,
        StoreError::CodeExpired => K::CodeExpired,
        StoreError::CodeAlreadyUsed => K::CodeAlreadyUsed,
        StoreError::CodeWrongUser => K::CodeWrongUser,
        StoreError::PublicKeyInUse => K::PublicKeyInUse,
        StoreError::AddressPoolExhausted { .. } => K::AddressPoolExhausted,
        StoreError::DeviceNotFound(_) => K::NotFound,
        StoreError::DeviceRevoked(_) => K::DeviceRevoked,
        StoreError::DeviceTooOld(_) => K::DeviceExpired,
        StoreError::RotationTooSoon { .. } => K::TooManyAttempts,
        StoreError::MfaRegistrationCode => K::InvalidRegistrationCode,
        StoreError::MfaNotPending => K::MfaNotRegistered,
        _ => K::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_of_the_caller_are_denied_the_rest_failures() {
        let denied = [
            ServiceError::Directory(DirectoryError::InvalidCredentials),
            ServiceError::Directory(DirectoryError::Disabled),
            ServiceError::NotVpnUser,
            ServiceError::Forbidden,
            ServiceError::Unauthenticated,
            ServiceError::Store(StoreError::CodeWrongUser),
            ServiceError::Store(StoreError::DeviceRevoked(1)),
            ServiceError::Store(StoreError::DeviceTooOld(1)),
        ];
        for e in denied {
            assert_eq!(e.outcome(), Outcome::Denied, "{e}");
        }
        let failed = [
            ServiceError::Directory(DirectoryError::EmptyPassword),
            ServiceError::DirectoryTimeout,
            ServiceError::InvalidPublicKey(crate::key::KeyError::AllZero),
            ServiceError::Store(StoreError::CodeNotFound),
            ServiceError::Store(StoreError::PublicKeyInUse),
            ServiceError::Store(StoreError::RotationTooSoon {
                retry_after_secs: 5,
            }),
            ServiceError::TooManyAttempts {
                retry_after_secs: 5,
            },
        ];
        for e in failed {
            assert_eq!(e.outcome(), Outcome::Failure, "{e}");
        }
    }

    #[test]
    fn codes_come_from_the_source() {
        assert_eq!(
            ServiceError::Directory(DirectoryError::InvalidCredentials).code(),
            "invalid_credentials"
        );
        assert_eq!(
            ServiceError::Store(StoreError::CodeNotFound).code(),
            "invalid_code"
        );
        assert_eq!(ServiceError::InvalidCode.code(), "invalid_code");
        assert_eq!(
            ServiceError::Query(QueryError::BadLimit("0".into())).code(),
            "invalid_limit"
        );
        assert_eq!(
            ServiceError::Store(StoreError::RotationTooSoon {
                retry_after_secs: 7
            })
            .retry_after_secs(),
            Some(7)
        );
    }
}
