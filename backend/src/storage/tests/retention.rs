//! Retention in storage: which ended requests are due, what a purge leaves,
//! and that nothing of the personal data is left, in the tables and (on
//! SQLite) in the file's bytes.

use super::*;

const ADDRESS: &str = "retained.owner@example.org";

fn tombstone(at: i64, by: &str) -> Tombstone {
    Tombstone {
        purged_at: at,
        purged_by: by.to_owned(),
        address_hmac: b"address-hash".to_vec(),
        mxid_hmac: b"mxid-hash".to_vec(),
        decision_sha256: Some(vec![7; 32]),
    }
}

fn due(before: i64) -> PurgeDue {
    PurgeDue {
        ended_before: before,
        denied_before: before,
        answered_before: before,
        created_before: before,
    }
}

/// Every row of the three tables a request lives in, as text: where its
/// personal data could still be.
pub(crate) async fn everything_stored(db: &TestDb) -> String {
    let mut all = String::new();
    for table in ["requests", "audit_events", "outbox"] {
        if db.url.starts_with("postgres") {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            let rows: Vec<Option<String>> =
                sqlx::query_scalar(&format!("SELECT t::text FROM {table} AS t"))
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            all.extend(rows.into_iter().flatten());
            pool.close().await;
        } else {
            let path = db.url.trim_start_matches("sqlite://").to_owned();
            let table = table.to_owned();
            let text = tokio::task::spawn_blocking(move || {
                let conn = rusqlite::Connection::open(path).unwrap();
                let mut statement = conn.prepare(&format!("SELECT * FROM {table}")).unwrap();
                let columns = statement.column_count();
                let mut rows = statement.query([]).unwrap();
                let mut text = String::new();
                while let Some(row) = rows.next().unwrap() {
                    for i in 0..columns {
                        match row.get_ref(i).unwrap() {
                            rusqlite::types::ValueRef::Text(t)
                            | rusqlite::types::ValueRef::Blob(t) => {
                                text.push_str(&String::from_utf8_lossy(t));
                            }
                            _ => {}
                        }
                        text.push(' ');
                    }
                }
                text
            })
            .await
            .unwrap();
            all.push_str(&text);
        }
    }
    all
}

#[tokio::test]
async fn only_ended_requests_with_nothing_to_send_are_purged_down_to_a_tombstone() {
    let db = test_db().await;
    for (id, address) in [
        ("den", ADDRESS),
        ("app", "approved.owner@example.org"),
        ("pen", "pending.owner@example.org"),
    ] {
        db.repo
            .insert_request(&new_request(id, address), &received(), &[email_outbox(id)])
            .await
            .unwrap();
    }
    // The emails went out.
    for row in db
        .repo
        .claim_outbox(OutboxKind::Email, "w", 2_000, 60_000, 10)
        .await
        .unwrap()
    {
        assert!(db
            .repo
            .finish_outbox(row.id, "w", &AttemptResult::Done, 2_500, &attempt_audit())
            .await
            .unwrap());
    }
    db.repo
        .decide(
            "den",
            &decision("den", RequestStatus::Denied, 3_000),
            &attempt_audit(),
            &[],
        )
        .await
        .unwrap();
    let relay = NewOutbox {
        kind: OutboxKind::Relay,
        sink: Some("replay".to_owned()),
        idempotency_key: "relay:app".to_owned(),
        payload: json!({}),
    };
    db.repo
        .decide(
            "app",
            &decision("app", RequestStatus::Approved, 3_000),
            &attempt_audit(),
            &[relay],
        )
        .await
        .unwrap();

    // Not yet: ended too recently (the email finished at 2,500, the denial at 3,000).
    assert!(db.repo.purge_due(&due(2_999), 10).await.unwrap().is_empty());
    // A denial still answering repeats waits for its cooldown.
    let mut cooling = due(10_000);
    cooling.denied_before = 2_000;
    assert!(db.repo.purge_due(&cooling, 10).await.unwrap().is_empty());
    // Nor one that still counts against its address's hourly allowance.
    let mut counted = due(10_000);
    counted.created_before = 0;
    assert!(db.repo.purge_due(&counted, 10).await.unwrap().is_empty());
    // Due: the denial. Not the pending one, nor the approval still relaying.
    let candidates = db.repo.purge_due(&due(10_000), 10).await.unwrap();
    let ids: Vec<&str> = candidates.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["den"]);
    assert_eq!(candidates[0].address, ADDRESS, "read whole, for the hashes");

    assert_eq!(
        db.repo
            .purge("pen", &tombstone(11_000, "retention"))
            .await
            .unwrap(),
        Purged::NotEnded
    );
    assert_eq!(
        db.repo
            .purge("app", &tombstone(11_000, "retention"))
            .await
            .unwrap(),
        Purged::NotEnded,
        "a request still relaying waits"
    );
    assert_eq!(
        db.repo
            .purge("nope", &tombstone(11_000, "retention"))
            .await
            .unwrap(),
        Purged::Unknown
    );
    assert_eq!(
        db.repo
            .purge("den", &tombstone(11_000, "admin:ops"))
            .await
            .unwrap(),
        Purged::Now
    );
    assert_eq!(
        db.repo
            .purge("den", &tombstone(12_000, "retention"))
            .await
            .unwrap(),
        Purged::Already,
        "a second purge (another replica) changes nothing"
    );

    let left = db.repo.request("den").await.unwrap().unwrap();
    assert_eq!(
        (left.mxid.as_str(), left.address.as_str()),
        ("", ""),
        "no Matrix ID or address"
    );
    assert_eq!(left.decision_doc, None);
    assert_eq!(left.raw, None);
    assert_eq!(left.reason, None);
    assert_eq!(left.status, RequestStatus::Denied, "the outcome stays");
    assert_eq!(left.decided_at, Some(3_000), "the times stay");
    assert_eq!(
        (left.purged_at, left.purged_by.as_deref()),
        (Some(11_000), Some("admin:ops"))
    );
    assert_eq!(left.decision_sha256, Some(vec![7; 32]));
    assert!(db.repo.audit_trail("den").await.unwrap().is_empty());
    assert!(db.repo.outbox_for("den").await.unwrap().is_empty());
    // The consent link still finds the tombstone, to say what happened.
    assert_eq!(
        db.repo
            .request_by_token_hash(&left.token_hash)
            .await
            .unwrap()
            .map(|r| r.id),
        Some("den".to_owned())
    );
    // Found by its keyed hashes, and only by them.
    let by_address = db
        .repo
        .tombstones(Some(b"address-hash"), None, 10)
        .await
        .unwrap();
    assert_eq!(by_address.len(), 1);
    assert_eq!(by_address[0].id, "den");
    assert_eq!(
        db.repo
            .tombstones(None, Some(b"mxid-hash"), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(db
        .repo
        .tombstones(Some(b"other"), Some(b"other"), 10)
        .await
        .unwrap()
        .is_empty());
    // The admin list shows it as a tombstone.
    let listed = db
        .repo
        .list_requests(&ListFilter::default(), None, 10)
        .await
        .unwrap();
    let shown = listed.iter().find(|r| r.id == "den").unwrap();
    assert_eq!(shown.purged_at, Some(11_000));

    db.repo.release_space().await.unwrap();
    let stored = everything_stored(&db).await;
    assert!(
        !stored.contains(ADDRESS),
        "the address is gone from every table"
    );
    assert!(
        stored.contains("pending.owner@example.org"),
        "the pending request is untouched"
    );
    assert!(
        stored.contains("approved.owner@example.org"),
        "the relaying request is untouched"
    );

    // Once its relay is done, the approval's turn comes after the retention.
    let rows = db
        .repo
        .claim_outbox(OutboxKind::Relay, "r", 20_000, 60_000, 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert!(db
        .repo
        .finish_outbox(
            rows[0].id,
            "r",
            &AttemptResult::Done,
            20_000,
            &attempt_audit()
        )
        .await
        .unwrap());
    assert!(db
        .repo
        .purge_due(&due(19_999), 10)
        .await
        .unwrap()
        .is_empty());
    let ids: Vec<String> = db
        .repo
        .purge_due(&due(20_001), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["app"]);
}

/// SQLite: after a purge, the address and the Matrix ID are not in the
/// database file's bytes, nor in its log.
#[tokio::test]
async fn a_purged_address_is_not_left_in_the_sqlite_file() {
    let db = test_db().await;
    if !db.url.starts_with("sqlite") {
        return;
    }
    let mxid = "@zebediah.unique:hs.test";
    let mut request = new_request("gone", ADDRESS);
    request.mxid = mxid.to_owned();
    request.raw = Some(RawIntake {
        method: "POST".to_owned(),
        path: "/_matrix/identity/v2/3pid/unbind".to_owned(),
        headers: vec![],
        body: format!("{{\"mxid\":\"{mxid}\",\"threepid\":{{\"address\":\"{ADDRESS}\"}}}}")
            .into_bytes(),
    });
    // Others around it, so that its pages are shared and stay.
    for i in 0..50 {
        db.repo
            .insert_request(
                &new_request(&format!("other{i}"), &format!("other{i}@example.org")),
                &received(),
                &[],
            )
            .await
            .unwrap();
    }
    db.repo
        .insert_request(&request, &received(), &[email_outbox("gone")])
        .await
        .unwrap();
    for row in db
        .repo
        .claim_outbox(OutboxKind::Email, "w", 2_000, 60_000, 10)
        .await
        .unwrap()
    {
        db.repo
            .finish_outbox(row.id, "w", &AttemptResult::Done, 2_500, &attempt_audit())
            .await
            .unwrap();
    }
    let mut doc = decision("gone", RequestStatus::Denied, 3_000);
    doc.document = format!("{{\"mxid\":\"{mxid}\",\"address\":\"{ADDRESS}\"}}");
    db.repo
        .decide("gone", &doc, &attempt_audit(), &[])
        .await
        .unwrap();
    // Everything written out to the file, as a long-running server's would be.
    db.repo.release_space().await.unwrap();
    let path = std::path::PathBuf::from(db.url.trim_start_matches("sqlite://"));
    let bytes_of = |path: &std::path::Path| {
        let mut all = std::fs::read(path).unwrap_or_default();
        all.extend(std::fs::read(path.with_extension("db-wal")).unwrap_or_default());
        all
    };
    let contains = |haystack: &[u8], needle: &str| {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    };
    let before = bytes_of(&path);
    assert!(
        contains(&before, ADDRESS),
        "the test looks in the right file"
    );
    assert!(contains(&before, mxid));

    assert_eq!(
        db.repo
            .purge("gone", &tombstone(4_000, "retention"))
            .await
            .unwrap(),
        Purged::Now
    );
    db.repo.release_space().await.unwrap();
    let after = bytes_of(&path);
    assert!(
        !contains(&after, ADDRESS),
        "the address is left in the file"
    );
    assert!(!contains(&after, mxid), "the Matrix ID is left in the file");
    assert!(contains(&after, "other49@example.org"), "the others stay");
}
