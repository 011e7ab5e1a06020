-- The log's tree kept as tiles (issue 30): each row holds one C2SP tile's
-- hashes with its seven interior rows (citytrust_ledger::hashtile), so a
-- node starts by reading the tiles of the tree's right edge, not every hash,
-- and answers proofs from a few tiles. A tile only grows: a write never
-- replaces a wider tile with a narrower one. The per-hash table it replaces
-- is rebuilt into tiles from the entries, once, by the first node to start
-- (checked against the newest signed checkpoint).
CREATE TABLE ledger_tiles (
    level  INTEGER NOT NULL,
    idx    BIGINT NOT NULL,
    width  INTEGER NOT NULL,
    hashes BYTEA NOT NULL,
    PRIMARY KEY (level, idx)
);

DROP TABLE ledger_hashes;
