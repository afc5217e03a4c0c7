//! API errors: each knows its HTTP status, its stable code and the sentence shown to the user.
//!
//! A flow's refusal is a [`ServiceError`], mapped here once to its status and sentence (its
//! stable code is the service's); the other variants are the portal's own (request shape,
//! routes, CSRF, timeouts). Sources are kept, never flattened into strings. Messages are French
//! first, then English, and say what to do. Nothing is logged here: the logging middleware in
//! `routes` records the status, code and cause of every error answer.

use axum::extract::multipart::MultipartError;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::{codes, ErrorBody, ErrorDetail};
use crate::audit::QueryError;
use crate::service::{ErrorKind, ServiceError};

/// Everything an API call can answer instead of success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A flow refused or failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The JSON body cannot be read: malformed, wrong shape or unknown field, too large.
    #[error("unreadable JSON body")]
    Json(#[source] JsonRejection),
    /// The query string does not fit the route's parameters.
    #[error("unreadable query string")]
    Query(#[source] QueryRejection),
    /// A multipart form cannot be read.
    #[error("unreadable form")]
    Form(#[source] MultipartError),
    /// A parameter the portal reads itself is wrong; the sentence names it (French / English).
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("request body too large")]
    PayloadTooLarge,
    /// No route at this path.
    #[error("no such route")]
    NoRoute,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request timed out")]
    TimedOut,
    /// A cookie-authenticated state change without the CSRF token, or from another origin.
    #[error("CSRF check failed: {0}")]
    CsrfRejected(&'static str),
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        ApiError::Service(e.into())
    }
}

/// The status of a flow's refusal.
fn service_status(e: &ServiceError) -> StatusCode {
    use ErrorKind as K;
    match e.kind() {
        K::BadRequest | K::EmptyPassword | K::InvalidPublicKey => StatusCode::BAD_REQUEST,
        K::InvalidCredentials
        | K::Unauthenticated
        | K::MfaRequired
        | K::InvalidOtp
        | K::InvalidRegistrationCode
        | K::InvalidSiteToken => StatusCode::UNAUTHORIZED,
        K::MfaNotRegistered | K::ReauthRequired => StatusCode::FORBIDDEN,
        K::MfaUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        K::NotVpnUser
        | K::AccountDisabled
        | K::Forbidden
        | K::DeviceRevoked
        | K::DeviceSuspended
        | K::DeviceExpired
        | K::CodeWrongUser => StatusCode::FORBIDDEN,
        K::InvalidCode | K::NotFound | K::UnknownUser => StatusCode::NOT_FOUND,
        K::CodeExpired | K::CodeAlreadyUsed => StatusCode::GONE,
        K::PublicKeyInUse => StatusCode::CONFLICT,
        K::TooManyAttempts => StatusCode::TOO_MANY_REQUESTS,
        K::AddressPoolExhausted | K::DirectoryUnavailable | K::DatabaseUnavailable => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        K::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        K::InvalidQuery => match e {
            ServiceError::Query(QueryError::UnknownResource(_)) => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_REQUEST,
        },
    }
}

fn bad_request(detail: &str) -> String {
    format!(
        "Requête invalide : {detail}. Vérifiez les informations saisies. / Invalid request: {detail}. Check what you entered."
    )
}

fn invalid_json(detail: &str) -> String {
    format!(
        "Le contenu envoyé n'est pas un JSON valide ({detail}). Mettez à jour l'agent Sesame ou contactez le service informatique. / The request body is not valid JSON ({detail}). Update the Sesame agent or contact IT support."
    )
}

/// The sentence of a flow's refusal.
fn service_message(e: &ServiceError) -> String {
    use ErrorKind as K;
    match e.kind() {
        K::BadRequest => bad_request(e.detail().unwrap_or_default()),
        K::InvalidQuery => e.to_string(),
        K::InvalidPublicKey => {
            let why = match e {
                ServiceError::InvalidPublicKey(why) => why.to_string(),
                _ => String::new(),
            };
            format!(
                "La clé de l'ordinateur est invalide ({why}). Relancez l'enrôlement avec l'agent Sesame ; si cela persiste, contactez le service informatique. / The laptop key is invalid ({why}). Run the enrolment again with the Sesame agent; if it persists, contact IT support."
            )
        }
        K::TooManyAttempts => {
            let retry_after_secs = e.retry_after_secs().unwrap_or(1);
            format!(
                "Trop de tentatives. Attendez {retry_after_secs} secondes avant de réessayer. / Too many attempts. Wait {retry_after_secs} seconds before trying again."
            )
        }
        K::UnknownUser => {
            let u = match e {
                ServiceError::UnknownUser(u) => u.as_str(),
                _ => "",
            };
            format!(
                "L'utilisateur {u:?} est inconnu de l'annuaire. Vérifiez l'identifiant. / User {u:?} is not in the directory. Check the username."
            )
        }
        K::InvalidCredentials => "Identifiant ou mot de passe incorrect. Vérifiez-les et réessayez (attention aux majuscules) ; si vous êtes sûr de votre mot de passe, votre compte n'a peut-être pas accès à ce service : contactez le service informatique. / Wrong username or password. Check them and try again (mind capital letters); if you are sure of your password, your account may have no access to this service: contact IT support.".into(),
        K::EmptyPassword => "Le mot de passe est vide. Saisissez votre mot de passe habituel. / The password is empty. Type your usual password.".into(),
        K::NotVpnUser => "Votre compte n'est pas autorisé à utiliser le VPN. Demandez l'accès à votre responsable ou au service informatique. / Your account is not allowed to use the VPN. Ask your manager or IT support for access.".into(),
        K::AccountDisabled => "Votre compte est désactivé. Contactez le service informatique. / Your account is disabled. Contact IT support.".into(),
        K::InvalidCode => "Code d'enrôlement inconnu. Vérifiez le code reçu du service informatique (sans espace) ou demandez-en un nouveau. / Unknown enrolment code. Check the code IT support gave you (no spaces) or ask for a new one.".into(),
        K::CodeExpired => "Ce code d'enrôlement a expiré. Demandez un nouveau code au service informatique. / This enrolment code has expired. Ask IT support for a new code.".into(),
        K::CodeAlreadyUsed => "Ce code d'enrôlement a déjà servi. Demandez un nouveau code au service informatique. / This enrolment code was already used. Ask IT support for a new code.".into(),
        K::CodeWrongUser => "Ce code d'enrôlement a été émis pour une autre personne. Utilisez votre propre identifiant ou demandez un code à votre nom. / This enrolment code was issued for someone else. Use your own username or ask for a code in your name.".into(),
        K::PublicKeyInUse => "Cette clé est déjà utilisée par un autre appareil. Relancez l'enrôlement avec l'agent Sesame pour générer une nouvelle clé. / This key is already used by another device. Run the enrolment again with the Sesame agent to generate a new key.".into(),
        K::AddressPoolExhausted => "Plus aucune adresse VPN n'est disponible. Contactez le service informatique. / No VPN address is left. Contact IT support.".into(),
        K::Unauthenticated => "Vous n'êtes pas connecté, ou votre session a expiré. Reconnectez-vous. / You are not signed in, or your session expired. Sign in again.".into(),
        K::Forbidden => "Vous n'avez pas le droit de faire cette opération. Contactez le service informatique si vous en avez besoin. / You are not allowed to do this. Contact IT support if you need to.".into(),
        K::NotFound => "Élément introuvable. Vérifiez l'adresse ou l'identifiant. / Not found. Check the address or the identifier.".into(),
        K::DeviceRevoked => "Cet ordinateur n'a plus accès au VPN (accès retiré). Contactez le service informatique. / This laptop no longer has VPN access (revoked). Contact IT support.".into(),
        K::DeviceSuspended => "L'accès VPN de cet ordinateur est suspendu : votre compte n'est plus autorisé dans l'annuaire. Il reviendra sans nouvel enrôlement si l'accès vous est rendu ; contactez le service informatique. / This laptop's VPN access is suspended: your account is no longer allowed in the directory. It comes back without a new enrolment if your access is restored; contact IT support.".into(),
        K::DeviceExpired => "La clé de cet ordinateur a expiré. Demandez un nouveau code d'enrôlement au service informatique et enrôlez-le à nouveau. / This laptop's key has expired. Ask IT support for a new enrolment code and enrol it again.".into(),
        K::InvalidSiteToken => "Jeton de site inconnu ou remplacé. Sur le portail, créez-en un avec `sesame site token --site NOM` et copiez-le dans [gateway] portal_token_file de la passerelle de ce site. / Unknown or replaced site token. On the portal, create one with `sesame site token --site NAME` and copy it to the [gateway] portal_token_file of that site's gateway.".into(),
        K::DirectoryUnavailable => "L'annuaire ne répond pas. Réessayez dans quelques minutes ; si cela persiste, contactez le service informatique. / The directory is not answering. Try again in a few minutes; if it persists, contact IT support.".into(),
        K::DatabaseUnavailable => "Le service est momentanément indisponible. Réessayez dans quelques minutes ; si cela persiste, contactez le service informatique. / The service is temporarily unavailable. Try again in a few minutes; if it persists, contact IT support.".into(),
        K::MfaRequired => "Le code de votre application d'authentification (6 chiffres) est demandé. Saisissez-le ; téléphone perdu : appelez le service informatique pour une réinitialisation. / The code of your authenticator app (6 digits) is required. Type it; phone lost: call IT support for a reset.".into(),
        K::InvalidOtp => "Code incorrect, déjà utilisé ou expiré. Attendez le code suivant de votre application et saisissez-le (ou un code de secours) ; téléphone perdu : appelez le service informatique. / Wrong, already used or expired code. Wait for the next code of your app and type it (or a recovery code); phone lost: call IT support.".into(),
        K::MfaNotRegistered => "Aucun second facteur n'est enregistré pour votre compte. Demandez un code d'enregistrement au service informatique. / No second factor is registered for your account. Ask IT support for a registration code.".into(),
        K::InvalidRegistrationCode => "Code d'enregistrement inconnu, déjà utilisé ou expiré. Demandez-en un nouveau au service informatique. / Unknown, used or expired registration code. Ask IT support for a new one.".into(),
        K::ReauthRequired => "Cet ordinateur doit être déverrouillé avec votre code (second facteur) avant de renouveler sa clé : lancez `sesame-agent unlock`, puis réessayez. / This laptop must be unlocked with your code (second factor) before it renews its key: run `sesame-agent unlock`, then try again.".into(),
        K::MfaUnavailable => "Le serveur de codes ne répond pas. Réessayez dans quelques minutes ; si cela persiste, contactez le service informatique. / The code server is not answering. Try again in a few minutes; if it persists, contact IT support.".into(),
        K::Internal => "Erreur interne du service. Réessayez ; si cela persiste, contactez le service informatique. / Internal service error. Try again; if it persists, contact IT support.".into(),
    }
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Service(e) => service_status(e),
            ApiError::Json(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::Json(_)
            | ApiError::Query(_)
            | ApiError::Form(_)
            | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TimedOut => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::CsrfRejected(_) => StatusCode::FORBIDDEN,
        }
    }

    /// The stable code scripts rely on (`sesame::api::codes`).
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Service(e) => e.code(),
            ApiError::Json(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                codes::PAYLOAD_TOO_LARGE
            }
            ApiError::Json(JsonRejection::JsonDataError(_)) => codes::BAD_REQUEST,
            ApiError::Json(_) => codes::INVALID_JSON,
            ApiError::Query(_) | ApiError::Form(_) | ApiError::BadRequest(_) => codes::BAD_REQUEST,
            ApiError::PayloadTooLarge => codes::PAYLOAD_TOO_LARGE,
            ApiError::NoRoute => codes::NOT_FOUND,
            ApiError::MethodNotAllowed => codes::BAD_REQUEST,
            ApiError::TimedOut => codes::REQUEST_TIMEOUT,
            ApiError::CsrfRejected(_) => codes::CSRF_REJECTED,
        }
    }

    /// The sentence shown to the person: French, then English; says what to do next.
    pub fn message(&self) -> String {
        match self {
            ApiError::Service(e) => service_message(e),
            ApiError::Json(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge.message()
            }
            ApiError::Json(JsonRejection::JsonDataError(e)) => bad_request(&e.body_text()),
            ApiError::Json(JsonRejection::MissingJsonContentType(_)) => {
                invalid_json("expected Content-Type: application/json")
            }
            ApiError::Json(r) => invalid_json(&r.body_text()),
            ApiError::Query(r) => bad_request(&r.body_text()),
            ApiError::Form(e) => bad_request(&format!("formulaire / form: {e}")),
            ApiError::BadRequest(detail) => bad_request(detail),
            ApiError::PayloadTooLarge => "La requête est trop volumineuse. Vérifiez les informations saisies. / The request is too large. Check what you entered.".into(),
            ApiError::NoRoute => service_message(&ServiceError::NotFound),
            ApiError::MethodNotAllowed => "Opération non permise à cette adresse. Mettez à jour l'agent Sesame ou contactez le service informatique. / This operation is not allowed at this address. Update the Sesame agent or contact IT support.".into(),
            ApiError::TimedOut => "Le service a mis trop de temps à répondre. Réessayez dans quelques minutes. / The service took too long to answer. Try again in a few minutes.".into(),
            ApiError::CsrfRejected(_) => "Requête refusée par la protection contre la falsification (jeton absent ou autre site). Rechargez la page et recommencez. / Request refused by the forgery protection (missing token or another site). Reload the page and try again.".into(),
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
        if let ApiError::Service(e) = &self {
            if let Some(secs) = e.retry_after_secs() {
                if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                    resp.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
        }
        resp.extensions_mut().insert(ErrorCause(self.to_string()));
        resp
    }
}

#[cfg(test)]
#[path = "error_tests.rs"]
mod tests;
