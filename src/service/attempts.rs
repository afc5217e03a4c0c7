//! Attempts with a password (logins, enrolments): the failure limiter asked before, the outcome
//! counted after, and an attempt refused for its rate audited (`auth.rate_limited`).

use std::net::IpAddr;
use std::time::Instant;

use crate::audit::{Action, Outcome};

use super::context::Record;
use super::limits::Verdict;
use super::ratelimit::{Admitted, Refusal};
use super::{ErrorKind, ServiceError, Services};

/// Who is trying, from where, with which device token (the `sesame-device` cookie of a browser
/// or agent that succeeded before).
#[derive(Debug, Clone, Copy)]
pub(super) struct Attempt<'a> {
    /// `login` or `enrol` (recorded with a refusal).
    pub route: &'static str,
    /// As typed, trimmed.
    pub username: &'a str,
    pub source_ip: IpAddr,
    pub known_device: Option<&'a str>,
    /// When the attempt arrived: a refused password is answered [`FAILURE_FLOOR`] after it.
    pub started: Instant,
}

/// A refused password attempt is answered no sooner than this after it arrived: the paths of a
/// wrong password, an unknown user, a disabled account and a right password without access cost
/// different directory round trips (a successful bind then a group search); answering all of
/// them at one floor, above what those round trips take, leaves no timing to tell them apart.
pub const FAILURE_FLOOR: std::time::Duration = std::time::Duration::from_millis(250);

impl Attempt<'_> {
    /// Lets the attempt through (what the check saw, for [`Attempt::succeeded`]), or refuses
    /// it for its rate: counted, audited, and answered [`ServiceError::TooManyAttempts`].
    pub async fn admit(&self, svc: &Services) -> Result<Admitted, ServiceError> {
        let verdict = svc
            .limits()
            .check_attempt(self.username, self.source_ip, self.known_device)
            .await?;
        let limited = match verdict {
            Verdict::Admitted(admitted) => return Ok(admitted),
            Verdict::Limited(limited) => limited,
            Verdict::Spray => {
                // A password spray: only browsers and agents that signed in before may try.
                // Counted, not audited one by one (the episode is, once).
                svc.metrics().spray_refused();
                return Err(ServiceError::TooManyAttempts {
                    retry_after_secs: crate::service::spray::SPRAY_WINDOW.as_secs(),
                });
            }
        };
        Err(rate_limited(
            svc,
            self.username,
            self.route,
            Some(self.source_ip),
            &limited,
        )
        .await)
    }

    /// A success (`admitted`: what [`Attempt::admit`] saw): clears the account's failures and
    /// hands out a device token (returned: the caller's next attempts pass while others have
    /// the account locked).
    pub async fn succeeded(&self, svc: &Services, admitted: Admitted) -> String {
        svc.limits().record_success(self.username, admitted).await;
        svc.limiter().issue_device_token(self.username)
    }

    /// A refusal, made oracle-free: an unknown user, a disabled account, and a right password
    /// without the role the route needs are answered as a wrong password (same status, body,
    /// and a bind was made in each case), then counted as a guess with [`Attempt::failed`].
    pub fn blind(e: ServiceError) -> ServiceError {
        use ErrorKind::*;
        match e.kind() {
            UnknownUser | AccountDisabled | NotVpnUser | Forbidden => {
                ServiceError::CredentialsRefused(Box::new(e))
            }
            _ => e,
        }
    }

    /// A refusal: a guess (a wrong password, or any refusal [`Attempt::blind`] answers as one;
    /// with `codes_count`, a wrong or stale code too) counts as a failure of this account, this
    /// source and the spray ceiling; a refused password is answered at [`FAILURE_FLOOR`].
    pub async fn failed(&self, svc: &Services, e: &ServiceError, codes_count: bool) {
        if is_guess(e.kind(), codes_count) {
            let limits = svc.limits();
            limits.record_failure(self.username, self.source_ip).await;
            if limits.record_spray_failure().await {
                self.spray_detected(svc, svc.config().portal.spray_ceiling)
                    .await;
            }
            // Counted first (concurrent attempts see it), answered at the floor.
            if e.kind() == ErrorKind::InvalidCredentials {
                tokio::time::sleep_until((self.started + FAILURE_FLOOR).into()).await;
            }
        }
    }

    /// The failure that took the rate past the ceiling: logged, counted, audited once.
    async fn spray_detected(&self, svc: &Services, ceiling: u32) {
        svc.metrics().spray_detected();
        tracing::warn!(ceiling, "password spray: more failed logins per minute across accounts than [portal] spray_ceiling; only known devices may try until it stops");
        svc.audit(Record {
            actor: "system",
            action: Action::AuthSprayDetected,
            target: "portal",
            outcome: Outcome::Denied,
            source_ip: Some(self.source_ip),
            details: serde_json::json!({
                "route": self.route,
                "ceiling_per_minute": ceiling,
            }),
        })
        .await;
    }
}

/// An attempt of `actor` on `route` refused past a failure limit (`limited`): counted
/// (`sesame_rate_limited_total`), audited (`auth.rate_limited` naming the counters) and answered
/// 429 with the wait. The one refusal of logins, enrolments and second-factor codes.
pub(super) async fn rate_limited(
    svc: &Services,
    actor: &str,
    route: &'static str,
    source_ip: Option<IpAddr>,
    limited: &Refusal,
) -> ServiceError {
    svc.metrics().rate_limited();
    let retry_after_secs = limited.retry_after.as_secs().max(1);
    svc.audit(Record {
        actor,
        action: Action::AuthRateLimited,
        target: actor,
        outcome: Outcome::Denied,
        source_ip,
        details: serde_json::json!({
            "route": route,
            "key": limited.keys.first(),
            "keys": limited.keys,
            "retry_after_secs": retry_after_secs,
            "account_locked": limited.account_locked,
        }),
    })
    .await;
    ServiceError::TooManyAttempts { retry_after_secs }
}

/// Errors a guesser produces: a wrong password; with `codes`, a wrong or stale code too.
fn is_guess(kind: ErrorKind, codes: bool) -> bool {
    use ErrorKind::*;
    match kind {
        InvalidCredentials | EmptyPassword => true,
        InvalidCode | CodeExpired | CodeAlreadyUsed | CodeWrongUser | InvalidRegistrationCode => {
            codes
        }
        _ => false,
    }
}
