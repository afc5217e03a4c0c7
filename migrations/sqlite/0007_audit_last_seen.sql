-- Each device's last tunnel session and last flow to each resource (access review), kept by the
-- append in the same transaction as the event (crate::store::audit). Derived data, like the
-- index columns of 0003: the review reads the event itself from the chain by its id, so a
-- forged row here can point at another real event, never alter what an event says; the chain
-- and `audit verify` stay the evidence.
CREATE TABLE audit_last_seen (
    -- The device the event concerns (index column device_id of the event).
    device_id INTEGER NOT NULL,
    -- 'session' (tunnel.session_started / tunnel.session_ended) or 'flow' (flow.allowed).
    kind TEXT NOT NULL,
    -- The resource of a flow; '' for a session.
    resource TEXT NOT NULL,
    -- The last such event (the highest id).
    event_id INTEGER NOT NULL,
    -- Its time (unix ms).
    ts INTEGER NOT NULL,
    PRIMARY KEY (device_id, kind, resource)
);
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
) WHERE n = 1;

-- A device's last flow to a resource was an index seek in the log: that index goes, one less
-- to maintain on every append (resource filters keep audit_events_resource_ts).
DROP INDEX audit_events_resource_device;
