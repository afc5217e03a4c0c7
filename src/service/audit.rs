//! Audit queries for auditors (pages and API): the log with filters and the chain status.
//!
//! Thin on purpose: the query engine (filters, paging, export) belongs to `store::audit` and
//! `audit/`; this is the one place the web layer calls it, behind the auditor role.

use crate::audit::AuditEvent;
use crate::store::{AuditFilter, AuditVerification, Store};

use super::roles::{Actor, Role};
use super::ServiceError;

/// Most events one page of the web log shows.
pub const PAGE_SIZE: i64 = 200;

/// Events matching `filter` (auditors only), newest page last.
pub async fn events(
    store: &Store,
    actor: &Actor,
    filter: &AuditFilter,
) -> Result<Vec<AuditEvent>, ServiceError> {
    actor.require(Role::Auditor)?;
    Ok(store.list_audit(filter).await?)
}

/// Whether the hash chain is intact (auditors only).
pub async fn verify(store: &Store, actor: &Actor) -> Result<AuditVerification, ServiceError> {
    actor.require(Role::Auditor)?;
    Ok(store.verify_audit().await?)
}
