-- Identity (R-ACC-9): sign-in through the city's OpenID Connect providers,
-- and the checked authority of agents who act for another person.

-- A sign-in in flight, from the redirect to the provider until its answer
-- comes back (single use; gone after ten minutes). Keyed by the SHA-256 of
-- the `state` value, which only the browser that started it holds.
CREATE TABLE oidc_logins (
    state_hash    TEXT PRIMARY KEY,
    provider      TEXT NOT NULL,
    nonce         TEXT NOT NULL,
    code_verifier TEXT NOT NULL,
    expires_at    BIGINT NOT NULL
);

-- Which account an identity at a provider (issuer + subject) signs in to.
CREATE TABLE external_identities (
    issuer       TEXT NOT NULL,
    subject      TEXT NOT NULL,
    username     TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
    provider     TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX external_identities_by_user ON external_identities (username);

-- Authority to act for another person (a guardian for a minor, a power of
-- attorney, an organisation's mandate), checked by an administrator against
-- its evidence. Days are days since 1970-01-01; both ends included.
CREATE TABLE authorities (
    id         TEXT PRIMARY KEY,
    agent      TEXT NOT NULL REFERENCES users(username),
    principal  TEXT NOT NULL REFERENCES users(username),
    body       TEXT NOT NULL,
    starts_on  BIGINT NOT NULL,
    ends_on    BIGINT NOT NULL,
    revoked    BIGINT NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
CREATE INDEX authorities_by_agent ON authorities (agent, principal);
