-- The device list's text search (store::device_search) reads a trigram index instead of every
-- device: an FTS5 table with the trigram tokenizer holds, for each device, its `search_text`
-- (owner, name and host name, folded) and its tunnel address, one per line, under the
-- device's id. Read in id order (`GLOB`, indexed from three characters on), a page of a rare
-- match costs a few index reads and a page of a common one stops at its last row, where a
-- scan of `devices` read every row before. Kept in step by the triggers below; FTS5 ships with
-- the SQLite that Sesame links.
CREATE VIRTUAL TABLE devices_search USING fts5(search, tokenize = 'trigram');

INSERT INTO devices_search (rowid, search)
SELECT id, COALESCE(search_text, '') || char(10) || tunnel_address FROM devices;

CREATE TRIGGER devices_search_insert AFTER INSERT ON devices BEGIN
    INSERT INTO devices_search (rowid, search)
    VALUES (new.id, COALESCE(new.search_text, '') || char(10) || new.tunnel_address);
END;

CREATE TRIGGER devices_search_update AFTER UPDATE OF search_text, tunnel_address ON devices BEGIN
    UPDATE devices_search
    SET search = COALESCE(new.search_text, '') || char(10) || new.tunnel_address
    WHERE rowid = new.id;
END;

CREATE TRIGGER devices_search_delete AFTER DELETE ON devices BEGIN
    DELETE FROM devices_search WHERE rowid = old.id;
END;
