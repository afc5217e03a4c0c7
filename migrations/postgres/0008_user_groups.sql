-- Which directory groups each user belongs to, one row per (user, group): lets the device list
-- apply a delegated technician's scope ([[roles.delegated]] scope) inside the query. Kept in
-- step with users.groups by every user upsert (login, directory sync, code issuing).
CREATE TABLE user_groups (
    username TEXT NOT NULL REFERENCES users (username) ON DELETE CASCADE,
    group_dn TEXT NOT NULL,
    PRIMARY KEY (username, group_dn)
);
CREATE INDEX user_groups_group_dn ON user_groups (group_dn);
COMMENT ON TABLE user_groups IS 'Group DNs of each user (normalized as [roles] scopes are), kept in step with users.groups.';
COMMENT ON COLUMN user_groups.username IS 'The user (lower-cased login).';
COMMENT ON COLUMN user_groups.group_dn IS 'A group DN of the user, normalized (directory::dn::normalize_dn).';

-- Users stored before this table: lower-cased DNs (the next login or sync pass rewrites them in
-- canonical form).
INSERT INTO user_groups (username, group_dn)
    SELECT u.username, lower(trim(g)) FROM users u, json_array_elements_text(u.groups::json) g
    ON CONFLICT DO NOTHING;
