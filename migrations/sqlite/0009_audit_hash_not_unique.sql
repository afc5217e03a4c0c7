-- The hash of an event is no longer a UNIQUE key: that index was the append's ceiling (a random
-- 64-hex-char key, so every batch of appends dirtied pages all over its B-tree: 16.9k events/s
-- with it, bench/REPORT.md "Audit inserts, before/after (auditins)"). Nothing looks an event up
-- by its hash and nothing relies on the constraint: `sesame audit verify` walks the chain by id
-- and recomputes every hash, so a duplicated hash is a broken link, found without the index.
--
-- SQLite cannot drop a column constraint: the table is rebuilt the documented way
-- (https://www.sqlite.org/lang_altertable.html#otheralter, "making other kinds of table schema
-- changes"): new table, copy, drop, rename, then the indexes and triggers of 0001-0007 again.
-- No other table references audit_events, so foreign keys need no care. The migration runs in
-- one transaction: interrupted, nothing changes.

CREATE TABLE audit_events_new (
    -- Position in the chain: 1, 2, 3... assigned by the writer under the chain lock.
    id INTEGER PRIMARY KEY NOT NULL,
    -- Event time (unix ms, UTC).
    ts INTEGER NOT NULL,
    -- Who acted: a uid, or "system".
    actor TEXT NOT NULL,
    -- What happened, dotted (enrol.completed, device.revoked, ...).
    action TEXT NOT NULL,
    -- What it happened to ("device:12", a uid, a code's user...).
    target TEXT NOT NULL,
    -- 'success', 'failure' or 'denied'.
    outcome TEXT NOT NULL CHECK (outcome IN ('success', 'failure', 'denied')),
    -- Client address, when the event comes from a request.
    source_ip TEXT,
    -- JSON object with event-specific details.
    details TEXT NOT NULL DEFAULT '{}',
    -- Hash of the previous event (64 zeros for the first).
    prev_hash TEXT NOT NULL,
    -- SHA-256 (hex) of prev_hash followed by the canonical JSON of the other fields.
    hash TEXT NOT NULL,
    -- Index only (0003): the user the event concerns.
    username TEXT,
    -- Index only (0003): the device the event concerns.
    device_id INTEGER,
    -- Index only (0003): the resource the event concerns.
    resource TEXT
);

INSERT INTO audit_events_new (id, ts, actor, action, target, outcome, source_ip, details,
    prev_hash, hash, username, device_id, resource)
SELECT id, ts, actor, action, target, outcome, source_ip, details,
    prev_hash, hash, username, device_id, resource
FROM audit_events ORDER BY id;

-- Dropping the table drops its indexes and triggers; SQLite fires no DELETE trigger for it.
DROP TABLE audit_events;
ALTER TABLE audit_events_new RENAME TO audit_events;

-- Indexes of 0001 and 0003 (0007 dropped audit_events_resource_device).
CREATE INDEX audit_events_ts ON audit_events (ts);
CREATE INDEX audit_events_actor ON audit_events (actor, ts);
CREATE INDEX audit_events_username ON audit_events (username, ts);
CREATE INDEX audit_events_device ON audit_events (device_id, action, id);
CREATE INDEX audit_events_resource_ts ON audit_events (resource, ts);

-- Triggers of 0001 and 0002: append-only, deletions only below the retention anchor.
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
WHEN OLD.id >= (SELECT purge_before_id FROM audit_retention WHERE id = 1)
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
