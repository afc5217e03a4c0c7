-- The second factor (issue 19). Users are named by their lower-cased login (like users.username),
-- without a foreign key: IT may issue a registration code to a user who never logged in yet.
CREATE TABLE mfa_factors (
    username TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('totp', 'radius')),
    secret_enc TEXT,
    registered_at BIGINT,
    last_used_at BIGINT,
    last_step BIGINT,
    pending_secret_enc TEXT,
    pending_at BIGINT
);
COMMENT ON TABLE mfa_factors IS 'One second factor per user; TOTP secrets sealed with ChaCha20-Poly1305 and the [mfa] secret_key_file key (base64 of nonce || ciphertext).';
COMMENT ON COLUMN mfa_factors.username IS 'The owner (lower-cased login).';
COMMENT ON COLUMN mfa_factors.kind IS 'totp (the secret lives here) or radius (the académie OTP server holds it).';
COMMENT ON COLUMN mfa_factors.secret_enc IS 'The confirmed TOTP secret, sealed; NULL while only a registration is pending.';
COMMENT ON COLUMN mfa_factors.registered_at IS 'When the factor was confirmed (unix ms); NULL while pending.';
COMMENT ON COLUMN mfa_factors.last_used_at IS 'Last accepted code or recovery code (unix ms), read by the reauth_interval check.';
COMMENT ON COLUMN mfa_factors.last_step IS 'Last accepted TOTP step (unix seconds / 30): a step is accepted once.';
COMMENT ON COLUMN mfa_factors.pending_secret_enc IS 'A registration in progress: the new secret, sealed, until a first code confirms it.';
COMMENT ON COLUMN mfa_factors.pending_at IS 'When the pending registration started (unix ms).';

CREATE TABLE mfa_recovery_codes (
    username TEXT NOT NULL,
    code_hash TEXT NOT NULL,
    used_at BIGINT,
    PRIMARY KEY (username, code_hash)
);
COMMENT ON TABLE mfa_recovery_codes IS 'Ten single-use recovery codes per confirmed factor, shown once, stored hashed (SHA-256 hex).';
COMMENT ON COLUMN mfa_recovery_codes.used_at IS 'When it was used (unix ms); NULL while usable.';
COMMENT ON COLUMN mfa_recovery_codes.username IS 'The owner (lower-cased login).';
COMMENT ON COLUMN mfa_recovery_codes.code_hash IS 'SHA-256 (hex) of the code: the code itself was shown once and is never stored.';

CREATE TABLE mfa_registration_codes (
    code_hash TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX mfa_registration_codes_username ON mfa_registration_codes (username);
COMMENT ON TABLE mfa_registration_codes IS 'One-time registration codes handed out by IT (sesame mfa code, an IT reset), stored hashed: with the password, the only way besides enrolment to register a factor.';
COMMENT ON COLUMN mfa_registration_codes.used_at IS 'When it confirmed a factor (unix ms); NULL while usable.';
COMMENT ON COLUMN mfa_registration_codes.code_hash IS 'SHA-256 (hex) of the code: printed once by sesame mfa code or an IT reset, never stored.';
COMMENT ON COLUMN mfa_registration_codes.username IS 'Whose factor it registers (lower-cased login).';
COMMENT ON COLUMN mfa_registration_codes.created_at IS 'When IT issued it (unix ms).';
COMMENT ON COLUMN mfa_registration_codes.expires_at IS 'After this (unix ms) it registers nothing.';

CREATE TABLE mfa_windows (
    device_id BIGINT PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    username TEXT NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('agent', 'web')),
    opened_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    last_activity_at BIGINT NOT NULL,
    closed_at BIGINT,
    close_reason TEXT
);
CREATE INDEX mfa_windows_username ON mfa_windows (username);
COMMENT ON TABLE mfa_windows IS 'The last access window of each device to mfa = true resources; open while closed_at IS NULL AND expires_at > now.';
COMMENT ON COLUMN mfa_windows.device_id IS 'The device whose protected resources the window opens.';
COMMENT ON COLUMN mfa_windows.username IS 'The device owner who gave the code (lower-cased login): web logout closes the windows opened from the web.';
COMMENT ON COLUMN mfa_windows.opened_at IS 'When a valid code opened it (unix ms).';
COMMENT ON COLUMN mfa_windows.closed_at IS 'When it closed before expires_at (unix ms); NULL while open or ended on time.';
COMMENT ON COLUMN mfa_windows.source IS 'agent (POST /api/v1/device/unlock) or web (the /mon-acces page).';
COMMENT ON COLUMN mfa_windows.expires_at IS 'The window end (unix ms, wall clock): travels with the peer set to the gateways.';
COMMENT ON COLUMN mfa_windows.last_activity_at IS 'Last activity heard of (unix ms); the gateway enforces [mfa] idle.';
COMMENT ON COLUMN mfa_windows.close_reason IS 'Why it closed early: down, logout, reset, revoked (expired and idle come from the gateways).';
