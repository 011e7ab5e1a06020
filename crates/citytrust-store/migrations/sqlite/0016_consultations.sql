-- Consultations (R-PAR-3): the trustees' questions to residents, one
-- response per person (the primary key; replaced until it closes), results
-- frozen when first published after the close. Charter versions may cite
-- the consultation that informed them, and carry the plain-language ethics
-- code beside the Cedar rules (R-PAR-1). Trustees' terms of office: a
-- trustee outside their recorded term does not vote.
CREATE TABLE consultations (
    id         TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    opens_on   TEXT NOT NULL,
    closes_on  TEXT NOT NULL,
    body       TEXT NOT NULL,
    results    TEXT
);

CREATE TABLE consultation_responses (
    consultation_id TEXT NOT NULL REFERENCES consultations(id),
    username        TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    body            TEXT NOT NULL,
    PRIMARY KEY (consultation_id, username)
);

ALTER TABLE charters ADD COLUMN consultation_id TEXT REFERENCES consultations(id);
ALTER TABLE charters ADD COLUMN ethics_code TEXT NOT NULL DEFAULT '';

CREATE TABLE trustee_terms (
    username     TEXT PRIMARY KEY,
    starts_on    TEXT NOT NULL,
    ends_on      TEXT NOT NULL,
    appointed_by TEXT NOT NULL,
    declarations TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
