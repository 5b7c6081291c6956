-- fulfilld's PostgreSQL schema, version 1. Values are the same serde JSON
-- bytes the redb backend stores (bytea, not jsonb: raw events and signed
-- bodies must stay byte-exact). Times are UTC milliseconds since the epoch,
-- except sessions.created (Stripe's, Unix seconds). Keys sort bytewise
-- (COLLATE "C"), as on redb: lists, cursors and prefix searches agree.

CREATE TABLE meta (
    name  text COLLATE "C" PRIMARY KEY,
    value bytea NOT NULL
);

CREATE TABLE sessions (
    id             text COLLATE "C" PRIMARY KEY,
    state          text NOT NULL,
    created        bigint NOT NULL,
    -- Search terms: the customer's email lowercased, the payment intent.
    email_lc       text COLLATE "C",
    payment_intent text COLLATE "C",
    record         bytea NOT NULL,
    detail         bytea NOT NULL
);
CREATE INDEX sessions_by_state ON sessions (state, created DESC, id DESC);
CREATE INDEX sessions_by_created ON sessions (created DESC, id DESC);
CREATE INDEX sessions_by_email ON sessions (email_lc) WHERE email_lc IS NOT NULL;
CREATE INDEX sessions_by_payment_intent ON sessions (payment_intent) WHERE payment_intent IS NOT NULL;

-- The Checkout Session as last retrieved from Stripe, with its line items.
CREATE TABLE session_bodies (
    id   text COLLATE "C" PRIMARY KEY,
    body bytea NOT NULL
);

CREATE TABLE events (
    id             text COLLATE "C" PRIMARY KEY,
    session_id     text COLLATE "C",
    received_at_ms bigint NOT NULL,
    record         bytea NOT NULL,
    -- The body exactly as received; NULL once pruned
    -- (storage.event_retention_days).
    raw            bytea
);
CREATE INDEX events_by_session ON events (session_id) WHERE session_id IS NOT NULL;

CREATE TABLE notifications (
    id         text COLLATE "C" PRIMARY KEY,
    session_id text COLLATE "C" NOT NULL,
    value      bytea NOT NULL
);
CREATE INDEX notifications_by_session ON notifications (session_id);

-- The durable queue: at most one job per key. A replica running a job has
-- taken it until taken_until_ms; past that any replica may take it again.
CREATE TABLE jobs (
    key            text COLLATE "C" PRIMARY KEY,
    kind           text NOT NULL,
    session_id     text COLLATE "C" NOT NULL,
    due_ms         bigint NOT NULL,
    job            bytea NOT NULL,
    taken_by       text,
    taken_until_ms bigint
);
CREATE INDEX jobs_by_due ON jobs (kind, due_ms);

-- Shared across replicas: dashboard sign-ins.
CREATE TABLE admin_sessions (
    token_sha256 bytea PRIMARY KEY,
    value        bytea NOT NULL,
    expires_ms   bigint NOT NULL
);

-- Values over 2 KB (a raw event is ~3 KB, a retrieved session more) are
-- compressed when stored. PostgreSQL's default, pglz, took a third of the
-- writer's database time in the webhook benchmark; lz4 is several times
-- cheaper. Only where this server was built with it (PostgreSQL 14+ with
-- lz4, as Debian's and the official images are); otherwise pglz stays.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_settings
               WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE sessions ALTER COLUMN record SET COMPRESSION lz4,
                             ALTER COLUMN detail SET COMPRESSION lz4;
        ALTER TABLE session_bodies ALTER COLUMN body SET COMPRESSION lz4;
        ALTER TABLE events ALTER COLUMN record SET COMPRESSION lz4,
                           ALTER COLUMN raw SET COMPRESSION lz4;
        ALTER TABLE notifications ALTER COLUMN value SET COMPRESSION lz4;
        ALTER TABLE jobs ALTER COLUMN job SET COMPRESSION lz4;
    END IF;
END
$$;
