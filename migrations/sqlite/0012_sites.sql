-- Sites (issue 18): the tokens the site gateways present to the portal, and the last event
-- sequence number each site delivered.
-- site_tokens: one row per [[site]]; token_hash is the hex SHA-256 of a 256-bit random token
-- (`sesame site token` prints the token once and never stores it); a new token replaces the row;
-- created_at in unix ms.
CREATE TABLE site_tokens (
    site TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);
-- site_event_seqs: the highest `seq` of POST /api/v1/gateway/events written for each site; a
-- retried batch's records at or below it are acknowledged and not written twice.
CREATE TABLE site_event_seqs (
    site TEXT PRIMARY KEY,
    last_seq BIGINT NOT NULL
);
