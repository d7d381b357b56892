//! Retention: once an ended request has been kept for `retention`, its
//! personal data is deleted everywhere it is stored (the request row's
//! Matrix ID, address, reason, decision document and raw intake; its audit
//! trail; its outbox rows; the mail files of the `file` transport) and a
//! tombstone is left: the ids, servers, outcome and times, the decision
//! document's SHA-256, and keyed hashes of the address and of the Matrix
//! ID. Given an address, an operator can find whether Assent ever acted on
//! it ([`address_hmac`]); nobody can read it back.
//!
//! Safe with several replicas: a purge is one guarded transaction, and a
//! second replica purging the same request changes nothing.

use crate::state::AppState;
use crate::storage::{PurgeDue, Purged, StorageError, StoredRequest, Tombstone};
use assent_shared::Medium;
use sha2::Digest;
use std::time::Duration;

/// What the keyed hashes' secret is derived for (from the signing key).
const KEYED_HASH_PURPOSE: &str = "tombstone keyed hashes v1";

fn keyed_hash(state: &AppState, kind: &str, value: &str) -> Vec<u8> {
    use hmac::Mac;
    let secret = state.key.derive_secret(KEYED_HASH_PURPOSE);
    let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(&secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts a 32-byte key"),
    };
    mac.update(kind.as_bytes());
    mac.update(&[0]);
    mac.update(value.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The keyed hash of an address (folded as intake folds it) and its medium.
pub fn address_hmac(state: &AppState, medium: Medium, folded_address: &str) -> Vec<u8> {
    keyed_hash(state, medium.as_str(), folded_address)
}

/// The keyed hash of a Matrix ID.
pub fn mxid_hmac(state: &AppState, mxid: &str) -> Vec<u8> {
    keyed_hash(state, "mxid", mxid)
}

fn tombstone_of(state: &AppState, request: &StoredRequest, by: &str) -> Tombstone {
    Tombstone {
        purged_at: state.now_ms(),
        purged_by: by.to_owned(),
        address_hmac: address_hmac(state, request.medium, &request.address),
        mxid_hmac: mxid_hmac(state, &request.mxid),
        decision_sha256: request
            .decision_doc
            .as_ref()
            .map(|doc| sha2::Sha256::digest(doc.as_bytes()).to_vec()),
    }
}

fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Set when purged data may still be in the database's files (a release was
/// kept from finishing): the next pass releases again.
static RELEASE_OWED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The window of `limits.holds_per_address_per_hour`: a request counts
/// against its address's allowance for this long after it was made, so it
/// is not purged before (its address would drop out of the count).
const ADDRESS_WINDOW_MS: i64 = 3_600_000;

/// Gives the space of purged rows back, now or on the next pass when
/// something was in the way; a failure is logged, not returned (what was
/// purged stays purged).
pub async fn release(state: &AppState) {
    match state.repo.release_space().await {
        Ok(done) => RELEASE_OWED.store(!done, std::sync::atomic::Ordering::Relaxed),
        Err(e) => {
            RELEASE_OWED.store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(error = %e, "cannot give back the space of purged rows; trying again on the next pass");
        }
    }
}

/// Whether a pass must release space although it purged nothing.
pub fn release_owed() -> bool {
    RELEASE_OWED.load(std::sync::atomic::Ordering::Relaxed)
}

/// The longest an ended request's personal data is kept: `retention`, or
/// the time a decision answers repeats (`deny_cooldown`, `request_ttl`), or
/// the hour it counts against its address's allowance, whichever is longest.
/// What the owner is told.
pub fn kept_at_most(config: &crate::config::Config) -> Duration {
    config
        .retention
        .max(config.deny_cooldown)
        .max(config.request_ttl)
        .max(Duration::from_millis(ADDRESS_WINDOW_MS as u64))
}

/// Purges up to `limit` requests whose time has come; returns how many.
/// A request is due once it ended `retention` ago (its last relay or email
/// done or given up) and its decision no longer answers repeats of its
/// unbind (`deny_cooldown` after a denial, `request_ttl` after an approval
/// or a cancellation), so that purging it never lets a homeserver ask the
/// owner again before the operator said it could; nor while it still counts
/// against its address's hourly allowance of new holds. Pending requests
/// and requests with something still to send are never purged. The caller
/// gives the space back ([`release`]) once its pass is over.
pub async fn purge_due(state: &AppState, limit: i64) -> Result<usize, StorageError> {
    let config = &state.config;
    let now = state.now_ms();
    let due = PurgeDue {
        ended_before: now.saturating_sub(ms(config.retention)),
        denied_before: now.saturating_sub(ms(config.retention.max(config.deny_cooldown))),
        answered_before: now.saturating_sub(ms(config.retention.max(config.request_ttl))),
        created_before: now.saturating_sub(ADDRESS_WINDOW_MS),
    };
    let mut purged = 0;
    for request in state.repo.purge_due(&due, limit).await? {
        let tombstone = tombstone_of(state, &request, "retention");
        if state.repo.purge(&request.id, &tombstone).await? == Purged::Now {
            purged += 1;
            tracing::info!(request_id = %request.id, "personal data deleted after the retention period");
        }
    }
    Ok(purged)
}

/// One pass of the retention job: purges in batches of `batch` until none
/// is left, then gives the space back and deletes the purged requests'
/// mail files. Returns how many were purged.
pub async fn pass(state: &AppState, batch: i64) -> Result<usize, StorageError> {
    let mut total = 0;
    loop {
        let purged = purge_due(state, batch).await?;
        total += purged;
        if i64::try_from(purged).map_or(true, |n| n < batch) {
            break;
        }
    }
    if total > 0 || release_owed() {
        release(state).await;
    }
    sweep_mail_files(state).await;
    Ok(total)
}

/// Why an administrator may not purge a request yet.
#[derive(Debug, PartialEq, Eq)]
pub enum TooSoon {
    /// Its decision still answers repeats of its unbind until this time
    /// (ms): purging it would let the homeserver ask the owner again.
    StillAnswering(i64),
}

/// The end of the time in which `request`'s decision answers repeats of
/// its unbind, if that is still to come at `now`.
pub fn answering_until(state: &AppState, request: &StoredRequest, now: i64) -> Option<i64> {
    let config = &state.config;
    let decided = request.decided_at?;
    let window = match request.status {
        assent_shared::RequestStatus::Denied => ms(config.deny_cooldown),
        assent_shared::RequestStatus::Approved | assent_shared::RequestStatus::Cancelled => {
            ms(config.request_ttl)
        }
        _ => 0,
    };
    let until = decided.saturating_add(window);
    (until > now).then_some(until)
}

/// Purges one ended request now, whatever the retention period (the admin
/// API), as `by` (`admin:<token id>`); while its decision still answers
/// repeats of its unbind only with `force` (the owner asked for erasure,
/// say), since the homeserver may then ask the owner again at once.
pub async fn purge_now(
    state: &AppState,
    id: &str,
    by: &str,
    force: bool,
) -> Result<Result<Purged, TooSoon>, StorageError> {
    let Some(request) = state.repo.request(id).await? else {
        return Ok(Ok(Purged::Unknown));
    };
    if request.purged_at.is_some() {
        return Ok(Ok(Purged::Already));
    }
    if !force && request.status != assent_shared::RequestStatus::Pending {
        if let Some(until) = answering_until(state, &request, state.now_ms()) {
            return Ok(Err(TooSoon::StillAnswering(until)));
        }
    }
    let outcome = state
        .repo
        .purge(id, &tombstone_of(state, &request, by))
        .await?;
    if outcome == Purged::Now {
        release(state).await;
        sweep_mail_files(state).await;
    }
    Ok(Ok(outcome))
}

/// The request id a mail file of the `file` transport was written for:
/// its name is the `Message-ID`'s local part (`email.<request id>.<purpose>`)
/// and the attempt.
fn request_of_mail_file(name: &str) -> Option<&str> {
    // `.email.<…>.eml.tmp`: one a crash left half written.
    let rest = name
        .strip_prefix("email.")
        .or_else(|| name.strip_prefix(".email."))?;
    rest.split('.').next().filter(|id| !id.is_empty())
}

/// Deletes this process's mail files (the `file` transport writes them to
/// `data_dir/mail`) whose request was purged, by this replica or another.
async fn sweep_mail_files(state: &AppState) {
    let dir = state.config.data_dir.join("mail");
    let Ok(mut entries) = tokio::fs::read_dir(&dir).await else {
        return;
    };
    let mut checked: std::collections::HashMap<String, bool> = Default::default();
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = request_of_mail_file(&name) else {
            continue;
        };
        let purged = match checked.get(id) {
            Some(purged) => *purged,
            None => {
                let purged = match state.repo.request(id).await {
                    Ok(Some(request)) => request.purged_at.is_some(),
                    Ok(None) => false,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot check mail files against purged requests");
                        return;
                    }
                };
                checked.insert(id.to_owned(), purged);
                purged
            }
        };
        if purged {
            if let Err(e) = tokio::fs::remove_file(entry.path()).await {
                tracing::warn!(request_id = %id, error = %e, "cannot delete the mail file of a purged request");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_files_name_their_request() {
        assert_eq!(
            request_of_mail_file("email.req_01a2.initial.1.eml"),
            Some("req_01a2")
        );
        assert_eq!(
            request_of_mail_file(".email.req_01a2.initial.1.eml.tmp"),
            Some("req_01a2"),
            "a half-written file names its request too"
        );
        assert_eq!(request_of_mail_file("email..x"), None);
        assert_eq!(request_of_mail_file("notes.txt"), None);
    }
}

/// The job end to end with a mock clock, on the database under test: a
/// retention of one minute; a denied, an approved (relayed), an expired and
/// a pending request.
#[cfg(test)]
mod lifecycle_tests {
    use super::*;
    use crate::test_support::Harness;
    use assent_shared::RequestStatus;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use std::sync::atomic::Ordering;

    const MINUTE: i64 = 60_000;
    const HOUR: i64 = 60 * MINUTE;

    async fn decide(h: &Harness, token: &str, word: &str) -> StatusCode {
        let request = Request::post(format!("/_assent/v1/consent/{token}/decision"))
            .header("content-type", "application/json")
            .extension(axum::extract::ConnectInfo(std::net::SocketAddr::from((
                [127, 0, 0, 1],
                41000,
            ))))
            .body(Body::from(format!("{{\"decision\": \"{word}\"}}")))
            .unwrap();
        h.send(request).await.0
    }

    fn mail_files(h: &Harness) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(h.state.config.data_dir.join("mail"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    #[tokio::test]
    async fn after_a_minute_ended_requests_are_tombstones_and_the_rest_untouched() {
        let h = Harness::on_test_database(|c| {
            c.retention = Duration::from_secs(60);
            c.deny_cooldown = Duration::from_secs(60);
            c.request_ttl = Duration::from_secs(7200);
        })
        .await;
        let (denied, denied_token) = h.hold("dora").await;
        let (pending, _) = h.hold("pete").await;
        crate::workers::email::send_due(&h.state).await;
        assert_eq!(mail_files(&h).len(), 2, "{:?}", mail_files(&h));
        // Decided an hour on: by then the request no longer counts against
        // its address's hourly allowance, so only the minute is left.
        h.clock.0.fetch_add(HOUR, Ordering::SeqCst);
        assert_eq!(decide(&h, &denied_token, "deny").await, StatusCode::OK);
        let purge = || pass(&h.state, 100);

        // Not before the minute is up.
        h.clock.0.fetch_add(MINUTE - 1, Ordering::SeqCst);
        assert_eq!(purge().await.unwrap(), 0);
        h.clock.0.fetch_add(2, Ordering::SeqCst);
        assert_eq!(purge().await.unwrap(), 1);
        assert_eq!(purge().await.unwrap(), 0, "once");

        let tombstone = h.state.repo.request(&denied).await.unwrap().unwrap();
        assert_eq!(
            (tombstone.mxid.as_str(), tombstone.address.as_str()),
            ("", "")
        );
        assert_eq!(tombstone.status, RequestStatus::Denied);
        assert_eq!(tombstone.purged_by.as_deref(), Some("retention"));
        assert!(tombstone.decision_sha256.is_some());
        assert!(h.state.repo.audit_trail(&denied).await.unwrap().is_empty());
        assert!(h.state.repo.outbox_for(&denied).await.unwrap().is_empty());
        // Its mail file is gone; the pending request's stays.
        let files = mail_files(&h);
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(files[0].contains(&pending), "{files:?}");
        // The keyed hashes answer "did we act on this address?"; another
        // address, or the same key for another purpose, finds nothing.
        let hash = address_hmac(&h.state, Medium::Email, "dora@example.org");
        let found = h
            .state
            .repo
            .tombstones(Some(&hash), None, 10)
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id, denied);
        let mxid_hash = mxid_hmac(&h.state, &h.hs_mxid("dora"));
        assert_eq!(
            h.state
                .repo
                .tombstones(None, Some(&mxid_hash), 10)
                .await
                .unwrap()
                .len(),
            1
        );
        let other = address_hmac(&h.state, Medium::Email, "pete@example.org");
        assert!(h
            .state
            .repo
            .tombstones(Some(&other), None, 10)
            .await
            .unwrap()
            .is_empty());
        assert_ne!(hash, mxid_hmac(&h.state, "dora@example.org"));

        // The pending request is untouched, however old.
        h.clock.0.fetch_add(100 * MINUTE, Ordering::SeqCst);
        let kept = h.state.repo.request(&pending).await.unwrap().unwrap();
        assert_eq!(kept.address, "pete@example.org");
        assert_eq!(kept.purged_at, None);

        // The link says what happened, in the app's API and on the page.
        let (status, body) = h
            .send(
                Request::get(format!("/_assent/v1/consent/{denied_token}"))
                    .extension(axum::extract::ConnectInfo(std::net::SocketAddr::from((
                        [127, 0, 0, 2],
                        41000,
                    ))))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(status, StatusCode::GONE, "{body}");
        assert_eq!(body["errcode"], "ASSENT_DATA_DELETED");
        let said = body["error"].as_str().unwrap_or_default().to_owned();
        assert!(
            said.contains("ended") && said.contains("deleted on"),
            "{said}"
        );
        // A decision through it changes nothing.
        assert_eq!(decide(&h, &denied_token, "approve").await, StatusCode::GONE);
        assert_eq!(
            h.state.repo.request(&denied).await.unwrap().unwrap().status,
            RequestStatus::Denied
        );
    }

    #[tokio::test]
    async fn an_approval_waits_for_its_relay_and_for_repeats_to_stop_being_answered() {
        let h = Harness::on_test_database(|c| {
            c.retention = Duration::from_secs(60);
            c.request_ttl = Duration::from_secs(7200);
            c.relay_give_up_after = Duration::from_secs(60);
        })
        .await;
        let (approved, token) = h.hold("abby").await;
        crate::workers::email::send_due(&h.state).await;
        h.clock.0.fetch_add(HOUR + MINUTE, Ordering::SeqCst);
        assert_eq!(decide(&h, &token, "approve").await, StatusCode::OK);
        // Past request_ttl (two hours) and the retention, but the replay
        // (to an upstream that refuses connections) is still to send.
        h.clock.0.fetch_add(2 * HOUR + MINUTE, Ordering::SeqCst);
        assert_eq!(purge_due(&h.state, 100).await.unwrap(), 0);
        // The relay is given up (past relay_give_up_after): the request has
        // ended now, and its minute starts.
        let rows = h
            .state
            .repo
            .claim_outbox(
                crate::storage::OutboxKind::Relay,
                "test",
                h.state.now_ms(),
                60_000,
                10,
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        for row in rows {
            crate::workers::relay::attempt(&h.state, "test", row).await;
        }
        let relay = h.state.repo.outbox_for(&approved).await.unwrap();
        assert!(relay
            .iter()
            .all(|r| r.state != crate::storage::OutboxState::Pending));
        assert_eq!(purge_due(&h.state, 100).await.unwrap(), 0);
        h.clock.0.fetch_add(MINUTE + 1, Ordering::SeqCst);
        assert_eq!(purge_due(&h.state, 100).await.unwrap(), 1);
        let tombstone = h.state.repo.request(&approved).await.unwrap().unwrap();
        assert_eq!(tombstone.status, RequestStatus::Approved);
        assert_eq!(tombstone.raw, None);
    }

    /// The request_ttl bound on its own: an approval whose relay ended at
    /// once still answers repeats until request_ttl has passed.
    #[tokio::test]
    async fn an_approval_is_kept_while_it_answers_repeats() {
        let h = Harness::on_test_database(|c| {
            c.retention = Duration::from_secs(60);
            c.request_ttl = Duration::from_secs(7200);
            c.identity_servers[0].relay = Vec::new();
        })
        .await;
        let (id, token) = h.hold("abel").await;
        crate::workers::email::send_due(&h.state).await;
        assert_eq!(decide(&h, &token, "approve").await, StatusCode::OK);
        // An hour on, the retention and the address's hour are over, but
        // the approval answers repeats for two hours.
        h.clock.0.fetch_add(HOUR + MINUTE, Ordering::SeqCst);
        assert_eq!(purge_due(&h.state, 100).await.unwrap(), 0);
        // An administrator is told so, and may purge only with force.
        assert!(matches!(
            purge_now(&h.state, &id, "admin:ops", false).await.unwrap(),
            Err(TooSoon::StillAnswering(_))
        ));
        h.clock.0.fetch_add(HOUR, Ordering::SeqCst);
        assert_eq!(purge_due(&h.state, 100).await.unwrap(), 1);
    }

    /// Expired and cancelled requests are purged too, and afterwards no
    /// table holds their addresses or Matrix IDs.
    #[tokio::test]
    async fn expired_and_cancelled_requests_leave_nothing_personal_in_any_table() {
        let h = Harness::on_test_database(|c| {
            c.retention = Duration::from_secs(60);
            c.request_ttl = Duration::from_secs(7200);
        })
        .await;
        let (expiring, _) = h.hold("exa").await;
        let (cancelled, _) = h.hold("cana").await;
        crate::workers::email::send_due(&h.state).await;
        let request = h.state.repo.request(&cancelled).await.unwrap().unwrap();
        let outcome = crate::lifecycle::decide(
            &h.state,
            &request,
            RequestStatus::Cancelled,
            crate::lifecycle::By::Admin("admin:ops"),
        )
        .await
        .unwrap();
        assert!(matches!(outcome, crate::lifecycle::Outcome::Now(_)));
        h.clock.0.fetch_add(2 * HOUR + MINUTE, Ordering::SeqCst);
        assert_eq!(crate::lifecycle::expire_due(&h.state, 10).await.unwrap(), 1);
        let stored = crate::storage::everything_stored(h.test_database()).await;
        for kept in [
            "exa@example.org",
            "cana@example.org",
            &h.hs_mxid("exa"),
            &h.hs_mxid("cana"),
        ] {
            assert!(stored.contains(kept), "the test looks where {kept} is");
        }
        // The expiry is a minute old, the cancellation two hours (past its
        // request_ttl of answering repeats): both go.
        h.clock.0.fetch_add(MINUTE + 1, Ordering::SeqCst);
        assert_eq!(pass(&h.state, 100).await.unwrap(), 2);
        for id in [&expiring, &cancelled] {
            let tombstone = h.state.repo.request(id).await.unwrap().unwrap();
            assert!(tombstone.purged_at.is_some(), "{id}");
        }
        let stored = crate::storage::everything_stored(h.test_database()).await;
        for gone in [
            "exa@example.org",
            "cana@example.org",
            &h.hs_mxid("exa"),
            &h.hs_mxid("cana"),
        ] {
            assert!(!stored.contains(gone), "{gone} is still stored");
        }
    }
}
