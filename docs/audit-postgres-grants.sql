-- Least privilege for the service's PostgreSQL role (docs/audit.md). Run as the owner role,
-- after the owner ran the migrations (any `sesame` command with the owner's [database] url).
-- `sesame_app` is the role `sesame serve` connects as: it may read and write the working tables,
-- only INSERT and SELECT on the audit tables, and purge the audit log only through
-- audit_purge(), which deletes below an anchor the latest signed checkpoint recorded.
GRANT USAGE ON SCHEMA public TO sesame_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON users, user_groups, devices, enrolment_codes, enrolment_batches, web_sessions TO sesame_app;
-- The second factor (migration 0011) and the site gateways' tokens and delivered events (0012).
GRANT SELECT, INSERT, UPDATE, DELETE ON mfa_factors, mfa_recovery_codes, mfa_registration_codes, mfa_windows TO sesame_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON site_tokens, site_event_seqs TO sesame_app;
-- The peer set's change log (0015): written by triggers as the role that made the change, read
-- and pruned by the publishers.
GRANT SELECT, INSERT, DELETE ON peer_changes TO sesame_app;
-- The singleton jobs' lease between portals (0016).
GRANT SELECT, INSERT, UPDATE, DELETE ON job_leases TO sesame_app;
-- The login failure counts shared by the portals (0017): counted, reset and pruned by each.
GRANT SELECT, INSERT, UPDATE, DELETE ON login_failures TO sesame_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO sesame_app;
GRANT SELECT, INSERT ON audit_events TO sesame_app;
GRANT SELECT ON audit_retention TO sesame_app;
-- Derived from the events by the append (migration 0007): kept up to date, never evidence.
GRANT SELECT, INSERT, UPDATE ON audit_last_seen TO sesame_app;
GRANT SELECT ON _sqlx_migrations TO sesame_app;
GRANT EXECUTE ON FUNCTION audit_purge(BIGINT, BIGINT) TO sesame_app;
