-- Same number as PostgreSQL's 0004 (a SECURITY DEFINER retention purge for a least-privilege
-- role). SQLite has no roles: whoever can open the file may write it, so nothing changes here;
-- the checkpoint file and the audit key, outside the database, are what anchor the chain.
SELECT 1;
