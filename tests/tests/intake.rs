//! Intake end to end: the real binary in front of a real sydent, with
//! requests signed the way Synapse signs them.

use assent_e2e::homeserver::Homeserver;
use assent_e2e::sydent::Sydent;
use assent_e2e::{Assent, Options};
use serde_json::Value;

const IS_NAME: &str = "is.test";
const V2: &str = "/_matrix/identity/v2/3pid/unbind";

async fn post(
    base: &str,
    path: &str,
    host: &str,
    authorization: Option<&str>,
    body: &[u8],
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("host", host)
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let response = request.send().await.expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(base: &str, path: &str, host: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .header("host", host)
        .send()
        .await
        .expect("GET");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn in_front_of_sydent_bound_addresses_are_held_and_everything_else_reaches_sydent() {
    let sydent = Sydent::start(IS_NAME).await;
    let hs = Homeserver::new("hs.test", 3);
    let config = format!(
        "{}\n[[identity_servers]]\nname = \"{IS_NAME}\"\ndisplay_name = \"Test identity server\"\n\
         operator = \"Tests\"\nupstream = \"{}\"\nbinding_check = \"v1_lookup\"\nproxy_all = true\n",
        hs.pinned_toml(),
        sydent.base
    );
    let assent = Assent::start(Options {
        config: Some(config),
        ..Options::default()
    })
    .await;

    // Bound at sydent: held, and the binding stays until the owner decides.
    sydent.bind("alice@example.org", &hs.mxid("alice")).await;
    let body = hs.unbind_body("alice", "alice@example.org");
    let authorization = hs.authorization("POST", V2, IS_NAME, &body);
    let (status, answer) = post(&assent.base, V2, IS_NAME, Some(&authorization), &body).await;
    assert_eq!((status, answer), (202, serde_json::json!({})));
    assert_eq!(assent.count("requests").await, 1);
    assert_eq!(assent.count("outbox").await, 1, "one email queued");
    assert_eq!(
        sydent.lookup("alice@example.org").await,
        Some(hs.mxid("alice"))
    );
    // A repeat (homeservers repeat on deactivation) changes nothing.
    let (status, _) = post(&assent.base, V2, IS_NAME, Some(&authorization), &body).await;
    assert_eq!(status, 202);
    assert_eq!(assent.count("requests").await, 1);
    assert_eq!(assent.count("outbox").await, 1);

    // Not bound at sydent: answered here as sydent answers an unbind of
    // nothing, never forwarded, and nothing is stored or mailed.
    let body = hs.unbind_body("bob", "bob@example.org");
    let authorization = hs.authorization("POST", V2, IS_NAME, &body);
    let through = post(&assent.base, V2, IS_NAME, Some(&authorization), &body).await;
    assert_eq!(through, (200, serde_json::json!({})));
    assert_eq!(assent.count("requests").await, 1);
    assert_eq!(assent.count("outbox").await, 1);

    // A validation session for an address bound moments ago: the
    // homeserver that carried the bind may hold that session (sydent takes
    // it for a day), so it is refused, by the bind time sydent's own lookup
    // gives, and nothing reaches sydent or is stored.
    let mut with_session: Value =
        serde_json::from_slice(&hs.unbind_body("alice", "alice@example.org")).unwrap();
    with_session["sid"] = "1234".into();
    with_session["client_secret"] = "not-a-real-secret".into();
    let body = serde_json::to_vec(&with_session).unwrap();
    let direct = post(&sydent.base, V2, IS_NAME, None, &body).await;
    assert_eq!(direct.1["errcode"], "M_NO_VALID_SESSION");
    let signed = hs.authorization("POST", V2, IS_NAME, &body);
    for authorization in [None, Some(signed.as_str())] {
        let (status, answer) = post(&assent.base, V2, IS_NAME, authorization, &body).await;
        assert_eq!(status, 403, "{answer}");
        assert_eq!(answer["errcode"], "M_FORBIDDEN");
    }
    assert_eq!(assent.count("requests").await, 1);
    assert_eq!(
        sydent.lookup("alice@example.org").await,
        Some(hs.mxid("alice"))
    );
    // For an address not bound, a session unbind is answered here, as
    // sydent answers an unbind of nothing.
    with_session["threepid"]["address"] = "carol@example.org".into();
    let body = serde_json::to_vec(&with_session).unwrap();
    let through = post(&assent.base, V2, IS_NAME, None, &body).await;
    assert_eq!(through, (200, serde_json::json!({})));
    assert_eq!(assent.count("requests").await, 1);

    // proxy_all: the rest of the identity server's API passes through.
    for path in [
        "/_matrix/identity/v2",
        "/_matrix/identity/api/v1/lookup?medium=email&address=alice%40example.org",
        "/_matrix/identity/api/v1/pubkey/ed25519:0",
    ] {
        let direct = get(&sydent.base, path, IS_NAME).await;
        let through = get(&assent.base, path, IS_NAME).await;
        assert_eq!(direct.0, 200, "{path}");
        assert_eq!(through, direct, "{path}");
    }
    let register = post(
        &assent.base,
        "/_matrix/identity/v2/account/register",
        IS_NAME,
        None,
        b"{}",
    )
    .await;
    let direct = post(
        &sydent.base,
        "/_matrix/identity/v2/account/register",
        IS_NAME,
        None,
        b"{}",
    )
    .await;
    assert_eq!(register, direct);
    // Under another name, Assent answers for itself.
    let (status, _) = get(&assent.base, "/_matrix/identity/v2", "127.0.0.1").await;
    assert_eq!(status, 404);
}
