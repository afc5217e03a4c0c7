//! Web sessions: login (password, roles, failure limits), logout, resume on each request
//! (timeouts, roles refreshed from the directory), each audited here once.

use std::net::IpAddr;
use std::time::Duration;

use crate::api::LoginResponse;
use crate::audit::{Action, AuditContext, NewAuditEvent, Outcome};
use crate::directory::DirectoryUser;
use crate::store::{NewSession, User};

use super::attempts::Attempt;
use super::context::Record;
use super::mfa::GoodCode;
use super::{Actor, ServiceError, Services};

/// A session unused for this long is refused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// A session older than this is refused, however active.
pub const ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(12 * 3600);

/// What a person types to sign in, and where it comes from.
#[derive(Debug, Clone, Copy)]
pub struct LoginInput<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub source_ip: IpAddr,
    /// The device token of a browser that signed in successfully before (its cookie).
    pub known_device: Option<&'a str>,
    /// The second factor's code (`[mfa] web_roles` need it).
    pub otp: Option<&'a str>,
}

/// An open session.
#[derive(Debug, Clone)]
pub struct LoggedIn {
    /// The session id (the cookie value; stored hashed, shown this once).
    pub session_id: String,
    pub answer: LoginResponse,
    /// A new device token for this browser (renewed at each login).
    pub device_token: String,
}

/// Signs a person in: the failure limiter, the password (bounded by the directory deadline),
/// the account and its roles. A success opens a session, recorded with the user and its
/// `auth.login` event in one durable step; a refusal is audited (`auth.login`, with the code as
/// `reason`) and counted. Both count in the login metrics.
pub async fn login(svc: &Services, input: LoginInput<'_>) -> Result<LoggedIn, ServiceError> {
    let username = input.username.trim();
    let attempt = Attempt {
        route: "login",
        username,
        source_ip: input.source_ip,
        known_device: input.known_device,
        started: std::time::Instant::now(),
    };
    let admitted = attempt.admit(svc).await?;
    let result = match check_login(svc, username, &input).await {
        Ok((user, answer, code)) => open_session(svc, &user, answer, code, &input).await,
        // Refusals after the password (no role) or about the account answer like a wrong
        // password: no oracle on who exists, who is disabled, or whose password is right.
        Err(e) => Err(Attempt::blind(e)),
    };
    svc.metrics().login(result.is_ok());
    match result {
        Ok((session_id, answer)) => Ok(LoggedIn {
            session_id,
            answer,
            device_token: attempt.succeeded(svc, admitted).await,
        }),
        Err(e) => {
            attempt.failed(svc, &e, false).await;
            svc.audit(Record {
                actor: username,
                action: Action::AuthLogin,
                target: username,
                outcome: e.outcome(),
                source_ip: Some(input.source_ip),
                details: serde_json::json!({ "reason": e.audit_reason() }),
            })
            .await;
            Err(e)
        }
    }
}

/// Checks the password, the roles and the second factor ([`super::mfa::login_step`]); writes
/// nothing but a refused code's audit (a good code's step is spent, and its `mfa.verified`
/// written, with the session).
async fn check_login(
    svc: &Services,
    username: &str,
    input: &LoginInput<'_>,
) -> Result<(DirectoryUser, LoginResponse, Option<GoodCode>), ServiceError> {
    let user = svc.authenticate(username, input.password).await?;
    if user.disabled {
        return Err(ServiceError::AccountDisabled);
    }
    let roles = Actor::resolve(&svc.config().roles, &user.username, &user.groups).roles;
    if roles.is_empty() {
        return Err(ServiceError::Forbidden);
    }
    let code =
        super::mfa::login_step(svc, &user.username, &roles, input.otp, input.source_ip).await?;
    let answer = LoginResponse {
        username: user.username.clone(),
        display_name: user.display_name.clone(),
        roles: roles.names(),
    };
    Ok((user, answer, code))
}

/// Opens the session of a checked login: the user row, the session, the code's step and
/// `mfa.verified`, and the `auth.login` event written together, in one transaction shared with
/// concurrent logins (one fsync for the batch). A step spent meanwhile (the same code replayed
/// by a concurrent login) writes nothing and answers like a wrong code.
async fn open_session(
    svc: &Services,
    user: &DirectoryUser,
    answer: LoginResponse,
    code: Option<GoodCode>,
    input: &LoginInput<'_>,
) -> Result<(String, LoginResponse), ServiceError> {
    let username = input.username.trim();
    let session = NewSession {
        username: user.username.clone(),
        roles: answer.roles.clone(),
        ttl: ABSOLUTE_TIMEOUT,
    };
    let ctx = AuditContext::new(username, Some(input.source_ip.to_string()));
    let event = NewAuditEvent::new(Action::AuthLogin, &ctx, username)
        .outcome(Outcome::Success)
        .details(serde_json::json!({}));
    let (verified, step, checked) = match code {
        Some(c) => (Some(c.event), c.step, Some((c.method, c.admitted))),
        None => (None, None, None),
    };
    let events = verified.into_iter().chain([event]).collect();
    let written = svc
        .store()
        .record_login_with(user, &session, events, step)
        .await?;
    match (written, checked) {
        (Some((id, _)), checked) => {
            if let Some((_, admitted)) = checked {
                super::mfa::accepted(svc, &user.username, admitted).await;
            }
            Ok((id, answer))
        }
        (None, checked) => {
            let method = checked.map_or("totp", |(method, _)| method);
            let source_ip = Some(input.source_ip);
            Err(super::mfa::refused(svc, &user.username, "login", source_ip, method).await)
        }
    }
}

/// Closes the session `session_id` if it is live, auditing `auth.logout`; nothing to close is
/// not an error.
pub async fn logout(
    svc: &Services,
    session_id: Option<&str>,
    source_ip: IpAddr,
) -> Result<(), ServiceError> {
    let Some(id) = session_id else {
        return Ok(());
    };
    let session = svc.store().session(id).await?;
    if svc.store().delete_session(id).await? {
        if let Some(s) = session {
            // Windows opened from /mon-acces close with the web session that opened them.
            super::mfa::close_user_windows(
                svc,
                &s.username,
                &s.username,
                Some(super::mfa::WindowSource::Web),
                "logout",
                Some(source_ip),
            )
            .await?;
            svc.audit(Record {
                actor: &s.username,
                action: Action::AuthLogout,
                target: &s.username,
                outcome: Outcome::Success,
                source_ip: Some(source_ip),
                details: serde_json::json!({
                    "session_started_at": crate::time::format(s.created_at),
                }),
            })
            .await;
        }
    }
    Ok(())
}

/// Who a live session belongs to.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// As stored (lower-cased login).
    pub username: String,
    /// Roles and delegated scope, resolved now from the user's groups.
    pub actor: Actor,
}

/// Whether a session read at `now` is past its idle or absolute timeout.
pub fn timed_out(created_at: i64, last_seen: i64, now: i64) -> bool {
    let idle_ms = IDLE_TIMEOUT.as_millis() as i64;
    let abs_ms = ABSOLUTE_TIMEOUT.as_millis() as i64;
    now - last_seen >= idle_ms || now - created_at >= abs_ms
}

/// The session of cookie value `session_id`, refreshed on use. Its roles and delegated scope
/// are resolved on every request from the user's groups as last read from the directory (at
/// login, at each sync, or now if older than `[portal] role_refresh`), so a technician removed
/// from an IT group loses the rights with the same cookie. A timed-out session, or one whose
/// user is disabled or gone, is deleted: [`ServiceError::Unauthenticated`].
pub async fn resume(svc: &Services, session_id: &str) -> Result<SignedIn, ServiceError> {
    let store = svc.store();
    let row = store
        .session(session_id)
        .await?
        .ok_or(ServiceError::Unauthenticated)?;
    if timed_out(row.created_at, row.last_seen, svc.now_ms()) {
        store.delete_session(session_id).await?;
        return Err(ServiceError::Unauthenticated);
    }
    let config = svc.config();
    let Some(user) = refresh_user(svc, &row.username, config.portal.role_refresh)
        .await?
        .filter(|u| !u.disabled)
    else {
        // Disabled (or gone) in the directory: the session dies with the account.
        store.delete_session(session_id).await?;
        return Err(ServiceError::Unauthenticated);
    };
    store.touch_session(session_id, None).await?;
    Ok(SignedIn {
        actor: Actor::resolve(&config.roles, &row.username, &user.groups),
        username: row.username,
    })
}

/// The stored user, with groups re-read from the directory when they are older than
/// `max_age`. If the directory cannot answer, the stored groups stay (fail-static, as the sync
/// does); if the user is gone from it, `None`.
pub async fn refresh_user(
    svc: &Services,
    username: &str,
    max_age: Duration,
) -> Result<Option<User>, ServiceError> {
    let store = svc.store();
    let Some(user) = store.user(username).await? else {
        return Ok(None);
    };
    let max_age_ms = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
    if svc.now_ms().saturating_sub(user.last_sync) < max_age_ms {
        return Ok(Some(user));
    }
    match svc.lookup(username).await {
        Ok(Some(fresh)) => Ok(Some(store.upsert_user(&fresh).await?)),
        Ok(None) => Ok(None),
        Err(e) => {
            tracing::debug!(error = %e, "cannot refresh the session's groups");
            Ok(Some(user))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn idle_and_absolute_timeouts() {
        assert!(!timed_out(0, 29 * MIN, 58 * MIN));
        assert!(timed_out(0, 0, 30 * MIN));
        // Active every 10 minutes: still refused at 12 h.
        assert!(!timed_out(0, 715 * MIN, 719 * MIN));
        assert!(timed_out(0, 715 * MIN, 720 * MIN));
    }
}
