//! Who the client is, behind the reverse proxies the operator trusts.
//!
//! With `trusted_proxies` set, a request from one of them names its client
//! in `Forwarded` (RFC 7239) or, without it, `X-Forwarded-For`. The chain is
//! read from the right, skipping trusted hops: the client is the first
//! address that is not a trusted proxy. A request from anywhere else is its
//! own client, whatever it claims. The result replaces the connection's
//! `ConnectInfo`, so that every rate limit, log line and the
//! `X-Forwarded-For` sent upstream speak of the client, not of the proxy.

use crate::config::ProxyHeader;
use crate::state::AppState;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use forwarded_header_value::ForwardedHeaderValue;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// The client of a request that came from `peer`.
pub fn client_address(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &[IpNet],
    header: ProxyHeader,
) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(&ip));
    if !is_trusted(peer) {
        return peer;
    }
    let chain = match header {
        ProxyHeader::XForwardedFor => x_forwarded_for(headers),
        ProxyHeader::Forwarded => forwarded(headers),
    };
    let mut client = peer;
    // From the right: each hop was added by the one after it, and only
    // hops added by trusted proxies are believed.
    for hop in chain.into_iter().rev() {
        match hop {
            // Unreadable or obfuscated: the chain cannot be followed
            // further, and the last address read stands.
            None => break,
            Some(ip) => {
                client = ip.to_canonical();
                if !is_trusted(client) {
                    break;
                }
            }
        }
    }
    client
}

/// Every value of header `name`, as one list (`a, b` and two headers `a`
/// and `b` mean the same); bytes that are not text become U+FFFD, so that
/// only the element holding them fails to read.
fn joined(headers: &HeaderMap, name: &str) -> String {
    headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect::<Vec<_>>()
        .join(",")
}

/// `X-Forwarded-For`, element by element: an address, an address and
/// port, or a bracketed IPv6 address (with or without port).
fn x_forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let text = joined(headers, "x-forwarded-for");
    text.split(',')
        .map(str::trim)
        .filter(|hop| !hop.is_empty())
        .map(|hop| {
            hop.parse::<IpAddr>()
                .ok()
                .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()))
                .or_else(|| {
                    hop.strip_prefix('[')
                        .and_then(|h| h.strip_suffix(']'))
                        .and_then(|h| h.parse().ok())
                })
        })
        .collect()
}

/// `Forwarded`'s `for=` of each hop. A value the parser refuses is one
/// unreadable hop; an odd number of quotes is refused before parsing
/// (the parser does not survive an unterminated quoted string).
fn forwarded(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let text = joined(headers, "forwarded");
    if text.is_empty() {
        return Vec::new();
    }
    if text.matches('"').count() % 2 == 1 {
        return vec![None];
    }
    match ForwardedHeaderValue::from_forwarded(&text) {
        Ok(parsed) => parsed.iter().map(|hop| hop.forwarded_for_ip()).collect(),
        Err(_) => vec![None],
    }
}

/// Puts the client in place of the connection's peer, when a trusted proxy
/// forwarded the request.
pub async fn layer(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let trusted = &state.config.trusted_proxies;
    if !trusted.is_empty() {
        if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() {
            let client = client_address(
                peer.ip(),
                request.headers(),
                trusted,
                state.config.trusted_proxy_header,
            );
            request
                .extensions_mut()
                .insert(ConnectInfo(SocketAddr::new(client, 0)));
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    const XFF: ProxyHeader = ProxyHeader::XForwardedFor;

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_it_claims() {
        let claims = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("forwarded", "for=198.51.100.1"),
        ]);
        assert_eq!(
            client_address(ip("192.0.2.7"), &claims, &[], XFF),
            ip("192.0.2.7")
        );
        // A peer that is not one of the trusted proxies is not believed either.
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_address(ip("192.0.2.7"), &claims, &trusted, XFF),
            ip("192.0.2.7")
        );
    }

    #[test]
    fn the_chain_is_read_from_the_right_skipping_trusted_hops() {
        let trusted = nets(&["10.0.0.0/8", "fd00::/8"]);
        // A client that sent its own X-Forwarded-For: the proxy appended the
        // real address, which is the first untrusted one from the right.
        let spoofed = headers(&[("x-forwarded-for", "198.51.100.1, 203.0.113.9, 10.1.1.1")]);
        assert_eq!(
            client_address(ip("10.0.0.2"), &spoofed, &trusted, XFF),
            ip("203.0.113.9")
        );
        // Two header lines are one list; ports and brackets are read.
        let split = headers(&[
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-for", "[2001:db8::7]:4711"),
        ]);
        assert_eq!(
            client_address(ip("10.0.0.2"), &split, &trusted, XFF),
            ip("2001:db8::7")
        );
        // IPv4 peers seen as IPv6 are trusted as IPv4.
        let plain = headers(&[("x-forwarded-for", "203.0.113.9:80")]);
        assert_eq!(
            client_address(ip("::ffff:10.0.0.2"), &plain, &trusted, XFF),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn only_the_configured_header_is_read() {
        let trusted = nets(&["10.0.0.0/8", "fd00::/8"]);
        // The proxy appends to X-Forwarded-For and passes Forwarded on from
        // the client untouched: that one is the client's to choose.
        let both = headers(&[
            ("forwarded", "for=198.51.100.66"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(
            client_address(ip("10.0.0.2"), &both, &trusted, XFF),
            ip("203.0.113.9")
        );
        // A proxy that speaks Forwarded: X-Forwarded-For is the client's.
        let rfc = headers(&[
            (
                "forwarded",
                "for=198.51.100.1, for=\"[2001:db8::7]:4711\";proto=https, for=\"[fd00::1]\"",
            ),
            ("x-forwarded-for", "192.0.2.1"),
        ]);
        assert_eq!(
            client_address(ip("fd00::2"), &rfc, &trusted, ProxyHeader::Forwarded),
            ip("2001:db8::7")
        );
    }

    #[test]
    fn an_unreadable_hop_stops_the_chain_and_never_panics() {
        let trusted = nets(&["10.0.0.0/8"]);
        // Nothing forwarded: the proxy itself.
        assert_eq!(
            client_address(ip("10.0.0.2"), &HeaderMap::new(), &trusted, XFF),
            ip("10.0.0.2")
        );
        // The client's own garbage, left of what the proxy appended, does
        // not hide the client.
        let garbage = headers(&[("x-forwarded-for", "not an address, 203.0.113.9")]);
        assert_eq!(
            client_address(ip("10.0.0.2"), &garbage, &trusted, XFF),
            ip("203.0.113.9")
        );
        let mut raw = HeaderMap::new();
        raw.append(
            "x-forwarded-for",
            axum::http::HeaderValue::from_bytes(b"\xff\xfe, 203.0.113.9").unwrap(),
        );
        assert_eq!(
            client_address(ip("10.0.0.2"), &raw, &trusted, XFF),
            ip("203.0.113.9")
        );
        // An obfuscated hop: the last address read.
        let hidden = headers(&[("forwarded", "for=203.0.113.9, for=unknown, for=10.2.2.2")]);
        assert_eq!(
            client_address(ip("10.0.0.2"), &hidden, &trusted, ProxyHeader::Forwarded),
            ip("10.2.2.2")
        );
        // An unterminated quote (which the parser would panic on): unreadable.
        let broken = headers(&[("forwarded", "for=203.0.113.9;host=\"")]);
        assert_eq!(
            client_address(ip("10.0.0.2"), &broken, &trusted, ProxyHeader::Forwarded),
            ip("10.0.0.2")
        );
        // Only trusted hops: the leftmost.
        let inner = headers(&[("x-forwarded-for", "10.3.3.3, 10.2.2.2")]);
        assert_eq!(
            client_address(ip("10.0.0.2"), &inner, &trusted, XFF),
            ip("10.3.3.3")
        );
    }

    /// 61 looks at unknown consent links from `client`, sent by `peer`:
    /// the status of the last one.
    async fn flood(
        h: &crate::test_support::Harness,
        peer: [u8; 4],
        client: &str,
    ) -> axum::http::StatusCode {
        let mut last = axum::http::StatusCode::OK;
        for _ in 0..61 {
            let request =
                axum::http::Request::get(format!("/_assent/v1/consent/{}", "A".repeat(43)))
                    .header("x-forwarded-for", client)
                    .extension(ConnectInfo(SocketAddr::from((peer, 40000))))
                    .body(axum::body::Body::empty())
                    .unwrap();
            last = h.send(request).await.0;
        }
        last
    }

    #[tokio::test]
    async fn behind_a_trusted_proxy_each_client_has_its_own_limits() {
        use axum::http::StatusCode;
        let h = crate::test_support::Harness::new(|c| {
            c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
        })
        .await;
        // One client over its limit (60 looks a minute)...
        assert_eq!(
            flood(&h, [127, 0, 0, 1], "203.0.113.1").await,
            StatusCode::TOO_MANY_REQUESTS
        );
        // ...and, through the same proxy, another is not.
        let request = axum::http::Request::get(format!("/_assent/v1/consent/{}", "A".repeat(43)))
            .header("x-forwarded-for", "203.0.113.3")
            .extension(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))))
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(h.send(request).await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_client_that_is_no_trusted_proxy_cannot_pose_as_others() {
        use axum::http::StatusCode;
        let h = crate::test_support::Harness::new(|c| {
            c.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
        })
        .await;
        // Every look claims another client; all count against the peer.
        let mut last = StatusCode::OK;
        for i in 0..61 {
            let request =
                axum::http::Request::get(format!("/_assent/v1/consent/{}", "A".repeat(43)))
                    .header("x-forwarded-for", format!("203.0.113.{i}"))
                    .extension(ConnectInfo(SocketAddr::from(([192, 0, 2, 9], 40000))))
                    .body(axum::body::Body::empty())
                    .unwrap();
            last = h.send(request).await.0;
        }
        assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
    }
}
