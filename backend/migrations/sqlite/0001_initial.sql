-- Held unbind requests, their audit trail, and the outbox of side effects.
-- Times are milliseconds since the Unix epoch.

CREATE TABLE requests (
    id               TEXT PRIMARY KEY NOT NULL,
    source           TEXT NOT NULL,             -- gateway | integrated | demo
    identity_server  TEXT NOT NULL,
    origin           TEXT NOT NULL,             -- requesting server, as verified
    origin_key_id    TEXT,
    verified_at      INTEGER,
    mxid             TEXT NOT NULL,
    medium           TEXT NOT NULL,
    address          TEXT NOT NULL,
    initiator        TEXT NOT NULL,
    reason           TEXT,
    callback_url     TEXT,
    status           TEXT NOT NULL,
    token_hash       BLOB NOT NULL UNIQUE,      -- SHA-256 of the consent token
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    decided_at       INTEGER,
    decision_id      TEXT UNIQUE,
    decision_doc     TEXT,                      -- the signed decision document (JSON)
    raw_method       TEXT,                      -- the original intake, for replay
    raw_path         TEXT,
    raw_headers      TEXT,                      -- JSON [[name, value], ...]
    raw_body         BLOB,
    updated_at       INTEGER NOT NULL
);

-- One pending request per (server, mxid, 3PID): repeats join it.
CREATE UNIQUE INDEX requests_one_pending
    ON requests (identity_server, origin, mxid, medium, address) WHERE status = 'pending';
CREATE INDEX requests_by_status_created ON requests (status, created_at DESC, id DESC);
CREATE INDEX requests_by_created ON requests (created_at DESC, id DESC);
CREATE INDEX requests_by_mxid ON requests (mxid);
CREATE INDEX requests_by_address ON requests (address);
CREATE INDEX requests_by_origin ON requests (origin, created_at DESC);
CREATE INDEX requests_pending_expiry ON requests (expires_at) WHERE status = 'pending';

CREATE TABLE audit_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id  TEXT NOT NULL REFERENCES requests (id),
    at          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    actor       TEXT,
    detail      TEXT NOT NULL DEFAULT '{}'      -- JSON
);
CREATE INDEX audit_by_request ON audit_events (request_id, id);

CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id       TEXT NOT NULL REFERENCES requests (id),
    kind             TEXT NOT NULL,             -- email | relay
    sink             TEXT,                      -- for relays: which sink
    idempotency_key  TEXT NOT NULL UNIQUE,
    payload          TEXT NOT NULL DEFAULT '{}',
    state            TEXT NOT NULL,             -- pending | done | given_up
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_until      INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX outbox_due ON outbox (kind, next_attempt_at) WHERE state = 'pending';
CREATE INDEX outbox_by_request ON outbox (request_id);
