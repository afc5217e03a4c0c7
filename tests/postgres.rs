//! Tests that need a real PostgreSQL (a throwaway cluster the fixture starts, as any user): the
//! store and what sits on it, each written once and run on SQLite and on PostgreSQL.
//! `cargo test --test postgres`.

mod common;

mod postgres {
    mod access_review;
    mod audit_append;
    mod audit_queries;
    mod audit_tamper;
    mod cli_enrol_code;
    mod failover;
    mod leases;
    mod login_failures;
    mod peer_changes;
    mod portal_postgres;
    mod publish_changes;
    mod store;
    mod store_audit;
    mod store_code_keys;
    mod store_devices;
    mod store_mfa;
    mod two_portals;
    mod two_portals_limits;
    mod web_device_list;
}
