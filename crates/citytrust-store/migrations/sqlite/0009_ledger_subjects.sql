-- Which resident commitment each signed entry carries (its `subject` field),
-- so a resident's dashboard lists the entries about them without a scan. The
-- index is derived from the public entries: it is emptied here and rebuilt
-- from the log at the next start, with the new column filled in.
ALTER TABLE ledger_index ADD COLUMN subject TEXT;
DELETE FROM ledger_index;
UPDATE counters SET value = 0 WHERE name = 'ledger_indexed';
CREATE INDEX ledger_index_subject ON ledger_index (subject);
