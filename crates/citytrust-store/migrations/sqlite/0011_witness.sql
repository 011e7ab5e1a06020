-- The witness (C2SP tlog-witness, issue 28): per log this node witnesses,
-- the newest checkpoint it cosigned. Advanced only by a compare-and-set on
-- (size, root), so two requests from the same old size cannot both advance.
CREATE TABLE witnessed_checkpoints (
    origin      TEXT PRIMARY KEY,
    size        BIGINT NOT NULL,
    root        TEXT NOT NULL,
    -- The log's signed checkpoint with this witness's cosignature appended.
    note        TEXT NOT NULL,
    cosigned_at TEXT NOT NULL
);
