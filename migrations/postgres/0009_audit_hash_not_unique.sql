-- Same number as SQLite's 0009: the hash of an event is no longer a UNIQUE key. Nothing looks an
-- event up by its hash and nothing relies on the constraint: `sesame audit verify` walks the
-- chain by id and recomputes every hash. Its index, on a random key, was the costliest part of
-- an append (bench/REPORT.md "Audit inserts, before/after (auditins)"). Run by the owner role
-- like every migration; the grants of docs/audit-postgres-grants.sql are on the table and stay.
ALTER TABLE audit_events DROP CONSTRAINT audit_events_hash_unique;
