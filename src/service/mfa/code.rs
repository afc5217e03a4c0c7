//! The code check every second-factor route shares: the failure limiter, the provider (or a
//! recovery code), the audit of the outcome.

use std::net::{IpAddr, Ipv4Addr};

use crate::audit::{Action, NewAuditEvent, Outcome};
use crate::mfa::{recovery, Check};
use crate::store::Factor;

use super::super::attempts::rate_limited;
use super::super::context::Record;
use super::super::ratelimit::Admitted;
use super::super::{ServiceError, Services};
use super::kit;

/// The limiter's account for codes: apart from the password's, so five wrong codes lock the
/// codes (and the source), not the password.
pub(in crate::service) fn limiter_key(username: &str) -> String {
    format!("mfa:{}", username.trim().to_lowercase())
}

/// Checks one code (or a recovery code) of `username` for `route`: the failure limiter first
/// (5 wrong codes within a minute: 429, audited `auth.rate_limited`), then the provider; a
/// success is audited `mfa.verified`, a wrong code `mfa.failed` and counted.
pub(in crate::service) async fn verify(
    svc: &Services,
    username: &str,
    code: &str,
    route: &'static str,
    source_ip: Option<IpAddr>,
) -> Result<(), ServiceError> {
    let good = check_code(svc, username, code, route, source_ip, None).await?;
    if let Some(step) = good.step {
        // Spent here, on its own: false when this step (or a later one) was spent meanwhile.
        if !svc.store().mfa_accept_step(username, step).await? {
            return Err(refused(svc, username, route, source_ip, good.method).await);
        }
    }
    accepted(svc, username, good.admitted).await;
    if let Err(e) = svc.store().append_audit_grouped(good.event).await {
        tracing::warn!(error = %e, "cannot write the mfa.verified audit event");
    }
    Ok(())
}

/// A code found good, its TOTP step not spent yet.
#[derive(Debug)]
pub(in crate::service) struct GoodCode {
    /// The success's `mfa.verified` event, to write once the step is spent.
    pub event: NewAuditEvent,
    /// The step to spend ([`Store::mfa_accept_step`], or inside a login's own write); `None`
    /// when nothing is left to spend (a recovery code, RADIUS).
    pub step: Option<i64>,
    /// `totp`, `radius` or `recovery_code` (audited with a refusal).
    pub method: &'static str,
    /// What the failure limits saw when they let the code through.
    pub admitted: Admitted,
}

/// [`verify`] without spending: the limiter, then the provider (the user's `factor` row when
/// the caller read it already); a wrong code is audited and counted here. The caller spends
/// [`GoodCode::step`], then calls [`accepted`], or [`refused`] when the step was spent already.
pub(super) async fn check_code(
    svc: &Services,
    username: &str,
    code: &str,
    route: &'static str,
    source_ip: Option<IpAddr>,
    factor: Option<&Factor>,
) -> Result<GoodCode, ServiceError> {
    let kit = kit(svc)?;
    let key = limiter_key(username);
    let ip = source_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let admitted = match svc.limits().check(&key, ip, None).await? {
        Ok(admitted) => admitted,
        Err(limited) => return Err(rate_limited(svc, username, route, source_ip, &limited).await),
    };
    let (good, step, method) = match recovery::hash(code) {
        Some(hash) => (
            svc.store().mfa_use_recovery_code(username, &hash).await?,
            None,
            "recovery_code",
        ),
        None => match kit.provider.check(username, code, factor).await? {
            Check::Good { step } => {
                if !kit.provider.needs_registration() {
                    svc.store()
                        .mfa_record_use(username, kit.provider.kind())
                        .await?;
                }
                (true, step, kit.provider.kind())
            }
            Check::Invalid => (false, None, kit.provider.kind()),
        },
    };
    if !good {
        return Err(refused(svc, username, route, source_ip, method).await);
    }
    let event = Record {
        actor: username,
        action: Action::MfaVerified,
        target: username,
        outcome: Outcome::Success,
        source_ip,
        details: serde_json::json!({ "route": route, "method": method }),
    }
    .event();
    Ok(GoodCode {
        event,
        step,
        method,
        admitted,
    })
}

/// A good code's step spent: the limits forget the user's wrong codes.
pub(in crate::service) async fn accepted(svc: &Services, username: &str, admitted: Admitted) {
    svc.limits()
        .record_success(&limiter_key(username), admitted)
        .await;
}

/// A wrong (or replayed) code: counted by the limiter, audited `mfa.failed`; the error to
/// answer.
pub(in crate::service) async fn refused(
    svc: &Services,
    username: &str,
    route: &'static str,
    source_ip: Option<IpAddr>,
    method: &'static str,
) -> ServiceError {
    let ip = source_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    svc.limits()
        .record_failure(&limiter_key(username), ip)
        .await;
    svc.audit(Record {
        actor: username,
        action: Action::MfaFailed,
        target: username,
        outcome: Outcome::Denied,
        source_ip,
        details: serde_json::json!({ "route": route, "method": method }),
    })
    .await;
    ServiceError::InvalidOtp
}
