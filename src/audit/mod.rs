//! The audit log: event model, hash chain, signed checkpoints, verification, retention (the SQL is the store's).
//!
//! Every other part records through this module: it builds a [`NewAuditEvent`] with
//! [`NewAuditEvent::new`] from a typed [`Action`] and an [`AuditContext`] (who, from where), and
//! hands it to the store, which assigns id, timestamp and hashes inside a writer transaction. The
//! action names and fields are the contract of DESIGN §6: extend them, never rename them.

pub mod checkpoint;
mod event;
pub mod export;
pub mod query;
pub mod review;
pub mod verify;

pub use event::{
    canonical_json, Action, AuditContext, AuditEvent, NewAuditEvent, Outcome, AUDIT_CSV_HEADER,
    GENESIS_HASH,
};
pub use query::{index_keys, read_event, AuditFilter, Cursor, FilterParams, IndexKeys, QueryError};
pub use verify::AuditVerification;
