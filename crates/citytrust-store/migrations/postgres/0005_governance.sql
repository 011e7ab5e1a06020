-- Access governance (R-ACC-2 … R-ACC-8). Requests and agreements are kept as
-- their JSON documents (the model's types) with the columns lookups need.

-- The purpose taxonomy the trust administers; seeded with the default one.
CREATE TABLE purposes (
    id         TEXT PRIMARY KEY,
    body       TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- Every version of the charter (Cedar policies); the highest is in force.
CREATE TABLE charters (
    version    BIGINT PRIMARY KEY,
    text       TEXT NOT NULL,
    note       TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE access_requests (
    id         TEXT PRIMARY KEY,
    requester  TEXT NOT NULL,
    status     TEXT NOT NULL,
    revision   BIGINT NOT NULL,
    body       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX access_requests_by_requester ON access_requests (requester, created_at);
CREATE INDEX access_requests_by_status ON access_requests (status, created_at);

-- Each version of each agreement; reads look up the active ones covering a
-- dataset, a purpose, a recipient and today (days since 1970-01-01).
CREATE TABLE agreements (
    id         TEXT NOT NULL,
    version    BIGINT NOT NULL,
    status     TEXT NOT NULL,
    recipient  TEXT NOT NULL,
    purpose    TEXT NOT NULL,
    starts_on  BIGINT NOT NULL,
    ends_on    BIGINT NOT NULL,
    body       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (id, version)
);
CREATE TABLE agreement_datasets (
    agreement_id TEXT NOT NULL,
    version      BIGINT NOT NULL,
    dataset_id   TEXT NOT NULL,
    PRIMARY KEY (agreement_id, version, dataset_id)
);
CREATE INDEX agreement_datasets_by_dataset ON agreement_datasets (dataset_id);
