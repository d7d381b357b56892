-- Retention: an ended request's personal data is deleted after `retention`,
-- and what is left of its row is a tombstone. Its Matrix ID, address and
-- decision document are replaced by keyed hashes (HMAC-SHA256 with a
-- secret derived from the signing key), so that an operator given an
-- address can tell whether Assent ever acted on it, but nobody can read
-- the address back.
ALTER TABLE requests ADD COLUMN purged_at BIGINT;
ALTER TABLE requests ADD COLUMN purged_by TEXT;            -- retention | admin:<token id>
ALTER TABLE requests ADD COLUMN address_hmac BYTEA;
ALTER TABLE requests ADD COLUMN mxid_hmac BYTEA;
ALTER TABLE requests ADD COLUMN decision_sha256 BYTEA;      -- SHA-256 of the decision document
-- Ended requests not yet purged, oldest decision first: what the purge job walks.
CREATE INDEX requests_to_purge ON requests (decided_at) WHERE purged_at IS NULL AND status <> 'pending';
CREATE INDEX requests_by_address_hmac ON requests (address_hmac) WHERE address_hmac IS NOT NULL;
CREATE INDEX requests_by_mxid_hmac ON requests (mxid_hmac) WHERE mxid_hmac IS NOT NULL;
