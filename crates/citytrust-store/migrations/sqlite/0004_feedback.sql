-- The feedback loop (R-CAT-7): a signed-in user reports an error in a
-- dataset (a version, a column, a cell or the whole), its maintainers accept
-- (naming the version or quality rule that fixes it) or reject with a reason.
CREATE TABLE dataset_feedback (
    id               TEXT PRIMARY KEY,
    dataset_id       TEXT NOT NULL REFERENCES datasets(id),
    version          BIGINT,
    column_name      TEXT,
    row_number       BIGINT,
    description      TEXT NOT NULL,
    reported_by      TEXT NOT NULL,
    reported_at      TEXT NOT NULL,
    status           TEXT NOT NULL,
    response         TEXT,
    resolved_version BIGINT,
    answered_by      TEXT,
    answered_at      TEXT
);

CREATE INDEX dataset_feedback_by_dataset ON dataset_feedback (dataset_id, reported_at);
