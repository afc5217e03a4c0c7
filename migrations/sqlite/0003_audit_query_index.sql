-- Indexed filters of the audit log (GET /api/v1/audit/events, sesame audit export|flows|access-review).
-- Three columns derived from each event when it is appended (crate::audit::index_keys): an index
-- only. They are not part of the hashed content and no output is built from them; a forged value
-- can hide a row from a filtered query, never alter what is shown or what `audit verify` checks.

-- The user the event concerns: the target when it is a plain uid, else details.username.
ALTER TABLE audit_events ADD COLUMN username TEXT;
-- The device the event concerns: details.device_id, else the id of a device:<id> target.
ALTER TABLE audit_events ADD COLUMN device_id INTEGER;
-- The resource the event concerns: details.resource (flow.allowed).
ALTER TABLE audit_events ADD COLUMN resource TEXT;

-- Backfill of older rows, the same rule as crate::audit::index_keys, in SQL. The append-only
-- trigger is lifted for this statement alone (the hashed columns are not touched).
DROP TRIGGER audit_events_no_update;
UPDATE audit_events SET
    username = CASE
        WHEN target <> '' AND instr(target, ':') = 0 THEN target
        WHEN json_valid(details) AND json_type(details, '$.username') = 'text'
            THEN json_extract(details, '$.username')
    END,
    device_id = CASE
        WHEN json_valid(details) AND json_type(details, '$.device_id') = 'integer'
            THEN json_extract(details, '$.device_id')
        WHEN target LIKE 'device:%' AND length(target) > 7 AND substr(target, 8) NOT GLOB '*[^0-9]*'
            THEN CAST(substr(target, 8) AS INTEGER)
    END,
    resource = CASE
        WHEN json_valid(details) AND json_type(details, '$.resource') = 'text'
            THEN json_extract(details, '$.resource')
    END;
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;

-- One user's events in a time range: as actor, or as the user concerned (ids follow time, so
-- the keyset page sorts only that range).
CREATE INDEX audit_events_actor ON audit_events (actor, ts);
CREATE INDEX audit_events_username ON audit_events (username, ts);
-- A device's events, and its last tunnel session (access review).
CREATE INDEX audit_events_device ON audit_events (device_id, action, id);
-- Who reached a resource in a time range (sesame audit flows).
CREATE INDEX audit_events_resource_ts ON audit_events (resource, ts);
-- A device's last flow to a resource (access review).
CREATE INDEX audit_events_resource_device ON audit_events (resource, device_id, ts);
