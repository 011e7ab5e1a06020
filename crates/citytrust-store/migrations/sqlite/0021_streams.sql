-- Streams (issue 26): each NGSI-LD entity's latest state (its model
-- document, names expanded), every reading accepted (one row per attribute
-- instance written), and the write-only credentials an owner issues to a
-- stream's devices (kept as SHA-256 only). `stream_revisions` moves on with
-- every write to a stream; a write's transaction starts by moving it, so
-- writers to one stream queue there.
CREATE TABLE stream_revisions (
    dataset_id TEXT PRIMARY KEY,
    revision   BIGINT NOT NULL
);

CREATE TABLE ngsi_entities (
    entity_id   TEXT PRIMARY KEY,
    dataset_id  TEXT NOT NULL,
    revision    BIGINT NOT NULL,
    modified_at TEXT NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX ngsi_entities_stream ON ngsi_entities (dataset_id);

CREATE TABLE ngsi_history (
    entity_id   TEXT NOT NULL,
    attribute   TEXT NOT NULL,
    observed_at TEXT NOT NULL,
    dataset_id  TEXT NOT NULL,
    instance    TEXT NOT NULL
);
CREATE INDEX ngsi_history_entity ON ngsi_history (entity_id, attribute, observed_at);
CREATE INDEX ngsi_history_stream ON ngsi_history (dataset_id, observed_at);

CREATE TABLE stream_credentials (
    id         TEXT PRIMARY KEY,
    dataset_id TEXT NOT NULL,
    label      TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE INDEX stream_credentials_dataset ON stream_credentials (dataset_id);
