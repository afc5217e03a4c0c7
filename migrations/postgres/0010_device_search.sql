-- The device list's text search (owner, device name, host name), folded in Rust for case AND
-- accents (text::fold: "elodie" finds "PC-Élodie"), because SQLite's lower() and LIKE fold ASCII
-- only. Written by the enrolment with the device; rows stored before this column are filled in
-- by the service at start (Store::connect), since SQL cannot fold them the same way.
ALTER TABLE devices ADD COLUMN search_text TEXT;
COMMENT ON COLUMN devices.search_text IS 'Owner, device name and host name folded for case and accents (text::fold), one per line: what the device list''s text search matches.';
