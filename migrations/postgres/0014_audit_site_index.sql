-- The site filter of the audit log (GET /api/v1/audit/events?site=, sesame audit export --site,
-- the auditor's log page): one more column derived from each event when it is appended
-- (crate::audit::index_keys), like those of 0003: an index only, not part of the hashed content,
-- no output built from it. A forged value can hide a row from a filtered query, never alter what
-- is shown or what `audit verify` checks. The grants of docs/audit-postgres-grants.sql are on
-- the table (INSERT, SELECT) and cover the new column.

ALTER TABLE audit_events ADD COLUMN site TEXT;
COMMENT ON COLUMN audit_events.site IS 'Index only: the site gateway that reported the event (details.site); NULL for the events of the portal host itself, sesame serve''s own gateway included (site=local).';

-- Backfill of the rows written before, the same rule as crate::audit::index_keys, in SQL. Only
-- rows whose details mention "site" are parsed. The append-only trigger is lifted for this
-- statement alone (the hashed columns are not touched).
ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update_delete;
UPDATE audit_events SET site = details::jsonb ->> 'site'
WHERE strpos(details, '"site"') > 0
  AND jsonb_typeof(details::jsonb -> 'site') = 'string';
ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_update_delete;

-- A site's events in a time range (ids follow time, so the keyset page sorts only that range);
-- `site IS NULL` (site=local) seeks the same index.
CREATE INDEX audit_events_site_ts ON audit_events (site, ts);
