-- The transparency log: entries (appended in the same transaction as the
-- change they record), the Merkle tree's stored hashes (tlog layout: see
-- tlog_tiles::stored_hash_index) and the signed checkpoints.
CREATE TABLE ledger_entries (
    idx        BIGINT PRIMARY KEY,
    kind       TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE ledger_hashes (
    id   BIGINT PRIMARY KEY,
    hash TEXT NOT NULL
);

CREATE TABLE ledger_checkpoints (
    size       BIGINT PRIMARY KEY,
    root       TEXT NOT NULL,
    note       TEXT NOT NULL,
    created_at TEXT NOT NULL
);

INSERT INTO counters (name, value) VALUES ('ledger_size', 0);
