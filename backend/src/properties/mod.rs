//! Property tests: what must hold for any input that a homeserver, an
//! owner's browser, an admin, a homeserver's key server or an operator can
//! give Assent. Each property says what it checks; the inputs are drawn by
//! proptest, and a failure prints the smallest input that still fails.
//!
//! In the suite each runs proptest's default 256 cases, a few seconds. A
//! long run sets the case count (and, to replay one, the seed):
//!
//! ```text
//! PROPTEST_CASES=20000 cargo test -p assent-backend properties::
//! PROPTEST_RNG_SEED=1234 cargo test -p assent-backend properties::
//! ```

mod admin_query;
mod config_file;
mod consent_form;
mod key_documents;
mod unbind;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::fmt::Debug;

/// Runs `property` on values drawn from `strategy`, and fails the test with
/// the smallest failing input proptest finds.
pub(crate) fn check<S>(strategy: S, property: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: Debug,
{
    // No regression files: a failure prints its input, which belongs in a
    // named test beside the code it broke.
    let config = Config {
        failure_persistence: None,
        ..Config::default()
    };
    if let Err(failure) = TestRunner::new(config).run(&strategy, property) {
        panic!("{failure}");
    }
}

/// A runtime for properties that drive the async router. One thread: the
/// harness's homeserver and the router take turns within `block_on`.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Text a client may send where a word is expected: the word itself, case
/// and space variants of it, Unicode look-alikes, control characters, or
/// anything at all.
pub(crate) fn near(words: &'static [&'static str]) -> impl Strategy<Value = String> {
    let exact = proptest::sample::select(words).prop_map(str::to_owned);
    let varied = (proptest::sample::select(words), 0..5u8).prop_map(|(word, how)| match how {
        0 => word.to_uppercase(),
        1 => format!(" {word}"),
        2 => format!("{word}\u{0}"),
        3 => word.replace('a', "\u{430}").replace('e', "\u{435}"),
        _ => format!("{word}{word}"),
    });
    prop_oneof![4 => exact, 2 => varied, 1 => any::<String>()]
}

/// A client address for each case, so per-client rate limits never decide
/// a property.
pub(crate) fn client(n: u32) -> std::net::SocketAddr {
    let [_, b, c, d] = n.to_be_bytes();
    std::net::SocketAddr::from(([10, b, c, d], 40000))
}

/// `text` as an HTTP header can carry it: without control characters
/// (other bytes, UTF-8 included, go through as they are).
pub(crate) fn header_text(text: &str) -> String {
    text.chars()
        .filter(|c| *c == '\t' || !c.is_control())
        .collect()
}
