-- Demand-led data requests (R-PAR-2): anyone signed in asks for data, others
-- support it (one support per person: the primary key), the owner answers.
-- The request is the model's JSON document beside the columns lookups need;
-- who asked is a column, never in the document the public sees.
CREATE TABLE data_requests (
    id              TEXT PRIMARY KEY,
    created_at      TEXT NOT NULL,
    status          TEXT NOT NULL,
    organization_id TEXT REFERENCES organizations(id),
    requested_by    TEXT NOT NULL,
    supporters      BIGINT NOT NULL DEFAULT 0,
    body            TEXT NOT NULL
);

CREATE INDEX data_requests_by_status ON data_requests (status, created_at);
CREATE INDEX data_requests_by_requester ON data_requests (requested_by);

CREATE TABLE data_request_supports (
    request_id   TEXT NOT NULL REFERENCES data_requests(id),
    username     TEXT NOT NULL,
    supported_at TEXT NOT NULL,
    PRIMARY KEY (request_id, username)
);

CREATE INDEX data_request_supports_by_user ON data_request_supports (username);
