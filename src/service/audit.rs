//! Audit queries for auditors (pages and API): the log with filters and the chain status.
//!
//! Thin on purpose: the query engine (filters, paging, export) belongs to `store::audit` and
//! `audit/`; this is the one place the web layer calls it, behind the auditor role.

use crate::audit::query::read_event;
use crate::audit::{AuditContext, AuditEvent};
use crate::store::{AuditFilter, AuditVerification, Store};

use super::roles::{Actor, Role};
use super::ServiceError;

/// Most events one page of the web log shows.
pub const PAGE_SIZE: i64 = 200;

/// Events matching `filter` (auditors only), newest page last. The query is itself audited
/// (`audit.read`, from `source_ip`) before it is answered: a query that cannot be audited is not
/// answered.
pub async fn events(
    store: &Store,
    actor: &Actor,
    source_ip: Option<std::net::IpAddr>,
    filter: &AuditFilter,
) -> Result<Vec<AuditEvent>, ServiceError> {
    actor.require(Role::Auditor)?;
    let ctx = AuditContext::new(actor.username.clone(), source_ip.map(|ip| ip.to_string()));
    let shown = serde_json::json!({
        "user": filter.user,
        "action": filter.action,
        "since": filter.since,
        "until": filter.until,
    });
    store
        .append_audit(&read_event(&ctx, "events", "html", shown))
        .await?;
    Ok(store.list_audit(filter).await?)
}

/// Whether the hash chain is intact (auditors only).
pub async fn verify(store: &Store, actor: &Actor) -> Result<AuditVerification, ServiceError> {
    actor.require(Role::Auditor)?;
    Ok(store.verify_audit().await?)
}
