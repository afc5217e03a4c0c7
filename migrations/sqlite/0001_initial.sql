-- Sesame schema, SQLite flavour. Kept column-for-column identical to
-- migrations/postgres/0001_initial.sql: the store runs the same queries on both.
-- Times are unix milliseconds (UTC) in INTEGER columns; booleans are 0/1 integers.

-- People known from the directory (refreshed at login and by the periodic sync).
CREATE TABLE users (
    -- Login name (uid / sAMAccountName), lower-cased.
    username TEXT PRIMARY KEY NOT NULL,
    -- Distinguished name of the directory entry.
    dn TEXT NOT NULL,
    -- Display name, for the web pages and the device list.
    display_name TEXT NOT NULL,
    -- JSON array of the group DNs the user belongs to (nested groups resolved).
    groups TEXT NOT NULL DEFAULT '[]',
    -- 1 when the directory says the account is disabled.
    disabled INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    -- When the directory was last read for this user (unix ms).
    last_sync INTEGER NOT NULL
);

-- Enrolled laptops: one WireGuard key and one tunnel address each.
CREATE TABLE devices (
    -- Stable device number, shown to IT staff (`sesame devices revoke ID`).
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Owner of the device.
    username TEXT NOT NULL REFERENCES users (username),
    -- Device name chosen by IT staff when creating the enrolment code.
    name TEXT NOT NULL,
    -- Host name reported by the agent at enrolment.
    hostname TEXT NOT NULL,
    -- WireGuard public key, standard base64 (44 characters). Never reused, revoked rows included.
    public_key TEXT NOT NULL CONSTRAINT devices_public_key_unique UNIQUE,
    -- Address inside the tunnel (dotted quad). Never reused while the row exists, revoked included.
    tunnel_address TEXT NOT NULL CONSTRAINT devices_tunnel_address_unique UNIQUE,
    -- 'active' or 'revoked'.
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    -- SHA-256 (hex) of the device's bearer token; the token itself is never stored.
    token_hash TEXT NOT NULL CONSTRAINT devices_token_hash_unique UNIQUE,
    -- When the device was enrolled (unix ms).
    created_at INTEGER NOT NULL,
    -- When the key was last rotated (unix ms), NULL if never.
    rotated_at INTEGER,
    -- When the device was revoked (unix ms), NULL while active.
    revoked_at INTEGER,
    -- Why it was revoked (free text: "revoked by it-staff", "left vpn_users", ...).
    revoke_reason TEXT,
    -- When the current key must be rotated (unix ms), NULL for no expiry.
    expires_at INTEGER
);
CREATE INDEX devices_username ON devices (username);

-- One-time enrolment codes handed to users by IT staff.
CREATE TABLE enrolment_codes (
    -- SHA-256 (hex) of the normalised code; the code itself is never stored.
    code_hash TEXT PRIMARY KEY NOT NULL,
    -- The only user allowed to redeem the code (lower-cased).
    username TEXT NOT NULL,
    -- Name the enrolled device will carry.
    device_name TEXT NOT NULL,
    -- Who created the code (IT staff uid, or "cli").
    created_by TEXT NOT NULL,
    -- When the code was created (unix ms).
    created_at INTEGER NOT NULL,
    -- After this instant (unix ms) the code is refused.
    expires_at INTEGER NOT NULL,
    -- When the code was redeemed (unix ms), NULL while pending.
    redeemed_at INTEGER,
    -- Device created by the redemption, NULL while pending.
    device_id INTEGER REFERENCES devices (id)
);
CREATE INDEX enrolment_codes_username ON enrolment_codes (username);

-- Browser sessions of the web portal (IT staff, auditors, users).
CREATE TABLE web_sessions (
    -- SHA-256 (hex) of the session cookie value; the cookie itself is never stored.
    id_hash TEXT PRIMARY KEY NOT NULL,
    -- Who is logged in.
    username TEXT NOT NULL,
    -- JSON array of roles granted at login ("vpn_user", "it_staff", "auditor").
    roles TEXT NOT NULL DEFAULT '[]',
    -- Login time (unix ms).
    created_at INTEGER NOT NULL,
    -- Last request seen with this session (unix ms).
    last_seen INTEGER NOT NULL,
    -- After this instant (unix ms) the session is refused and may be purged.
    expires_at INTEGER NOT NULL
);
CREATE INDEX web_sessions_expires_at ON web_sessions (expires_at);

-- Append-only, hash-chained audit log.
CREATE TABLE audit_events (
    -- Position in the chain: 1, 2, 3... assigned by the writer under the chain lock.
    id INTEGER PRIMARY KEY NOT NULL,
    -- Event time (unix ms, UTC).
    ts INTEGER NOT NULL,
    -- Who acted: a uid, or "system".
    actor TEXT NOT NULL,
    -- What happened, dotted (enrol.completed, device.revoked, ...).
    action TEXT NOT NULL,
    -- What it happened to ("device:12", a uid, a code's user...).
    target TEXT NOT NULL,
    -- 'success', 'failure' or 'denied'.
    outcome TEXT NOT NULL CHECK (outcome IN ('success', 'failure', 'denied')),
    -- Client address, when the event comes from a request.
    source_ip TEXT,
    -- JSON object with event-specific details.
    details TEXT NOT NULL DEFAULT '{}',
    -- Hash of the previous event (64 zeros for the first).
    prev_hash TEXT NOT NULL,
    -- SHA-256 (hex) of prev_hash followed by the canonical JSON of the other fields.
    hash TEXT NOT NULL CONSTRAINT audit_events_hash_unique UNIQUE
);
CREATE INDEX audit_events_ts ON audit_events (ts);

-- The audit log is append-only: no row may be changed or removed.
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
