-- Indexed filters of the audit log (GET /api/v1/audit/events, sesame audit export|flows|access-review).
-- Three columns derived from each event when it is appended (crate::audit::index_keys): an index
-- only. They are not part of the hashed content and no output is built from them; a forged value
-- can hide a row from a filtered query, never alter what is shown or what `audit verify` checks.

ALTER TABLE audit_events ADD COLUMN username TEXT;
ALTER TABLE audit_events ADD COLUMN device_id BIGINT;
ALTER TABLE audit_events ADD COLUMN resource TEXT;
COMMENT ON COLUMN audit_events.username IS 'Index only: the user the event concerns (target when a plain uid, else details.username).';
COMMENT ON COLUMN audit_events.device_id IS 'Index only: the device the event concerns (details.device_id, else a device:<id> target).';
COMMENT ON COLUMN audit_events.resource IS 'Index only: the resource the event concerns (details.resource).';

-- Backfill of older rows, the same rule as crate::audit::index_keys, in SQL. The append-only
-- trigger is lifted for this statement alone (the hashed columns are not touched).
ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update_delete;
UPDATE audit_events SET
    username = CASE
        WHEN target <> '' AND strpos(target, ':') = 0 THEN target
        WHEN jsonb_typeof(details::jsonb -> 'username') = 'string' THEN details::jsonb ->> 'username'
    END,
    device_id = CASE
        WHEN jsonb_typeof(details::jsonb -> 'device_id') = 'number'
             AND (details::jsonb ->> 'device_id') ~ '^-?[0-9]{1,18}$'
            THEN (details::jsonb ->> 'device_id')::BIGINT
        WHEN target ~ '^device:[0-9]{1,18}$' THEN substr(target, 8)::BIGINT
    END,
    resource = CASE
        WHEN jsonb_typeof(details::jsonb -> 'resource') = 'string' THEN details::jsonb ->> 'resource'
    END;
ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_update_delete;

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
