//! Wire types of the second factor: registration, confirmation, access windows.
//!
//! Routes (DESIGN §5): `POST /api/v1/device/mfa/confirm` and `POST /api/v1/device/unlock`
//! (Bearer device token); `POST /api/v1/mfa/register` and `POST /api/v1/mfa/confirm` (password
//! and a registration code handed out by IT or by enrolment).

use serde::{Deserialize, Serialize};

/// A TOTP secret to register, shown once (`mfa_registration` of the enrolment answer, and the
/// answer of `POST /api/v1/mfa/register`). The factor is active once a first code confirms it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct MfaRegistration {
    /// Base32 secret, for typing into an authenticator by hand.
    pub secret: String,
    /// `otpauth://totp/…` (what the QR code holds).
    pub otpauth_uri: String,
    /// The QR code as an SVG document.
    pub qr_svg: String,
}

/// `POST /api/v1/device/mfa/confirm` and `POST /api/v1/device/unlock` body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CodeRequest {
    /// A 6-digit code of the authenticator (or of the académie's OTP token), or a recovery code.
    pub code: String,
}

/// Ten single-use recovery codes, shown once (stored hashed).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct RecoveryCodes {
    pub recovery_codes: Vec<String>,
}

/// `POST /api/v1/device/unlock` answer: the access window to protected resources.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct UnlockResponse {
    /// RFC 3339 UTC, milliseconds (it may close earlier after `[mfa] idle` without traffic).
    pub expires_at: String,
}

/// `POST /api/v1/mfa/register` body: registering a factor needs the password AND a one-time
/// registration code from IT (`sesame mfa code`, an IT reset) or from enrolment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MfaRegisterRequest {
    pub username: String,
    pub password: String,
    pub registration_code: String,
}

/// `POST /api/v1/mfa/confirm` body: the same, with a first code of the new factor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MfaConfirmRequest {
    pub username: String,
    pub password: String,
    pub registration_code: String,
    pub code: String,
}
