-- Version numbers taken by uploads in progress (issue 30). Several nodes
-- share one database and one bucket: the node holding a claim alone writes
-- that number's files. The claim is removed in the transaction that records
-- the version, or with the files when the upload fails; a claim left by a
-- crash is swept, with its files, once it is older than any upload takes to
-- store its files.
CREATE TABLE version_claims (
    dataset_id TEXT NOT NULL,
    version    BIGINT NOT NULL,
    claimed_at TEXT NOT NULL,
    PRIMARY KEY (dataset_id, version)
);
