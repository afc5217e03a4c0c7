-- Leases of the singleton jobs (issue 21): with several portals on one database, the directory
-- sync, the device key expiry and the audit retention and checkpoints run on the holder of the
-- 'jobs' lease only. The holder renews it well before `expires_at`; once it has expired (the
-- holder died or lost the database), another portal takes it (control::leader).
CREATE TABLE job_leases (
    name TEXT PRIMARY KEY,
    -- Who holds it: host name, process id and a random part (one per process start).
    holder TEXT NOT NULL,
    -- When this holder took it, and until when it holds it without renewing (unix ms).
    acquired_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
