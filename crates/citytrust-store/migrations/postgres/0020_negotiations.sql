-- Dataspace Protocol contract negotiations this trust is the provider in
-- (issue 29). A negotiation is its model document beside the columns the
-- worker that sends what is owed to the consumer looks for; `revision`
-- guards each transition against a concurrent one.
CREATE TABLE dsp_negotiations (
    provider_pid      TEXT PRIMARY KEY,
    catalogue_id      TEXT NOT NULL,
    access_request_id TEXT NOT NULL,
    state             TEXT NOT NULL,
    next_attempt_at   TEXT,
    revision          BIGINT NOT NULL,
    body              TEXT NOT NULL
);
CREATE INDEX dsp_negotiations_state ON dsp_negotiations (state);
