-- Each device's last tunnel session and last flow to each resource (access review), kept by the
-- append in the same transaction as the event (crate::store::audit). Derived data, like the
-- index columns of 0003: the review reads the event itself from the chain by its id, so a
-- forged row here can point at another real event, never alter what an event says; the chain
-- and `audit verify` stay the evidence. The service role needs SELECT, INSERT and UPDATE here
-- (docs/audit-postgres-grants.sql), still only INSERT and SELECT on audit_events.
CREATE TABLE audit_last_seen (
    device_id BIGINT NOT NULL,
    kind TEXT NOT NULL,
    resource TEXT NOT NULL,
    event_id BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    PRIMARY KEY (device_id, kind, resource)
);
COMMENT ON TABLE audit_last_seen IS 'Derived from audit_events by the append (access review): each device''s last session and last flow per resource. Not evidence: the chain is.';
COMMENT ON COLUMN audit_last_seen.device_id IS 'The device the event concerns (index column device_id of the event).';
COMMENT ON COLUMN audit_last_seen.kind IS '''session'' (tunnel.session_started / tunnel.session_ended) or ''flow'' (flow.allowed).';
COMMENT ON COLUMN audit_last_seen.resource IS 'The resource of a flow; empty for a session.';
COMMENT ON COLUMN audit_last_seen.event_id IS 'The last such event (the highest id).';
COMMENT ON COLUMN audit_last_seen.ts IS 'Its time (unix ms).';
-- The review looks its devices up by primary key (device_id IN (…)): no other index.

-- Backfill from the events already logged.
INSERT INTO audit_last_seen (device_id, kind, resource, event_id, ts)
SELECT device_id, kind, resource, id, ts FROM (
    SELECT device_id, id, ts,
        CASE WHEN action = 'flow.allowed' THEN 'flow' ELSE 'session' END AS kind,
        CASE WHEN action = 'flow.allowed' THEN resource ELSE '' END AS resource,
        ROW_NUMBER() OVER (
            PARTITION BY device_id, action = 'flow.allowed',
                CASE WHEN action = 'flow.allowed' THEN resource ELSE '' END
            ORDER BY id DESC
        ) AS n
    FROM audit_events
    WHERE device_id IS NOT NULL
      AND (action IN ('tunnel.session_started', 'tunnel.session_ended')
           OR (action = 'flow.allowed' AND resource IS NOT NULL))
) AS last WHERE n = 1;

-- A device's last flow to a resource was an index seek in the log: that index goes, one less
-- to maintain on every append (resource filters keep audit_events_resource_ts).
DROP INDEX audit_events_resource_device;
