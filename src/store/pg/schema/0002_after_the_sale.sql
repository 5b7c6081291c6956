-- Version 2: refunds and disputes (the lifecycle issue), connected
-- accounts, and search by words.

-- List filters, kept in step with the record by every write; the
-- connected account (Stripe Connect), for the missed-event sweep.
ALTER TABLE sessions ADD COLUMN refund_status text NOT NULL DEFAULT 'none',
                     ADD COLUMN disputed boolean NOT NULL DEFAULT false,
                     ADD COLUMN account text COLLATE "C";
CREATE INDEX sessions_by_account ON sessions (account) WHERE account IS NOT NULL;

-- Search by a whole word of the customer's name, email or first line item
-- (SessionRecord::search_words), lowercased.
ALTER TABLE sessions ADD COLUMN words text[] COLLATE "C" NOT NULL DEFAULT '{}';
CREATE INDEX sessions_by_word ON sessions USING gin (words);
CREATE INDEX sessions_refunded ON sessions (refund_status, created DESC, id DESC)
    WHERE refund_status <> 'none';
CREATE INDEX sessions_disputed ON sessions (created DESC, id DESC) WHERE disputed;

-- Charge events (refunds, disputes) for a payment no session has yet, by
-- payment intent: applied, and removed, when a session with it is stored.
CREATE TABLE unmatched_charges (
    payment_intent text COLLATE "C" PRIMARY KEY,
    value          bytea NOT NULL
);
