//! Who is calling: the session extractor (one per request), its roles and delegated scope.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::config::RolesConfig;
pub use crate::service::{Actor, Role, RoleSet};

use super::error::ApiError;
use super::session::{ABSOLUTE_TIMEOUT, IDLE_TIMEOUT};
use super::state::SharedState;

/// The roles of a member of `groups` ([`Actor::resolve`] is the one place they are resolved).
pub fn roles_for(roles: &RolesConfig, groups: &[String]) -> RoleSet {
    Actor::resolve(roles, "", groups).roles
}

/// A valid web session (cookie), refreshed on use. Its roles and delegated scope are resolved
/// on every request from the user's groups as last read from the directory (at login and at
/// each directory sync), so a technician removed from an IT group loses the rights with the
/// same cookie, and a disabled user's sessions are deleted.
#[derive(Debug, Clone)]
pub struct Session {
    pub username: String,
    pub actor: Actor,
    /// The session id (from the cookie): the CSRF token is derived from it.
    pub id: String,
}

impl Session {
    pub fn has(&self, role: Role) -> bool {
        self.actor.has(role)
    }

    /// `Err(Forbidden)` unless the session holds `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.has(role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

/// Whether a session read at `now` is past its idle or absolute timeout.
pub fn session_timed_out(created_at: i64, last_seen: i64, now: i64) -> bool {
    let idle_ms = IDLE_TIMEOUT.as_millis() as i64;
    let abs_ms = ABSOLUTE_TIMEOUT.as_millis() as i64;
    now - last_seen >= idle_ms || now - created_at >= abs_ms
}

impl FromRequestParts<SharedState> for Session {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let token = state
            .cookies
            .read(&parts.headers)
            .ok_or(ApiError::Unauthenticated)?;
        let row = state
            .store
            .session(&token)
            .await?
            .ok_or(ApiError::Unauthenticated)?;
        if session_timed_out(row.created_at, row.last_seen, state.store.now_ms()) {
            state.store.delete_session(&token).await?;
            return Err(ApiError::Unauthenticated);
        }
        let mut user = state.store.user(&row.username).await?;
        let refresh_ms =
            i64::try_from(state.config.portal.role_refresh.as_millis()).unwrap_or(i64::MAX);
        if user
            .as_ref()
            .is_some_and(|u| state.store.now_ms().saturating_sub(u.last_sync) >= refresh_ms)
        {
            // Stale groups: ask the directory now. If it cannot answer, keep the stored groups
            // (fail-static, as the sync does); if the user is gone, so is the session.
            match state.lookup(&row.username).await {
                Ok(Some(fresh)) => user = Some(state.store.upsert_user(&fresh).await?),
                Ok(None) => user = None,
                Err(e) => tracing::debug!(error = %e, "cannot refresh the session's groups"),
            }
        }
        let Some(user) = user.filter(|u| !u.disabled) else {
            // Disabled (or gone) in the directory: the session dies with the account.
            state.store.delete_session(&token).await?;
            return Err(ApiError::Unauthenticated);
        };
        state.store.touch_session(&token, None).await?;
        Ok(Session {
            actor: Actor::resolve(&state.config.roles, &row.username, &user.groups),
            username: row.username,
            id: token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn idle_and_absolute_timeouts() {
        assert!(!session_timed_out(0, 29 * MIN, 58 * MIN));
        assert!(session_timed_out(0, 0, 30 * MIN));
        // Active every 10 minutes: still refused at 12 h.
        assert!(!session_timed_out(0, 715 * MIN, 719 * MIN));
        assert!(session_timed_out(0, 715 * MIN, 720 * MIN));
    }
}
