-- Witnesses of this trust's own log (issue 28): the cosignatures each signed
-- checkpoint has gathered, whether they meet the policy's quorum (the newest
-- such checkpoint is the published one), and how each witness is doing.
ALTER TABLE ledger_checkpoints ADD COLUMN witnessed BIGINT NOT NULL DEFAULT 0;

CREATE TABLE checkpoint_cosignatures (
    size    BIGINT NOT NULL,
    witness TEXT NOT NULL,
    line    TEXT NOT NULL,
    PRIMARY KEY (size, witness)
);

CREATE TABLE log_witnesses (
    witness      TEXT PRIMARY KEY,
    size         BIGINT NOT NULL,
    cosigned_at  TEXT,
    attempted_at TEXT NOT NULL,
    failure      TEXT
);

-- Fork evidence (as a witness): a log signed a checkpoint that does not
-- extend one this witness cosigned for it. Both signed checkpoints and the
-- proof offered are kept as received, for anyone to check.
CREATE TABLE witness_evidence (
    id          BIGINT PRIMARY KEY,
    origin      TEXT NOT NULL,
    held        TEXT NOT NULL,
    offered     TEXT NOT NULL,
    proof       TEXT NOT NULL,
    reason      TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    log_index   BIGINT NOT NULL
);
