-- What each signed log entry is about, for the public analytics (R-AUD-3) and
-- the register's links from an agreement to its entries (R-AUD-4). Derived
-- from the public entries alone (nothing here is not in the log), written in
-- the transaction that stores the checkpoint covering them. One row per
-- dataset an entry names (one row with no dataset when it names none).
CREATE TABLE ledger_index (
    idx       BIGINT NOT NULL,
    kind      TEXT NOT NULL,
    day       TEXT NOT NULL,
    dataset   TEXT,
    purpose   TEXT,
    party     TEXT,
    agreement TEXT,
    request   TEXT
);
CREATE INDEX ledger_index_kind_day ON ledger_index (kind, day);
CREATE INDEX ledger_index_agreement ON ledger_index (agreement, idx);
CREATE INDEX ledger_index_request ON ledger_index (request, idx);

-- Entries below this index are in ledger_index (a log kept before this
-- migration is indexed at the next start).
INSERT INTO counters (name, value) VALUES ('ledger_indexed', 0);
