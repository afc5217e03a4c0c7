CREATE TABLE site_tokens (
    site TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);
COMMENT ON TABLE site_tokens IS 'The token each site gateway presents to the portal (sesame site token): one per [[site]], a new one replaces the old.';
COMMENT ON COLUMN site_tokens.site IS 'The [[site]] name.';
COMMENT ON COLUMN site_tokens.token_hash IS 'Hex SHA-256 of the 256-bit random token (printed once, never stored).';
COMMENT ON COLUMN site_tokens.created_at IS 'When (unix ms).';

CREATE TABLE site_event_seqs (
    site TEXT PRIMARY KEY,
    last_seq BIGINT NOT NULL
);
COMMENT ON TABLE site_event_seqs IS 'Idempotent event delivery from the site gateways (POST /api/v1/gateway/events).';
COMMENT ON COLUMN site_event_seqs.site IS 'The [[site]] name (from the token, never from the request body).';
COMMENT ON COLUMN site_event_seqs.last_seq IS 'Highest seq written for the site: records at or below it are acknowledged, not written again.';
