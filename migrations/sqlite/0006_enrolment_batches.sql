-- Bulk enrolment: one row per CSV upload of the web portal, so IT staff can follow who has
-- enrolled (issued, used, expired, not yet enrolled).
CREATE TABLE enrolment_batches (
    -- Batch number, shown on the progress board.
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    -- What the technician called it (the uploaded file's name).
    label TEXT NOT NULL,
    -- Who uploaded it (IT staff uid).
    created_by TEXT NOT NULL,
    -- When (unix ms).
    created_at INTEGER NOT NULL
);

-- The batch a code was issued in; NULL for codes issued one by one (API, CLI, page).
ALTER TABLE enrolment_codes ADD COLUMN batch_id INTEGER REFERENCES enrolment_batches (id);
CREATE INDEX enrolment_codes_batch_id ON enrolment_codes (batch_id);
