//! Who is calling: roles from directory groups, the session extractor, role checks.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::config::RolesConfig;
use crate::control::has_role;

use super::error::ApiError;
use super::session::{ABSOLUTE_TIMEOUT, IDLE_TIMEOUT};
use super::state::SharedState;

/// A role granted by membership of the groups listed in `[roles]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    VpnUser,
    ItStaff,
    Auditor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::VpnUser => "vpn_user",
            Role::ItStaff => "it_staff",
            Role::Auditor => "auditor",
        }
    }
}

/// The roles of a member of `groups`.
pub fn roles_for(roles: &RolesConfig, groups: &[String]) -> Vec<Role> {
    let mut out = Vec::new();
    if has_role(groups, &roles.vpn_users) {
        out.push(Role::VpnUser);
    }
    if has_role(groups, &roles.it_staff) {
        out.push(Role::ItStaff);
    }
    if has_role(groups, &roles.auditors) {
        out.push(Role::Auditor);
    }
    out
}

/// A valid web session (cookie), refreshed on use.
#[derive(Debug, Clone)]
pub struct Session {
    pub username: String,
    pub roles: Vec<String>,
}

impl Session {
    pub fn has(&self, role: Role) -> bool {
        self.roles.iter().any(|r| r == role.as_str())
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
        state.store.touch_session(&token, None).await?;
        Ok(Session {
            username: row.username,
            roles: row.roles,
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

    #[test]
    fn roles_come_from_configured_groups() {
        let roles = RolesConfig {
            vpn_users: vec!["cn=vpn,dc=x".into()],
            it_staff: vec!["cn=dsi,dc=x".into()],
            auditors: vec![],
        };
        assert_eq!(
            roles_for(&roles, &["CN=DSI,dc=x".into()]),
            vec![Role::ItStaff]
        );
        assert!(roles_for(&roles, &["cn=other,dc=x".into()]).is_empty());
    }
}
