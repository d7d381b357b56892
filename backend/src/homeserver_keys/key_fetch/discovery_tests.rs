//! Server discovery against a real DNS server (dnsmasq, which `cargo xtask
//! test` installs) and homeservers on loopback: every path of the spec.

use super::*;
use crate::keys::SigningKey;
use axum::extract::Path;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::process::{Child, Command, Stdio};

/// dnsmasq on a loopback port, answering for `.test` only; killed on drop.
struct Dns {
    child: Child,
    address: SocketAddr,
}

impl Dns {
    /// `records`: dnsmasq options such as `--srv-host=…`, `--host-record=…`.
    async fn start(records: &[String]) -> Dns {
        // The port is free for UDP when chosen, but dnsmasq listens on TCP
        // too, where another test's connection may have taken it since:
        // then dnsmasq exits, and another port is tried.
        for _ in 0..5 {
            if let Some(dns) = Dns::start_once(records).await {
                return dns;
            }
        }
        panic!("dnsmasq did not answer on any of five ports");
    }

    async fn start_once(records: &[String]) -> Option<Dns> {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .unwrap()
            .port();
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--conf-file=/dev/null",
                "--pid-file=",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--local=/test/",
                "--host-record=ready.test,127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .args(records)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("start dnsmasq: {e} (install it: apt-get install dnsmasq-base, as `cargo xtask test` does)")
            });
        let mut dns = Dns {
            child,
            address: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        for _ in 0..100 {
            if matches!(dns.child.try_wait(), Ok(Some(_))) {
                return None;
            }
            // A resolver that gives up quickly: it may ask before dnsmasq
            // listens.
            let mut probe = GuardedResolver::new(&dns.config(true)).unwrap();
            let mut builder = hickory_resolver::TokioResolver::builder_with_config(
                probe.dns.config().clone(),
                hickory_resolver::name_server::TokioConnectionProvider::default(),
            );
            builder.options_mut().timeout = Duration::from_millis(100);
            builder.options_mut().attempts = 1;
            probe.dns = builder.build();
            if probe.addresses("ready.test", 0).await.is_ok() {
                return Some(dns);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!(
            "dnsmasq did not answer on {}; trying another port",
            dns.address
        );
        None
    }

    fn config(&self, allow_private: bool) -> KeysConfig {
        KeysConfig {
            allow_private_addresses: allow_private,
            pinned: BTreeMap::new(),
            nameservers: vec![self.address],
        }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A homeserver named `name` on a loopback port: its key document, a
/// `.well-known` that answers `well_known` (a JSON body, or `hop:N` to
/// redirect through N hops first, or `loop` to redirect to itself), and the
/// `Host` each key fetch came with.
struct Homeserver {
    port: u16,
    hosts: Arc<Mutex<Vec<String>>>,
    key_id: String,
}

async fn homeserver(name: &str, well_known: Option<String>) -> Homeserver {
    let key = Arc::new(SigningKey::from_seed("a_disc", &[9u8; 32]).unwrap());
    let key_id = key.key_id().to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hosts = Arc::new(Mutex::new(Vec::new()));
    let seen = hosts.clone();
    let name = name.to_owned();
    let answer = move |hops: usize| -> Response {
        match well_known.as_deref() {
            None => StatusCode::NOT_FOUND.into_response(),
            Some("loop") => (StatusCode::FOUND, [(header::LOCATION, "/hop/0")]).into_response(),
            Some(hop) if hop.starts_with("hop:") => {
                let total: usize = hop[4..].parse().unwrap();
                if hops < total {
                    let next = format!("/hop/{}", hops + 1);
                    (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, next)]).into_response()
                } else {
                    axum::Json(serde_json::json!({"m.server": "deleg.test"})).into_response()
                }
            }
            Some(body) => (StatusCode::OK, body.to_owned()).into_response(),
        }
    };
    let first = answer.clone();
    let app = axum::Router::new()
        .route(
            "/_matrix/key/v2/server",
            get(move |headers: HeaderMap| {
                let key = key.clone();
                let name = name.clone();
                let host = headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                seen.lock().unwrap().push(host);
                async move {
                    let doc = key
                        .server_keys_document(&name, 1_000_000 - crate::keys::KEYS_VALID_FOR_MS)
                        .unwrap();
                    axum::Json(serde_json::to_value(doc).unwrap())
                }
            }),
        )
        .route(
            "/.well-known/matrix/server",
            get(move || {
                let response = first(0);
                async move { response }
            }),
        )
        .route(
            "/hop/{n}",
            get(move |Path(n): Path<usize>| {
                let response = answer(n);
                async move { response }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Homeserver {
        port,
        hosts,
        key_id,
    }
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

fn fetcher(dns: &Dns, allow_private: bool, well_known: u16, default: u16) -> KeyFetcher {
    KeyFetcher::with_scheme(&dns.config(allow_private), "http")
        .unwrap()
        .with_ports(well_known, default)
}

#[tokio::test]
async fn an_srv_record_is_followed_with_the_server_name_kept_as_host() {
    let hs = homeserver("srv.test", None).await;
    let dns = Dns::start(&[
        format!(
            "--srv-host=_matrix-fed._tcp.srv.test,box.test,{},0,0",
            hs.port
        ),
        "--host-record=box.test,127.0.0.1".to_owned(),
        // The name itself points elsewhere: only the SRV target serves.
        "--host-record=srv.test,127.0.0.1".to_owned(),
    ])
    .await;
    let fetcher = fetcher(&dns, true, closed_port(), closed_port());
    let (_, source) = fetcher.key("srv.test", &hs.key_id, 1_000).await.unwrap();
    assert_eq!(source, KeySource::Fetched);
    assert_eq!(*hs.hosts.lock().unwrap(), ["srv.test"]);
}

#[tokio::test]
async fn the_legacy_srv_name_is_used_when_the_current_one_is_missing() {
    let hs = homeserver("old.test", None).await;
    let dns = Dns::start(&[
        format!("--srv-host=_matrix._tcp.old.test,box.test,{},0,0", hs.port),
        "--host-record=box.test,127.0.0.1".to_owned(),
    ])
    .await;
    let fetcher = fetcher(&dns, true, closed_port(), closed_port());
    fetcher.key("old.test", &hs.key_id, 1_000).await.unwrap();
    assert_eq!(*hs.hosts.lock().unwrap(), ["old.test"]);
}

#[tokio::test]
async fn srv_targets_are_tried_by_priority_until_one_answers() {
    let hs = homeserver("two.test", None).await;
    let dns = Dns::start(&[
        format!(
            "--srv-host=_matrix-fed._tcp.two.test,box.test,{},0,0",
            closed_port()
        ),
        format!(
            "--srv-host=_matrix-fed._tcp.two.test,box.test,{},10,0",
            hs.port
        ),
        "--host-record=box.test,127.0.0.1".to_owned(),
    ])
    .await;
    let fetcher = fetcher(&dns, true, closed_port(), closed_port());
    fetcher.key("two.test", &hs.key_id, 1_000).await.unwrap();
}

#[tokio::test]
async fn well_known_redirects_are_followed_to_a_delegation_then_its_srv() {
    // wk.test's .well-known redirects three times, then delegates to
    // deleg.test, which has only an SRV record.
    let hs = homeserver("wk.test", Some("hop:3".to_owned())).await;
    let dns = Dns::start(&[
        "--host-record=wk.test,127.0.0.1".to_owned(),
        format!(
            "--srv-host=_matrix-fed._tcp.deleg.test,box.test,{},0,0",
            hs.port
        ),
        "--host-record=box.test,127.0.0.1".to_owned(),
    ])
    .await;
    let fetcher = fetcher(&dns, true, hs.port, closed_port());
    let endpoints = fetcher.discover("wk.test").await.unwrap();
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0].base, format!("http://deleg.test:{}", hs.port));
    fetcher.key("wk.test", &hs.key_id, 1_000).await.unwrap();
    assert_eq!(*hs.hosts.lock().unwrap(), ["deleg.test"]);
}

#[tokio::test]
async fn a_delegation_with_a_port_is_used_as_given_and_without_one_defaults_to_8448() {
    let hs = homeserver("port.test", None).await;
    let with_port = homeserver(
        "port.test",
        Some(format!(r#"{{"m.server": "box.test:{}"}}"#, hs.port)),
    )
    .await;
    let dns = Dns::start(&[
        "--host-record=port.test,127.0.0.1".to_owned(),
        "--host-record=box.test,127.0.0.1".to_owned(),
    ])
    .await;
    let fetcher = fetcher(&dns, true, with_port.port, closed_port());
    let endpoints = fetcher.discover("port.test").await.unwrap();
    assert_eq!(endpoints[0].base, format!("http://box.test:{}", hs.port));
    assert_eq!(endpoints[0].srv, None);
    fetcher.key("port.test", &hs.key_id, 1_000).await.unwrap();
    assert_eq!(*hs.hosts.lock().unwrap(), [format!("box.test:{}", hs.port)]);

    // No .well-known, no SRV: the name on the default port (8448 outside
    // tests).
    let plain = fetcher_default(&dns, hs.port);
    let endpoints = plain.discover("plain.test").await.unwrap();
    assert_eq!(endpoints[0].base, format!("http://plain.test:{}", hs.port));
}

fn fetcher_default(dns: &Dns, default: u16) -> KeyFetcher {
    fetcher(dns, true, closed_port(), default)
}

#[tokio::test]
async fn bad_well_known_answers_and_redirect_loops_mean_no_delegation() {
    for answer in ["not json", r#"{"m.server": "bad name!"}"#, "{}", "loop"] {
        let wk = homeserver("odd.test", Some(answer.to_owned())).await;
        let hs = homeserver("odd.test", None).await;
        let dns = Dns::start(&[
            "--host-record=odd.test,127.0.0.1".to_owned(),
            format!(
                "--srv-host=_matrix-fed._tcp.odd.test,box.test,{},0,0",
                hs.port
            ),
            "--host-record=box.test,127.0.0.1".to_owned(),
        ])
        .await;
        let fetcher = fetcher(&dns, true, wk.port, closed_port());
        let endpoints = fetcher.discover("odd.test").await.unwrap();
        assert_eq!(
            endpoints[0].base,
            format!("http://odd.test:{}", hs.port),
            "{answer}"
        );
    }
}

#[tokio::test]
async fn every_address_on_the_way_goes_through_the_guard() {
    let hs = homeserver("inside.test", None).await;
    let dns = Dns::start(&[
        format!(
            "--srv-host=_matrix-fed._tcp.inside.test,box.test,{},0,0",
            hs.port
        ),
        "--host-record=box.test,127.0.0.1".to_owned(),
        format!(
            "--srv-host=_matrix-fed._tcp.lan.test,lan-box.test,{},0,0",
            hs.port
        ),
        "--host-record=lan-box.test,10.1.2.3".to_owned(),
    ])
    .await;
    // An SRV target on loopback or a private network is refused.
    let guarded = fetcher(&dns, false, closed_port(), closed_port());
    for server in ["inside.test", "lan.test"] {
        match guarded.key(server, &hs.key_id, 1_000).await {
            Err(KeyFetchError::PrivateAddress(_)) => {}
            other => panic!("{server}: {other:?}"),
        }
    }
    assert!(hs.hosts.lock().unwrap().is_empty());
    // A redirect is followed only on the same scheme: never from https to
    // http. (Its host goes through the same guarded request as the first.)
    let https = KeyFetcher::with_scheme(&dns.config(false), "https").unwrap();
    assert_eq!(
        https.next_hop("https://a.test/.well-known/matrix/server", "/elsewhere"),
        Some("https://a.test/elsewhere".to_owned())
    );
    assert_eq!(https.next_hop("https://a.test/x", "http://a.test/y"), None);
    assert_eq!(
        https.next_hop("https://a.test/x", "file:///etc/passwd"),
        None
    );
}
