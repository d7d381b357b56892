//! What handlers and workers share: the configuration, the repository,
//! the clock, randomness, keys and the wake-ups of the workers. It sits low:
//! it knows no handler, and the router (`app`) is built above it.

use crate::assets::WebAssets;
use crate::config::Config;
use crate::homeserver_keys::key_fetch::{KeyFetcher, SetupError};
use crate::homeserver_keys::signature_batch::SignatureChecks;
use crate::keys::SigningKey;
use crate::metrics::Metrics;
use crate::ratelimit::Limits;
use crate::storage::Repo;
use crate::tokens::TokenMinter;
use rand::RngCore;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// The time, injected so that tests can move it.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// Randomness, injected so that tests can predict tokens and ids.
pub type SharedRng = Arc<Mutex<dyn RngCore + Send>>;

pub fn os_rng() -> SharedRng {
    Arc::new(Mutex::new(rand::rngs::OsRng))
}

/// What handlers and workers share, as [`AppState`]: behind one `Arc`, so
/// that the clones every request makes (each extractor and middleware takes
/// one) cost one reference count, not one per field; a dozen counters
/// bounced between the cores on every request.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl From<Shared> for AppState {
    fn from(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

#[derive(Clone)]
pub struct Shared {
    pub config: Arc<Config>,
    pub repo: Repo,
    pub clock: Arc<dyn Clock>,
    pub rng: SharedRng,
    pub key: Arc<SigningKey>,
    pub web: Arc<WebAssets>,
    pub limits: Arc<Limits>,
    /// Fetches and caches homeservers' signing keys.
    pub server_keys: Arc<KeyFetcher>,
    /// Checks the signatures of concurrent unbinds together.
    pub signature_checks: Arc<SignatureChecks>,
    /// Talks to the configured upstream identity servers (trusted addresses).
    pub upstream: reqwest::Client,
    pub tokens: Arc<TokenMinter>,
    /// Wakes the email worker when a new message is queued.
    pub outbox_wake: Arc<tokio::sync::Notify>,
    /// Wakes the relay worker when a decision is recorded.
    pub relay_wake: Arc<tokio::sync::Notify>,
    pub metrics: Arc<Metrics>,
}

/// Longest wait for an upstream identity server's answer.
pub const UPSTREAM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl AppState {
    pub fn new(
        config: Config,
        repo: Repo,
        clock: Arc<dyn Clock>,
        rng: SharedRng,
        key: SigningKey,
        web: WebAssets,
    ) -> Result<Self, SetupError> {
        let server_keys = KeyFetcher::new(&config.keys)?;
        Self::with_key_fetcher(config, repo, clock, rng, key, web, server_keys)
    }

    pub fn with_key_fetcher(
        config: Config,
        repo: Repo,
        clock: Arc<dyn Clock>,
        rng: SharedRng,
        key: SigningKey,
        web: WebAssets,
        server_keys: KeyFetcher,
    ) -> Result<Self, SetupError> {
        let upstream = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .read_timeout(UPSTREAM_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()?;
        let tokens = TokenMinter::new(key.derive_secret("consent tokens"));
        Ok(AppState::from(Shared {
            limits: Arc::new(Limits::new(&config.limits)),
            config: Arc::new(config),
            repo,
            clock,
            rng,
            key: Arc::new(key),
            web: Arc::new(web),
            server_keys: Arc::new(server_keys),
            signature_checks: Arc::default(),
            upstream,
            tokens: Arc::new(tokens),
            outbox_wake: Arc::new(tokio::sync::Notify::new()),
            relay_wake: Arc::new(tokio::sync::Notify::new()),
            metrics: Arc::new(Metrics::new()),
        }))
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// `n` random bytes from the injected generator.
    pub fn random_bytes<const N: usize>(&self) -> [u8; N] {
        let mut bytes = [0u8; N];
        match self.rng.lock() {
            Ok(mut rng) => rng.fill_bytes(&mut bytes),
            // A panic elsewhere while holding the lock leaves the generator
            // usable: its state is just bytes.
            Err(poisoned) => poisoned.into_inner().fill_bytes(&mut bytes),
        }
        bytes
    }
}
