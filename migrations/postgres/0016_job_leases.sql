-- Leases of the singleton jobs (issue 21): see migrations/sqlite/0016_job_leases.sql.
CREATE TABLE job_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    acquired_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
COMMENT ON TABLE job_leases IS 'Leases of the singleton jobs (directory sync, key expiry, audit retention and checkpoints): with several portals, only the holder of the jobs lease runs them.';
COMMENT ON COLUMN job_leases.name IS 'The lease (jobs).';
COMMENT ON COLUMN job_leases.holder IS 'The portal process holding it: host name, process id and a random part.';
COMMENT ON COLUMN job_leases.acquired_at IS 'When this holder took it (unix ms).';
COMMENT ON COLUMN job_leases.expires_at IS 'Until when it holds without renewing (unix ms); past it, another portal may take it.';
