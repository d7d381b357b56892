//! Fetching a homeserver's signing keys: Matrix server discovery as the
//! server-server spec (and so Synapse and sydent) does it, a bounded HTTP
//! client that refuses loopback and private addresses unless
//! `keys.allow_private_addresses`, self-signature checks, and a cache kept
//! until each document's `valid_until_ts`. Pinned keys skip all of it.
//!
//! Discovery: an IP literal or an explicit port is used as it is; else
//! `https://<name>/.well-known/matrix/server` (redirects followed, every hop
//! through the address guard) may delegate to another name; a delegated or
//! original name without a port is looked up as SRV `_matrix-fed._tcp`, then
//! `_matrix._tcp`, and otherwise reached on port 8448. An SRV target is
//! connected to by its addresses while the certificate and `Host` stay the
//! server's name.

use super::resolver::{client_builder, ip_literal, refused_as_private, GuardedResolver, Lookup};
use crate::config::KeysConfig;
use crate::homeserver_keys::server_keys::{verify_key_document, KeyDocError, ServerKeySet};
use crate::keys::usable_key;
use ed25519_dalek::VerifyingKey;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use super::resolver::{is_public, SetupError};

/// Largest key document or `.well-known` answer read.
pub const MAX_BODY: usize = 64 * 1024;
/// Longest a fetched key document is trusted without fetching it again.
pub const MAX_CACHE_MS: i64 = 7 * 24 * 3600 * 1000;
const MAX_CACHED_SERVERS: std::num::NonZeroUsize = match std::num::NonZeroUsize::new(1024) {
    Some(n) => n,
    None => unreachable!(),
};
/// How long a fetch waits for one of the `MAX_CONCURRENT_FETCHES` slots
/// before it is refused as busy.
const QUEUE_WAIT: Duration = Duration::from_secs(10);
/// Redirects followed for `.well-known/matrix/server`.
const MAX_REDIRECTS: usize = 5;
/// SRV targets tried in turn for one server.
const MAX_SRV_TARGETS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum KeyFetchError {
    #[error("`{0}` is not a valid server name")]
    BadServerName(String),
    #[error("`{0}` resolves only to loopback or private addresses (set keys.allow_private_addresses to allow)")]
    PrivateAddress(String),
    #[error("fetching {url} failed: {why}")]
    Http { url: String, why: String },
    #[error("{url} redirects; only .well-known/matrix/server may")]
    Redirected { url: String },
    #[error("{url} answered with more than {MAX_BODY} bytes")]
    TooLarge { url: String },
    #[error("key document from {url}: {error}")]
    Document { url: String, error: KeyDocError },
    #[error("{server} publishes no key `{key_id}`")]
    UnknownKey { server: String, key_id: String },
    #[error("the key document of {server} expired at {valid_until_ts}")]
    Expired { server: String, valid_until_ts: i64 },
    #[error(
        "fetching the keys of {server} failed less than a minute ago ({why}); not trying again yet"
    )]
    RecentlyFailed { server: String, why: String },
    #[error("too many key fetches are under way; try again shortly")]
    Busy,
}

impl KeyFetchError {
    /// What the caller may be told: what went wrong, without what Assent
    /// saw on the network (which would make it a port scanner).
    pub fn public_message(&self, server: &str) -> String {
        match self {
            KeyFetchError::BadServerName(_)
            | KeyFetchError::UnknownKey { .. }
            | KeyFetchError::Expired { .. }
            | KeyFetchError::Busy => self.to_string(),
            KeyFetchError::PrivateAddress(_) => {
                format!("the keys of {server} are not fetched: it is not on a public address")
            }
            KeyFetchError::Http { .. }
            | KeyFetchError::Redirected { .. }
            | KeyFetchError::TooLarge { .. }
            | KeyFetchError::Document { .. }
            | KeyFetchError::RecentlyFailed { .. } => format!(
                "the signing keys of {server} could not be fetched and verified from its /_matrix/key/v2/server"
            ),
        }
    }
}

/// Key fetches under way at once, over all servers.
pub const MAX_CONCURRENT_FETCHES: usize = 32;

/// How long a server's keys are not fetched again after a fetch, whatever
/// the requests claim: callers that need not be verified yet choose which
/// server is asked, so they must not be able to make Assent hammer one.
pub const REFETCH_AFTER_MS: i64 = 60_000;

/// Where a key came from, for the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    Pinned,
    Cached,
    Fetched,
}

impl KeySource {
    pub fn as_str(self) -> &'static str {
        match self {
            KeySource::Pinned => "pinned",
            KeySource::Cached => "cached",
            KeySource::Fetched => "fetched",
        }
    }
}

/// A turn at fetching one server's keys. The in-flight entry is removed
/// when the last holder lets go, so the map holds only servers being
/// fetched, not every name ever asked for.
struct Gate<'a> {
    fetcher: &'a KeyFetcher,
    server: String,
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for Gate<'_> {
    fn drop(&mut self) {
        if let Ok(mut inflight) = self.fetcher.inflight.lock() {
            // The map's handle and this one: nobody else is waiting.
            if Arc::strong_count(&self.turn) <= 2 {
                inflight.remove(&self.server);
            }
        }
    }
}

/// A server's keys, decompressed once (it costs 5 µs a check otherwise),
/// and until when they may be used (ms since the Unix epoch).
struct CachedKeys {
    keys: BTreeMap<String, VerifyingKey>,
    valid_until_ts: i64,
}

pub struct KeyFetcher {
    http: reqwest::Client,
    /// `[keys.pinned]`: server name → key id → key.
    pinned: Vec<(String, BTreeMap<String, VerifyingKey>)>,
    allow_private: bool,
    /// Server names come from requests: both maps are bounded, and a full
    /// one forgets the server used longest ago.
    cache: Mutex<lru::LruCache<String, CachedKeys>>,
    /// Last fetch per server: when, and why it failed if it did.
    recent: Mutex<lru::LruCache<String, (i64, Option<String>)>>,
    /// One fetch per server at a time: the others wait for its result. An
    /// entry lives while someone holds it (see [`Gate`]).
    inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    permits: tokio::sync::Semaphore,
    queue_wait: Duration,
    resolver: Arc<GuardedResolver>,
    /// `https` in production; tests serve plain HTTP on loopback.
    scheme: &'static str,
    /// Where `.well-known` is asked (`None`: the scheme's own port) and the
    /// port of a name without one or an SRV record (8448); tests move them.
    well_known_port: Option<u16>,
    default_port: u16,
}

/// One place to fetch a server's keys from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    /// `https://authority`: the name the certificate must match.
    base: String,
    /// An SRV target: the URL's host is connected to at these addresses
    /// (already through the guard), with `Host` the server's name alone.
    srv: Option<(String, Vec<SocketAddr>)>,
}

/// What one GET got.
enum Answer {
    Body(Vec<u8>),
    Redirect(String),
}

impl KeyFetcher {
    pub fn new(config: &KeysConfig) -> Result<Self, SetupError> {
        Self::with_scheme(config, "https")
    }

    pub(crate) fn with_scheme(
        config: &KeysConfig,
        scheme: &'static str,
    ) -> Result<Self, SetupError> {
        let resolver = Arc::new(GuardedResolver::new(config)?);
        let http = client_builder(&resolver).build()?;
        // Config validation refuses pinned keys that are not usable (not a
        // curve point, or of small order), so none is left out here.
        let pinned = config
            .pinned
            .iter()
            .map(|(server, keys)| {
                let keys = keys
                    .iter()
                    .filter_map(|(id, key)| {
                        let key = usable_key(&crate::keys::decode_unpadded(key)?)?;
                        Some((id.clone(), key))
                    })
                    .collect();
                (server.clone(), keys)
            })
            .collect();
        Ok(KeyFetcher {
            http,
            pinned,
            allow_private: config.allow_private_addresses,
            cache: Mutex::new(lru::LruCache::new(MAX_CACHED_SERVERS)),
            recent: Mutex::new(lru::LruCache::new(MAX_CACHED_SERVERS)),
            inflight: Mutex::new(HashMap::new()),
            permits: tokio::sync::Semaphore::new(MAX_CONCURRENT_FETCHES),
            queue_wait: QUEUE_WAIT,
            resolver,
            scheme,
            well_known_port: None,
            default_port: 8448,
        })
    }

    /// Tests serve `.well-known` and names without a port on loopback ports.
    #[cfg(test)]
    fn with_ports(mut self, well_known: u16, default: u16) -> Self {
        self.well_known_port = Some(well_known);
        self.default_port = default;
        self
    }

    /// The public key `key_id` of `server`, valid at `now_ms`.
    pub async fn key(
        &self,
        server: &str,
        key_id: &str,
        now_ms: i64,
    ) -> Result<(VerifyingKey, KeySource), KeyFetchError> {
        // A pinned server's keys come from the config only.
        if let Some((_, keys)) = self
            .pinned
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(server))
        {
            return match keys.get(key_id) {
                Some(key) => Ok((*key, KeySource::Pinned)),
                None => Err(KeyFetchError::UnknownKey {
                    server: server.to_owned(),
                    key_id: key_id.to_owned(),
                }),
            };
        }
        let cache_key = server.to_ascii_lowercase();
        if let Some(key) = self.cached(&cache_key, key_id, now_ms) {
            return Ok((key, KeySource::Cached));
        }
        let gate = self.gate(&cache_key);
        let _turn = gate.turn.lock().await;
        // Whoever held the gate before may have fetched what we need.
        if let Some(key) = self.cached(&cache_key, key_id, now_ms) {
            return Ok((key, KeySource::Cached));
        }
        if let Some(failure) = self.recent_fetch(&cache_key, now_ms) {
            return Err(match failure {
                Some(why) => KeyFetchError::RecentlyFailed {
                    server: server.to_owned(),
                    why,
                },
                None => KeyFetchError::UnknownKey {
                    server: server.to_owned(),
                    key_id: key_id.to_owned(),
                },
            });
        }
        // Busy: wait a while for a slot, in turn, rather than fail at once.
        let Ok(Ok(_permit)) = tokio::time::timeout(self.queue_wait, self.permits.acquire()).await
        else {
            return Err(KeyFetchError::Busy);
        };
        let fetched = self.fetch(server).await;
        self.remember_fetch(
            cache_key.clone(),
            now_ms,
            fetched.as_ref().err().map(ToString::to_string),
        );
        let set = fetched?;
        if set.valid_until_ts <= now_ms {
            return Err(KeyFetchError::Expired {
                server: server.to_owned(),
                valid_until_ts: set.valid_until_ts,
            });
        }
        // However long a document claims to be valid, it is fetched again
        // after a week (the spec's cap). Its keys verified its signature, so
        // each is a point on the curve; one of small order, for which anyone
        // can sign, is left out and so unknown.
        let set = CachedKeys {
            keys: set
                .keys
                .iter()
                .filter_map(|(id, raw)| Some((id.clone(), usable_key(raw)?)))
                .collect(),
            valid_until_ts: set.valid_until_ts.min(now_ms.saturating_add(MAX_CACHE_MS)),
        };
        let key = set.keys.get(key_id).copied();
        if let Ok(mut cache) = self.cache.lock() {
            cache.put(cache_key, set);
        }
        key.map(|key| (key, KeySource::Fetched))
            .ok_or_else(|| KeyFetchError::UnknownKey {
                server: server.to_owned(),
                key_id: key_id.to_owned(),
            })
    }

    fn gate(&self, server: &str) -> Gate<'_> {
        let turn = match self.inflight.lock() {
            Ok(mut inflight) => inflight.entry(server.to_owned()).or_default().clone(),
            Err(_) => Arc::default(),
        };
        Gate {
            fetcher: self,
            server: server.to_owned(),
            turn,
        }
    }

    /// `Some(failure)` when the server's keys were fetched under a minute ago.
    fn recent_fetch(&self, server: &str, now_ms: i64) -> Option<Option<String>> {
        let recent = self.recent.lock().ok()?;
        recent
            .peek(server)
            .filter(|(at, _)| now_ms - at < REFETCH_AFTER_MS)
            .map(|(_, failure)| failure.clone())
    }

    fn remember_fetch(&self, server: String, now_ms: i64, failure: Option<String>) {
        if let Ok(mut recent) = self.recent.lock() {
            recent.put(server, (now_ms, failure));
        }
    }

    /// Whether `key_id` of `server` is at hand without a fetch: pinned, or
    /// cached and still valid.
    pub fn has_key(&self, server: &str, key_id: &str, now_ms: i64) -> bool {
        match self
            .pinned
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(server))
        {
            Some((_, keys)) => keys.contains_key(key_id),
            None => self
                .cached(&server.to_ascii_lowercase(), key_id, now_ms)
                .is_some(),
        }
    }

    fn cached(&self, server: &str, key_id: &str, now_ms: i64) -> Option<VerifyingKey> {
        let mut cache = self.cache.lock().ok()?;
        let set = cache.get(server)?;
        (set.valid_until_ts > now_ms)
            .then(|| set.keys.get(key_id).copied())
            .flatten()
    }

    async fn fetch(&self, server: &str) -> Result<ServerKeySet, KeyFetchError> {
        let mut last = None;
        for endpoint in self.discover(server).await? {
            let url = format!("{}/_matrix/key/v2/server", endpoint.base);
            let answer = match &endpoint.srv {
                None => self.get(&self.http, &url, None).await,
                Some((host, addrs)) => {
                    // The URL names the server (its certificate, SNI); the
                    // connection goes to the SRV target's addresses.
                    let client = client_builder(&self.resolver)
                        .resolve_to_addrs(host, addrs)
                        .build()
                        .map_err(|e| KeyFetchError::Http {
                            url: url.clone(),
                            why: e.to_string(),
                        });
                    match client {
                        Ok(client) => self.get(&client, &url, Some(host)).await,
                        Err(e) => Err(e),
                    }
                }
            };
            match answer {
                Ok(Answer::Body(body)) => {
                    return verify_key_document(server, &body)
                        .map_err(|error| KeyFetchError::Document { url, error })
                }
                Ok(Answer::Redirect(_)) => last = Some(KeyFetchError::Redirected { url }),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| KeyFetchError::BadServerName(server.to_owned())))
    }

    /// Server discovery: where to fetch the keys from, in order.
    async fn discover(&self, server: &str) -> Result<Vec<Endpoint>, KeyFetchError> {
        let name = ruma_common::ServerName::parse(server)
            .map_err(|_| KeyFetchError::BadServerName(server.to_owned()))?;
        let host = name.host();
        if name.port().is_some() || ip_literal(host).is_some() {
            return Ok(vec![self.direct(server, &name)?]);
        }
        match self.well_known(host).await {
            Some(target) if target.port().is_some() || ip_literal(target.host()).is_some() => {
                Ok(vec![self.direct(server, &target)?])
            }
            Some(target) => self.srv_or_default(server, target.host()).await,
            None => self.srv_or_default(server, host).await,
        }
    }

    /// `m.server` from `.well-known/matrix/server`, following redirects.
    /// Anything else (no answer, an error status, bad JSON, a bad name) is
    /// no delegation, as the spec says.
    async fn well_known(&self, host: &str) -> Option<ruma_common::OwnedServerName> {
        let port = self
            .well_known_port
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        let mut url = format!("{}://{host}{port}/.well-known/matrix/server", self.scheme);
        for _ in 0..=MAX_REDIRECTS {
            match self.get(&self.http, &url, None).await.ok()? {
                Answer::Body(body) => {
                    let delegated = serde_json::from_slice::<serde_json::Value>(&body).ok()?;
                    let delegated = delegated.get("m.server")?.as_str()?;
                    return ruma_common::ServerName::parse(delegated).ok();
                }
                Answer::Redirect(location) => url = self.next_hop(&url, &location)?,
            }
        }
        None
    }

    /// Where a redirect leads, if it may be followed: same scheme (never
    /// from https to http). The guard checks the new host when it is asked.
    fn next_hop(&self, from: &str, location: &str) -> Option<String> {
        let next = url::Url::parse(from).ok()?.join(location).ok()?;
        (next.scheme() == self.scheme).then(|| next.to_string())
    }

    /// The SRV targets of `host` (`_matrix-fed._tcp`, else `_matrix._tcp`),
    /// else `host` on the default port.
    async fn srv_or_default(
        &self,
        server: &str,
        host: &str,
    ) -> Result<Vec<Endpoint>, KeyFetchError> {
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            let mut records = self.resolver.srv(&format!("{service}.{host}.")).await;
            if records.is_empty() {
                continue;
            }
            // Lowest priority first; among equals, the heaviest.
            records.sort_by_key(|r| (r.priority, std::cmp::Reverse(r.weight)));
            let mut endpoints = Vec::new();
            let mut refused = false;
            for record in records.iter().take(MAX_SRV_TARGETS) {
                match self.resolver.addresses(&record.target, record.port).await {
                    Ok(addrs) => endpoints.push(Endpoint {
                        base: format!("{}://{host}:{}", self.scheme, record.port),
                        srv: Some((host.to_owned(), addrs)),
                    }),
                    Err(Lookup::Private) => refused = true,
                    Err(Lookup::Failed(_)) => {}
                }
            }
            if endpoints.is_empty() && refused {
                return Err(KeyFetchError::PrivateAddress(server.to_owned()));
            }
            if endpoints.is_empty() {
                return Err(KeyFetchError::Http {
                    url: format!("{service}.{host}"),
                    why: "no SRV target resolves".to_owned(),
                });
            }
            return Ok(endpoints);
        }
        Ok(vec![Endpoint {
            base: format!("{}://{host}:{}", self.scheme, self.default_port),
            srv: None,
        }])
    }

    /// `scheme://target[:default port]`, refusing a private IP literal up
    /// front (names are checked when the resolver looks them up).
    fn direct(
        &self,
        server: &str,
        target: &ruma_common::ServerName,
    ) -> Result<Endpoint, KeyFetchError> {
        if let Some(ip) = ip_literal(target.host()) {
            if !self.allow_private && !is_public(ip) {
                return Err(KeyFetchError::PrivateAddress(server.to_owned()));
            }
        }
        let authority = match target.port() {
            Some(_) => target.as_str().to_owned(),
            None => format!("{}:{}", target.as_str(), self.default_port),
        };
        Ok(Endpoint {
            base: format!("{}://{authority}", self.scheme),
            srv: None,
        })
    }

    /// GET with a size limit: the body of a 200, or where a 3xx points.
    async fn get(
        &self,
        client: &reqwest::Client,
        url: &str,
        host: Option<&str>,
    ) -> Result<Answer, KeyFetchError> {
        let http_err = |why: String| KeyFetchError::Http {
            url: url.to_owned(),
            why,
        };
        // The URL parser reads `127.1`, `0x7f.1` or `2130706433` as IPv4
        // addresses, and such hosts are connected to without the resolver:
        // check the host as parsed.
        let parsed = url::Url::parse(url).map_err(|e| http_err(e.to_string()))?;
        let literal = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal {
            if !self.allow_private && !is_public(ip) {
                return Err(KeyFetchError::PrivateAddress(url.to_owned()));
            }
        }
        let mut request = client.get(url);
        if let Some(host) = host {
            request = request.header(reqwest::header::HOST, host);
        }
        let mut response = request.send().await.map_err(|e| {
            if refused_as_private(&e) {
                KeyFetchError::PrivateAddress(url.to_owned())
            } else {
                http_err(e.to_string())
            }
        })?;
        if response.status().is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    http_err(format!("status {} without Location", response.status()))
                })?;
            return Ok(Answer::Redirect(location.to_owned()));
        }
        if response.status() != reqwest::StatusCode::OK {
            return Err(http_err(format!("status {}", response.status())));
        }
        if response
            .content_length()
            .is_some_and(|len| len > MAX_BODY as u64)
        {
            return Err(KeyFetchError::TooLarge {
                url: url.to_owned(),
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| http_err(e.to_string()))?
        {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(KeyFetchError::TooLarge {
                    url: url.to_owned(),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer::Body(body))
    }
}

#[cfg(test)]
mod discovery_tests;

#[cfg(test)]
mod tests;
