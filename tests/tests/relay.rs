//! Decisions carried out, end to end: the real binary in front of a real
//! sydent, requests signed the way Synapse signs them, the owner's link read
//! from the email Assent wrote, and sydent's own lookup as the judge.

use assent_e2e::homeserver::Homeserver;
use assent_e2e::sydent::Sydent;
use assent_e2e::{Assent, Options};
use std::path::Path;
use std::time::{Duration, Instant};

const IS_NAME: &str = "is.test";
const V2: &str = "/_matrix/identity/v2/3pid/unbind";

/// The consent token in the email Assent wrote to `address`.
async fn token_mailed_to(mail_dir: &Path, address: &str) -> String {
    let started = Instant::now();
    loop {
        let found = std::fs::read_dir(mail_dir).ok().and_then(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .map(|text| text.replace("=\r\n", ""))
                .find(|text| text.contains(&format!("To: {address}")))
        });
        if let Some(text) = found {
            let at = text.find("/consent/").expect("a consent link") + "/consent/".len();
            return text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no email to {address} in {}",
            mail_dir.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn hold(assent: &Assent, hs: &Homeserver, local: &str, address: &str) {
    let body = hs.unbind_body(local, address);
    let authorization = hs.authorization("POST", V2, IS_NAME, &body);
    let response = reqwest::Client::new()
        .post(assent.url(V2))
        .header("host", IS_NAME)
        .header("content-type", "application/json")
        .header("authorization", authorization)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{address} is held");
}

async fn decide(assent: &Assent, token: &str, word: &str) {
    let response = reqwest::Client::new()
        .post(assent.url(&format!("/_assent/v1/consent/{token}/decision")))
        .json(&serde_json::json!({ "decision": word }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{word}");
}

#[tokio::test]
async fn with_the_sydent_internal_sink_approve_unbinds_at_sydent_and_deny_does_not() {
    let sydent = Sydent::start(IS_NAME).await;
    let hs = Homeserver::new("hs.test", 4);
    let config = format!(
        "{}\n[[identity_servers]]\nname = \"{IS_NAME}\"\ndisplay_name = \"Test identity server\"\n\
         operator = \"Tests\"\nupstream = \"{}\"\nbinding_check = \"v1_lookup\"\n\
         relay = [{{ kind = \"sydent-internal\", url = \"{}\" }}]\n",
        hs.pinned_toml(),
        sydent.base,
        sydent.internal
    );
    let assent = Assent::start(Options {
        config: Some(config),
        ..Options::default()
    })
    .await;
    let mail = assent.data_dir.join("mail");
    for (local, address) in [
        ("alice", "alice@example.org"),
        ("carol", "carol@example.org"),
    ] {
        sydent.bind(address, &hs.mxid(local)).await;
        hold(&assent, &hs, local, address).await;
        // Held: the binding is still there until the owner decides.
        assert_eq!(sydent.lookup(address).await, Some(hs.mxid(local)));
    }

    let alice = token_mailed_to(&mail, "alice@example.org").await;
    let carol = token_mailed_to(&mail, "carol@example.org").await;
    decide(&assent, &carol, "deny").await;
    decide(&assent, &alice, "approve").await;

    // The approval reaches sydent: its own lookup no longer finds alice.
    let started = Instant::now();
    while sydent.lookup("alice@example.org").await.is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the approved unbind never reached sydent:\n{}",
            assent.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The denial changed nothing there, also after the relay had its time.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        sydent.lookup("carol@example.org").await,
        Some(hs.mxid("carol"))
    );
    assert_eq!(assent.count("outbox WHERE kind = 'relay'").await, 1);
    assert_eq!(
        assent
            .count("audit_events WHERE kind = 'relay_delivered'")
            .await,
        1
    );
}

/// Forwards every connection on `port` to `to` (host:port), from now on.
async fn forward_port(port: u16, to: String) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the forwarder");
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let to = to.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

#[tokio::test]
async fn a_relay_cut_short_by_a_crash_completes_after_a_restart() {
    let sydent = Sydent::start(IS_NAME).await;
    let hs = Homeserver::new("hs.test", 5);
    // The sink's address answers nothing yet: the first delivery fails.
    let port = assent_e2e::free_port();
    let config = format!(
        "{}\n[[identity_servers]]\nname = \"{IS_NAME}\"\ndisplay_name = \"Test identity server\"\n\
         operator = \"Tests\"\nupstream = \"{}\"\nbinding_check = \"v1_lookup\"\n\
         relay = [{{ kind = \"sydent-internal\", url = \"http://127.0.0.1:{port}\" }}]\n",
        hs.pinned_toml(),
        sydent.base
    );
    let mut assent = Assent::start(Options {
        config: Some(config),
        ..Options::default()
    })
    .await;
    sydent.bind("erin@example.org", &hs.mxid("erin")).await;
    hold(&assent, &hs, "erin", "erin@example.org").await;
    let token = token_mailed_to(&assent.data_dir.join("mail"), "erin@example.org").await;
    decide(&assent, &token, "approve").await;
    let started = Instant::now();
    while assent
        .count("audit_events WHERE kind = 'relay_failed'")
        .await
        == 0
    {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no failed attempt"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // SIGKILL: no shutdown of any kind, with the relay still to do.
    assent.kill();
    assert_eq!(
        sydent.lookup("erin@example.org").await,
        Some(hs.mxid("erin"))
    );
    let internal = sydent.internal.trim_start_matches("http://").to_owned();
    let _forward = forward_port(port, internal).await;
    assent.restart_keeping_links().await;
    let started = Instant::now();
    while sydent.lookup("erin@example.org").await.is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the relay did not complete after the restart:\n{}",
            assent.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        assent
            .count("audit_events WHERE kind = 'relay_delivered'")
            .await,
        1
    );
}

/// A webhook receiver that counts deliveries per `Idempotency-Key`.
async fn webhook_counter() -> (
    String,
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let seen: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>> =
        Default::default();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let counts = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counts = counts.clone();
            tokio::spawn(async move {
                let mut data = Vec::new();
                let mut buf = [0u8; 8192];
                loop {
                    // Headers, then as much body as Content-Length says.
                    if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if data.len() >= end + 4 + length {
                            let key = head
                                .lines()
                                .find_map(|l| l.strip_prefix("idempotency-key:"))
                                .map(|v| v.trim().to_owned())
                                .unwrap_or_default();
                            *counts.lock().unwrap().entry(key).or_insert(0) += 1;
                            let _ = stream
                                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                                .await;
                            return;
                        }
                    }
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => data.extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
    (url, seen)
}

/// The consent token mailed to `address` by whichever replica sent it.
async fn token_in_any(dirs: &[std::path::PathBuf], address: &str) -> String {
    let started = Instant::now();
    loop {
        for dir in dirs {
            let mailed = std::fs::read_dir(dir).ok().is_some_and(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                    .any(|text| text.contains(&format!("To: {address}")))
            });
            if mailed {
                return token_mailed_to(dir, address).await;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no email to {address}; {}",
            {
                let mut listing = String::new();
                for dir in dirs {
                    for entry in std::fs::read_dir(dir)
                        .into_iter()
                        .flatten()
                        .filter_map(Result::ok)
                    {
                        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                        if text.contains(address) {
                            let to = text
                                .lines()
                                .find(|l| l.starts_with("To:"))
                                .unwrap_or("")
                                .to_owned();
                            listing.push_str(&format!("{} {to:?}\n", entry.path().display()));
                        }
                    }
                }
                listing
            }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn two_replicas_on_one_postgresql_relay_each_of_200_decisions_once() {
    if std::env::var_os("TEST_POSTGRES_URL").is_none() {
        eprintln!("runs in the PostgreSQL pass of `cargo xtask test` (TEST_POSTGRES_URL)");
        return;
    }
    let hs = Homeserver::new("hs.test", 6);
    let (hook, deliveries) = webhook_counter().await;
    let config = format!(
        "{}\n[limits]\nunbinds_per_origin_per_minute = 100000\n\n\
         [[identity_servers]]\nname = \"{IS_NAME}\"\ndisplay_name = \"Test identity server\"\n\
         operator = \"Tests\"\nupstream = \"http://127.0.0.1:9/\"\nbinding_check = \"none\"\n\
         relay = [{{ kind = \"webhook\", url = \"{hook}\" }}]\n",
        hs.pinned_toml()
    );
    let first = Assent::start(Options {
        config: Some(config.clone()),
        ..Options::default()
    })
    .await;
    let url = first.database_url.clone().expect("a PostgreSQL database");
    // Replicas share the signing key (it also makes the consent links):
    // the second gets a copy of the first's.
    let shared = tempfile::tempdir().unwrap();
    std::fs::copy(
        first.data_dir.join("signing.key"),
        shared.path().join("signing.key"),
    )
    .unwrap();
    let second = Assent::start(Options {
        config: Some(config),
        env: vec![
            ("ASSENT_DATABASE_URL".to_owned(), url),
            (
                "ASSENT_DATA_DIR".to_owned(),
                shared.path().display().to_string(),
            ),
        ],
        ..Options::default()
    })
    .await;
    let replicas = [&first, &second];
    const N: usize = 200;
    for i in 0..N {
        hold(
            replicas[i % 2],
            &hs,
            &format!("u{i}"),
            &format!("u{i}@example.org"),
        )
        .await;
    }
    // Decisions from several client addresses (each may look up 60 links a
    // minute per process), alternating between the replicas.
    let clients: Vec<reqwest::Client> = (2..6)
        .map(|last| {
            reqwest::Client::builder()
                .local_address(std::net::IpAddr::from([127, 0, 0, last]))
                .build()
                .unwrap()
        })
        .collect();
    for i in 0..N {
        let address = format!("u{i}@example.org");
        let dirs = [first.data_dir.join("mail"), shared.path().join("mail")];
        let token = token_in_any(&dirs, &address).await;
        let word = if i % 3 == 0 { "deny" } else { "approve" };
        let response = clients[(i / 2) % clients.len()]
            .post(replicas[i % 2].url(&format!("/_assent/v1/consent/{token}/decision")))
            .json(&serde_json::json!({ "decision": word }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "decision {i}");
    }
    let started = Instant::now();
    while deliveries.lock().unwrap().len() < N {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {} of {N} decisions delivered",
            deliveries.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Time for any duplicate to arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts = deliveries.lock().unwrap().clone();
    assert_eq!(counts.len(), N);
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(
        first
            .count("outbox WHERE kind = 'relay' AND state = 'done'")
            .await,
        N as i64
    );
}

#[tokio::test]
async fn with_the_replay_sink_sydent_itself_accepts_the_homeserver_s_request_once_approved() {
    let sydent = Sydent::start(IS_NAME).await;
    // The homeserver is named by its key server's address, so sydent finds
    // its keys there (over TLS; the test config skips certificate checks).
    let listener = assent_e2e::key_server::KeyServer::reserve().await;
    let name = listener.local_addr().unwrap().to_string();
    let hs = Homeserver::new(&name, 7);
    let _keys = assent_e2e::key_server::KeyServer::start(listener, &hs);
    let config = format!(
        "{}\n[[identity_servers]]\nname = \"{IS_NAME}\"\ndisplay_name = \"Test identity server\"\n\
         operator = \"Tests\"\nupstream = \"{}\"\nbinding_check = \"v1_lookup\"\n\
         relay = [{{ kind = \"replay\" }}]\n",
        hs.pinned_toml(),
        sydent.base
    );
    let assent = Assent::start(Options {
        config: Some(config),
        ..Options::default()
    })
    .await;
    let mail = assent.data_dir.join("mail");
    for (local, address) in [
        ("hana", "hana@example.org"),
        ("ivo", "ivo@example.org"),
        ("jo", "jo@example.org"),
    ] {
        sydent.bind(address, &hs.mxid(local)).await;
        hold(&assent, &hs, local, address).await;
        assert_eq!(sydent.lookup(address).await, Some(hs.mxid(local)));
    }
    // Jo's request runs out of time: an approval then comes too late, the
    // request is expired instead, and nothing is unbound.
    let jo = token_mailed_to(&mail, "jo@example.org").await;
    assent
        .execute("UPDATE requests SET expires_at = 1 WHERE address = 'jo@example.org'")
        .await;
    let late = reqwest::Client::new()
        .post(assent.url(&format!("/_assent/v1/consent/{jo}/decision")))
        .json(&serde_json::json!({"decision": "approve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), 410);
    decide(
        &assent,
        &token_mailed_to(&mail, "ivo@example.org").await,
        "deny",
    )
    .await;
    decide(
        &assent,
        &token_mailed_to(&mail, "hana@example.org").await,
        "approve",
    )
    .await;
    let started = Instant::now();
    while sydent.lookup("hana@example.org").await.is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "sydent never took the replayed unbind:\n{}\n--- sydent:\n{}",
            assent.stderr_text(),
            sydent.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sydent.lookup("ivo@example.org").await, Some(hs.mxid("ivo")));
    assert_eq!(sydent.lookup("jo@example.org").await, Some(hs.mxid("jo")));
    assert_eq!(
        assent
            .count("audit_events WHERE kind = 'relay_delivered'")
            .await,
        1
    );
}

/// Three replicas on one PostgreSQL relay thirty decisions to a webhook
/// that takes a second to answer. With sends in flight, one replica is
/// SIGKILLed and another paused (SIGSTOP) for longer than its leases, then
/// resumed. Every decision still reaches the receiver; one arrives twice
/// only if it was in flight when a replica was stopped, and then with the
/// same decision id. The resumed replica does not send on leases it lost.
#[tokio::test]
async fn three_replicas_relay_through_a_kill_and_a_pause() {
    if std::env::var_os("TEST_POSTGRES_URL").is_none() {
        eprintln!("runs in the PostgreSQL pass of `cargo xtask test` (TEST_POSTGRES_URL)");
        return;
    }
    let hs = Homeserver::new("hs.test", 8);
    let hook = assent_e2e::chaos::Receiver::slow(1, 0, Duration::from_secs(1)).await;
    let config = format!(
        "{}\n[limits]\nunbinds_per_origin_per_minute = 100000\n\n\
         [[identity_servers]]\nname = \"{IS_NAME}\"\ndisplay_name = \"Test identity server\"\n\
         operator = \"Tests\"\nupstream = \"http://127.0.0.1:9/\"\nbinding_check = \"none\"\n\
         relay = [{{ kind = \"webhook\", url = \"{}/hook\" }}]\n",
        hs.pinned_toml(),
        hook.url
    );
    let first = Assent::start(Options {
        config: Some(config.clone()),
        ..Options::default()
    })
    .await;
    let url = first.database_url.clone().expect("a PostgreSQL database");
    let mut others = Vec::new();
    let mut dirs = vec![first.data_dir.join("mail")];
    for _ in 0..2 {
        let shared = tempfile::tempdir().unwrap();
        std::fs::copy(
            first.data_dir.join("signing.key"),
            shared.path().join("signing.key"),
        )
        .unwrap();
        dirs.push(shared.path().join("mail"));
        let replica = Assent::start(Options {
            config: Some(config.clone()),
            env: vec![
                ("ASSENT_DATABASE_URL".to_owned(), url.clone()),
                (
                    "ASSENT_DATA_DIR".to_owned(),
                    shared.path().display().to_string(),
                ),
            ],
            ..Options::default()
        })
        .await;
        others.push((replica, shared));
    }
    const N: usize = 30;
    for i in 0..N {
        hold(&first, &hs, &format!("p{i}"), &format!("p{i}@example.org")).await;
    }
    // Tokens first, then the decisions in quick turns through all three,
    // so that each replica is woken to relay rows of its own.
    let mut tokens = Vec::new();
    for i in 0..N {
        tokens.push(token_in_any(&dirs, &format!("p{i}@example.org")).await);
    }
    for (i, token) in tokens.iter().enumerate() {
        let replica = match i % 3 {
            0 => &first,
            n => &others[n - 1].0,
        };
        decide(replica, token, if i % 3 == 0 { "deny" } else { "approve" }).await;
    }
    // Wait until sends are in flight, then stop two replicas at once.
    let started = Instant::now();
    while hook.deliveries().len() < 6 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no relay began"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut killed, _killed_dir) = others.remove(0);
    let (paused, _paused_dir) = others.remove(0);
    let stopping = Instant::now();
    paused.signal("STOP");
    killed.kill();
    // The receiver notes a delivery once it has read it, a moment after
    // the send: a send made before the stop may be noted just after it.
    let stopped_at = Instant::now() + Duration::from_secs(1);
    // Longer than a relay lease (two minutes): the others take its rows.
    tokio::time::sleep(Duration::from_secs(125)).await;
    paused.signal("CONT");
    let resumed_at = Instant::now();
    let started = Instant::now();
    loop {
        let pending = first
            .count("outbox WHERE kind = 'relay' AND state <> 'done'")
            .await;
        if pending == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{pending} relay rows still open after the pause"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Time for a late send of the resumed replica to arrive, if it made one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut times: std::collections::HashMap<String, Vec<Instant>> = Default::default();
    for delivery in hook.deliveries() {
        let key = delivery
            .idempotency_key
            .clone()
            .expect("an Idempotency-Key");
        times.entry(key).or_default().push(delivery.at);
    }
    assert_eq!(times.len(), N, "every decision reached the receiver");
    for (decision, mut at) in times {
        at.sort();
        if at.len() > 1 {
            // A repeat: the first send was in flight when the replicas stopped.
            assert!(
                at.len() == 2 && at[0] <= stopped_at && at[1] >= stopping,
                "{decision} delivered {} times, not only across the stop",
                at.len()
            );
        }
        // Nothing is sent once the paused replica wakes to leases it lost.
        assert!(
            at.iter().all(|t| *t < resumed_at || at.len() == 1),
            "{decision} was sent again after the paused replica resumed"
        );
    }
    killed.kill();
}

/// Two replicas on one PostgreSQL, one of them with its wall clock ten
/// minutes fast (far more than a two-minute relay lease): leases end by the
/// database's clock, so the fast replica never takes a row the other is
/// still sending. It starts while the replica on time has sixteen sends in
/// flight to a receiver that takes 3 s each; every one of the thirty
/// decisions arrives once.
#[tokio::test]
async fn a_replica_whose_clock_runs_fast_takes_no_row_another_holds() {
    if std::env::var_os("TEST_POSTGRES_URL").is_none() {
        eprintln!("runs in the PostgreSQL pass of `cargo xtask test` (TEST_POSTGRES_URL)");
        return;
    }
    const SKEW: i64 = 600;
    let hs = Homeserver::new("hs.test", 9);
    let hook = assent_e2e::chaos::Receiver::slow(2, 0, Duration::from_secs(3)).await;
    let config = format!(
        "{}\n[limits]\nunbinds_per_origin_per_minute = 100000\n\n\
         [[identity_servers]]\nname = \"{IS_NAME}\"\ndisplay_name = \"Test identity server\"\n\
         operator = \"Tests\"\nupstream = \"http://127.0.0.1:9/\"\nbinding_check = \"none\"\n\
         relay = [{{ kind = \"webhook\", url = \"{}/hook\" }}]\n",
        hs.pinned_toml(),
        hook.url
    );
    let on_time = Assent::start(Options {
        config: Some(config.clone()),
        ..Options::default()
    })
    .await;
    const N: usize = 30;
    for i in 0..N {
        hold(
            &on_time,
            &hs,
            &format!("f{i}"),
            &format!("f{i}@example.org"),
        )
        .await;
    }
    let mail = on_time.data_dir.join("mail");
    let mut tokens = Vec::new();
    for i in 0..N {
        tokens.push(token_mailed_to(&mail, &format!("f{i}@example.org")).await);
    }
    for (i, token) in tokens.iter().enumerate() {
        decide(&on_time, token, if i % 2 == 0 { "deny" } else { "approve" }).await;
    }
    let started = Instant::now();
    while hook.deliveries().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no relay began"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Sends in flight: now the fast replica joins.
    let url = on_time.database_url.clone().expect("a PostgreSQL database");
    let shared = tempfile::tempdir().unwrap();
    std::fs::copy(
        on_time.data_dir.join("signing.key"),
        shared.path().join("signing.key"),
    )
    .unwrap();
    let mut env = vec![
        ("ASSENT_DATABASE_URL".to_owned(), url),
        (
            "ASSENT_DATA_DIR".to_owned(),
            shared.path().display().to_string(),
        ),
    ];
    env.extend(assent_e2e::skewed_clock(SKEW));
    let fast = Assent::start(Options {
        config: Some(config),
        env,
        ..Options::default()
    })
    .await;
    // The skew took: the fast replica's Date header is ten minutes ahead.
    let date = |assent: &Assent| {
        let url = assent.url("/health");
        async move {
            let response = reqwest::get(url).await.unwrap();
            let date = response.headers()["date"].to_str().unwrap().to_owned();
            httpdate::parse_http_date(&date).unwrap()
        }
    };
    let ahead = date(&fast)
        .await
        .duration_since(date(&on_time).await)
        .unwrap_or_default();
    assert!(
        ahead >= Duration::from_secs(SKEW as u64 - 5),
        "the fast replica is only {ahead:?} ahead"
    );

    let started = Instant::now();
    loop {
        let pending = on_time
            .count("outbox WHERE kind = 'relay' AND state <> 'done'")
            .await;
        if pending == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{pending} relay rows still open"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    for delivery in hook.deliveries() {
        let key = delivery.idempotency_key.expect("an Idempotency-Key");
        *seen.entry(key).or_default() += 1;
    }
    assert_eq!(seen.len(), N, "every decision reached the receiver");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
}
