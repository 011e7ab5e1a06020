-- Outcome reports (R-PAR-4): what each agreement's share achieved, one per
-- agreement and period (`year-N` or `final`: the unique key), public.
CREATE TABLE outcome_reports (
    id           TEXT PRIMARY KEY,
    agreement_id TEXT NOT NULL,
    period       TEXT NOT NULL,
    purpose      TEXT NOT NULL,
    submitted_at TEXT NOT NULL,
    body         TEXT NOT NULL,
    UNIQUE (agreement_id, period)
);

CREATE INDEX outcome_reports_by_purpose ON outcome_reports (purpose, submitted_at);
