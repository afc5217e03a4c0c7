-- Retention of the audit log ([audit] retention): the only way rows may leave audit_events.
-- A purge removes the oldest events and records where the chain now starts, so
-- `sesame audit verify` checks the remaining events from that anchor.

-- Exactly one row: where the retained part of the chain starts.
CREATE TABLE audit_retention (
    -- Always 1 (single-row table).
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    -- Events with an id below this one have been purged (and only those may be deleted).
    purge_before_id INTEGER NOT NULL,
    -- Hash of the last purged event: the prev_hash the first retained event must carry.
    anchor_hash TEXT NOT NULL,
    -- When the last purge ran (unix ms), 0 if never.
    updated_at INTEGER NOT NULL
);
INSERT INTO audit_retention (id, purge_before_id, anchor_hash, updated_at)
VALUES (1, 1, '0000000000000000000000000000000000000000000000000000000000000000', 0);

-- The anchor only moves forward and is never removed.
CREATE TRIGGER audit_retention_no_delete BEFORE DELETE ON audit_retention
BEGIN
    SELECT RAISE(ABORT, 'audit_retention is append-only');
END;
CREATE TRIGGER audit_retention_forward_only BEFORE UPDATE ON audit_retention
WHEN NEW.purge_before_id < OLD.purge_before_id OR NEW.id <> OLD.id
BEGIN
    SELECT RAISE(ABORT, 'audit_retention is append-only');
END;

-- Deleting audit events is refused, except those below the purge mark.
DROP TRIGGER audit_events_no_delete;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
WHEN OLD.id >= (SELECT purge_before_id FROM audit_retention WHERE id = 1)
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
