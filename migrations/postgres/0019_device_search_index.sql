-- The device list's text search (store::device_search) reads a trigram index instead of every
-- device: a GIN index of pg_trgm on what the search matches, the device's `search_text`
-- (owner, name and host name, folded) and its tunnel address, one per line. `LIKE '%…%'` on
-- that same expression uses it from three characters on.
--
-- pg_trgm ships with PostgreSQL and is a trusted extension (PostgreSQL 13 and later): the
-- database's owner (docs/install.md: `createdb -O sesame sesame`) may create it. A role that
-- may not still migrates: the search then scans `devices` as before, and the warning below
-- says so. docs/install.md §6 gives the two statements a superuser runs afterwards.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'sesame: pg_trgm unavailable (%), the device search scans the devices table; see docs/install.md', SQLERRM;
END
$$;

DO $$
DECLARE
    trgm_schema name;
BEGIN
    SELECT n.nspname INTO trgm_schema
    FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname = 'pg_trgm';
    IF trgm_schema IS NOT NULL THEN
        EXECUTE format(
            'CREATE INDEX devices_search_trgm ON devices USING gin '
            '((COALESCE(search_text, '''') || chr(10) || tunnel_address) %I.gin_trgm_ops)',
            trgm_schema);
    END IF;
END
$$;
