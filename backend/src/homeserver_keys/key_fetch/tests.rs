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
    let impostor = homeserver(|_| "other.example".to_owned(), key.clone(), 1_i64 << 50, 0).await;
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
        let (fetcher, server, key_id) = (fetcher.clone(), server.clone(), key.key_id().to_owned());
        tokio::spawn(async move { fetcher.key(&server, &key_id, 1_000).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(all);
    let (_, source) = waiting.await.unwrap().unwrap();
    assert_eq!(source, KeySource::Fetched);
}
