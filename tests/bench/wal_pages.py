#!/usr/bin/env python3
"""How many write-ahead-log pages a held request costs on SQLite, by schema.

Applies the real SQLite migrations to a scratch database, writes 20,000
requests shaped like `cargo xtask bench intake`'s (a request row with its raw
intake and its token's stored form, the token's time and then its SHA-256; an
audit event; an email outbox row; batches of 7, as 16 connections give), then counts the log frames that the next 7,000 take. Then the same with
each secondary index dropped in turn, with the newest-first indexes declared
descending as they were before migration 0003, and with `AUTOINCREMENT`
dropped.

    python3 tests/bench/wal_pages.py [--batch 7] [--requests 7000] [--random]
                                     [--page-size 1024,4096] [--only]

`--page-size` measures each case at each page size (Assent's files have
SQLite's default, 4096), and the KiB column is what the log is written:
pages times page size. `--only` skips the variations.

`--random` gives every request a random Matrix ID and address (the benchmark's
are numbered, so they land near each other in their indexes). Python's own
time per row is in the µs figure, so compare those only with each other.
"""

import argparse
import json
import os
import secrets
import sqlite3
import tempfile
import time

MIGRATIONS = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "backend", "migrations", "sqlite"
)

SECONDARY = [
    "requests_one_pending", "requests_by_status_created", "requests_by_created",
    "requests_by_origin", "requests_pending_expiry", "requests_by_is_created",
    "requests_by_is_status", "requests_by_origin_status", "requests_by_mxid_created",
    "requests_by_address_created", "audit_by_request", "outbox_due",
    "outbox_by_request", "outbox_open",
]

# As migrations 0001 and 0002 declared them, before 0003.
DESCENDING = """
DROP INDEX requests_by_status_created; CREATE INDEX requests_by_status_created ON requests (status, created_at DESC, id DESC);
DROP INDEX requests_by_created; CREATE INDEX requests_by_created ON requests (created_at DESC, id DESC);
DROP INDEX requests_by_is_created; CREATE INDEX requests_by_is_created ON requests (identity_server, created_at DESC, id DESC);
DROP INDEX requests_by_origin; CREATE INDEX requests_by_origin ON requests (origin, created_at DESC);
"""

NO_AUTOINCREMENT = """
CREATE TABLE audit2 (id INTEGER PRIMARY KEY, request_id TEXT NOT NULL REFERENCES requests (id),
    at INTEGER NOT NULL, kind TEXT NOT NULL, actor TEXT, detail TEXT NOT NULL DEFAULT '{}');
DROP TABLE audit_events; ALTER TABLE audit2 RENAME TO audit_events;
CREATE INDEX audit_by_request ON audit_events (request_id, id);
CREATE TABLE outbox2 (id INTEGER PRIMARY KEY, request_id TEXT NOT NULL REFERENCES requests (id),
    kind TEXT NOT NULL, sink TEXT, idempotency_key TEXT NOT NULL UNIQUE,
    payload TEXT NOT NULL DEFAULT '{}', state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL, lease_owner TEXT, lease_until INTEGER, last_error TEXT,
    created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, requeued_at INTEGER);
DROP TABLE outbox; ALTER TABLE outbox2 RENAME TO outbox;
CREATE INDEX outbox_due ON outbox (kind, next_attempt_at) WHERE state = 'pending';
CREATE INDEX outbox_by_request ON outbox (request_id);
CREATE INDEX outbox_open ON outbox (kind, state, created_at);
"""

BODY = b'{"mxid":"@x:hs.bench","threepid":{"address":"x@bench.example.org","medium":"email"}}'
HEADERS = json.dumps([
    ["authorization", 'X-Matrix origin="hs.bench",key="ed25519:a_abcd",sig="' + "A" * 86
     + '",destination="is.bench"'],
    ["content-type", "application/json"],
    ["host", "is.bench"],
])


def measure(directory, change, batch, count, random_ids, page_size):
    path = os.path.join(directory, "pages.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA page_size = %d" % page_size)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA wal_autocheckpoint = 0")
    for name in sorted(os.listdir(MIGRATIONS)):
        with open(os.path.join(MIGRATIONS, name)) as f:
            db.executescript(f.read())
    if change:
        db.executescript(change)
    now = 1_764_000_000_000
    n = 0

    def hold():
        nonlocal now, n
        rid = "req_%012x%s" % (now, secrets.token_hex(8))
        local = secrets.token_hex(6) if random_ids else "u123ax%d" % n
        mxid, address = "@%s:hs.bench" % local, "%s@bench.example.org" % local
        db.execute(
            "INSERT INTO requests (id, source, identity_server, origin, origin_key_id, verified_at, "
            "mxid, medium, address, initiator, reason, callback_url, status, token_hash, created_at, "
            "expires_at, raw_method, raw_path, raw_headers, raw_body, updated_at) VALUES "
            "(?, 'gateway', 'is.bench', 'hs.bench', 'ed25519:a_abcd', ?, ?, 'email', ?, 'unknown', "
            "NULL, NULL, 'pending', ?, ?, ?, 'POST', '/_matrix/identity/v2/3pid/unbind', ?, ?, ?)",
            (rid, now, mxid, address, now.to_bytes(6, "big") + secrets.token_bytes(32), now, now + 7 * 86_400_000,
             HEADERS, BODY, now))
        db.execute(
            "INSERT INTO audit_events (request_id, at, kind, actor, detail) VALUES (?, ?, 'held', 'hs.bench', ?)",
            (rid, now, json.dumps({"source": "gateway", "key_id": "ed25519:a_abcd", "path": "/_matrix/identity/v2/3pid/unbind"})))
        db.execute(
            "INSERT INTO outbox (request_id, kind, sink, idempotency_key, payload, state, attempts, "
            "next_attempt_at, created_at, updated_at) VALUES (?, 'email', NULL, ?, ?, 'pending', 0, ?, ?, ?)",
            (rid, "email:%s:held" % rid,
             json.dumps({"nonce": secrets.token_urlsafe(32), "language": "en", "purpose": "held"}),
             now, now, now))
        now += 1
        n += 1

    def write(rows):
        for _ in range(rows // batch):
            db.execute("BEGIN IMMEDIATE")
            for _ in range(batch):
                hold()
            db.execute("COMMIT")

    write(20_000)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    started = time.perf_counter()
    write(count)
    took = time.perf_counter() - started
    frames = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
    db.close()
    batches = count // batch
    requests = batches * batch
    return frames / batches, frames / requests, frames * page_size / 1024 / requests, took / requests * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=7)
    parser.add_argument("--requests", type=int, default=7000)
    parser.add_argument("--random", action="store_true")
    parser.add_argument("--page-size", default="4096")
    parser.add_argument("--only", action="store_true")
    args = parser.parse_args()
    cases = [("as migrated", "")]
    cases += [("without " + name, "DROP INDEX %s;" % name) for name in SECONDARY]
    cases += [("without any secondary index", "".join("DROP INDEX %s;" % i for i in SECONDARY))]
    cases += [("descending, as before migration 0003", DESCENDING)]
    cases += [("without AUTOINCREMENT", NO_AUTOINCREMENT)]
    if args.only:
        cases = cases[:1]
    print("batch of %d, %s ids" % (args.batch, "random" if args.random else "numbered"))
    with tempfile.TemporaryDirectory() as directory:
        for size in (int(s) for s in args.page_size.split(",")):
            print("page size %d" % size)
            for label, change in cases:
                per_batch, per_request, kib, us = measure(
                    directory, change, args.batch, args.requests, args.random, size)
                print("%-42s %5.1f pages/batch  %5.2f pages/request  %5.2f KiB/request  %5.1f µs/request"
                      % (label, per_batch, per_request, kib, us))


if __name__ == "__main__":
    main()
