-- The site filter of the audit log (GET /api/v1/audit/events?site=, sesame audit export --site,
-- the auditor's log page): one more column derived from each event when it is appended
-- (crate::audit::index_keys), like those of 0003: an index only, not part of the hashed content,
-- no output built from it. A forged value can hide a row from a filtered query, never alter what
-- is shown or what `audit verify` checks.

-- The site gateway that reported the event: details.site (sessions and flows a `sesame gateway
-- --site` delivered through POST /api/v1/gateway/events). NULL for everything recorded by the
-- portal host itself, `sesame serve`'s own gateway included (what `site=local` selects).
ALTER TABLE audit_events ADD COLUMN site TEXT;

-- Backfill of the rows written before, the same rule as crate::audit::index_keys, in SQL. Only
-- rows whose details mention "site" are parsed. The append-only trigger is lifted for this
-- statement alone (the hashed columns are not touched) and restored exactly as 0009 left it.
DROP TRIGGER audit_events_no_update;
UPDATE audit_events SET site = json_extract(details, '$.site')
WHERE instr(details, '"site"') > 0
  AND json_valid(details)
  AND json_type(details, '$.site') = 'text';
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;

-- A site's events in a time range (ids follow time, so the keyset page sorts only that range);
-- `site IS NULL` (site=local) seeks the same index.
CREATE INDEX audit_events_site_ts ON audit_events (site, ts);
