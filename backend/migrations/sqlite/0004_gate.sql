-- The gate against a hostile homeserver: the address as the request spelt
-- it (when it differs from the folded form beyond ASCII case, the owner is
-- shown both), and how many repeats a pending request met (counted, not
-- one audit event each).
ALTER TABLE requests ADD COLUMN address_as_sent TEXT;
ALTER TABLE requests ADD COLUMN repeats INTEGER NOT NULL DEFAULT 0;
