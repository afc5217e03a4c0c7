-- Directory safety (issue 9): a user missing from the directory is dropped only after several
-- consecutive syncs; leavers' devices are suspended (restorable) before being revoked.
-- Kept column-for-column identical to migrations/sqlite/0005_directory_safety.sql.

ALTER TABLE users ADD COLUMN missing_syncs BIGINT NOT NULL DEFAULT 0;
COMMENT ON COLUMN users.missing_syncs IS 'Consecutive completed sync passes in which the directory did not find this user; reset when it does (sync or login).';

ALTER TABLE devices ADD COLUMN suspended_at BIGINT;
ALTER TABLE devices ADD COLUMN suspend_reason TEXT;
ALTER TABLE devices ADD COLUMN restored_at BIGINT;
COMMENT ON COLUMN devices.suspended_at IS 'When the directory sync suspended the device (unix ms), NULL when not suspended; status stays active, no peer at the gateway; restored if the user returns within suspend_grace, revoked after.';
COMMENT ON COLUMN devices.suspend_reason IS 'Why the device was suspended, NULL when not suspended.';
COMMENT ON COLUMN devices.restored_at IS 'When the device was last restored after a suspension (unix ms), NULL if never.';
