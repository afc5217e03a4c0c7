-- The access review by resource counts the active devices of the members of some groups
-- (store::review): with these two indexes widened to cover what it reads, the count is answered
-- from the indexes alone, without a visit of each member's `user_groups` and `devices` rows
-- (on SQLite, five row lookups per member before). Same names, more columns: no index is
-- added, each one replaces its prefix, so a write keeps the same number of indexes.
DROP INDEX user_groups_group_dn;
CREATE INDEX user_groups_group_dn ON user_groups (group_dn, username);
DROP INDEX devices_username;
CREATE INDEX devices_username ON devices (username, status, suspended_at);
