-- Directory safety (issue 9): a user missing from the directory is dropped only after several
-- consecutive syncs; leavers' devices are suspended (restorable) before being revoked.
-- Kept column-for-column identical to migrations/postgres/0005_directory_safety.sql.

-- Consecutive completed sync passes in which the directory did not find this user; reset to 0
-- whenever the directory returns the entry (sync or login).
ALTER TABLE users ADD COLUMN missing_syncs INTEGER NOT NULL DEFAULT 0;

-- When the device was suspended by the directory sync (unix ms), NULL when not suspended. A
-- suspended device keeps status 'active' in this table but has no peer at the gateway; it is
-- restored if its user comes back within [directory] suspend_grace, revoked after.
ALTER TABLE devices ADD COLUMN suspended_at INTEGER;
-- Why the device was suspended ("left every vpn_users group", ...), NULL when not suspended.
ALTER TABLE devices ADD COLUMN suspend_reason TEXT;
-- When the device was last restored after a suspension (unix ms), NULL if never.
ALTER TABLE devices ADD COLUMN restored_at INTEGER;
