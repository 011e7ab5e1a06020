-- CityTrust foundation schema (SQLite). Flags are 0/1 integers; times are RFC 3339 UTC text
-- except expiry instants, which are Unix seconds so they compare as numbers.
CREATE TABLE organizations (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    url         TEXT,
    created_at  TEXT NOT NULL
);

CREATE TABLE users (
    username         TEXT PRIMARY KEY,
    display_name     TEXT NOT NULL,
    email            TEXT,
    password_hash    TEXT,
    is_administrator INTEGER NOT NULL DEFAULT 0,
    is_trustee       INTEGER NOT NULL DEFAULT 0,
    is_resident      INTEGER NOT NULL DEFAULT 0,
    disabled         INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT NOT NULL
);

CREATE TABLE memberships (
    username        TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
    organization_id TEXT NOT NULL REFERENCES organizations(id),
    PRIMARY KEY (username, organization_id)
);
CREATE INDEX memberships_by_organization ON memberships(organization_id);

CREATE TABLE org_groups (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    criteria    TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE group_members (
    group_id        TEXT NOT NULL REFERENCES org_groups(id) ON DELETE CASCADE,
    organization_id TEXT NOT NULL REFERENCES organizations(id),
    PRIMARY KEY (group_id, organization_id)
);

CREATE TABLE sessions (
    token_hash  TEXT PRIMARY KEY,
    username    TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
    csrf_token  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);

CREATE TABLE api_tokens (
    token_hash  TEXT PRIMARY KEY,
    username    TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
    created_at  TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);

CREATE TABLE datasets (
    id                    TEXT PRIMARY KEY,
    owner_organization_id TEXT NOT NULL REFERENCES organizations(id),
    spectrum              TEXT NOT NULL,
    title                 TEXT NOT NULL,
    metadata              TEXT NOT NULL,
    created_by            TEXT,
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL,
    revision              BIGINT NOT NULL
);
CREATE INDEX datasets_by_owner ON datasets(owner_organization_id);

CREATE TABLE dataset_roles (
    dataset_id      TEXT NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
    organization_id TEXT NOT NULL REFERENCES organizations(id),
    role            TEXT NOT NULL,
    PRIMARY KEY (dataset_id, organization_id, role)
);
CREATE INDEX dataset_roles_by_organization ON dataset_roles(organization_id);

CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('catalogue_revision', 0);
