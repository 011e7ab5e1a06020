-- Federation (R-PLT-4): the remote catalogues an administrator registered,
-- and the entries harvested from them. A catalogue is its model document
-- beside the columns the scheduler needs; `harvesting_until` is the lease
-- one node takes to harvest it, so two nodes never harvest it at once, and
-- `harvesting_by` the harvest holding it: only that harvest may finish.
CREATE TABLE remote_catalogues (
    id               TEXT PRIMARY KEY,
    created_at       TEXT NOT NULL,
    next_harvest_at  TEXT NOT NULL,
    harvesting_until TEXT,
    harvesting_by    TEXT,
    body             TEXT NOT NULL
);

-- One row per dataset of a remote catalogue, as last harvested; `digest`
-- is the SHA-256 of `body`, so an unchanged record is not rewritten.
CREATE TABLE federated_entries (
    id           TEXT PRIMARY KEY,
    catalogue_id TEXT NOT NULL REFERENCES remote_catalogues(id),
    remote_id    TEXT NOT NULL,
    digest       TEXT NOT NULL,
    body         TEXT NOT NULL,
    UNIQUE (catalogue_id, remote_id)
);

-- A harvest in progress writes here, a batch at a time; it replaces the
-- catalogue's entries in one transaction only once the feed was read to
-- its end. `kept` rows stand for rejected records whose earlier version
-- stays.
CREATE TABLE federated_staging (
    harvest_id   TEXT NOT NULL,
    id           TEXT NOT NULL,
    catalogue_id TEXT NOT NULL,
    remote_id    TEXT NOT NULL,
    digest       TEXT NOT NULL,
    body         TEXT NOT NULL,
    kept         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (harvest_id, id)
);
