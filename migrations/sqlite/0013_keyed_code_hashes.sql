-- Keyed code hashes (issue 20): enrolment codes (single and bulk) and second-factor
-- registration codes are stored as HMAC-SHA256 under the portal key ([portal] secret_key_file,
-- outside the database), so that a copy of the database alone does not let anyone try every
-- code offline. hash_kind says how a row's code_hash was made: 'hmac-sha256' (keyed, every row
-- written from now on) or 'sha256' (plain, the rows written before this migration, which still
-- redeem until they expire).
ALTER TABLE enrolment_codes ADD COLUMN hash_kind TEXT NOT NULL DEFAULT 'sha256'
    CHECK (hash_kind IN ('sha256', 'hmac-sha256'));
ALTER TABLE mfa_registration_codes ADD COLUMN hash_kind TEXT NOT NULL DEFAULT 'sha256'
    CHECK (hash_kind IN ('sha256', 'hmac-sha256'));
