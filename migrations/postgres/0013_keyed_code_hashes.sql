-- Keyed code hashes (issue 20): see migrations/sqlite/0013_keyed_code_hashes.sql.
ALTER TABLE enrolment_codes ADD COLUMN hash_kind TEXT NOT NULL DEFAULT 'sha256'
    CHECK (hash_kind IN ('sha256', 'hmac-sha256'));
ALTER TABLE mfa_registration_codes ADD COLUMN hash_kind TEXT NOT NULL DEFAULT 'sha256'
    CHECK (hash_kind IN ('sha256', 'hmac-sha256'));
COMMENT ON COLUMN enrolment_codes.hash_kind IS 'How code_hash was made: hmac-sha256 (HMAC under the portal key, [portal] secret_key_file, outside the database) or sha256 (plain, codes issued before migration 0013; they redeem until they expire).';
COMMENT ON COLUMN enrolment_codes.code_hash IS 'Hash (hex) of the normalised code, as hash_kind says; the code itself is never stored.';
COMMENT ON COLUMN mfa_registration_codes.hash_kind IS 'How code_hash was made: hmac-sha256 (HMAC under the portal key, [portal] secret_key_file, outside the database) or sha256 (plain, codes issued before migration 0013; they register until they expire).';
COMMENT ON COLUMN mfa_registration_codes.code_hash IS 'Hash (hex) of the code, as hash_kind says: printed once by sesame mfa code or an IT reset, never stored.';
