-- The admin console: sessions, re-queued outbox rows, searching by prefix.

CREATE TABLE admin_sessions (
    id_hash     BYTEA PRIMARY KEY NOT NULL,     -- SHA-256 of the session cookie
    token_id    TEXT NOT NULL,                  -- which admin token signed in
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX admin_sessions_expiry ON admin_sessions (expires_at);

-- When an administrator re-queued a given-up row: its retry horizon starts again.
ALTER TABLE outbox ADD COLUMN requeued_at BIGINT;

-- Prefix search compares bytes ("C" collation), whatever the database's locale.
CREATE INDEX requests_by_is_created ON requests (identity_server, created_at DESC, id DESC);
CREATE INDEX requests_by_is_status ON requests (identity_server, status, created_at);
CREATE INDEX requests_by_origin_status ON requests (origin, status, created_at);
CREATE INDEX requests_by_mxid_created ON requests ((mxid COLLATE "C"), created_at DESC);
CREATE INDEX requests_by_address_created ON requests ((address COLLATE "C"), created_at DESC);
CREATE INDEX requests_by_origin_c ON requests ((origin COLLATE "C"), created_at DESC);
-- (The plain mxid and address indexes stay: intake compares in the
-- database's own collation, which a "C" index cannot serve.)
CREATE INDEX outbox_open ON outbox (kind, state, created_at);
