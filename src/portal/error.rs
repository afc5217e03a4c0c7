//! API errors: each knows its HTTP status, its stable code and the sentence shown to the user.
//!
//! Messages are French first, then English, and say what to do. Nothing is logged here: the
//! logging middleware in `portal::middleware` records the status and code of every error answer.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::{codes, ErrorBody, ErrorDetail};
use crate::directory::DirectoryError;
use crate::service::ServiceError;
use crate::store::StoreError;

/// Everything an API call can answer instead of success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("empty password")]
    EmptyPassword,
    #[error("not a VPN user")]
    NotVpnUser,
    #[error("account disabled")]
    AccountDisabled,
    #[error("invalid enrolment code")]
    InvalidCode,
    #[error("enrolment code expired")]
    CodeExpired,
    #[error("enrolment code already used")]
    CodeAlreadyUsed,
    #[error("enrolment code issued for another user")]
    CodeWrongUser,
    #[error("invalid public key: {0}")]
    InvalidPublicKey(&'static str),
    #[error("public key already in use")]
    PublicKeyInUse,
    #[error("tunnel address pool exhausted")]
    AddressPoolExhausted,
    #[error("not authenticated")]
    Unauthenticated,
    #[error("forbidden")]
    Forbidden,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("device revoked")]
    DeviceRevoked,
    /// Suspended by the directory sync; restored if the user comes back in time.
    #[error("device suspended")]
    DeviceSuspended,
    /// The device's key (and token) expired, or it reached `devices.max_lifetime`.
    #[error("device expired")]
    DeviceExpired,
    #[error("too many attempts, retry after {retry_after_secs}s")]
    TooManyAttempts { retry_after_secs: u64 },
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    #[error("directory unavailable: {0}")]
    DirectoryUnavailable(String),
    #[error("database unavailable: {0}")]
    DatabaseUnavailable(String),
    #[error("request timed out")]
    TimedOut,
    /// A cookie-authenticated state change without the CSRF token, or from another origin.
    #[error("CSRF check failed: {0}")]
    CsrfRejected(&'static str),
    #[error("internal error: {0}")]
    Internal(String),
    /// A bad audit query parameter (filter, cursor, limit, format, review subject).
    #[error("invalid audit query")]
    InvalidQuery(#[from] crate::audit::QueryError),
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            BadRequest(_) | InvalidJson(_) | EmptyPassword | InvalidPublicKey(_) => {
                StatusCode::BAD_REQUEST
            }
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            InvalidCredentials | Unauthenticated => StatusCode::UNAUTHORIZED,
            NotVpnUser | AccountDisabled | Forbidden | DeviceRevoked | DeviceSuspended
            | DeviceExpired | CodeWrongUser | CsrfRejected(_) => StatusCode::FORBIDDEN,
            InvalidCode | NotFound | UnknownUser(_) => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            CodeExpired | CodeAlreadyUsed => StatusCode::GONE,
            PublicKeyInUse => StatusCode::CONFLICT,
            TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            AddressPoolExhausted | DirectoryUnavailable(_) | DatabaseUnavailable(_) | TimedOut => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            InvalidQuery(crate::audit::QueryError::UnknownResource(_)) => StatusCode::NOT_FOUND,
            InvalidQuery(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The stable code scripts rely on (`sesame::api::codes`).
    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            BadRequest(_) => codes::BAD_REQUEST,
            InvalidJson(_) => codes::INVALID_JSON,
            PayloadTooLarge => codes::PAYLOAD_TOO_LARGE,
            InvalidCredentials => codes::INVALID_CREDENTIALS,
            EmptyPassword => codes::EMPTY_PASSWORD,
            NotVpnUser => codes::NOT_VPN_USER,
            AccountDisabled => codes::ACCOUNT_DISABLED,
            InvalidCode => codes::INVALID_CODE,
            CodeExpired => codes::CODE_EXPIRED,
            CodeAlreadyUsed => codes::CODE_ALREADY_USED,
            CodeWrongUser => codes::CODE_WRONG_USER,
            InvalidPublicKey(_) => codes::INVALID_PUBLIC_KEY,
            PublicKeyInUse => codes::PUBLIC_KEY_IN_USE,
            AddressPoolExhausted => codes::ADDRESS_POOL_EXHAUSTED,
            Unauthenticated => codes::UNAUTHENTICATED,
            Forbidden => codes::FORBIDDEN,
            NotFound => codes::NOT_FOUND,
            MethodNotAllowed => codes::BAD_REQUEST,
            DeviceRevoked => codes::DEVICE_REVOKED,
            DeviceSuspended => codes::DEVICE_SUSPENDED,
            DeviceExpired => codes::DEVICE_EXPIRED,
            TooManyAttempts { .. } => codes::TOO_MANY_ATTEMPTS,
            UnknownUser(_) => codes::UNKNOWN_USER,
            DirectoryUnavailable(_) => codes::DIRECTORY_UNAVAILABLE,
            DatabaseUnavailable(_) => codes::DATABASE_UNAVAILABLE,
            TimedOut => codes::REQUEST_TIMEOUT,
            CsrfRejected(_) => codes::CSRF_REJECTED,
            Internal(_) => codes::INTERNAL,
            InvalidQuery(e) => e.code(),
        }
    }

    /// The sentence shown to the person: French, then English; says what to do next.
    pub fn message(&self) -> String {
        use ApiError::*;
        match self {
            BadRequest(detail) => format!(
                "Requête invalide : {detail}. Vérifiez les informations saisies. / Invalid request: {detail}. Check what you entered."
            ),
            InvalidJson(detail) => format!(
                "Le contenu envoyé n'est pas un JSON valide ({detail}). Mettez à jour l'agent Sesame ou contactez le service informatique. / The request body is not valid JSON ({detail}). Update the Sesame agent or contact IT support."
            ),
            PayloadTooLarge => "La requête est trop volumineuse. Vérifiez les informations saisies. / The request is too large. Check what you entered.".into(),
            InvalidCredentials => "Identifiant ou mot de passe incorrect. Vérifiez-les et réessayez (attention aux majuscules). / Wrong username or password. Check them and try again (mind capital letters).".into(),
            EmptyPassword => "Le mot de passe est vide. Saisissez votre mot de passe habituel. / The password is empty. Type your usual password.".into(),
            NotVpnUser => "Votre compte n'est pas autorisé à utiliser le VPN. Demandez l'accès à votre responsable ou au service informatique. / Your account is not allowed to use the VPN. Ask your manager or IT support for access.".into(),
            AccountDisabled => "Votre compte est désactivé. Contactez le service informatique. / Your account is disabled. Contact IT support.".into(),
            InvalidCode => "Code d'enrôlement inconnu. Vérifiez le code reçu du service informatique (sans espace) ou demandez-en un nouveau. / Unknown enrolment code. Check the code IT support gave you (no spaces) or ask for a new one.".into(),
            CodeExpired => "Ce code d'enrôlement a expiré. Demandez un nouveau code au service informatique. / This enrolment code has expired. Ask IT support for a new code.".into(),
            CodeAlreadyUsed => "Ce code d'enrôlement a déjà servi. Demandez un nouveau code au service informatique. / This enrolment code was already used. Ask IT support for a new code.".into(),
            CodeWrongUser => "Ce code d'enrôlement a été émis pour une autre personne. Utilisez votre propre identifiant ou demandez un code à votre nom. / This enrolment code was issued for someone else. Use your own username or ask for a code in your name.".into(),
            InvalidPublicKey(why) => format!(
                "La clé de l'ordinateur est invalide ({why}). Relancez l'enrôlement avec l'agent Sesame ; si cela persiste, contactez le service informatique. / The laptop key is invalid ({why}). Run the enrolment again with the Sesame agent; if it persists, contact IT support."
            ),
            PublicKeyInUse => "Cette clé est déjà utilisée par un autre appareil. Relancez l'enrôlement avec l'agent Sesame pour générer une nouvelle clé. / This key is already used by another device. Run the enrolment again with the Sesame agent to generate a new key.".into(),
            AddressPoolExhausted => "Plus aucune adresse VPN n'est disponible. Contactez le service informatique. / No VPN address is left. Contact IT support.".into(),
            Unauthenticated => "Vous n'êtes pas connecté, ou votre session a expiré. Reconnectez-vous. / You are not signed in, or your session expired. Sign in again.".into(),
            Forbidden => "Vous n'avez pas le droit de faire cette opération. Contactez le service informatique si vous en avez besoin. / You are not allowed to do this. Contact IT support if you need to.".into(),
            MethodNotAllowed => "Opération non permise à cette adresse. Mettez à jour l'agent Sesame ou contactez le service informatique. / This operation is not allowed at this address. Update the Sesame agent or contact IT support.".into(),
            NotFound => "Élément introuvable. Vérifiez l'adresse ou l'identifiant. / Not found. Check the address or the identifier.".into(),
            DeviceRevoked => "Cet ordinateur n'a plus accès au VPN (accès retiré). Contactez le service informatique. / This laptop no longer has VPN access (revoked). Contact IT support.".into(),
            DeviceSuspended => "L'accès VPN de cet ordinateur est suspendu : votre compte n'est plus autorisé dans l'annuaire. Il reviendra sans nouvel enrôlement si l'accès vous est rendu ; contactez le service informatique. / This laptop's VPN access is suspended: your account is no longer allowed in the directory. It comes back without a new enrolment if your access is restored; contact IT support.".into(),
            DeviceExpired => "La clé de cet ordinateur a expiré. Demandez un nouveau code d'enrôlement au service informatique et enrôlez-le à nouveau. / This laptop's key has expired. Ask IT support for a new enrolment code and enrol it again.".into(),
            TooManyAttempts { retry_after_secs } => format!(
                "Trop de tentatives. Attendez {retry_after_secs} secondes avant de réessayer. / Too many attempts. Wait {retry_after_secs} seconds before trying again."
            ),
            UnknownUser(u) => format!(
                "L'utilisateur {u:?} est inconnu de l'annuaire. Vérifiez l'identifiant. / User {u:?} is not in the directory. Check the username."
            ),
            DirectoryUnavailable(_) => "L'annuaire ne répond pas. Réessayez dans quelques minutes ; si cela persiste, contactez le service informatique. / The directory is not answering. Try again in a few minutes; if it persists, contact IT support.".into(),
            DatabaseUnavailable(_) => "Le service est momentanément indisponible. Réessayez dans quelques minutes ; si cela persiste, contactez le service informatique. / The service is temporarily unavailable. Try again in a few minutes; if it persists, contact IT support.".into(),
            TimedOut => "Le service a mis trop de temps à répondre. Réessayez dans quelques minutes. / The service took too long to answer. Try again in a few minutes.".into(),
            CsrfRejected(_) => "Requête refusée par la protection contre la falsification (jeton absent ou autre site). Rechargez la page et recommencez. / Request refused by the forgery protection (missing token or another site). Reload the page and try again.".into(),
            InvalidQuery(e) => e.to_string(),
            Internal(_) => "Erreur interne du service. Réessayez ; si cela persiste, contactez le service informatique. / Internal service error. Try again; if it persists, contact IT support.".into(),
        }
    }

    /// The JSON body of this error.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code().to_string(),
                message: self.message(),
            },
        }
    }
}

/// Carried in the response extensions so the logging middleware can record the cause.
#[derive(Debug, Clone)]
pub struct ErrorCause(pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status(), Json(self.body())).into_response();
        if let ApiError::TooManyAttempts { retry_after_secs } = &self {
            if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp.extensions_mut().insert(ErrorCause(self.to_string()));
        resp
    }
}

impl From<DirectoryError> for ApiError {
    fn from(e: DirectoryError) -> Self {
        match e {
            DirectoryError::InvalidCredentials => ApiError::InvalidCredentials,
            DirectoryError::EmptyPassword => ApiError::EmptyPassword,
            DirectoryError::Disabled => ApiError::AccountDisabled,
            DirectoryError::Unavailable(why) => ApiError::DirectoryUnavailable(why),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid(m) => ApiError::BadRequest(m),
            ServiceError::UnknownUser(u) => ApiError::UnknownUser(u),
            ServiceError::AccountDisabled => ApiError::AccountDisabled,
            ServiceError::NotVpnUser => ApiError::NotVpnUser,
            ServiceError::Forbidden => ApiError::Forbidden,
            ServiceError::NotFound => ApiError::NotFound,
            ServiceError::InvalidPublicKey(why) => ApiError::InvalidPublicKey(why),
            ServiceError::InvalidCode => ApiError::InvalidCode,
            ServiceError::Directory(e) => e.into(),
            ServiceError::DirectoryTimeout => ApiError::DirectoryUnavailable("timed out".into()),
            ServiceError::Store(e) => e.into(),
            ServiceError::Query(q) => ApiError::InvalidQuery(q),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(e) => ApiError::DatabaseUnavailable(e.to_string()),
            StoreError::InvalidInput(m) => ApiError::BadRequest(m),
            StoreError::CodeNotFound => ApiError::InvalidCode,
            StoreError::CodeExpired => ApiError::CodeExpired,
            StoreError::CodeAlreadyUsed => ApiError::CodeAlreadyUsed,
            StoreError::CodeWrongUser => ApiError::CodeWrongUser,
            StoreError::PublicKeyInUse => ApiError::PublicKeyInUse,
            StoreError::AddressPoolExhausted { .. } => ApiError::AddressPoolExhausted,
            StoreError::DeviceNotFound(_) => ApiError::NotFound,
            StoreError::DeviceRevoked(_) => ApiError::DeviceRevoked,
            StoreError::DeviceTooOld(_) => ApiError::DeviceExpired,
            StoreError::RotationTooSoon { retry_after_secs } => {
                ApiError::TooManyAttempts { retry_after_secs }
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<crate::audit::review::ReviewError> for ApiError {
    fn from(e: crate::audit::review::ReviewError) -> Self {
        match e {
            crate::audit::review::ReviewError::Query(q) => ApiError::InvalidQuery(q),
            crate::audit::review::ReviewError::Store(s) => ApiError::from(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_a_bilingual_message_and_a_known_code() {
        let all = [
            ApiError::BadRequest("x".into()),
            ApiError::InvalidJson("x".into()),
            ApiError::PayloadTooLarge,
            ApiError::InvalidCredentials,
            ApiError::EmptyPassword,
            ApiError::NotVpnUser,
            ApiError::AccountDisabled,
            ApiError::InvalidCode,
            ApiError::CodeExpired,
            ApiError::CodeAlreadyUsed,
            ApiError::CodeWrongUser,
            ApiError::InvalidPublicKey("x"),
            ApiError::PublicKeyInUse,
            ApiError::AddressPoolExhausted,
            ApiError::Unauthenticated,
            ApiError::Forbidden,
            ApiError::NotFound,
            ApiError::MethodNotAllowed,
            ApiError::DeviceRevoked,
            ApiError::DeviceSuspended,
            ApiError::DeviceExpired,
            ApiError::TooManyAttempts {
                retry_after_secs: 3,
            },
            ApiError::UnknownUser("x".into()),
            ApiError::DirectoryUnavailable("x".into()),
            ApiError::DatabaseUnavailable("x".into()),
            ApiError::TimedOut,
            ApiError::CsrfRejected("x"),
            ApiError::Internal("x".into()),
        ];
        for e in all {
            let m = e.message();
            assert!(m.contains(" / "), "{m}");
            assert!(e.code().chars().all(|c| c.is_ascii_lowercase() || c == '_'));
            assert!(e.status().is_client_error() || e.status().is_server_error());
        }
    }

    #[test]
    fn too_many_attempts_sets_retry_after() {
        let r = ApiError::TooManyAttempts {
            retry_after_secs: 42,
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            r.headers().get(header::RETRY_AFTER).map(|v| v.as_bytes()),
            Some(&b"42"[..])
        );
    }
}
