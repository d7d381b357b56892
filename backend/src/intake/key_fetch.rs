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

use super::server_keys::{verify_key_document, KeyDocError, ServerKeySet};
use super::signature_batch::usable_key;
use crate::config::KeysConfig;
use ed25519_dalek::VerifyingKey;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Largest key document or `.well-known` answer read.
pub const MAX_BODY: usize = 64 * 1024;
const TIMEOUT: Duration = Duration::from_secs(10);
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

/// Why the fetcher could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot set up the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("cannot read the system's DNS configuration (/etc/resolv.conf): {0}")]
    Dns(String),
}

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

/// The client every fetch uses: bounded, no redirects, no proxy, names
/// resolved through the guard.
fn client_builder(resolver: &Arc<GuardedResolver>) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("Assent/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(resolver.clone())
}

fn ip_literal(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Whether an address is reachable on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // shared address space
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || (a == 192 && b == 0 && v4.octets()[2] == 0) // IETF protocol assignments
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let segments = v6.segments();
            let first = segments[0];
            // Addresses that carry an IPv4 address inside: judge that one.
            let embedded = |high: u16, low: u16| {
                std::net::Ipv4Addr::new((high >> 8) as u8, high as u8, (low >> 8) as u8, low as u8)
            };
            if segments[..6] == [0, 0, 0, 0, 0, 0] && !v6.is_loopback() && !v6.is_unspecified() {
                return is_public(IpAddr::V4(embedded(segments[6], segments[7])));
                // IPv4-compatible
            }
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_public(IpAddr::V4(embedded(segments[6], segments[7])));
                // NAT64
            }
            if first == 0x2002 {
                return is_public(IpAddr::V4(embedded(segments[1], segments[2])));
                // 6to4
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link local
                || first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
        }
    }
}

/// The resolver's refusal, found again in reqwest's error chain.
#[derive(Debug, thiserror::Error)]
#[error("{0} resolves only to loopback or private addresses")]
struct PrivateOnly(String);

fn refused_as_private(error: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<PrivateOnly>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// One SRV record, as discovery uses it.
struct Srv {
    priority: u16,
    weight: u16,
    port: u16,
    target: String,
}

/// Why a name gave no address to connect to.
enum Lookup {
    Private,
    Failed(String),
}

/// Resolves names (with hickory: the system's resolvers, or
/// `keys.nameservers`) and drops non-public addresses unless allowed.
struct GuardedResolver {
    dns: hickory_resolver::TokioResolver,
    allow_private: bool,
}

impl GuardedResolver {
    fn new(config: &KeysConfig) -> Result<Self, SetupError> {
        use hickory_resolver::config::{NameServerConfig, ResolverConfig};
        use hickory_resolver::name_server::TokioConnectionProvider;
        use hickory_resolver::proto::xfer::Protocol;
        let builder = if config.nameservers.is_empty() {
            hickory_resolver::TokioResolver::builder_tokio()
                .map_err(|e| SetupError::Dns(e.to_string()))?
        } else {
            let mut resolvers = ResolverConfig::new();
            for address in &config.nameservers {
                resolvers.add_name_server(NameServerConfig::new(*address, Protocol::Udp));
                resolvers.add_name_server(NameServerConfig::new(*address, Protocol::Tcp));
            }
            hickory_resolver::TokioResolver::builder_with_config(
                resolvers,
                TokioConnectionProvider::default(),
            )
        };
        Ok(GuardedResolver {
            dns: builder.build(),
            allow_private: config.allow_private_addresses,
        })
    }

    /// `name`'s addresses on `port` that may be connected to.
    async fn addresses(&self, name: &str, port: u16) -> Result<Vec<SocketAddr>, Lookup> {
        let absolute = if name.ends_with('.') {
            name.to_owned()
        } else {
            format!("{name}.")
        };
        let found = self
            .dns
            .lookup_ip(absolute)
            .await
            .map_err(|e| Lookup::Failed(e.to_string()))?;
        let allowed: Vec<SocketAddr> = found
            .iter()
            .filter(|ip| self.allow_private || is_public(*ip))
            .map(|ip| SocketAddr::new(ip, port))
            .collect();
        if allowed.is_empty() {
            return Err(Lookup::Private);
        }
        Ok(allowed)
    }

    /// The SRV records of `name`; none when there are none or the lookup
    /// fails (the spec then goes on to port 8448). A target of `.` says
    /// the service is not offered, which is taken the same way.
    async fn srv(&self, name: &str) -> Vec<Srv> {
        let Ok(found) = self.dns.srv_lookup(name).await else {
            return Vec::new();
        };
        found
            .iter()
            .filter(|r| !r.target().is_root())
            .map(|r| Srv {
                priority: r.priority(),
                weight: r.weight(),
                port: r.port(),
                target: r.target().to_ascii(),
            })
            .collect()
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let dns = self.dns.clone();
        let allow_private = self.allow_private;
        Box::pin(async move {
            let guard = GuardedResolver { dns, allow_private };
            match guard.addresses(&host, 0).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs),
                Err(Lookup::Private) => {
                    Err(Box::new(PrivateOnly(host)) as Box<dyn std::error::Error + Send + Sync>)
                }
                Err(Lookup::Failed(why)) => Err(why.into()),
            }
        })
    }
}

#[cfg(test)]
mod discovery_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SigningKey;
    use axum::routing::get;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct FakeHomeserver {
        addr: SocketAddr,
        fetches: Arc<AtomicUsize>,
    }

    /// A homeserver on loopback publishing `key`'s document, valid until `valid_until`.
    async fn homeserver(
        server_name: fn(SocketAddr) -> String,
        key: Arc<SigningKey>,
        valid_until: i64,
        padding: usize,
    ) -> FakeHomeserver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let name = server_name(addr);
        let fetches = Arc::new(AtomicUsize::new(0));
        let counter = fetches.clone();
        let app = axum::Router::new().route(
            "/_matrix/key/v2/server",
            get(move || {
                let key = key.clone();
                let name = name.clone();
                counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    let mut doc = key
                        .server_keys_document(&name, valid_until - crate::keys::KEYS_VALID_FOR_MS)
                        .unwrap();
                    if padding > 0 {
                        doc.insert("padding".to_owned(), "x".repeat(padding).into());
                        doc.remove("signatures");
                        key.sign_json(&name, &mut doc).unwrap();
                    }
                    axum::Json(serde_json::to_value(doc).unwrap())
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeHomeserver { addr, fetches }
    }

    fn config(allow_private: bool) -> KeysConfig {
        KeysConfig {
            allow_private_addresses: allow_private,
            pinned: BTreeMap::new(),
            nameservers: Vec::new(),
        }
    }

    #[tokio::test]
    async fn keys_are_fetched_checked_and_cached_until_they_expire() {
        let key = Arc::new(SigningKey::from_seed("a_hs", &[3u8; 32]).unwrap());
        let hs = homeserver(|addr| addr.to_string(), key.clone(), 1_000_000, 0).await;
        let fetcher = KeyFetcher::with_scheme(&config(true), "http").unwrap();
        let server = hs.addr.to_string();
        let (raw, source) = fetcher.key(&server, key.key_id(), 1_000).await.unwrap();
        assert_eq!(
            (crate::keys::encode_unpadded(raw.as_bytes()), source),
            (key.public_key_base64(), KeySource::Fetched)
        );
        let (_, source) = fetcher.key(&server, key.key_id(), 2_000).await.unwrap();
        assert_eq!(source, KeySource::Cached);
        assert_eq!(
            hs.fetches.load(Ordering::SeqCst),
            1,
            "the cache answered the second time"
        );
        // Past valid_until_ts the document is fetched again, and refused when stale.
        assert!(matches!(
            fetcher.key(&server, key.key_id(), 2_000_000).await,
            Err(KeyFetchError::Expired { .. })
        ));
        assert_eq!(hs.fetches.load(Ordering::SeqCst), 2);
        assert!(matches!(
            fetcher.key(&server, "ed25519:nope", 1_000).await,
            Err(KeyFetchError::UnknownKey { .. })
        ));
    }

    #[tokio::test]
    async fn a_server_is_fetched_at_most_once_a_minute_whatever_callers_claim() {
        let key = Arc::new(SigningKey::from_seed("a_hs", &[3u8; 32]).unwrap());
        let hs = homeserver(|addr| addr.to_string(), key.clone(), 1_i64 << 50, 0).await;
        let fetcher = KeyFetcher::with_scheme(&config(true), "http").unwrap();
        let server = hs.addr.to_string();
        for at in [1_000, 2_000, 30_000] {
            assert!(matches!(
                fetcher.key(&server, "ed25519:made_up", at).await,
                Err(KeyFetchError::UnknownKey { .. })
            ));
        }
        assert_eq!(hs.fetches.load(Ordering::SeqCst), 1);
        // A key the server does publish is still found, from the cache.
        let (_, source) = fetcher.key(&server, key.key_id(), 40_000).await.unwrap();
        assert_eq!(source, KeySource::Cached);

        // An unreachable server is not tried again within the minute.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let gone = closed.local_addr().unwrap().to_string();
        drop(closed);
        assert!(matches!(
            fetcher.key(&gone, "ed25519:x", 1_000).await,
            Err(KeyFetchError::Http { .. })
        ));
        let again = fetcher.key(&gone, "ed25519:x", 50_000).await;
        assert!(
            matches!(&again, Err(KeyFetchError::RecentlyFailed { why, .. }) if why.contains("fetching")),
            "{again:?}"
        );
        assert!(matches!(
            fetcher
                .key(&gone, "ed25519:x", 1_000 + REFETCH_AFTER_MS)
                .await,
            Err(KeyFetchError::Http { .. })
        ));
    }

    #[tokio::test]
    async fn numeric_host_spellings_of_private_addresses_are_refused() {
        let fetcher = KeyFetcher::with_scheme(&config(false), "http").unwrap();
        for server in [
            "127.1:8448",
            "2130706433:8448",
            "0x7f.1:8448",
            "10.1",
            "192.168.1:80",
        ] {
            let refused = fetcher.key(server, "ed25519:a", 1).await;
            assert!(
                matches!(refused, Err(KeyFetchError::PrivateAddress(_))),
                "{server}: {refused:?}"
            );
        }
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch_and_pinned_servers_are_never_fetched() {
        let key = Arc::new(SigningKey::from_seed("a_hs", &[3u8; 32]).unwrap());
        let hs = homeserver(|addr| addr.to_string(), key.clone(), 1_i64 << 50, 0).await;
        let fetcher = Arc::new(KeyFetcher::with_scheme(&config(true), "http").unwrap());
        let server = hs.addr.to_string();
        let calls: Vec<_> = (0..12)
            .map(|_| {
                let fetcher = fetcher.clone();
                let server = server.clone();
                let key_id = key.key_id().to_owned();
                tokio::spawn(async move { fetcher.key(&server, &key_id, 1_000).await })
            })
            .collect();
        for call in calls {
            call.await.unwrap().unwrap();
        }
        assert_eq!(hs.fetches.load(Ordering::SeqCst), 1);

        let mut pinned = config(true);
        pinned.pinned.insert(
            server.clone(),
            BTreeMap::from([("ed25519:other".to_owned(), key.public_key_base64())]),
        );
        let fetcher = KeyFetcher::with_scheme(&pinned, "http").unwrap();
        assert!(matches!(
            fetcher.key(&server, key.key_id(), 1_000).await,
            Err(KeyFetchError::UnknownKey { .. })
        ));
        assert_eq!(
            hs.fetches.load(Ordering::SeqCst),
            1,
            "no fetch for a pinned server"
        );
    }

    #[tokio::test]
    async fn a_long_lived_document_is_fetched_again_after_a_week() {
        let key = Arc::new(SigningKey::from_seed("a_hs", &[3u8; 32]).unwrap());
        let hs = homeserver(|addr| addr.to_string(), key.clone(), 1_i64 << 50, 0).await;
        let fetcher = KeyFetcher::with_scheme(&config(true), "http").unwrap();
        let server = hs.addr.to_string();
        fetcher.key(&server, key.key_id(), 1).await.unwrap();
        let (_, source) = fetcher
            .key(&server, key.key_id(), MAX_CACHE_MS)
            .await
            .unwrap();
        assert_eq!(source, KeySource::Cached);
        let (_, source) = fetcher
            .key(&server, key.key_id(), MAX_CACHE_MS + 2)
            .await
            .unwrap();
        assert_eq!(source, KeySource::Fetched);
        assert_eq!(hs.fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn loopback_is_refused_unless_allowed() {
        let key = Arc::new(SigningKey::from_seed("a_hs", &[3u8; 32]).unwrap());
        let hs = homeserver(|addr| addr.to_string(), key.clone(), 1_i64 << 50, 0).await;
        let fetcher = KeyFetcher::with_scheme(&config(false), "http").unwrap();
        let refused = fetcher.key(&hs.addr.to_string(), key.key_id(), 1).await;
        assert!(
            matches!(refused, Err(KeyFetchError::PrivateAddress(_))),
            "{refused:?}"
        );
        // By name too: localhost resolves to loopback only.
        let by_name = fetcher
            .key(&format!("localhost:{}", hs.addr.port()), key.key_id(), 1)
            .await;
        assert!(
            matches!(by_name, Err(KeyFetchError::PrivateAddress(_))),
            "{by_name:?}"
        );
        assert_eq!(hs.fetches.load(Ordering::SeqCst), 0, "nothing was sent");
    }

    #[tokio::test]
    async fn a_document_for_another_name_or_too_large_is_refused() {
        let key = Arc::new(SigningKey::from_seed("a_hs", &[3u8; 32]).unwrap());
        let impostor =
            homeserver(|_| "other.example".to_owned(), key.clone(), 1_i64 << 50, 0).await;
        let fetcher = KeyFetcher::with_scheme(&config(true), "http").unwrap();
        let wrong = fetcher
            .key(&impostor.addr.to_string(), key.key_id(), 1)
            .await;
        assert!(
            matches!(
                wrong,
                Err(KeyFetchError::Document {
                    error: KeyDocError::WrongServer { .. },
                    ..
                })
            ),
            "{wrong:?}"
        );
        let huge = homeserver(|addr| addr.to_string(), key.clone(), 1_i64 << 50, MAX_BODY).await;
        let large = fetcher.key(&huge.addr.to_string(), key.key_id(), 1).await;
        assert!(
            matches!(large, Err(KeyFetchError::TooLarge { .. })),
            "{large:?}"
        );
    }

    #[tokio::test]
    async fn pinned_keys_need_no_network() {
        let mut keys = config(false);
        keys.pinned.insert(
            "hs.test".to_owned(),
            BTreeMap::from([(
                "ed25519:a_iNuw".to_owned(),
                "1oqOQhXJ5QqSnZija6zHwdsAgOUakzBGnEHrvDatgdU".to_owned(),
            )]),
        );
        keys.pinned.insert(
            "Other.test".to_owned(),
            BTreeMap::from([(
                "ed25519:b".to_owned(),
                "1oqOQhXJ5QqSnZija6zHwdsAgOUakzBGnEHrvDatgdU".to_owned(),
            )]),
        );
        let fetcher = KeyFetcher::new(&keys).unwrap();
        let (key, source) = fetcher.key("hs.test", "ed25519:a_iNuw", 1).await.unwrap();
        assert_eq!(source, KeySource::Pinned);
        assert_eq!(
            crate::keys::encode_unpadded(key.as_bytes()),
            "1oqOQhXJ5QqSnZija6zHwdsAgOUakzBGnEHrvDatgdU"
        );
        // Server names match whatever their case.
        let (_, source) = fetcher.key("other.TEST", "ed25519:b", 1).await.unwrap();
        assert_eq!(source, KeySource::Pinned);
        // A pinned server's other key ids are unknown, not fetched.
        assert!(matches!(
            fetcher.key("hs.test", "ed25519:other", 1).await,
            Err(KeyFetchError::UnknownKey { .. })
        ));
    }

    #[test]
    fn only_public_addresses_count_as_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "2a00:1450::1",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn the_cache_forgets_the_server_used_longest_ago_and_in_flight_entries_go() {
        let key = Arc::new(SigningKey::from_seed("a_hs", &[5u8; 32]).unwrap());
        let mut fetcher = KeyFetcher::with_scheme(&config(true), "http").unwrap();
        fetcher.cache = Mutex::new(lru::LruCache::new(std::num::NonZeroUsize::new(2).unwrap()));
        let mut servers = Vec::new();
        for _ in 0..3 {
            servers.push(homeserver(|addr| addr.to_string(), key.clone(), 1_000_000, 0).await);
        }
        let name = |i: usize| servers[i].addr.to_string();
        fetcher.key(&name(0), key.key_id(), 1_000).await.unwrap();
        fetcher.key(&name(1), key.key_id(), 1_000).await.unwrap();
        // Server 0 used again: server 1 is now the one used longest ago.
        fetcher.key(&name(0), key.key_id(), 1_000).await.unwrap();
        fetcher.key(&name(2), key.key_id(), 1_000).await.unwrap();
        assert!(fetcher.has_key(&name(0), key.key_id(), 1_000), "kept");
        assert!(fetcher.has_key(&name(2), key.key_id(), 1_000), "kept");
        assert!(!fetcher.has_key(&name(1), key.key_id(), 1_000), "forgotten");
        // Nothing is in flight once the callers are done, whatever names
        // they asked for: also when a name is refused without a fetch (it
        // failed under a minute ago).
        for _ in 0..2 {
            for port in [1, 2, 3] {
                let _ = fetcher
                    .key(&format!("127.0.0.1:{port}"), "ed25519:x", 1_000)
                    .await;
            }
        }
        assert!(fetcher.inflight.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_busy_fetcher_queues_a_while_before_refusing() {
        let key = Arc::new(SigningKey::from_seed("a_hs", &[6u8; 32]).unwrap());
        let hs = homeserver(|addr| addr.to_string(), key.clone(), 1_000_000, 0).await;
        let mut fetcher = KeyFetcher::with_scheme(&config(true), "http").unwrap();
        fetcher.queue_wait = Duration::from_millis(300);
        let fetcher = Arc::new(fetcher);
        let server = hs.addr.to_string();
        // Every slot taken for longer than the wait: refused as busy.
        let all = fetcher
            .permits
            .acquire_many(MAX_CONCURRENT_FETCHES as u32)
            .await
            .unwrap();
        let started = std::time::Instant::now();
        assert!(matches!(
            fetcher.key(&server, key.key_id(), 1_000).await,
            Err(KeyFetchError::Busy)
        ));
        assert!(started.elapsed() >= Duration::from_millis(300));
        // A slot freed within the wait: the fetch goes ahead.
        let waiting = {
            let (fetcher, server, key_id) =
                (fetcher.clone(), server.clone(), key.key_id().to_owned());
            tokio::spawn(async move { fetcher.key(&server, &key_id, 1_000).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(all);
        let (_, source) = waiting.await.unwrap().unwrap();
        assert_eq!(source, KeySource::Fetched);
    }
}
