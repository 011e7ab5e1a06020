-- Dataspace Protocol contract negotiations and transfer processes this
-- trust is the provider in (issue 29). Each is its model document beside
-- the columns the worker that sends what is owed to the consumer looks
-- for; `revision` guards each transition against a concurrent one.
CREATE TABLE dsp_negotiations (
    provider_pid      TEXT PRIMARY KEY,
    catalogue_id      TEXT NOT NULL,
    access_request_id TEXT NOT NULL,
    agreement_id      TEXT,
    state             TEXT NOT NULL,
    next_attempt_at   TEXT,
    revision          BIGINT NOT NULL,
    body              TEXT NOT NULL
);
CREATE INDEX dsp_negotiations_state ON dsp_negotiations (state);
CREATE INDEX dsp_negotiations_agreement ON dsp_negotiations (agreement_id);

-- A transfer's data token is kept only as its SHA-256 (`token_hash`).
CREATE TABLE dsp_transfers (
    provider_pid    TEXT PRIMARY KEY,
    catalogue_id    TEXT NOT NULL,
    agreement_id    TEXT NOT NULL,
    state           TEXT NOT NULL,
    next_attempt_at TEXT,
    token_hash      TEXT,
    revision        BIGINT NOT NULL,
    body            TEXT NOT NULL
);
CREATE INDEX dsp_transfers_state ON dsp_transfers (state);

-- Negotiations this trust is the consumer in: a member's organisation
-- asking a partner node. `transfer_pid` is the consumer id of the transfer
-- that follows (the provider's callbacks name it).
CREATE TABLE dsp_consumer_negotiations (
    consumer_pid    TEXT PRIMARY KEY,
    requester       TEXT NOT NULL,
    organization_id TEXT NOT NULL,
    transfer_pid    TEXT,
    state           TEXT NOT NULL,
    next_attempt_at TEXT,
    revision        BIGINT NOT NULL,
    body            TEXT NOT NULL
);
CREATE INDEX dsp_consumer_negotiations_transfer ON dsp_consumer_negotiations (transfer_pid);
