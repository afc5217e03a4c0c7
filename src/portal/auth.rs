//! Who is calling: the session extractor (one per request), a thin adapter over
//! `service::sessions::resume`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::service::sessions;
pub use crate::service::{Actor, Role, RoleSet};

use super::error::ApiError;
use super::state::SharedState;

/// A valid web session (cookie), refreshed on use, with the roles and delegated scope the
/// service resolved for this request.
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
}

impl FromRequestParts<SharedState> for Session {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let id = state
            .cookies
            .read(&parts.headers)
            .ok_or(crate::service::ServiceError::Unauthenticated)?;
        let signed_in = sessions::resume(&state.services, &id).await?;
        Ok(Session {
            username: signed_in.username,
            actor: signed_in.actor,
            id,
        })
    }
}
