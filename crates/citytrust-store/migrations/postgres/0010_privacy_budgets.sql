-- Differential privacy budgets (R-PRV-5): how much privacy loss (epsilon)
-- each data user has spent under each agreement ('dataset:<id>' for reads
-- needing none, e.g. an owner's own data). In billionths of epsilon, so
-- charges add exactly; a charge that would pass the total is refused.
CREATE TABLE privacy_budgets (
    username   TEXT NOT NULL,
    account    TEXT NOT NULL,
    total_nano BIGINT NOT NULL,
    spent_nano BIGINT NOT NULL,
    releases   BIGINT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (username, account)
);
