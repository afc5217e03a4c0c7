//! The code check every second-factor route shares: the failure limiter, the provider (or a
//! recovery code), the audit of the outcome.

use std::net::{IpAddr, Ipv4Addr};

use crate::audit::{Action, NewAuditEvent, Outcome};
use crate::mfa::{recovery, Verdict};

use super::super::context::Record;
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
    let verified = check_code(svc, username, code, route, source_ip).await?;
    if let Err(e) = svc.store().append_audit_grouped(verified).await {
        tracing::warn!(error = %e, "cannot write the mfa.verified audit event");
    }
    Ok(())
}

/// [`verify`], leaving the success's `mfa.verified` event to the caller (a login writes it
/// with its session, in one durable step); refusals are audited here.
pub(super) async fn check_code(
    svc: &Services,
    username: &str,
    code: &str,
    route: &'static str,
    source_ip: Option<IpAddr>,
) -> Result<NewAuditEvent, ServiceError> {
    let kit = kit(svc)?;
    let key = limiter_key(username);
    let ip = source_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let admitted = match svc.limits().check(&key, ip, None).await? {
        Ok(admitted) => admitted,
        Err(limited) => {
            svc.metrics().rate_limited();
            let retry_after_secs = limited.retry_after.as_secs().max(1);
            svc.audit(Record {
                actor: username,
                action: Action::AuthRateLimited,
                target: username,
                outcome: Outcome::Denied,
                source_ip,
                details: serde_json::json!({
                    "route": route, "keys": limited.keys, "retry_after_secs": retry_after_secs,
                }),
            })
            .await;
            return Err(ServiceError::TooManyAttempts { retry_after_secs });
        }
    };
    let (accepted, method) = match recovery::hash(code) {
        Some(hash) => (
            svc.store().mfa_use_recovery_code(username, &hash).await?,
            "recovery_code",
        ),
        None => {
            let verdict = kit.provider.verify(username, code).await?;
            if verdict == Verdict::Accepted && !kit.provider.needs_registration() {
                svc.store()
                    .mfa_record_use(username, kit.provider.kind())
                    .await?;
            }
            (verdict == Verdict::Accepted, kit.provider.kind())
        }
    };
    let (action, outcome) = if accepted {
        svc.limits().record_success(&key, admitted).await;
        (Action::MfaVerified, Outcome::Success)
    } else {
        svc.limits().record_failure(&key, ip).await;
        (Action::MfaFailed, Outcome::Denied)
    };
    let record = Record {
        actor: username,
        action,
        target: username,
        outcome,
        source_ip,
        details: serde_json::json!({ "route": route, "method": method }),
    };
    if accepted {
        Ok(record.event())
    } else {
        svc.audit(record).await;
        Err(ServiceError::InvalidOtp)
    }
}
