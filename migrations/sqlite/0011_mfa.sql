-- The second factor (issue 19). Users are named by their lower-cased login (like users.username),
-- without a foreign key: IT may issue a registration code to a user who never logged in yet.

-- One factor per user. `secret_enc` is set once the factor is confirmed by a first code; a
-- registration in progress keeps its secret in `pending_secret_enc` (both sealed with
-- ChaCha20-Poly1305 and the `[mfa] secret_key_file` key: base64 of nonce || ciphertext).
CREATE TABLE mfa_factors (
    -- The owner (lower-cased login).
    username TEXT PRIMARY KEY,
    -- 'totp' (the secret lives here) or 'radius' (the académie's OTP server holds it).
    kind TEXT NOT NULL CHECK (kind IN ('totp', 'radius')),
    -- The confirmed TOTP secret, sealed; NULL while only a registration is pending.
    secret_enc TEXT,
    -- When the factor was confirmed (unix ms); NULL while pending.
    registered_at INTEGER,
    -- Last accepted code or recovery code (unix ms): the reauth_interval check reads it.
    last_used_at INTEGER,
    -- Last accepted TOTP step (unix seconds / 30): a step is accepted once (replays refused).
    last_step INTEGER,
    -- A registration in progress: the new secret, sealed, until a first code confirms it.
    pending_secret_enc TEXT,
    -- When the pending registration started (unix ms).
    pending_at INTEGER
);

-- Ten single-use recovery codes per confirmed factor, shown once, stored hashed (SHA-256 hex).
CREATE TABLE mfa_recovery_codes (
    username TEXT NOT NULL,
    code_hash TEXT NOT NULL,
    -- When it was used (unix ms); NULL while usable.
    used_at INTEGER,
    PRIMARY KEY (username, code_hash)
);

-- One-time registration codes handed out by IT (`sesame mfa code`, an IT reset): with the
-- password, the only way besides enrolment to register a factor. Stored hashed.
CREATE TABLE mfa_registration_codes (
    code_hash TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    -- When it confirmed a factor (unix ms); NULL while usable.
    used_at INTEGER
);
CREATE INDEX mfa_registration_codes_username ON mfa_registration_codes (username);

-- The access window of each device to `mfa = true` resources: the last one opened (one row per
-- device, replaced when a new one opens). Open while closed_at IS NULL AND expires_at > now.
CREATE TABLE mfa_windows (
    device_id INTEGER PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    -- The device's owner (lower-cased login), for closing every window of a user.
    username TEXT NOT NULL,
    -- 'agent' (POST /api/v1/device/unlock) or 'web' (the /mon-acces page).
    source TEXT NOT NULL CHECK (source IN ('agent', 'web')),
    opened_at INTEGER NOT NULL,
    -- The window's end (unix ms, wall clock): travels with the peer set to the gateways.
    expires_at INTEGER NOT NULL,
    -- Last packet to a protected resource the portal heard of (unix ms; the gateway enforces idle).
    last_activity_at INTEGER NOT NULL,
    -- When and why it closed early: down, logout, reset, revoked (expired/idle from gateways).
    closed_at INTEGER,
    close_reason TEXT
);
CREATE INDEX mfa_windows_username ON mfa_windows (username);
