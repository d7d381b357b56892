//! The repository's test suite. It runs on SQLite, and on PostgreSQL when
//! `TEST_POSTGRES_URL` names a server where it may create databases
//! (`cargo xtask test` runs it both ways).

use super::*;
use assent_shared::{Initiator, Medium, RequestStatus};
use serde_json::json;

pub(crate) mod retention;

pub(crate) struct TestDb {
    pub repo: Repo,
    /// Where it is: `sqlite://…` or `postgres://…`.
    pub url: String,
    _dir: tempfile::TempDir,
}

/// A fresh, empty database of the kind under test.
pub(crate) async fn test_db() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let url = match std::env::var("TEST_POSTGRES_URL") {
        Ok(admin_url) if !admin_url.is_empty() => fresh_postgres(&admin_url).await,
        _ => format!("sqlite://{}", dir.path().join("test.db").display()),
    };
    TestDb {
        repo: connect(&url).await.unwrap(),
        url,
        _dir: dir,
    }
}

async fn fresh_postgres(admin_url: &str) -> String {
    use sqlx::Connection;
    let name = format!("assent_test_{}", uuid_like());
    let mut admin = sqlx::PgConnection::connect(admin_url).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let mut url = url::Url::parse(admin_url).unwrap();
    url.set_path(&name);
    url.to_string()
}

fn uuid_like() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn new_request(id: &str, address: &str) -> NewRequest {
    NewRequest {
        id: id.to_owned(),
        source: Source::Gateway,
        identity_server: "is.test".to_owned(),
        origin: "hs.test".to_owned(),
        origin_key_id: Some("ed25519:a_iNuw".to_owned()),
        verified_at: Some(1_000),
        mxid: "@alice:hs.test".to_owned(),
        medium: Medium::Email,
        address: address.to_owned(),
        address_as_sent: None,
        initiator: Initiator::Unknown,
        reason: None,
        callback_url: None,
        token_hash: format!("hash-of-{id}").into_bytes(),
        created_at: 1_000,
        expires_at: 1_000 + 7 * 86_400_000,
        raw: Some(RawIntake {
            method: "POST".to_owned(),
            path: "/_matrix/identity/v2/3pid/unbind?x=%2F".to_owned(),
            headers: vec![(
                "Authorization".to_owned(),
                "X-Matrix origin=\"hs.test\",key=\"ed25519:a_iNuw\",sig=\"…\"".to_owned(),
            )],
            // Not UTF-8 on purpose: the body is kept as bytes.
            body: vec![b'{', 0xff, 0x00, b'}'],
        }),
    }
}

fn email_outbox(id: &str) -> NewOutbox {
    NewOutbox {
        kind: OutboxKind::Email,
        sink: None,
        idempotency_key: format!("email:{id}:1"),
        payload: json!({"attempt": 1}),
    }
}

fn attempt_audit() -> NewAudit {
    NewAudit::new(AuditKind::EmailAttempt, Some("worker"), json!({}))
}

fn received() -> NewAudit {
    NewAudit::new(
        AuditKind::Received,
        Some("hs.test"),
        json!({"verified": true}),
    )
}

fn decision(id: &str, status: RequestStatus, at: i64) -> Decision {
    Decision {
        link: None,
        status,
        decision_id: format!("dec-{id}-{status}"),
        document: "{\"signed\":true}".to_owned(),
        at,
    }
}

#[tokio::test]
async fn a_request_round_trips_with_its_raw_intake() {
    let db = test_db().await;
    let request = new_request("r1", "alice@example.org");
    assert_eq!(
        db.repo
            .insert_request(&request, &received(), &[email_outbox("r1")])
            .await
            .unwrap(),
        Inserted::Created
    );
    let stored = db.repo.request("r1").await.unwrap().unwrap();
    assert_eq!(stored.status, RequestStatus::Pending);
    assert_eq!(stored.raw, request.raw);
    assert_eq!(stored.token_hash, request.token_hash);
    assert_eq!(
        (stored.mxid.as_str(), stored.address.as_str()),
        ("@alice:hs.test", "alice@example.org")
    );
    assert_eq!(stored.origin_key_id.as_deref(), Some("ed25519:a_iNuw"));
    assert_eq!(
        db.repo
            .request_by_token_hash(b"hash-of-r1")
            .await
            .unwrap()
            .unwrap()
            .id,
        "r1"
    );
    assert!(db
        .repo
        .request_by_token_hash(b"hash-of-nothing")
        .await
        .unwrap()
        .is_none());
    assert!(db.repo.request("nope").await.unwrap().is_none());
    let trail = db.repo.audit_trail("r1").await.unwrap();
    assert_eq!(trail.len(), 1);
    assert_eq!(trail[0].kind, "received");
    assert_eq!(trail[0].detail, json!({"verified": true}));
    let outbox = db.repo.outbox_for("r1").await.unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(
        (outbox[0].state, outbox[0].attempts),
        (OutboxState::Pending, 0)
    );
}

#[tokio::test]
async fn a_repeat_while_pending_joins_the_first_and_queues_nothing() {
    let db = test_db().await;
    db.repo
        .insert_request(
            &new_request("r1", "a@example.org"),
            &received(),
            &[email_outbox("r1")],
        )
        .await
        .unwrap();
    let mut repeat = new_request("r2", "a@example.org");
    repeat.token_hash = b"other".to_vec();
    match db
        .repo
        .insert_request(&repeat, &received(), &[email_outbox("r2")])
        .await
        .unwrap()
    {
        Inserted::JoinedPending(existing) => assert_eq!(existing.id, "r1"),
        other => panic!("expected to join r1, got {other:?}"),
    }
    assert!(db.repo.request("r2").await.unwrap().is_none());
    assert!(db.repo.outbox_for("r2").await.unwrap().is_empty());
    assert_eq!(db.repo.outbox_for("r1").await.unwrap().len(), 1);
    // Another address is another request.
    assert_eq!(
        db.repo
            .insert_request(&new_request("r3", "b@example.org"), &received(), &[])
            .await
            .unwrap(),
        Inserted::Created
    );
    // Once decided, the same key may be held afresh.
    db.repo
        .decide(
            "r1",
            &decision("r1", RequestStatus::Denied, 2_000),
            &NewAudit::new(AuditKind::Decided, Some("owner"), json!({})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        db.repo
            .insert_request(&repeat, &received(), &[])
            .await
            .unwrap(),
        Inserted::Created
    );
}

#[tokio::test]
async fn the_first_decision_wins_even_when_they_race() {
    let db = test_db().await;
    db.repo
        .insert_request(&new_request("r1", "a@example.org"), &received(), &[])
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let repo = db.repo.clone();
        let status = if i % 2 == 0 {
            RequestStatus::Approved
        } else {
            RequestStatus::Denied
        };
        tasks.push(tokio::spawn(async move {
            let relay = NewOutbox {
                kind: OutboxKind::Relay,
                sink: Some("webhook".to_owned()),
                idempotency_key: format!("relay:r1:{i}"),
                payload: json!({}),
            };
            (
                status,
                repo.decide(
                    "r1",
                    &decision("r1", status, 2_000 + i),
                    &NewAudit::new(AuditKind::Decided, Some("owner"), json!({"i": i})),
                    &[relay],
                )
                .await
                .unwrap(),
            )
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (status, outcome) = task.await.unwrap();
        match outcome {
            Decided::Now => winners.push(status),
            Decided::AlreadyFinal(Some(stored)) => assert!(stored.status.is_final()),
            Decided::AlreadyFinal(None) => panic!("the request exists"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one decision may win");
    let stored = db.repo.request("r1").await.unwrap().unwrap();
    assert_eq!(stored.status, winners[0]);
    assert!(stored.decided_at.is_some() && stored.decision_id.is_some());
    // Only the winner's audit event and relay row were written.
    assert_eq!(db.repo.audit_trail("r1").await.unwrap().len(), 2);
    assert_eq!(db.repo.outbox_for("r1").await.unwrap().len(), 1);
    assert!(matches!(
        db.repo
            .decide(
                "missing",
                &decision("missing", RequestStatus::Approved, 1),
                &received(),
                &[]
            )
            .await
            .unwrap(),
        Decided::AlreadyFinal(None)
    ));
}

/// Replicas whose clocks disagree: one running an hour fast cannot take a
/// row another holds, because a lease ends by the database's clock, not by
/// the claimer's; and the holder's lease is as long as it asked, whatever
/// its own clock says.
#[tokio::test]
async fn a_lease_holds_against_a_replica_whose_clock_runs_fast() {
    let db = test_db().await;
    db.repo
        .insert_request(
            &new_request("skew", "skew@example.org"),
            &received(),
            &[email_outbox("skew")],
        )
        .await
        .unwrap();
    const HOUR: i64 = 3_600_000;
    let held = db
        .repo
        .claim_outbox(OutboxKind::Email, "slow-clock", 5_000, 60_000, 1)
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
    let fast = db
        .repo
        .claim_outbox(OutboxKind::Email, "fast-clock", 5_000 + HOUR, 60_000, 1)
        .await
        .unwrap();
    assert!(
        fast.is_empty(),
        "an hour-fast clock took a held lease: {fast:?}"
    );
    let left = db.repo.lease_left(held[0].id, "slow-clock").await.unwrap();
    assert!(
        left.is_some_and(|left| left > 50_000 && left <= 60_000),
        "{left:?}"
    );
    assert_eq!(
        db.repo.lease_left(held[0].id, "fast-clock").await.unwrap(),
        None
    );
    // The holder's write still counts; the fast one's is refused.
    assert!(!db
        .repo
        .finish_outbox(
            held[0].id,
            "fast-clock",
            &AttemptResult::Done,
            6_000 + HOUR,
            &attempt_audit()
        )
        .await
        .unwrap());
    assert!(db
        .repo
        .finish_outbox(
            held[0].id,
            "slow-clock",
            &AttemptResult::Done,
            6_000,
            &attempt_audit()
        )
        .await
        .unwrap());
    assert_eq!(
        db.repo.lease_left(held[0].id, "slow-clock").await.unwrap(),
        None,
        "finished"
    );
}

#[tokio::test]
async fn outbox_rows_are_leased_to_one_worker_at_a_time() {
    let db = test_db().await;
    for i in 0..6 {
        let id = format!("r{i}");
        db.repo
            .insert_request(
                &new_request(&id, &format!("u{i}@example.org")),
                &received(),
                &[email_outbox(&id)],
            )
            .await
            .unwrap();
    }
    // Leases run by the database's clock: short ones, so that the test can
    // wait one out.
    const LEASE_MS: i64 = 1_500;
    let (a, b) = tokio::join!(
        db.repo
            .claim_outbox(OutboxKind::Email, "worker-a", 5_000, LEASE_MS, 4),
        db.repo
            .claim_outbox(OutboxKind::Email, "worker-b", 5_000, LEASE_MS, 4),
    );
    let leased_at = std::time::Instant::now();
    // Whichever worker came first holds the larger share (at least 3 rows).
    let (a, b) = (a.unwrap(), b.unwrap());
    let (a, b, owner_a, owner_b) = if a.len() >= b.len() {
        (a, b, "worker-a", "worker-b")
    } else {
        (b, a, "worker-b", "worker-a")
    };
    assert_eq!(a.len() + b.len(), 6, "every due row is claimed once");
    assert!(
        a.iter()
            .all(|row| !b.iter().any(|other| other.id == row.id)),
        "no row leased twice"
    );
    assert!(a.iter().chain(&b).all(|row| row.attempts == 1));
    // Nothing is due for others while the leases hold; relays are separate.
    assert!(db
        .repo
        .claim_outbox(OutboxKind::Email, "worker-c", 6_000, LEASE_MS, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(db
        .repo
        .claim_outbox(OutboxKind::Relay, "worker-c", 6_000, LEASE_MS, 10)
        .await
        .unwrap()
        .is_empty());

    let first = &a[0];
    assert!(db
        .repo
        .finish_outbox(
            first.id,
            owner_a,
            &AttemptResult::Done,
            7_000,
            &attempt_audit()
        )
        .await
        .unwrap());
    assert!(
        !db.repo
            .finish_outbox(
                first.id,
                owner_a,
                &AttemptResult::Done,
                7_000,
                &attempt_audit()
            )
            .await
            .unwrap(),
        "a finished row stays finished"
    );
    let second = &a[1];
    assert!(
        !db.repo
            .finish_outbox(
                second.id,
                owner_b,
                &AttemptResult::Done,
                7_000,
                &attempt_audit()
            )
            .await
            .unwrap(),
        "only the lease owner may finish"
    );
    assert!(db
        .repo
        .finish_outbox(
            second.id,
            owner_a,
            &AttemptResult::RetryAt {
                at: 9_000,
                error: "451 try later".to_owned()
            },
            7_000,
            &attempt_audit()
        )
        .await
        .unwrap());
    let third = &a[2];
    assert!(db
        .repo
        .finish_outbox(
            third.id,
            owner_a,
            &AttemptResult::GiveUp {
                error: "550 no such user".to_owned()
            },
            7_000,
            &attempt_audit()
        )
        .await
        .unwrap());

    // The retry comes due at its time; an expired lease (worker b crashed) is taken over.
    let held = db.repo.lease_left(b[0].id, owner_b).await.unwrap();
    assert!(
        held.is_some_and(|left| left > 0 && left <= LEASE_MS),
        "{held:?}"
    );
    assert_eq!(db.repo.lease_left(b[0].id, owner_a).await.unwrap(), None);
    tokio::time::sleep(
        std::time::Duration::from_millis(LEASE_MS as u64 + 100).saturating_sub(leased_at.elapsed()),
    )
    .await;
    assert!(
        db.repo
            .lease_left(b[0].id, owner_b)
            .await
            .unwrap()
            .is_some_and(|left| left < 0),
        "run out, not yet taken"
    );
    let again = db
        .repo
        .claim_outbox(OutboxKind::Email, "worker-c", 70_000, LEASE_MS, 10)
        .await
        .unwrap();
    let mut ids: Vec<i64> = again.iter().map(|row| row.id).collect();
    ids.sort();
    let mut expected: Vec<i64> = b
        .iter()
        .map(|row| row.id)
        .chain([second.id])
        .chain(a[3..].iter().map(|row| row.id))
        .collect();
    expected.sort();
    assert_eq!(ids, expected);
    let retried = again.iter().find(|row| row.id == second.id).unwrap();
    assert_eq!(
        (retried.attempts, retried.last_error.as_deref()),
        (2, Some("451 try later"))
    );
    assert!(
        !db.repo
            .finish_outbox(
                b[0].id,
                owner_b,
                &AttemptResult::Done,
                71_000,
                &attempt_audit()
            )
            .await
            .unwrap(),
        "the crashed worker lost its lease"
    );

    let rows = db.repo.outbox_for(&first.request_id).await.unwrap();
    assert_eq!(rows[0].state, OutboxState::Done);
    let given_up = db.repo.outbox_for(&third.request_id).await.unwrap();
    assert_eq!(
        (given_up[0].state, given_up[0].last_error.as_deref()),
        (OutboxState::GivenUp, Some("550 no such user"))
    );
    // Each finished attempt left one audit event on its request; the refused
    // finishes left none.
    let mut attempts = 0;
    for i in 0..6 {
        let trail = db.repo.audit_trail(&format!("r{i}")).await.unwrap();
        attempts += trail
            .iter()
            .filter(|e| e.is(AuditKind::EmailAttempt))
            .count();
    }
    assert_eq!(attempts, 3);
}

#[tokio::test]
async fn the_audit_trail_keeps_its_order() {
    let db = test_db().await;
    db.repo
        .insert_request(&new_request("r1", "a@example.org"), &received(), &[])
        .await
        .unwrap();
    for kind in [AuditKind::EmailSent, AuditKind::Viewed, AuditKind::Viewed] {
        db.repo
            .append_audit("r1", 3_000, &NewAudit::new(kind, None, json!({})))
            .await
            .unwrap();
    }
    let kinds: Vec<String> = db
        .repo
        .audit_trail("r1")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["received", "email_sent", "viewed", "viewed"]);
    assert!(
        db.repo
            .append_audit(
                "no-such-request",
                1,
                &NewAudit::new(AuditKind::Viewed, None, json!({}))
            )
            .await
            .is_err(),
        "audit events belong to a request"
    );
}

#[tokio::test]
async fn data_survives_a_reconnect_and_migrations_run_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}",
        dir.path().join("nested/again/assent.db").display()
    );
    {
        let repo = connect(&url).await.unwrap();
        repo.insert_request(&new_request("r1", "a@example.org"), &received(), &[])
            .await
            .unwrap();
    }
    let repo = connect(&url).await.unwrap();
    assert_eq!(repo.request("r1").await.unwrap().unwrap().id, "r1");
    repo.ping().await.unwrap();
}

#[tokio::test]
async fn a_new_token_kills_the_old_link_and_only_while_pending() {
    let db = test_db().await;
    db.repo
        .insert_request(&new_request("r1", "a@example.org"), &received(), &[])
        .await
        .unwrap();
    let audit = NewAudit::new(AuditKind::TokenReplaced, Some("system"), json!({}));
    assert!(db
        .repo
        .replace_token("r1", b"new-hash", 2_000, &audit, &[])
        .await
        .unwrap());
    assert!(db
        .repo
        .request_by_token_hash(b"hash-of-r1")
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        db.repo
            .request_by_token_hash(b"new-hash")
            .await
            .unwrap()
            .unwrap()
            .id,
        "r1"
    );
    db.repo
        .decide(
            "r1",
            &decision("r1", RequestStatus::Approved, 3_000),
            &received(),
            &[],
        )
        .await
        .unwrap();
    assert!(!db
        .repo
        .replace_token("r1", b"newer-hash", 4_000, &audit, &[])
        .await
        .unwrap());
    assert_eq!(
        db.repo
            .request_by_token_hash(b"new-hash")
            .await
            .unwrap()
            .unwrap()
            .status,
        RequestStatus::Approved
    );
    assert_eq!(
        db.repo
            .audit_trail("r1")
            .await
            .unwrap()
            .iter()
            .filter(|e| e.is(AuditKind::TokenReplaced))
            .count(),
        1
    );
}

#[tokio::test]
async fn past_its_expiry_a_request_can_only_expire_or_be_cancelled() {
    let db = test_db().await;
    let request = new_request("r1", "a@example.org");
    db.repo
        .insert_request(&request, &received(), &[])
        .await
        .unwrap();
    let late = request.expires_at + 1;
    match db
        .repo
        .decide(
            "r1",
            &decision("r1", RequestStatus::Approved, late),
            &received(),
            &[],
        )
        .await
        .unwrap()
    {
        Decided::AlreadyFinal(Some(stored)) => assert_eq!(stored.status, RequestStatus::Pending),
        other => panic!("a late approval must change nothing, got {other:?}"),
    }
    assert_eq!(
        db.repo
            .decide(
                "r1",
                &decision("r1", RequestStatus::Expired, late),
                &received(),
                &[]
            )
            .await
            .unwrap(),
        Decided::Now
    );
    assert_eq!(
        db.repo.request("r1").await.unwrap().unwrap().status,
        RequestStatus::Expired
    );
}

#[tokio::test]
async fn concurrent_holds_are_grouped_yet_each_gets_its_own_answer() {
    let db = test_db().await;
    // 40 holds at once: 30 distinct addresses, 10 repeats of the first ten.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let repo = db.repo.clone();
        tasks.push(tokio::spawn(async move {
            let address = format!("user{}@example.org", i % 30);
            let mut request = new_request(&format!("r{i}"), &address);
            request.mxid = format!("@user{}:hs.test", i % 30);
            let audit = NewAudit::new(AuditKind::Received, Some("hs.test"), json!({"i": i}));
            repo.insert_request(&request, &audit, &[email_outbox(&format!("r{i}"))])
                .await
                .unwrap()
        }));
    }
    let mut created = 0;
    let mut joined = 0;
    for task in tasks {
        match task.await.unwrap() {
            Inserted::Created => created += 1,
            Inserted::JoinedPending(existing) => {
                joined += 1;
                assert_eq!(existing.status, RequestStatus::Pending);
            }
        }
    }
    assert_eq!((created, joined), (30, 10));
    for i in 0..30 {
        let lookup = db
            .repo
            .intake_lookup(
                &RequestKey {
                    identity_server: "is.test",
                    origin: "hs.test",
                    mxid: &format!("@user{i}:hs.test"),
                    medium: Medium::Email,
                    address: &format!("user{i}@example.org"),
                },
                0,
            )
            .await
            .unwrap();
        let latest = lookup.latest.expect("stored");
        assert_eq!(lookup.recent_for_address, 1);
        assert_eq!(lookup.oldest_recent, Some(1_000));
        // Exactly one email per stored request, and its first audit event.
        assert_eq!(db.repo.outbox_for(&latest.id).await.unwrap().len(), 1);
        let trail = db.repo.audit_trail(&latest.id).await.unwrap();
        assert_eq!(trail.len(), 1);
    }
}

/// The SQLite writer queue, with the database's write lock held by another
/// connection until `release` is sent: whatever is queued meanwhile is
/// written together once it is released.
async fn held_writer() -> (
    std::sync::Arc<SqliteRepository>,
    tempfile::TempDir,
    tokio::sync::oneshot::Sender<()>,
) {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let batched = Arc::new(
        SqliteRepository::connect(&url)
            .await
            .unwrap()
            .with_batch_writer()
            .unwrap(),
    );
    let mut blocker = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut blocker)
        .await
        .unwrap();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = released.await;
        sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    });
    (batched, dir, release)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_queued_while_the_writer_is_busy_are_written_together() {
    let (batched, _dir, release) = held_writer().await;
    let audit = received();
    // The first hold takes the writer, which waits for the lock …
    let first = {
        let repo = batched.clone();
        let audit = audit.clone();
        tokio::spawn(async move {
            repo.insert_request(&new_request("first", "f@example.org"), &audit, &[])
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // … while twenty more queue up.
    let queued: Vec<_> = (0..20)
        .map(|i| {
            let repo = batched.clone();
            let audit = audit.clone();
            tokio::spawn(async move {
                let mut request = new_request(&format!("q{i}"), &format!("q{i}@example.org"));
                request.mxid = format!("@q{i}:hs.test");
                repo.insert_request(&request, &audit, &[email_outbox(&format!("q{i}"))])
                    .await
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    release.send(()).unwrap();
    assert_eq!(first.await.unwrap().unwrap(), Inserted::Created);
    for q in queued {
        assert_eq!(q.await.unwrap().unwrap(), Inserted::Created);
    }
    assert_eq!(
        batched.batch_writer().unwrap().batches(),
        2,
        "the first alone, then the twenty together"
    );
    for i in 0..20 {
        assert_eq!(batched.outbox_for(&format!("q{i}")).await.unwrap().len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_request_in_a_batch_fails_alone() {
    let (batched, _dir, release) = held_writer().await;
    let audit = received();
    let first = {
        let repo = batched.clone();
        let audit = audit.clone();
        tokio::spawn(async move {
            repo.insert_request(&new_request("dup-id", "a@example.org"), &audit, &[])
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // Queued behind it, in one batch: the same id again, and a good one.
    let mut clash = new_request("dup-id", "b@example.org");
    clash.token_hash = b"another-hash".to_vec();
    let good = new_request("fine", "c@example.org");
    let (repo_a, repo_b) = (batched.clone(), batched.clone());
    let (audit_a, audit_b) = (audit.clone(), audit.clone());
    let bad = tokio::spawn(async move { repo_a.insert_request(&clash, &audit_a, &[]).await });
    let ok = tokio::spawn(async move { repo_b.insert_request(&good, &audit_b, &[]).await });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    release.send(()).unwrap();
    assert_eq!(first.await.unwrap().unwrap(), Inserted::Created);
    assert!(bad.await.unwrap().is_err());
    assert_eq!(ok.await.unwrap().unwrap(), Inserted::Created);
    assert_eq!(
        batched.batch_writer().unwrap().batches(),
        2,
        "the pair was one batch"
    );
    assert_eq!(
        batched.request("dup-id").await.unwrap().unwrap().address,
        "a@example.org"
    );
    assert!(batched.request("fine").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twins_in_one_batch_are_held_once() {
    let (batched, _dir, release) = held_writer().await;
    let spawn = |hold: NewHold| {
        let repo = batched.clone();
        tokio::spawn(async move { repo.hold_if_new(hold, 0, 10).await })
    };
    // The writer takes an unrelated request and waits for the lock …
    let unrelated = spawn(new_hold("t0", "@z:hs.test", "z@example.org", 999));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // … while these queue up, to be written in one transaction: the same
    // key twice, and another Matrix ID at the same address.
    let first = spawn(new_hold("t1", "@a:hs.test", "twin@example.org", 1_000));
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let twin = spawn(new_hold("t2", "@a:hs.test", "twin@example.org", 1_001));
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let other = spawn(new_hold("t3", "@b:hs.test", "twin@example.org", 1_002));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    release.send(()).unwrap();
    assert_eq!(unrelated.await.unwrap().unwrap(), HoldNew::Created);
    assert_eq!(first.await.unwrap().unwrap(), HoldNew::Created);
    assert_eq!(twin.await.unwrap().unwrap(), HoldNew::Known);
    assert_eq!(other.await.unwrap().unwrap(), HoldNew::Created);
    assert_eq!(
        batched.batch_writer().unwrap().batches(),
        2,
        "the first alone, then the three together"
    );
    assert_eq!(batched.request("t2").await.unwrap(), None);
    assert!(batched.outbox_for("t2").await.unwrap().is_empty());
    assert_eq!(batched.outbox_for("t3").await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_primary_key_clash_fails_only_that_request() {
    let db = test_db().await;
    let first = new_request("dup-id", "a@example.org");
    db.repo
        .insert_request(
            &first,
            &NewAudit::new(AuditKind::Received, None, json!({})),
            &[],
        )
        .await
        .unwrap();
    // The same id again (a primary-key clash) beside a good request.
    let mut clash = new_request("dup-id", "b@example.org");
    clash.token_hash = b"another-hash".to_vec();
    let good = new_request("fine", "c@example.org");
    let audit = NewAudit::new(AuditKind::Received, None, json!({}));
    let (bad, ok) = tokio::join!(
        db.repo.insert_request(&clash, &audit, &[]),
        db.repo.insert_request(&good, &audit, &[])
    );
    assert!(bad.is_err());
    assert_eq!(ok.unwrap(), Inserted::Created);
    assert!(db.repo.request("fine").await.unwrap().is_some());
    assert_eq!(
        db.repo.request("dup-id").await.unwrap().unwrap().address,
        "a@example.org"
    );
}

#[tokio::test]
async fn the_intake_lookup_counts_recent_requests_for_the_address_only() {
    let db = test_db().await;
    let audit = NewAudit::new(AuditKind::Received, None, json!({}));
    for (id, mxid, at) in [("x1", "@a:hs.test", 1_000), ("x2", "@b:hs.test", 5_000)] {
        let mut request = new_request(id, "shared@example.org");
        request.mxid = mxid.to_owned();
        request.created_at = at;
        request.token_hash = id.as_bytes().to_vec();
        db.repo.insert_request(&request, &audit, &[]).await.unwrap();
    }
    let key = RequestKey {
        identity_server: "is.test",
        origin: "hs.test",
        mxid: "@nobody:hs.test",
        medium: Medium::Email,
        address: "shared@example.org",
    };
    let lookup = db.repo.intake_lookup(&key, 2_000).await.unwrap();
    assert_eq!(lookup.latest, None);
    assert_eq!(
        (lookup.recent_for_address, lookup.oldest_recent),
        (1, Some(5_000))
    );
    let lookup = db.repo.intake_lookup(&key, 0).await.unwrap();
    assert_eq!(
        (lookup.recent_for_address, lookup.oldest_recent),
        (2, Some(1_000))
    );
    let other = RequestKey {
        address: "other@example.org",
        ..key
    };
    assert_eq!(
        db.repo
            .intake_lookup(&other, 0)
            .await
            .unwrap()
            .recent_for_address,
        0
    );
}

fn new_hold(id: &str, mxid: &str, address: &str, at: i64) -> NewHold {
    let mut request = new_request(id, address);
    request.mxid = mxid.to_owned();
    request.created_at = at;
    request.token_hash = format!("hash-of-{id}").into_bytes();
    NewHold {
        request,
        audit: received(),
        outbox: vec![email_outbox(id)],
    }
}

#[tokio::test]
async fn hold_if_new_stores_only_what_is_new_and_under_the_address_allowance() {
    let db = test_db().await;
    let since = 500;
    // New: stored with its audit event and its email.
    let first = new_hold("h1", "@a:hs.test", "shared@example.org", 1_000);
    assert_eq!(
        db.repo.hold_if_new(first.clone(), since, 3).await.unwrap(),
        HoldNew::Created
    );
    assert_eq!(db.repo.audit_trail("h1").await.unwrap().len(), 1);
    assert_eq!(db.repo.outbox_for("h1").await.unwrap().len(), 1);
    // The same key again while pending: nothing stored.
    let twin = new_hold("h2", "@a:hs.test", "shared@example.org", 2_000);
    assert_eq!(
        db.repo.hold_if_new(twin.clone(), since, 3).await.unwrap(),
        HoldNew::Known
    );
    assert_eq!(db.repo.request("h2").await.unwrap(), None);
    assert!(db.repo.outbox_for("h2").await.unwrap().is_empty());
    // Decided: still known (the caller answers from the decision).
    db.repo
        .decide(
            "h1",
            &decision("h1", RequestStatus::Denied, 1_500),
            &received(),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        db.repo.hold_if_new(twin.clone(), since, 3).await.unwrap(),
        HoldNew::Known
    );
    assert_eq!(db.repo.request("h2").await.unwrap(), None);
    // Another Matrix ID for the address: new, until the address has had
    // `limit` requests since `since`.
    let other = new_hold("h3", "@b:hs.test", "shared@example.org", 3_000);
    assert_eq!(
        db.repo.hold_if_new(other.clone(), since, 2).await.unwrap(),
        HoldNew::Created
    );
    let third = new_hold("h4", "@c:hs.test", "shared@example.org", 4_000);
    assert_eq!(
        db.repo.hold_if_new(third.clone(), since, 2).await.unwrap(),
        HoldNew::Known
    );
    assert_eq!(db.repo.request("h4").await.unwrap(), None);
    // Requests before `since` do not count.
    assert_eq!(
        db.repo.hold_if_new(third.clone(), 2_000, 2).await.unwrap(),
        HoldNew::Created
    );
    let stored = db.repo.request("h4").await.unwrap().unwrap();
    assert_eq!(stored.status, RequestStatus::Pending);
    assert_eq!(stored.raw, third.request.raw);
}

/// Requests r0..r6: one a millisecond apart, alternating two homeservers,
/// r5 decided (denied).
async fn seeded_for_listing(db: &TestDb) {
    for i in 0..7 {
        let mut request = new_request(&format!("r{i}"), &format!("user{i}@example.org"));
        request.created_at = 10_000 + i;
        request.mxid = format!("@user{i}:hs{}.test", i % 2);
        request.origin = format!("hs{}.test", i % 2);
        db.repo
            .insert_request(&request, &received(), &[])
            .await
            .unwrap();
    }
    db.repo
        .decide(
            "r5",
            &decision("r5", RequestStatus::Denied, 20_000),
            &received(),
            &[],
        )
        .await
        .unwrap();
}

fn ids(rows: &[RequestSummary]) -> Vec<&str> {
    rows.iter().map(|r| r.id.as_str()).collect()
}

#[tokio::test]
async fn the_admin_list_pages_newest_first_with_filters_and_search() {
    let db = test_db().await;
    seeded_for_listing(&db).await;
    let all = ListFilter::default();
    let page = db.repo.list_requests(&all, None, 3).await.unwrap();
    assert_eq!(ids(&page), ["r6", "r5", "r4"]);
    let last = page.last().unwrap();
    let cursor = ListCursor {
        created_at: last.created_at,
        id: last.id.clone(),
    };
    let next = db.repo.list_requests(&all, Some(&cursor), 3).await.unwrap();
    assert_eq!(ids(&next), ["r3", "r2", "r1"]);
    assert_eq!(next[0].origin, "hs1.test");
    assert_eq!(next[0].address, "user3@example.org");

    let pending = ListFilter {
        status: Some(RequestStatus::Pending),
        ..ListFilter::default()
    };
    assert_eq!(
        ids(&db.repo.list_requests(&pending, None, 10).await.unwrap()),
        ["r6", "r4", "r3", "r2", "r1", "r0"]
    );
    let hs1 = ListFilter {
        origin: Some("hs1.test".to_owned()),
        ..ListFilter::default()
    };
    assert_eq!(
        ids(&db.repo.list_requests(&hs1, None, 10).await.unwrap()),
        ["r5", "r3", "r1"]
    );
    let window = ListFilter {
        created_from: Some(10_002),
        created_before: Some(10_004),
        ..ListFilter::default()
    };
    assert_eq!(
        ids(&db.repo.list_requests(&window, None, 10).await.unwrap()),
        ["r3", "r2"]
    );

    // By address, by Matrix ID, by server: prefixes.
    for (prefix, expected) in [
        ("user4@", vec!["r4"]),
        ("@user2:", vec!["r2"]),
        ("hs0.", vec!["r6", "r4", "r2", "r0"]),
        ("nobody", vec![]),
        // Only a prefix: the middle of a value does not match.
        ("example.org", vec![]),
    ] {
        let search = ListFilter {
            prefixes: vec![prefix.to_owned()],
            ..ListFilter::default()
        };
        assert_eq!(
            ids(&db.repo.list_requests(&search, None, 10).await.unwrap()),
            expected,
            "{prefix}"
        );
    }

    let nonzero = |counted: Counted| {
        let mut counts: Vec<_> = counted.counts.into_iter().filter(|(_, n)| *n > 0).collect();
        counts.sort_by_key(|(status, _)| status.as_str());
        (counts, counted.complete)
    };
    let expected = vec![(RequestStatus::Denied, 1), (RequestStatus::Pending, 2)];
    assert_eq!(
        nonzero(db.repo.count_requests(&hs1, 100).await.unwrap()),
        (expected.clone(), true)
    );
    // The status filter is left out of the counts.
    let hs1_pending = ListFilter {
        status: Some(RequestStatus::Pending),
        ..hs1.clone()
    };
    assert_eq!(
        nonzero(db.repo.count_requests(&hs1_pending, 100).await.unwrap()),
        (expected, true)
    );
    // Counting stops at the cap: 6 pending, counted to 2.
    assert_eq!(
        nonzero(
            db.repo
                .count_requests(&ListFilter::default(), 2)
                .await
                .unwrap()
        ),
        (
            vec![(RequestStatus::Denied, 1), (RequestStatus::Pending, 2)],
            false
        )
    );
    // Searching counts the matches, up to 5 × cap in all.
    let search = ListFilter {
        prefixes: vec!["user".to_owned(), "@user".to_owned()],
        ..ListFilter::default()
    };
    assert_eq!(
        nonzero(db.repo.count_requests(&search, 100).await.unwrap()),
        (
            vec![(RequestStatus::Denied, 1), (RequestStatus::Pending, 6)],
            true
        )
    );
    let (counts, complete) = nonzero(db.repo.count_requests(&search, 1).await.unwrap());
    assert_eq!(
        (counts.iter().map(|(_, n)| n).sum::<i64>(), complete),
        (5, false)
    );
}

#[tokio::test]
async fn homeservers_are_counted_per_day_and_week() {
    let db = test_db().await;
    seeded_for_listing(&db).await;
    // The day starts at r4: r4..r6 in the day, all in the week.
    let mut counts = db.repo.origin_counts(10_004, 0).await.unwrap();
    counts.sort_by(|a, b| (&a.origin, a.status.as_str()).cmp(&(&b.origin, b.status.as_str())));
    let flat: Vec<(&str, RequestStatus, i64, i64)> = counts
        .iter()
        .map(|c| (c.origin.as_str(), c.status, c.day, c.week))
        .collect();
    assert_eq!(
        flat,
        [
            ("hs0.test", RequestStatus::Pending, 2, 4),
            ("hs1.test", RequestStatus::Denied, 1, 1),
            ("hs1.test", RequestStatus::Pending, 0, 2),
        ]
    );
}

#[tokio::test]
async fn given_up_rows_are_queued_again_with_an_audit_event() {
    let db = test_db().await;
    db.repo
        .insert_request(
            &new_request("r1", "a@example.org"),
            &received(),
            &[email_outbox("r1")],
        )
        .await
        .unwrap();
    let retry = NewAudit::new(
        AuditKind::AdminRetry,
        Some("admin:abcd1234"),
        json!({"kind": "all"}),
    );
    assert_eq!(
        db.repo
            .requeue_given_up("r1", None, 3_000, &retry)
            .await
            .unwrap(),
        0,
        "nothing given up yet"
    );
    let claimed = db
        .repo
        .claim_outbox(OutboxKind::Email, "w", 2_000, 60_000, 1)
        .await
        .unwrap();
    let given_up = AttemptResult::GiveUp {
        error: "mailbox full".to_owned(),
    };
    assert!(db
        .repo
        .finish_outbox(claimed[0].id, "w", &given_up, 2_500, &attempt_audit())
        .await
        .unwrap());
    assert_eq!(
        db.repo.outbox_depth().await.unwrap()[0],
        OutboxDepth {
            kind: OutboxKind::Email,
            pending: 0,
            oldest_pending_at: None,
            given_up: 1,
        }
    );
    assert_eq!(
        db.repo
            .requeue_given_up("r1", Some(OutboxKind::Relay), 3_000, &retry)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        db.repo
            .requeue_given_up("r1", Some(OutboxKind::Email), 3_000, &retry)
            .await
            .unwrap(),
        1
    );
    let row = &db.repo.outbox_for("r1").await.unwrap()[0];
    assert_eq!(
        (
            row.state,
            row.attempts,
            row.next_attempt_at,
            row.requeued_at
        ),
        (OutboxState::Pending, 0, 3_000, Some(3_000))
    );
    assert_eq!(
        row.last_error.as_deref(),
        Some("mailbox full"),
        "the last error stays until the next attempt"
    );
    let trail = db.repo.audit_trail("r1").await.unwrap();
    let last = trail.last().unwrap();
    assert_eq!(
        (
            last.kind.as_str(),
            last.actor.as_deref(),
            &last.detail["rows"]
        ),
        ("admin_retry", Some("admin:abcd1234"), &json!(1))
    );
    assert_eq!(
        db.repo
            .claim_outbox(OutboxKind::Email, "w", 3_000, 60_000, 1)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn sessions_end_when_they_expire_or_are_deleted() {
    let db = test_db().await;
    let session = AdminSession {
        id_hash: vec![1; 32],
        token_id: "abcd1234".to_owned(),
        created_at: 1_000,
        expires_at: 5_000,
    };
    db.repo.create_session(&session).await.unwrap();
    assert_eq!(
        db.repo.session(&[1; 32], 4_999).await.unwrap(),
        Some(session.clone())
    );
    assert_eq!(
        db.repo.session(&[1; 32], 5_000).await.unwrap(),
        None,
        "expired"
    );
    assert_eq!(
        db.repo.session(&[2; 32], 2_000).await.unwrap(),
        None,
        "unknown"
    );
    // A later sign-in forgets sessions that ended.
    let later = AdminSession {
        id_hash: vec![2; 32],
        created_at: 6_000,
        expires_at: 9_000,
        ..session.clone()
    };
    db.repo.create_session(&later).await.unwrap();
    assert_eq!(
        db.repo.session(&[1; 32], 0).await.unwrap(),
        None,
        "removed, not just expired"
    );
    assert!(db.repo.delete_session(&[2; 32]).await.unwrap());
    assert!(!db.repo.delete_session(&[2; 32]).await.unwrap());
    assert_eq!(db.repo.session(&[2; 32], 7_000).await.unwrap(), None);
}

#[tokio::test]
async fn a_search_matching_many_requests_pages_through_them_newest_first() {
    let db = test_db().await;
    // More matches than WALK_AFTER: listed by walking the newest-first index.
    let total = sql::WALK_AFTER as usize + 150;
    let holds: Vec<NewHold> = (0..total)
        .map(|i| {
            let mut request = new_request(&format!("r{i:05}"), &format!("user{i}@example.org"));
            request.created_at = 10_000 + i as i64 / 2; // pairs share a millisecond
            request.token_hash = format!("hash-{i}").into_bytes();
            NewHold {
                request,
                audit: received(),
                outbox: Vec::new(),
            }
        })
        .collect();
    for chunk in holds.chunks(500) {
        db.repo.insert_requests(chunk).await.unwrap();
    }
    let search = ListFilter {
        prefixes: vec!["user".to_owned()],
        ..ListFilter::default()
    };
    let mut seen = Vec::new();
    let mut after: Option<ListCursor> = None;
    loop {
        let page = db
            .repo
            .list_requests(&search, after.as_ref(), 500)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(ListCursor {
            created_at: last.created_at,
            id: last.id.clone(),
        });
        seen.extend(page.iter().map(|r| r.id.clone()));
    }
    let mut expected: Vec<String> = (0..total).map(|i| format!("r{i:05}")).collect();
    expected.reverse();
    assert_eq!(seen, expected, "every match once, newest first, ties by id");
    // A few matches: through the prefixes' indexes.
    let few = ListFilter {
        prefixes: vec!["user214".to_owned()],
        ..ListFilter::default()
    };
    let ids: Vec<String> = db
        .repo
        .list_requests(&few, None, 50)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        ids,
        [
            "r02149", "r02148", "r02147", "r02146", "r02145", "r02144", "r02143", "r02142",
            "r02141", "r02140", "r00214"
        ]
    );
}

#[tokio::test]
async fn repeats_are_counted_on_the_pending_request_only() {
    let db = test_db().await;
    let mut request = new_request("rep", "rita@example.org");
    request.address_as_sent = Some("RI\u{17F}\u{17F}A@example.org".to_owned());
    db.repo
        .insert_request(&request, &received(), &[])
        .await
        .unwrap();
    for _ in 0..3 {
        db.repo.count_repeat("rep").await.unwrap();
    }
    let stored = db.repo.request("rep").await.unwrap().unwrap();
    assert_eq!(stored.repeats, 3);
    assert_eq!(
        stored.address_as_sent.as_deref(),
        Some("RI\u{17F}\u{17F}A@example.org")
    );
    assert_eq!(db.repo.audit_trail("rep").await.unwrap().len(), 1);
    db.repo
        .decide(
            "rep",
            &decision("rep", RequestStatus::Denied, 2_000),
            &attempt_audit(),
            &[],
        )
        .await
        .unwrap();
    db.repo.count_repeat("rep").await.unwrap();
    assert_eq!(db.repo.request("rep").await.unwrap().unwrap().repeats, 3);
}

#[tokio::test]
async fn an_owner_proven_unbind_is_stored_approved_without_a_decision_document() {
    let db = test_db().await;
    let mut request = new_request("prv", "pete@example.org");
    request.source = Source::OwnerProven;
    request.raw = None;
    // A pending request for the same key does not stop it, nor is touched.
    db.repo
        .insert_request(&new_request("pen", "pete@example.org"), &received(), &[])
        .await
        .unwrap();
    db.repo
        .record_proven(
            &request,
            &NewAudit::new(
                AuditKind::OwnerProven,
                None,
                json!({"upstream_status": 200}),
            ),
        )
        .await
        .unwrap();
    let stored = db.repo.request("prv").await.unwrap().unwrap();
    assert_eq!(stored.status, RequestStatus::Approved);
    assert_eq!(stored.source, Source::OwnerProven);
    assert_eq!(stored.decided_at, Some(request.created_at));
    assert_eq!((stored.decision_id, stored.decision_doc), (None, None));
    assert_eq!(
        db.repo.audit_trail("prv").await.unwrap()[0].kind,
        "owner_proven"
    );
    let pending = db.repo.request("pen").await.unwrap().unwrap();
    assert_eq!(pending.status, RequestStatus::Pending);
}

#[tokio::test]
async fn the_raw_intake_is_deleted_once_the_request_ended_and_its_relay_is_done() {
    let db = test_db().await;
    for id in ["den", "app"] {
        db.repo
            .insert_request(
                &new_request(id, &format!("{id}@example.org")),
                &received(),
                &[],
            )
            .await
            .unwrap();
        // Pending: kept, it may yet be replayed.
        assert!(!db.repo.release_raw(id).await.unwrap());
        assert!(db.repo.request(id).await.unwrap().unwrap().raw.is_some());
    }
    // Denied with nothing to relay: gone with the decision.
    db.repo
        .decide(
            "den",
            &decision("den", RequestStatus::Denied, 2_000),
            &attempt_audit(),
            &[],
        )
        .await
        .unwrap();
    let denied = db.repo.request("den").await.unwrap().unwrap();
    assert_eq!(denied.raw, None);
    assert!(denied.decision_doc.is_some(), "the decision document stays");
    // Approved with a replay to send: kept until that relay is over.
    let relay = NewOutbox {
        kind: OutboxKind::Relay,
        sink: Some("replay".to_owned()),
        idempotency_key: "relay:app".to_owned(),
        payload: json!({}),
    };
    db.repo
        .decide(
            "app",
            &decision("app", RequestStatus::Approved, 2_000),
            &attempt_audit(),
            &[relay],
        )
        .await
        .unwrap();
    assert!(db.repo.request("app").await.unwrap().unwrap().raw.is_some());
    assert!(!db.repo.release_raw("app").await.unwrap());
    let rows = db
        .repo
        .claim_outbox(OutboxKind::Relay, "relay-a", 3_000, 60_000, 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    db.repo
        .finish_outbox(
            rows[0].id,
            "relay-a",
            &AttemptResult::Done,
            3_100,
            &attempt_audit(),
        )
        .await
        .unwrap();
    assert!(db.repo.release_raw("app").await.unwrap());
    assert_eq!(db.repo.request("app").await.unwrap().unwrap().raw, None);
    assert!(!db.repo.release_raw("app").await.unwrap(), "once");
}
