-- The change log of the peer set (issue 21): one row per change that can alter what a gateway
-- must admit, written by triggers in the same transaction as the change itself. A publisher
-- notices changes by reading MAX(seq) (one index seek), never by scanning `devices`; SQLite
-- serialises writers, so sequence order is commit order.
CREATE TABLE peer_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    -- 'enrolled' (a device row added), 'device' (revoked, rotated, suspended, restored, expiry
    -- changed), 'user' (groups or disabled changed) or 'window' (access window opened or closed).
    kind TEXT NOT NULL CHECK (kind IN ('enrolled', 'device', 'user', 'window')),
    device_id INTEGER,
    username TEXT,
    -- When (unix ms, the database's clock): for pruning and for operators.
    at INTEGER NOT NULL
);

CREATE TRIGGER peer_changes_device_insert AFTER INSERT ON devices
BEGIN
    INSERT INTO peer_changes (kind, device_id, username, at)
    VALUES ('enrolled', NEW.id, NEW.username, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER peer_changes_device_update
AFTER UPDATE OF status, public_key, expires_at, suspended_at, tunnel_address, username ON devices
WHEN OLD.status IS NOT NEW.status OR OLD.public_key IS NOT NEW.public_key
  OR OLD.expires_at IS NOT NEW.expires_at OR OLD.suspended_at IS NOT NEW.suspended_at
  OR OLD.tunnel_address IS NOT NEW.tunnel_address OR OLD.username IS NOT NEW.username
BEGIN
    INSERT INTO peer_changes (kind, device_id, username, at)
    VALUES ('device', NEW.id, NEW.username, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

-- Logins and syncs rewrite the user row every time: only a change of groups or of the
-- disabled flag is a change of the peer set.
CREATE TRIGGER peer_changes_user_update AFTER UPDATE OF groups, disabled ON users
WHEN OLD.groups IS NOT NEW.groups OR OLD.disabled IS NOT NEW.disabled
BEGIN
    INSERT INTO peer_changes (kind, device_id, username, at)
    VALUES ('user', NULL, NEW.username, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER peer_changes_window_insert AFTER INSERT ON mfa_windows
BEGIN
    INSERT INTO peer_changes (kind, device_id, username, at)
    VALUES ('window', NEW.device_id, NEW.username, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER peer_changes_window_update AFTER UPDATE OF expires_at, closed_at ON mfa_windows
WHEN OLD.expires_at IS NOT NEW.expires_at OR OLD.closed_at IS NOT NEW.closed_at
BEGIN
    INSERT INTO peer_changes (kind, device_id, username, at)
    VALUES ('window', NEW.device_id, NEW.username, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;
