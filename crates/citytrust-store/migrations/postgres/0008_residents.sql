-- Residents in control (R-CIT-1 … R-CIT-8). Nothing here is in the public
-- log: the log names residents only by salted commitments.

-- Which subjects (by the dataset's subject key) each version holds, written in
-- the transaction that publishes the version, so "whose rows", "who used my
-- data" and erasure are lookups, never scans.
CREATE TABLE subject_index (
    dataset_id  TEXT NOT NULL,
    version     BIGINT NOT NULL,
    subject_key TEXT NOT NULL,
    -- 1 once an erasure removed the subject's rows from this version; kept so
    -- the resident still sees who read them before.
    erased      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (dataset_id, subject_key, version)
);

-- Subjects erased from a dataset: a later upload that holds them again is
-- stripped of their rows before it is published.
CREATE TABLE erased_subjects (
    dataset_id  TEXT NOT NULL,
    subject_key TEXT NOT NULL,
    erased_rev  BIGINT NOT NULL,
    PRIMARY KEY (dataset_id, subject_key)
);
CREATE INDEX subject_index_by_version ON subject_index (dataset_id, version);

-- One-time codes a data owner issues (printed on a bill, say) so that a
-- resident can prove which records are theirs. Only the code's SHA-256 is kept.
CREATE TABLE link_codes (
    code_hash   TEXT PRIMARY KEY,
    dataset_id  TEXT NOT NULL,
    subject_key TEXT NOT NULL,
    issued_by   TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_by     TEXT,
    used_at     TEXT
);

-- An account's verified links to the records about that person. One account
-- per subject key in a dataset.
CREATE TABLE subject_links (
    username    TEXT NOT NULL REFERENCES users(username),
    dataset_id  TEXT NOT NULL,
    subject_key TEXT NOT NULL,
    via         TEXT NOT NULL,
    linked_at   TEXT NOT NULL,
    PRIMARY KEY (dataset_id, subject_key)
);
CREATE INDEX subject_links_by_user ON subject_links (username);

-- Consents, objections and donations: one row each, with the 27560 record of
-- its latest change and the trust's signed receipt. `given_rev` and
-- `withdrawn_rev` are the subjects revision each change made, so whether a
-- past read included someone is decided exactly, not by the clock.
CREATE TABLE consents (
    id           TEXT PRIMARY KEY,
    username     TEXT NOT NULL REFERENCES users(username),
    kind         TEXT NOT NULL,
    dataset_id   TEXT NOT NULL,
    purpose      TEXT NOT NULL,
    recipient    TEXT,
    given_at     TEXT NOT NULL,
    given_rev    BIGINT NOT NULL,
    withdrawn_at TEXT,
    withdrawn_rev BIGINT,
    body         TEXT NOT NULL
);
CREATE INDEX consents_by_dataset ON consents (dataset_id, purpose, kind);
CREATE INDEX consents_by_user ON consents (username);

-- Reads of personal datasets: which version, for what, by whom, and which
-- subjects the read admitted (rule + the consent state at `at`). "Who used my
-- data" joins this with the subject index.
CREATE TABLE personal_reads (
    log_index  BIGINT NOT NULL,
    dataset_id TEXT NOT NULL,
    version    BIGINT NOT NULL,
    rule       TEXT NOT NULL,
    purpose    TEXT,
    recipients TEXT NOT NULL,
    -- The subjects revision the read's filter was computed at.
    rev        BIGINT NOT NULL,
    at         TEXT NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (log_index, dataset_id)
);
CREATE INDEX personal_reads_by_version ON personal_reads (dataset_id, version, log_index);

-- Requests about one's own data (access, rectification, erasure) and their deadlines.
CREATE TABLE subject_requests (
    id         TEXT PRIMARY KEY,
    username   TEXT NOT NULL REFERENCES users(username),
    dataset_id TEXT,
    status     TEXT NOT NULL,
    due_on     BIGINT NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX subject_requests_by_user ON subject_requests (username);
CREATE INDEX subject_requests_by_dataset ON subject_requests (dataset_id, status);

-- The salt behind each commitment the public log carries for a resident: the
-- resident (and no one else) can show an entry is about them.
CREATE TABLE subject_commitments (
    commitment TEXT PRIMARY KEY,
    username   TEXT NOT NULL REFERENCES users(username),
    salt       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX subject_commitments_by_user ON subject_commitments (username);

-- Dates of birth an administrator recorded (days since 1970-01-01), for the
-- age threshold below which a guardian decides (R-CIT-5).
CREATE TABLE birth_dates (
    username   TEXT PRIMARY KEY REFERENCES users(username),
    birth_day  BIGINT NOT NULL,
    checked_by TEXT NOT NULL
);

-- Messages to a person: breach notices, answered requests.
CREATE TABLE inbox (
    id         TEXT PRIMARY KEY,
    username   TEXT NOT NULL REFERENCES users(username),
    created_at TEXT NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX inbox_by_user ON inbox (username, created_at);

-- Breaches a trustee registered, with the affected residents computed from the log.
CREATE TABLE breaches (
    id         TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    body       TEXT NOT NULL
);

-- Moves on with every change to consents, links or subjects, so each node's
-- cache of who may be read is checked against it on every read.
INSERT INTO counters (name, value) VALUES ('subjects_revision', 0);
