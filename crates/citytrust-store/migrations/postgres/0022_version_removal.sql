-- Removed versions (issue 26): a stream's compacted version that holds
-- readings past the stream's retention is removed. Its file goes; its row
-- stays, with when and why, so the log's entries that name it still resolve
-- and a read of it is answered 410 Gone. Its rows in subject_index are marked
-- erased (the rows are gone) but kept, for "who used my data".
ALTER TABLE dataset_versions ADD COLUMN removed_at TEXT;
ALTER TABLE dataset_versions ADD COLUMN removed_reason TEXT;
