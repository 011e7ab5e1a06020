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

-- Subscriptions: the model document, who made it, for what purpose, and the
-- streams (with the agreement each was read under) it was decided for.
CREATE TABLE ngsi_subscriptions (
    id       TEXT PRIMARY KEY,
    owner    TEXT NOT NULL,
    status   TEXT NOT NULL,
    revision BIGINT NOT NULL,
    grants   TEXT NOT NULL,
    body     TEXT NOT NULL
);
CREATE INDEX ngsi_subscriptions_status ON ngsi_subscriptions (status);

-- Notifications owed: one row per subscription and entity change, written
-- in the change's transaction, removed only once delivered (or the
-- subscription ended); a failed delivery is tried again later.
CREATE TABLE ngsi_notifications (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription_id TEXT NOT NULL,
    entity_id       TEXT NOT NULL,
    changed         TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    attempts        BIGINT NOT NULL
);
CREATE INDEX ngsi_notifications_due ON ngsi_notifications (next_attempt_at);
CREATE INDEX ngsi_notifications_subscription ON ngsi_notifications (subscription_id);
