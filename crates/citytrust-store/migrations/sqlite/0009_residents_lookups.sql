-- Which resident commitment each signed entry carries (its `subject` field),
-- so a resident's dashboard lists the entries about them without a scan. The
-- index is derived from the public entries: it is emptied here and rebuilt
-- from the log at the next start, with the new column filled in.
ALTER TABLE ledger_index ADD COLUMN subject TEXT;
DELETE FROM ledger_index;
UPDATE counters SET value = 0 WHERE name = 'ledger_indexed';
CREATE INDEX ledger_index_subject ON ledger_index (subject);

-- Consents by whose they are: the consent filter and "who used my data" join
-- each link to its holder's consents for one dataset and purpose. Without it
-- the planner may walk every consent of the dataset for every link (quadratic:
-- 0.8 s for 2,000 households in the bench).
CREATE INDEX consents_by_subject ON consents (username, dataset_id, purpose);

-- "Who used my data" walks these in log order, one (version, rule) — and for
-- consent-based reads one purpose — at a time, and stops at a page's worth.
CREATE INDEX personal_reads_by_rule ON personal_reads (dataset_id, version, rule, log_index);
CREATE INDEX personal_reads_by_purpose ON personal_reads (dataset_id, version, rule, purpose, log_index);
CREATE INDEX personal_reads_by_rev ON personal_reads (dataset_id, version, rule, purpose, rev);
