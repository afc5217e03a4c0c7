//! Registering a TOTP factor without a bootstrap hole: only with something IT handed out (an enrolment, or a one-time registration code) and the password; confirmed by a first code; ten recovery codes shown once.

use std::net::IpAddr;

use crate::api::mfa::{MfaConfirmRequest, MfaRegisterRequest, MfaRegistration, RecoveryCodes};
use crate::audit::{Action, Outcome};
use crate::mfa::{qr, recovery, totp, Kit};

use super::super::attempts::{rate_limited, Attempt};
use super::super::context::Record;
use super::super::{ServiceError, Services};
use super::{kit, limiter_key};

/// Starts a registration for `username`: a new secret, sealed and kept pending until a first
/// code confirms it; returned once (text, otpauth URI, QR code).
pub(in crate::service) async fn begin(
    svc: &Services,
    kit: &Kit,
    username: &str,
) -> Result<MfaRegistration, ServiceError> {
    let secret = totp::generate_secret();
    let sealed = kit
        .key
        .seal(&crate::store::normalize_username(username), &secret)
        .map_err(crate::mfa::ProviderError::from)?;
    svc.store()
        .mfa_begin_registration(username, kit.provider.kind(), &sealed)
        .await?;
    let otpauth_uri = totp::otpauth_uri(&secret, username);
    Ok(MfaRegistration {
        secret: totp::base32(&secret),
        qr_svg: qr::svg(&otpauth_uri),
        otpauth_uri,
    })
}

/// Confirms the pending registration of `username` with its first `code`, spending
/// `registration_code` when the registration came with one. Wrong codes count like any code.
async fn confirm_pending(
    svc: &Services,
    username: &str,
    registration_code: Option<&str>,
    code: &str,
    source_ip: IpAddr,
) -> Result<RecoveryCodes, ServiceError> {
    let kit = kit(svc)?;
    let user = crate::store::normalize_username(username);
    let pending = svc
        .store()
        .mfa_factor(&user)
        .await?
        .and_then(|f| f.pending_secret_enc)
        .ok_or(ServiceError::MfaNotRegistered)?;
    let key = limiter_key(&user);
    let admitted = match svc.limits().check(&key, source_ip, None).await? {
        Ok(admitted) => admitted,
        Err(limited) => {
            return Err(rate_limited(svc, &user, "confirm", Some(source_ip), &limited).await)
        }
    };
    let secret = kit
        .key
        .open(&user, &pending)
        .map_err(crate::mfa::ProviderError::from)?;
    let Some(step) = totp::check(&secret, code, svc.now_ms()) else {
        svc.limits().record_failure(&key, source_ip).await;
        svc.audit(Record {
            actor: &user,
            action: Action::MfaFailed,
            target: &user,
            outcome: Outcome::Denied,
            source_ip: Some(source_ip),
            details: serde_json::json!({ "route": "confirm", "method": "totp" }),
        })
        .await;
        return Err(ServiceError::InvalidOtp);
    };
    let codes = recovery::generate();
    let hashes: Vec<String> = codes.iter().filter_map(|c| recovery::hash(c)).collect();
    svc.store()
        .mfa_confirm(&user, registration_code, step, &hashes)
        .await?;
    svc.limits().record_success(&key, admitted).await;
    svc.audit(Record {
        actor: &user,
        action: Action::MfaRegistered,
        target: &user,
        outcome: Outcome::Success,
        source_ip: Some(source_ip),
        details: serde_json::json!({
            "kind": kit.provider.kind(),
            "via": if registration_code.is_some() { "registration_code" } else { "enrolment" },
        }),
    })
    .await;
    Ok(RecoveryCodes {
        recovery_codes: codes,
    })
}

/// `POST /api/v1/device/mfa/confirm`: the agent that just enrolled (code + password) confirms
/// the factor its enrolment answer carried, with a first code.
pub async fn confirm_device(
    svc: &Services,
    token: &str,
    code: &str,
    source_ip: IpAddr,
) -> Result<RecoveryCodes, ServiceError> {
    let device = super::super::devices::by_token(svc, token).await?;
    confirm_pending(svc, &device.username, None, code, source_ip).await
}

/// The password and a usable registration code of the same user; a wrong password or code
/// counts as a guess (the login limiter).
async fn check_bootstrap(
    svc: &Services,
    attempt: &Attempt<'_>,
    password: &str,
    registration_code: &str,
) -> Result<String, ServiceError> {
    attempt.admit(svc).await?;
    let checked = async {
        kit(svc)?;
        let user = svc.authenticate(attempt.username, password).await?;
        if user.disabled {
            return Err(ServiceError::AccountDisabled);
        }
        let username = crate::store::normalize_username(&user.username);
        if !svc
            .store()
            .mfa_registration_code_usable(&username, registration_code)
            .await?
        {
            return Err(ServiceError::Store(
                crate::store::StoreError::MfaRegistrationCode,
            ));
        }
        Ok(username)
    }
    .await
    .map_err(Attempt::blind);
    if let Err(e) = &checked {
        attempt.failed(svc, e, true).await;
        svc.audit(Record {
            actor: attempt.username,
            action: Action::MfaFailed,
            target: attempt.username,
            outcome: e.outcome(),
            source_ip: Some(attempt.source_ip),
            details: serde_json::json!({ "route": attempt.route, "reason": e.audit_reason() }),
        })
        .await;
    }
    checked
}

/// `POST /api/v1/mfa/register` (and the web page): password + IT's registration code → a
/// factor to confirm. A password alone never registers or replaces a factor.
pub async fn register(
    svc: &Services,
    req: &MfaRegisterRequest,
    source_ip: IpAddr,
) -> Result<MfaRegistration, ServiceError> {
    let attempt = Attempt {
        route: "mfa_register",
        username: req.username.trim(),
        source_ip,
        known_device: None,
        started: std::time::Instant::now(),
    };
    let username = check_bootstrap(svc, &attempt, &req.password, &req.registration_code).await?;
    begin(svc, kit(svc)?, &username).await
}

/// `POST /api/v1/mfa/confirm`: the same, with a first code; spends the registration code and
/// returns the recovery codes (shown once).
pub async fn confirm(
    svc: &Services,
    req: &MfaConfirmRequest,
    source_ip: IpAddr,
) -> Result<RecoveryCodes, ServiceError> {
    let attempt = Attempt {
        route: "mfa_confirm",
        username: req.username.trim(),
        source_ip,
        known_device: None,
        started: std::time::Instant::now(),
    };
    let username = check_bootstrap(svc, &attempt, &req.password, &req.registration_code).await?;
    confirm_pending(
        svc,
        &username,
        Some(&req.registration_code),
        &req.code,
        source_ip,
    )
    .await
}
