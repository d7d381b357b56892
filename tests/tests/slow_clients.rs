//! Clients that send a byte at a time cannot hold connections for ever, nor
//! keep a homeserver that signs correctly waiting.

use assent_e2e::homeserver::Homeserver;
use assent_e2e::{Assent, Options};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const IS_NAME: &str = "is.test";
const V2: &str = "/_matrix/identity/v2/3pid/unbind";

/// Reads until the server closes the connection (or answers and closes):
/// what it sent.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return answer,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn slow_clients_are_cut_off_at_the_timeout_and_hold_nobody_up() {
    let hs = Homeserver::new("hs.test", 31);
    let config = format!(
        "{}\n[http]\nheader_read_timeout = \"2s\"\nbody_read_timeout = \"2s\"\nidle_timeout = \"4s\"\n\n\
         [[identity_servers]]\nname = \"{IS_NAME}\"\ndisplay_name = \"Test identity server\"\n\
         operator = \"Tests\"\nupstream = \"http://127.0.0.1:9\"\nbinding_check = \"none\"\n",
        hs.pinned_toml()
    );
    let assent = Assent::start(Options {
        config: Some(config),
        ..Options::default()
    })
    .await;
    let address = assent.base.trim_start_matches("http://").to_owned();

    // 200 connections that each send one byte of a request line a second.
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..200 {
        let address = address.clone();
        slow.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(&address).await.expect("connect");
            let opened = Instant::now();
            for byte in b"POST /_matrix/identity/v2/3pid/unbind HTTP/1.1\r\n".iter() {
                if stream.write_all(&[*byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                // Closed by the server: a read now ends at once.
                let mut probe = [0u8; 1];
                if let Ok(Ok(0)) =
                    tokio::time::timeout(Duration::from_millis(1), stream.read(&mut probe)).await
                {
                    break;
                }
            }
            until_closed(&mut stream).await;
            opened.elapsed()
        }));
    }
    // And one that sends nothing at all.
    let silent = {
        let address = address.clone();
        tokio::spawn(async move {
            let mut stream = TcpStream::connect(&address).await.expect("connect");
            let opened = Instant::now();
            until_closed(&mut stream).await;
            opened.elapsed()
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A homeserver that signs correctly, on a fresh connection, meanwhile.
    let body = hs.unbind_body("alice", "alice@example.org");
    let authorization = hs.authorization("POST", V2, IS_NAME, &body);
    let asked = Instant::now();
    let response = reqwest::Client::new()
        .post(assent.url(V2))
        .header("host", IS_NAME)
        .header("authorization", authorization)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("POST");
    let took = asked.elapsed();
    assert_eq!(response.status(), 202);
    assert!(took < Duration::from_secs(1), "held in {took:?}");
    assert_eq!(assent.count("requests").await, 1);

    // Every slow connection is closed at the 2 s timeout, not at the end of
    // its request line (50 s).
    for handle in slow {
        let lived = handle.await.expect("slow client");
        assert!(
            lived >= Duration::from_millis(1_900) && lived < Duration::from_secs(6),
            "a slow connection lived {lived:?}"
        );
    }
    let lived = silent.await.expect("silent client");
    assert!(
        lived >= Duration::from_millis(1_900) && lived < Duration::from_secs(6),
        "a silent connection lived {lived:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    // A body sent a byte a second: answered 408 at the body timeout.
    let mut stream = TcpStream::connect(&address).await.expect("connect");
    stream
        .write_all(
            format!(
                "POST {V2} HTTP/1.1\r\nHost: {IS_NAME}\r\nContent-Type: application/json\r\n\
                 Content-Length: 100\r\n\r\n{{"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let dripping = tokio::spawn(async move {
        let opened = Instant::now();
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        for _ in 0..20 {
            if stream.write_all(b" ").await.is_err() {
                break;
            }
            match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => {
                    answer.extend_from_slice(&buf[..n]);
                    break;
                }
                Err(_) => {}
            }
        }
        (
            String::from_utf8_lossy(&answer).into_owned(),
            opened.elapsed(),
        )
    });
    let (answer, lived) = dripping.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(lived < Duration::from_secs(5), "{lived:?}");
    assert_eq!(assent.count("requests").await, 1);

    // A kept-alive connection may wait longer than the header timeout for
    // its next request (the idle timeout, 4 s), and is closed after that.
    let mut stream = TcpStream::connect(&address).await.expect("connect");
    let request = b"GET /health HTTP/1.1\r\nHost: consent.test\r\n\r\n";
    let mut buf = [0u8; 4096];
    for pause in [Duration::ZERO, Duration::from_secs(3)] {
        tokio::time::sleep(pause).await;
        stream.write_all(request).await.unwrap();
        let n = stream.read(&mut buf).await.unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "after {pause:?}: {answer}"
        );
    }
    let idle = Instant::now();
    let rest = until_closed(&mut stream).await;
    let lived = idle.elapsed();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert!(
        lived >= Duration::from_millis(3900) && lived < Duration::from_secs(6),
        "closed after {lived:?} idle"
    );
}
