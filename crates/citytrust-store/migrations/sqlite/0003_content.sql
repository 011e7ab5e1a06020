-- Dataset content: one row per immutable version (its Parquet file lives in
-- the object store under datasets/<id>/<version>/), and the owner's quality
-- rules that every upload is measured against.
CREATE TABLE dataset_versions (
    dataset_id    TEXT NOT NULL REFERENCES datasets(id),
    version       BIGINT NOT NULL,
    input_format  TEXT NOT NULL,
    row_count     BIGINT NOT NULL,
    rejected      BIGINT NOT NULL,
    bytes         BIGINT NOT NULL,
    sha256        TEXT NOT NULL,
    source_sha256 TEXT NOT NULL,
    columns       TEXT NOT NULL,
    quality       TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (dataset_id, version)
);

CREATE TABLE dataset_quality_rules (
    dataset_id TEXT PRIMARY KEY REFERENCES datasets(id),
    rules      TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
