-- Sharing projects (R-PAR-5): the toolkit's Discover → Prepare → Share →
-- Review process as a workspace. The project is the model's JSON document,
-- its edits conditional on the revision; its documents' bytes are kept here,
-- each name versioned, their digests logged.
CREATE TABLE projects (
    id                   TEXT PRIMARY KEY,
    created_at           TEXT NOT NULL,
    stage                TEXT NOT NULL,
    lead_organization_id TEXT NOT NULL REFERENCES organizations(id),
    revision             BIGINT NOT NULL,
    body                 TEXT NOT NULL
);

CREATE TABLE project_documents (
    id          TEXT PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects(id),
    name        TEXT NOT NULL,
    version     BIGINT NOT NULL,
    content     BLOB NOT NULL,
    UNIQUE (project_id, name, version)
);
