//! Tests that run as any user: the library in-process, SQLite files, the `sesame` binary, and
//! real slapd and headless Chromium started by the fixtures (no root, no PostgreSQL).
//! `cargo test --test plain`.

mod common;

mod plain {
    mod audit_api;
    mod audit_verify_cli;
    mod cli_audit;
    mod cli_devices;
    mod directory;
    mod directory_safety;
    mod directory_sync_reads;
    mod fail_static;
    mod gateway_cli;
    mod gateway_memory;
    mod mfa_api;
    mod password_oracle;
    mod portal_api;
    mod portal_auth;
    mod sites;
    mod spray;
    mod web_access;
    mod web_browser;
    mod web_listener;
    mod web_pages;
}
