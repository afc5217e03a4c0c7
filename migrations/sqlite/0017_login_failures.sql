-- Login failure counts shared by several portals (issue 21). `sesame serve` on SQLite is one
-- process and keeps its counts in memory (service::ratelimit); the table exists here too so the
-- two backends share migration numbers and the store's queries are tested on both. Rules
-- (windows, limits, the lock) live in service::ratelimit; these rows only hold counts.
CREATE TABLE login_failures (
    -- The counter: 'user:<account>', 'ip:<source>' or 'pair:<account>@<source>'.
    key TEXT PRIMARY KEY,
    -- Start of the short window (unix ms) and failures in it.
    short_start INTEGER NOT NULL,
    short_count INTEGER NOT NULL,
    -- Start of the long window (unix ms) and failures in it.
    long_start INTEGER NOT NULL,
    long_count INTEGER NOT NULL,
    -- Refused from every source until then (unix ms), accounts only.
    locked_until INTEGER,
    -- Past it, nothing in the row can refuse anything: pruned.
    expires_at INTEGER NOT NULL
);
CREATE INDEX login_failures_expires ON login_failures (expires_at);
