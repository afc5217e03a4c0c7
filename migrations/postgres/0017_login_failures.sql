-- Login failure counts shared by several portals (issue 21): see
-- migrations/sqlite/0017_login_failures.sql. UNLOGGED: not written to the WAL (a failed login
-- costs no fsync) and not replicated; a crash or a failover to a standby empties it, which only
-- forgets the last hour's failures.
CREATE UNLOGGED TABLE login_failures (
    key TEXT PRIMARY KEY,
    short_start BIGINT NOT NULL,
    short_count INTEGER NOT NULL,
    long_start BIGINT NOT NULL,
    long_count INTEGER NOT NULL,
    locked_until BIGINT,
    expires_at BIGINT NOT NULL
);
CREATE INDEX login_failures_expires ON login_failures (expires_at);
COMMENT ON TABLE login_failures IS 'Failed login, enrolment and second-factor attempts per account, source and pair, shared by every portal on this database; the limits themselves are in the portal (service::ratelimit).';
COMMENT ON COLUMN login_failures.key IS 'The counter: user:<account>, ip:<source> (IPv4 address or IPv6 /64) or pair:<account>@<source>.';
COMMENT ON COLUMN login_failures.short_start IS 'Start of the short window (unix ms).';
COMMENT ON COLUMN login_failures.short_count IS 'Failures since short_start.';
COMMENT ON COLUMN login_failures.long_start IS 'Start of the long window (unix ms).';
COMMENT ON COLUMN login_failures.long_count IS 'Failures since long_start.';
COMMENT ON COLUMN login_failures.locked_until IS 'The account is refused from every source but its known devices until then (unix ms).';
COMMENT ON COLUMN login_failures.expires_at IS 'Past it the row refuses nothing: pruned by the portals (unix ms).';
