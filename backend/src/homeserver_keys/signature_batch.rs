//! Homeserver signatures that arrive together are checked together.
//!
//! Checking n ed25519 signatures at once (ed25519-dalek's `verify_batch`, one
//! multiscalar multiplication) costs less than n single checks. Measured on a
//! 2-core Xeon host with the benchmark's messages: 44 µs for a single check
//! as ruma-signatures makes it (the key decompressed each time), 39 µs with
//! the key kept decompressed, and per signature 35 µs in a batch of 2, 27 µs
//! in 4, 22 µs in 8.
//!
//! A check that finds nothing waiting starts a batch: it yields to the
//! runtime (`yield_now`, no timer; it runs again once the tasks queued on its
//! worker have had their turn), and meanwhile other requests add theirs;
//! then it checks everything waiting. A batch that fails is checked again
//! one signature at a time, with the same single check ruma-signatures makes,
//! so a bad signature is refused alone and never lets another one through or
//! keeps a good one out. After such a batch, checks go one at a time until a
//! batch has no bad signature: a sender of bad signatures cannot make every
//! batch cost its full price twice.
//!
//! The two checks can disagree only on signatures built with small-order
//! points or a non-canonical encoding of R, which only the holder of the
//! secret key can make for that key: batches accept nothing the key's holder
//! did not sign. (Keys that are themselves of small order, which anyone can
//! "sign" for, are refused before they get here: see [`usable_key`](crate::keys::usable_key).)

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use tokio::sync::oneshot;

/// Most signatures verified in one multiscalar multiplication; more waiting
/// are checked in several batches, by the same task.
const MAX_BATCH: usize = 64;

struct Check {
    key: VerifyingKey,
    message: Vec<u8>,
    signature: Signature,
    reply: oneshot::Sender<bool>,
}

#[derive(Default)]
pub struct SignatureChecks {
    waiting: Mutex<Vec<Check>>,
    /// The last batch had a bad signature: check one at a time meanwhile.
    one_by_one: AtomicBool,
    /// Batches run and signatures checked so far.
    batches: AtomicU64,
    signatures: AtomicU64,
}

impl SignatureChecks {
    /// Whether `signature` by `key` is over `message`.
    pub async fn check(&self, key: VerifyingKey, message: Vec<u8>, signature: Signature) -> bool {
        let (reply, answer) = oneshot::channel();
        let starts = {
            let mut waiting = self.lock();
            waiting.push(Check {
                key,
                message,
                signature,
                reply,
            });
            waiting.len() == 1
        };
        if starts {
            // Runs the batch when dropped, so that the checks waiting on it
            // are answered even if this request is abandoned meanwhile.
            let batch = Batch(self);
            tokio::task::yield_now().await;
            drop(batch);
        }
        // The sender is dropped unanswered only if checking panicked.
        answer.await.unwrap_or(false)
    }

    /// Batches run and signatures checked so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.batches.load(Ordering::Relaxed),
            self.signatures.load(Ordering::Relaxed),
        )
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Check>> {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn run_waiting(&self) {
        let mut checks = std::mem::take(&mut *self.lock());
        while !checks.is_empty() {
            let rest = checks.split_off(checks.len().min(MAX_BATCH));
            self.batches.fetch_add(1, Ordering::Relaxed);
            self.signatures
                .fetch_add(checks.len() as u64, Ordering::Relaxed);
            let batch = !self.one_by_one.load(Ordering::Relaxed);
            let all_good = verify(checks, batch);
            self.one_by_one.store(!all_good, Ordering::Relaxed);
            checks = rest;
        }
    }
}

struct Batch<'a>(&'a SignatureChecks);

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.0.run_waiting();
    }
}

/// Answers each check: all at once if `batch` and the batch verifies, else
/// one by one. Whether every signature was good.
fn verify(checks: Vec<Check>, batch: bool) -> bool {
    let batch_good = batch && checks.len() > 1 && {
        let messages: Vec<&[u8]> = checks.iter().map(|c| c.message.as_slice()).collect();
        let signatures: Vec<Signature> = checks.iter().map(|c| c.signature).collect();
        let keys: Vec<VerifyingKey> = checks.iter().map(|c| c.key).collect();
        ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
    };
    let mut all_good = true;
    for check in checks {
        let good = batch_good || check.key.verify(&check.message, &check.signature).is_ok();
        all_good &= good;
        // The request may have gone meanwhile: nobody to tell.
        let _ = check.reply.send(good);
    }
    all_good
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::usable_key;
    use ed25519_dalek::{Signer, SigningKey};
    use std::sync::Arc;

    fn signed(key: &SigningKey, i: usize) -> (Vec<u8>, Signature) {
        let message = format!("{{\"n\":{i}}}").into_bytes();
        let signature = key.sign(&message);
        (message, signature)
    }

    /// Queues a check by `key` as a request that joins a batch would: its answer.
    fn queue(
        shared: &SignatureChecks,
        key: &SigningKey,
        (message, signature): (Vec<u8>, Signature),
    ) -> oneshot::Receiver<bool> {
        let (reply, answer) = oneshot::channel();
        shared.lock().push(Check {
            key: key.verifying_key(),
            message,
            signature,
            reply,
        });
        answer
    }

    /// The answers of checks that have run.
    fn answered(answers: Vec<oneshot::Receiver<bool>>) -> Vec<bool> {
        answers
            .into_iter()
            .map(|mut answer| answer.try_recv().expect("the check was answered"))
            .collect()
    }

    /// Checks started together, some of them forged: each gets its own answer.
    async fn together(checks: Vec<(VerifyingKey, Vec<u8>, Signature)>) -> Vec<bool> {
        let shared = Arc::new(SignatureChecks::default());
        let tasks: Vec<_> = checks
            .into_iter()
            .map(|(key, message, signature)| {
                let shared = shared.clone();
                tokio::spawn(async move { shared.check(key, message, signature).await })
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap());
        }
        assert!(shared.lock().is_empty(), "a check was left waiting");
        let (batches, signatures) = shared.counts();
        assert_eq!(signatures, answers.len() as u64);
        assert!(batches < signatures, "no two checks were batched");
        answers
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn good_signatures_pass_and_each_bad_one_fails_alone() {
        let hs = SigningKey::from_bytes(&[1u8; 32]);
        let other = SigningKey::from_bytes(&[2u8; 32]);
        let mut checks = Vec::new();
        let mut expected = Vec::new();
        for i in 0..150 {
            let (mut message, signature) = signed(&hs, i);
            let good = match i % 10 {
                // Another key's signature, under this key.
                3 => {
                    let (_, forged) = signed(&other, i);
                    checks.push((hs.verifying_key(), message, forged));
                    false
                }
                // A changed byte of the message.
                7 => {
                    message[1] = b'x';
                    checks.push((hs.verifying_key(), message, signature));
                    false
                }
                // Another homeserver's key in the same batch.
                5 => {
                    let (message, signature) = signed(&other, i);
                    checks.push((other.verifying_key(), message, signature));
                    true
                }
                _ => {
                    checks.push((hs.verifying_key(), message, signature));
                    true
                }
            };
            expected.push(good);
        }
        assert_eq!(together(checks).await, expected);
    }

    #[test]
    fn a_batch_answers_like_single_checks() {
        let hs = SigningKey::from_bytes(&[1u8; 32]);
        // Each set of checks in one batch, on a fresh state (no bad batch before).
        let answers = |checks: Vec<(Vec<u8>, Signature)>| {
            let shared = SignatureChecks::default();
            let count = checks.len() as u64;
            let answers = checks
                .into_iter()
                .map(|check| queue(&shared, &hs, check))
                .collect();
            shared.run_waiting();
            assert_eq!(shared.counts(), (1, count));
            answered(answers)
        };
        let good: Vec<_> = (0..8).map(|i| signed(&hs, i)).collect();
        assert_eq!(answers(good.clone()), vec![true; 8]);
        let mut one_bad = good;
        one_bad[5].1 = one_bad[4].1;
        assert_eq!(
            answers(one_bad),
            vec![true, true, true, true, true, false, true, true]
        );
        let (message, _) = signed(&hs, 9);
        assert_eq!(
            answers(vec![(message, Signature::from_bytes(&[0u8; 64]))]),
            vec![false]
        );
    }

    #[test]
    fn after_a_bad_batch_checks_go_one_by_one_until_a_clean_one() {
        let hs = SigningKey::from_bytes(&[1u8; 32]);
        let shared = SignatureChecks::default();
        let round = |bad: bool| {
            let answers = (0..4)
                .map(|i| {
                    let (message, mut signature) = signed(&hs, i);
                    if bad && i == 2 {
                        signature = signed(&hs, 99).1;
                    }
                    queue(&shared, &hs, (message, signature))
                })
                .collect();
            shared.run_waiting();
            (answered(answers), shared.one_by_one.load(Ordering::Relaxed))
        };
        assert_eq!(round(false), (vec![true; 4], false));
        assert_eq!(round(true), (vec![true, true, false, true], true));
        // Checked one by one, still answered alike, until one has no bad one.
        assert_eq!(round(true), (vec![true, true, false, true], true));
        assert_eq!(round(false), (vec![true; 4], false));
        assert_eq!(shared.counts(), (4, 16));
    }

    #[test]
    fn keys_of_small_order_are_not_used() {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(VerifyingKey::try_from(identity.as_slice()).is_ok());
        assert!(usable_key(&identity).is_none());
        assert!(usable_key(&[0u8; 31]).is_none());
        let hs = SigningKey::from_bytes(&[1u8; 32]);
        assert_eq!(
            usable_key(hs.verifying_key().as_bytes()),
            Some(hs.verifying_key())
        );
    }

    #[tokio::test]
    async fn an_abandoned_first_check_still_answers_the_others() {
        let hs = SigningKey::from_bytes(&[1u8; 32]);
        let shared = Arc::new(SignatureChecks::default());
        let (message, signature) = signed(&hs, 1);
        // The first check is dropped while it waits for company.
        let first = shared.check(hs.verifying_key(), message, signature);
        let mut first = Box::pin(first);
        assert!(futures_poll_once(&mut first).await.is_none());
        let answer = queue(&shared, &hs, signed(&hs, 2));
        drop(first);
        let answered = tokio::time::timeout(std::time::Duration::from_secs(5), answer).await;
        assert_eq!(
            answered.ok(),
            Some(Ok(true)),
            "the waiting check was answered"
        );
        assert!(shared.lock().is_empty());
    }

    /// Polls `future` once: `Some` if it finished.
    async fn futures_poll_once<F: std::future::Future + Unpin>(
        future: &mut F,
    ) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut *future).poll(cx) {
                std::task::Poll::Ready(out) => Some(out),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
