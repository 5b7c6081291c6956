-- fulfilld's PostgreSQL schema, version 1 (unreleased: the storage backend
-- that uses it is being built; see issue 12). Values are the same serde
-- bytes the redb backend stores (bytea, not jsonb: raw events and signed
-- bodies must stay byte-exact). Times are UTC milliseconds since the epoch.

CREATE TABLE meta (
    name  text PRIMARY KEY,
    value bytea NOT NULL
);

CREATE TABLE sessions (
    id             text PRIMARY KEY,
    state          text NOT NULL,
    created        bigint NOT NULL,
    email_lc       text,
    payment_intent text,
    version        bigint NOT NULL,
    record         bytea NOT NULL,
    detail         bytea NOT NULL
);
CREATE INDEX sessions_by_state ON sessions (state, created DESC, id DESC);
CREATE INDEX sessions_by_created ON sessions (created DESC, id DESC);
CREATE INDEX sessions_by_email ON sessions (email_lc) WHERE email_lc IS NOT NULL;
CREATE INDEX sessions_by_payment_intent ON sessions (payment_intent) WHERE payment_intent IS NOT NULL;

CREATE TABLE session_bodies (
    id   text PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    body bytea NOT NULL
);

CREATE TABLE events (
    id             text PRIMARY KEY,
    session_id     text,
    received_at_ms bigint NOT NULL,
    record         bytea NOT NULL,
    -- NULL once pruned (storage.event_retention_days).
    raw            bytea
);
CREATE INDEX events_by_received ON events (received_at_ms) WHERE raw IS NOT NULL;

CREATE TABLE notifications (
    id         text PRIMARY KEY,
    session_id text NOT NULL,
    value      bytea NOT NULL
);
CREATE INDEX notifications_by_session ON notifications (session_id);

CREATE TABLE jobs (
    key            text PRIMARY KEY,
    kind           text NOT NULL,
    session_id     text NOT NULL,
    due_ms         bigint NOT NULL,
    job            bytea NOT NULL,
    taken_by       text,
    taken_until_ms bigint
);
CREATE INDEX jobs_by_due ON jobs (kind, due_ms);

-- Shared across replicas: dashboard sign-in and its throttle.
CREATE TABLE admin_sessions (
    token_sha256 bytea PRIMARY KEY,
    csrf         text NOT NULL,
    expires_ms   bigint NOT NULL
);
CREATE TABLE login_throttle (
    key       text PRIMARY KEY,
    failures  integer NOT NULL,
    next_ms   bigint NOT NULL
);
