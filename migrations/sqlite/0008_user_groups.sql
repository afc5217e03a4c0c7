-- Which directory groups each user belongs to, one row per (user, group): lets the device list
-- apply a delegated technician's scope ([[roles.delegated]] scope) inside the query. Kept in
-- step with users.groups by every user upsert (login, directory sync, code issuing).
CREATE TABLE user_groups (
    -- The user (lower-cased login).
    username TEXT NOT NULL REFERENCES users (username) ON DELETE CASCADE,
    -- A group DN of the user, normalized as the [roles] scopes are (directory::dn::normalize_dn).
    group_dn TEXT NOT NULL,
    PRIMARY KEY (username, group_dn)
);
CREATE INDEX user_groups_group_dn ON user_groups (group_dn);

-- Users stored before this table: lower-cased DNs (the next login or sync pass rewrites them in
-- canonical form).
INSERT OR IGNORE INTO user_groups (username, group_dn)
    SELECT u.username, lower(trim(j.value)) FROM users u, json_each(u.groups) j;
