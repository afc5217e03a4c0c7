-- Retention of the audit log ([audit] retention): the only way rows may leave audit_events.
-- A purge removes the oldest events and records where the chain now starts, so
-- `sesame audit verify` checks the remaining events from that anchor.

CREATE TABLE audit_retention (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    purge_before_id BIGINT NOT NULL,
    anchor_hash TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
COMMENT ON TABLE audit_retention IS 'Exactly one row: where the retained part of the audit chain starts.';
COMMENT ON COLUMN audit_retention.id IS 'Always 1 (single-row table).';
COMMENT ON COLUMN audit_retention.purge_before_id IS 'Events with an id below this one have been purged (and only those may be deleted).';
COMMENT ON COLUMN audit_retention.anchor_hash IS 'Hash of the last purged event: the prev_hash the first retained event must carry.';
COMMENT ON COLUMN audit_retention.updated_at IS 'When the last purge ran (unix ms), 0 if never.';
INSERT INTO audit_retention (id, purge_before_id, anchor_hash, updated_at)
VALUES (1, 1, '0000000000000000000000000000000000000000000000000000000000000000', 0);

-- The anchor only moves forward and is never removed.
CREATE FUNCTION audit_retention_forward_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.id = OLD.id AND NEW.purge_before_id >= OLD.purge_before_id THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_retention is append-only';
END;
$$;
CREATE TRIGGER audit_retention_guard BEFORE UPDATE OR DELETE ON audit_retention
    FOR EACH ROW EXECUTE FUNCTION audit_retention_forward_only();
CREATE TRIGGER audit_retention_no_truncate BEFORE TRUNCATE ON audit_retention
    FOR EACH STATEMENT EXECUTE FUNCTION audit_retention_forward_only();

-- Deleting audit events is refused, except those below the purge mark.
CREATE OR REPLACE FUNCTION audit_events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE'
       AND OLD.id < (SELECT purge_before_id FROM audit_retention WHERE id = 1) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_events is append-only';
END;
$$;
