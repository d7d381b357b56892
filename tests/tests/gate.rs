//! The gate against a hostile homeserver, end to end: a catalogue of crafted,
//! validly signed unbinds sent to Assent in front of a real sydent 2.6.1.
//!
//! Every case ends in one of three ways: held, with the email going to the
//! address sydent would act on (its `str.casefold()`); answered as sydent
//! answers an unbind of nothing (200 `{}`), with nothing stored; or a
//! Matrix error, with nothing stored. In every case the binding is still
//! there at sydent afterwards. Then each request is sent to sydent itself,
//! which shows the catalogue's claim about it: what Assent held or refused
//! as an unbind, sydent would have carried out; what Assent answered as an
//! unbind of nothing, sydent leaves alone too.

use assent_e2e::homeserver::Homeserver;
use assent_e2e::key_server::KeyServer;
use assent_e2e::sydent::Sydent;
use assent_e2e::{Assent, Options};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

const IS_NAME: &str = "is.test";
const V2: &str = "/_matrix/identity/v2/3pid/unbind";
const V1: &str = "/_matrix/identity/api/v1/3pid/unbind";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    /// 202 `{}`: one request stored, its email to this (folded) address.
    Hold(&'static str),
    /// 200 `{}`, as sydent answers an unbind of nothing: nothing stored.
    Nothing,
    /// A refusal with this status (and Matrix error code): nothing stored.
    Error(u16, Option<&'static str>),
}

/// What sydent does with the same request sent to it directly.
#[derive(Debug, Clone, Copy, PartialEq)]
enum AtSydent {
    /// It removes the binding: Assent had to stop this one.
    Unbinds,
    /// It leaves the binding alone.
    Keeps,
    /// Not tried (the request never was a valid unbind for it either).
    NotTried,
}

struct Case {
    name: &'static str,
    /// The binding the case aims at: (localpart, address as sydent stores it).
    target: (&'static str, &'static str),
    path: String,
    body: Vec<u8>,
    authorization: Option<String>,
    expect: Outcome,
    at_sydent: AtSydent,
}

fn body(mxid: &str, address: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"mxid": mxid, "threepid": {"address": address, "medium": "email"}}))
        .unwrap()
}

/// One POST with the path exactly as given (an HTTP client library would
/// resolve dot segments first), over HTTP/1.0 so that the answer is not
/// chunked.
async fn send(base: &str, path: &str, authorization: Option<&str>, body: &[u8]) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let mut head = format!(
        "POST {path} HTTP/1.0\r\nHost: {IS_NAME}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(authorization) = authorization {
        head.push_str(&format!("Authorization: {authorization}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(body).await.expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete answer");
    let status_line = String::from_utf8_lossy(&answer[..split]);
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status code");
    (
        status,
        serde_json::from_slice(&answer[split + 4..]).unwrap_or(Value::Null),
    )
}

/// The email the worker wrote to `address`, waiting for it.
async fn mail_to(mail_dir: &Path, address: &str) -> String {
    let started = Instant::now();
    loop {
        let found = std::fs::read_dir(mail_dir).ok().and_then(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                // Quoted-printable soft line breaks joined again.
                .map(|text| text.replace("=\r\n", ""))
                .find(|text| {
                    text.lines()
                        .any(|l| l.strip_prefix("To: ").is_some_and(|to| to == address))
                })
        });
        if let Some(text) = found {
            return text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no email to {address} in {}",
            mail_dir.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn mail_files(mail_dir: &Path) -> usize {
    std::fs::read_dir(mail_dir).map_or(0, |e| e.count())
}

#[tokio::test]
async fn no_crafted_unbind_gets_past_the_gate_and_sydent_agrees() {
    let sydent = Sydent::start(IS_NAME).await;
    // Named by its key server's address, so sydent can check its signatures.
    let listener = KeyServer::reserve().await;
    let hs = Homeserver::new(&listener.local_addr().unwrap().to_string(), 21);
    let _keys = KeyServer::start(listener, &hs);
    // Assent has the key pinned; sydent fetches it from the key server.
    let config = format!(
        "{}\n[[identity_servers]]\nname = \"{IS_NAME}\"\ndisplay_name = \"Test identity server\"\n\
         operator = \"Tests\"\nupstream = \"{}\"\nbinding_check = \"v1_lookup\"\nproxy_all = true\n\
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

    let signed = |path: &str, body: &[u8]| Some(hs.authorization("POST", path, IS_NAME, body));
    let mut cases: Vec<Case> = Vec::new();
    let mut hold = |name: &'static str,
                    target: (&'static str, &'static str),
                    sent: &str,
                    folded: &'static str| {
        let b = body(&hs.mxid(target.0), sent);
        cases.push(Case {
            name,
            target,
            path: V2.to_owned(),
            authorization: signed(V2, &b),
            body: b,
            expect: Outcome::Hold(folded),
            at_sydent: AtSydent::Unbinds,
        });
    };
    // Characters that fold differently under casefold() and lower(), or
    // that SQLite's ASCII-only lower() leaves alone: each held, mailed to
    // the folded address, the one sydent's unbind would remove.
    hold(
        "long s for s",
        ("bob", "bob.smith@example.org"),
        "bob.\u{17F}mith@example.org",
        "bob.smith@example.org",
    );
    hold(
        "long s, upper case around it",
        ("bob2", "bob2.smith@example.org"),
        "BOB2.\u{17F}MITH@EXAMPLE.ORG",
        "bob2.smith@example.org",
    );
    hold(
        "sharp s for ss",
        ("ss1", "strasse1@example.org"),
        "stra\u{DF}e1@example.org",
        "strasse1@example.org",
    );
    hold(
        "capital sharp s for SS",
        ("ss2", "strasse2@example.org"),
        "STRA\u{1E9E}E2@example.org",
        "strasse2@example.org",
    );
    hold(
        "fi ligature",
        ("finn", "finn@example.org"),
        "\u{FB01}nn@example.org",
        "finn@example.org",
    );
    hold(
        "ff ligature",
        ("effi", "effi@example.org"),
        "e\u{FB00}i@example.org",
        "effi@example.org",
    );
    hold(
        "st ligature",
        ("stella", "stella@example.org"),
        "\u{FB06}ella@example.org",
        "stella@example.org",
    );
    hold(
        "long s t ligature",
        ("stan", "stan@example.org"),
        "\u{FB05}an@example.org",
        "stan@example.org",
    );
    hold(
        "Kelvin sign for K",
        ("kim", "kim@example.org"),
        "\u{212A}im@example.org",
        "kim@example.org",
    );
    hold(
        "Kelvin sign in the domain",
        ("kai", "kai@key.example"),
        "kai@\u{212A}ey.example",
        "kai@key.example",
    );
    hold(
        "Angstrom sign",
        ("asa", "\u{E5}sa@example.org"),
        "\u{212B}sa@example.org",
        "\u{E5}sa@example.org",
    );
    hold(
        "capital final sigma word",
        ("sofos1", "\u{3C3}\u{3BF}\u{3C6}\u{3BF}\u{3C3}1@example.org"),
        "\u{3A3}\u{39F}\u{3A6}\u{39F}\u{3A3}1@example.org",
        "\u{3C3}\u{3BF}\u{3C6}\u{3BF}\u{3C3}1@example.org",
    );
    hold(
        "final sigma",
        ("sofos2", "\u{3C3}\u{3BF}\u{3C6}\u{3BF}\u{3C3}2@example.org"),
        "\u{3C3}\u{3BF}\u{3C6}\u{3BF}\u{3C2}2@example.org",
        "\u{3C3}\u{3BF}\u{3C6}\u{3BF}\u{3C3}2@example.org",
    );
    hold(
        "dotted capital I",
        ("inci", "i\u{307}nci@example.org"),
        "\u{130}nci@example.org",
        "i\u{307}nci@example.org",
    );
    hold(
        "full-width capitals",
        ("fw", "\u{FF42}\u{FF4F}\u{FF42}@example.org"),
        "\u{FF22}\u{FF2F}\u{FF22}@example.org",
        "\u{FF42}\u{FF4F}\u{FF42}@example.org",
    );
    hold(
        "micro sign for mu",
        ("marta", "\u{3BC}arta@example.org"),
        "\u{B5}arta@example.org",
        "\u{3BC}arta@example.org",
    );
    hold(
        "Cherokee small letters",
        ("tsalagi", "\u{13E3}\u{13B3}\u{13A9}@example.org"),
        "\u{ABB3}\u{AB83}\u{AB79}@example.org",
        "\u{13E3}\u{13B3}\u{13A9}@example.org",
    );
    hold(
        "iota with dialytika and tonos",
        ("iota", "\u{3B9}\u{308}\u{301}x@example.org"),
        "\u{390}x@example.org",
        "\u{3B9}\u{308}\u{301}x@example.org",
    );
    hold(
        "n preceded by apostrophe",
        ("napo", "\u{2BC}nn@example.org"),
        "\u{149}n@example.org",
        "\u{2BC}nn@example.org",
    );
    hold(
        "Armenian ech yiwn ligature",
        ("ech", "\u{565}\u{582}a@example.org"),
        "\u{587}a@example.org",
        "\u{565}\u{582}a@example.org",
    );
    hold(
        "Greek capital with prosgegrammeni",
        ("aei", "\u{3B1}\u{3B9}ei@example.org"),
        "\u{1FBC}ei@example.org",
        "\u{3B1}\u{3B9}ei@example.org",
    );
    hold(
        "Georgian Mtavruli",
        ("geo", "\u{10D0}\u{10D1}@example.org"),
        "\u{1C90}\u{1C91}@example.org",
        "\u{10D0}\u{10D1}@example.org",
    );
    hold(
        "plain ASCII case",
        ("carl", "carl@example.org"),
        "Carl@Example.ORG",
        "carl@example.org",
    );
    hold(
        "plain, as bound",
        ("dora", "dora@example.org"),
        "dora@example.org",
        "dora@example.org",
    );

    let mut add = |case: Case| cases.push(case);
    // An escaped long s in the JSON text is the same character.
    let escaped = format!(
        r#"{{"mxid":"{}","threepid":{{"address":"eve.\u017fmith@example.org","medium":"email"}}}}"#,
        hs.mxid("eve")
    )
    .into_bytes();
    add(Case {
        name: "long s written as a JSON escape",
        target: ("eve", "eve.smith@example.org"),
        path: V2.to_owned(),
        authorization: signed(V2, &escaped),
        body: escaped,
        expect: Outcome::Hold("eve.smith@example.org"),
        at_sydent: AtSydent::Unbinds,
    });
    // Extra fields are signed over and ignored by sydent: held.
    let extra = serde_json::to_vec(&json!({"mxid": hs.mxid("flo"), "threepid": {"address": "Flo@example.org", "medium": "email", "x": 1}, "reason": 7})).unwrap();
    add(Case {
        name: "extra fields",
        target: ("flo", "flo@example.org"),
        path: V2.to_owned(),
        authorization: signed(V2, &extra),
        body: extra,
        expect: Outcome::Hold("flo@example.org"),
        at_sydent: AtSydent::Unbinds,
    });
    // A query string is part of what is signed; the route is the same.
    let b = body(&hs.mxid("gus"), "gus@example.org");
    let with_query = format!("{V2}?via=x");
    add(Case {
        name: "query string",
        target: ("gus", "gus@example.org"),
        authorization: signed(&with_query, &b),
        path: with_query,
        body: b,
        expect: Outcome::Hold("gus@example.org"),
        at_sydent: AtSydent::Unbinds,
    });
    let b = body(&hs.mxid("hal"), "Hal@example.org");
    add(Case {
        name: "the legacy v1 route",
        target: ("hal", "hal@example.org"),
        path: V1.to_owned(),
        authorization: signed(V1, &b),
        body: b,
        expect: Outcome::Hold("hal@example.org"),
        at_sydent: AtSydent::Unbinds,
    });

    // Not bound as sent, at sydent too: answered as an unbind of nothing.
    let mut nothing =
        |name: &'static str, target: (&'static str, &'static str), mxid: String, sent: &str| {
            let b = body(&mxid, sent);
            cases.push(Case {
                name,
                target,
                path: V2.to_owned(),
                authorization: signed(V2, &b),
                body: b,
                expect: Outcome::Nothing,
                at_sydent: AtSydent::Keeps,
            });
        };
    let rene = ("rene", "ren\u{E9}@example.org");
    nothing(
        "NFD where NFC is bound",
        rene,
        hs.mxid("rene"),
        "rene\u{301}@example.org",
    );
    let rena = ("rena", "rena\u{301}@example.org");
    nothing(
        "NFC where NFD is bound",
        rena,
        hs.mxid("rena"),
        "ren\u{E1}@example.org",
    );
    let ilse = ("ilse", "ilse@example.org");
    nothing(
        "dotless i for i",
        ilse,
        hs.mxid("ilse"),
        "\u{131}lse@example.org",
    );
    nothing(
        "dotted I for I (folds to i and a dot)",
        ilse,
        hs.mxid("ilse"),
        "\u{130}lse@example.org",
    );
    let bob = ("bob", "bob.smith@example.org");
    nothing(
        "full-width small letters for ASCII",
        bob,
        hs.mxid("bob"),
        "\u{FF42}ob.smith@example.org",
    );
    nothing(
        "Cyrillic o for o",
        bob,
        hs.mxid("bob"),
        "b\u{43E}b.smith@example.org",
    );
    nothing(
        "mathematical bold b",
        bob,
        hs.mxid("bob"),
        "\u{1D41B}ob.smith@example.org",
    );
    nothing(
        "zero-width joiner inside",
        bob,
        hs.mxid("bob"),
        "bo\u{200D}b.smith@example.org",
    );
    nothing(
        "soft hyphen inside",
        bob,
        hs.mxid("bob"),
        "bob.sm\u{AD}ith@example.org",
    );
    nothing(
        "ligature that folds to other letters",
        bob,
        hs.mxid("bob"),
        "bob.\u{FB06}ith@example.org",
    );
    nothing(
        "another Matrix ID on the same server",
        bob,
        hs.mxid("mallory"),
        "bob.smith@example.org",
    );
    nothing(
        "the Matrix ID in other letter case",
        bob,
        hs.mxid("BOB"),
        "bob.smith@example.org",
    );
    nothing(
        "an address bound to no one",
        bob,
        hs.mxid("bob"),
        "nobody@example.org",
    );
    nothing(
        "two sharp s where one ss is bound",
        ("ss1", "strasse1@example.org"),
        hs.mxid("ss1"),
        "stra\u{DF}\u{DF}e1@example.org",
    );

    // Refused outright: nothing stored, nothing forwarded.
    let mut refused = |name: &'static str,
                       path: &str,
                       body: Vec<u8>,
                       authorization: Option<String>,
                       status: u16,
                       errcode: Option<&'static str>,
                       at_sydent: AtSydent| {
        cases.push(Case {
            name,
            target: ("bob", "bob.smith@example.org"),
            path: path.to_owned(),
            body,
            authorization,
            expect: Outcome::Error(status, errcode),
            at_sydent,
        });
    };
    let bob_mxid = hs.mxid("bob");
    let raw = |text: String| text.into_bytes();
    let good = body(&bob_mxid, "bob.smith@example.org");
    let good_auth = signed(V2, &good);
    for (name, text, errcode) in [
        (
            "mxid given twice",
            format!(
                r#"{{"mxid":"{bob_mxid}","mxid":"{}","threepid":{{"address":"bob.smith@example.org","medium":"email"}}}}"#,
                hs.mxid("x")
            ),
            "M_NOT_JSON",
        ),
        (
            "address given twice",
            format!(
                r#"{{"mxid":"{bob_mxid}","threepid":{{"address":"x@example.org","address":"bob.smith@example.org","medium":"email"}}}}"#
            ),
            "M_NOT_JSON",
        ),
        (
            "medium given twice",
            format!(
                r#"{{"mxid":"{bob_mxid}","threepid":{{"address":"bob.smith@example.org","medium":"msisdn","medium":"email"}}}}"#
            ),
            "M_NOT_JSON",
        ),
        (
            "threepid given twice",
            format!(
                r#"{{"mxid":"{bob_mxid}","threepid":{{}},"threepid":{{"address":"bob.smith@example.org","medium":"email"}}}}"#
            ),
            "M_NOT_JSON",
        ),
        (
            "a number for the address",
            format!(r#"{{"mxid":"{bob_mxid}","threepid":{{"address":5,"medium":"email"}}}}"#),
            "M_BAD_JSON",
        ),
        (
            "a number for the mxid",
            r#"{"mxid":5,"threepid":{"address":"bob.smith@example.org","medium":"email"}}"#
                .to_owned(),
            "M_BAD_JSON",
        ),
        (
            "a number for the medium",
            format!(
                r#"{{"mxid":"{bob_mxid}","threepid":{{"address":"bob.smith@example.org","medium":1}}}}"#
            ),
            "M_BAD_JSON",
        ),
        (
            "an array for the threepid",
            format!(r#"{{"mxid":"{bob_mxid}","threepid":["bob.smith@example.org","email"]}}"#),
            "M_BAD_JSON",
        ),
        (
            "a string for the threepid",
            format!(r#"{{"mxid":"{bob_mxid}","threepid":"bob.smith@example.org"}}"#),
            "M_BAD_JSON",
        ),
        (
            "null sid and client_secret",
            format!(
                r#"{{"mxid":"{bob_mxid}","threepid":{{"address":"bob.smith@example.org","medium":"email"}},"sid":null,"client_secret":null}}"#
            ),
            "M_BAD_JSON",
        ),
        (
            "a number for the sid",
            format!(
                r#"{{"mxid":"{bob_mxid}","threepid":{{"address":"bob.smith@example.org","medium":"email"}},"sid":1,"client_secret":"x"}}"#
            ),
            "M_BAD_JSON",
        ),
        (
            "medium in upper case",
            format!(
                r#"{{"mxid":"{bob_mxid}","threepid":{{"address":"bob.smith@example.org","medium":"EMAIL"}}}}"#
            ),
            "M_INVALID_PARAM",
        ),
        (
            "an unknown medium",
            format!(
                r#"{{"mxid":"{bob_mxid}","threepid":{{"address":"bob.smith@example.org","medium":"fax"}}}}"#
            ),
            "M_INVALID_PARAM",
        ),
        (
            "no threepid",
            format!(r#"{{"mxid":"{bob_mxid}"}}"#),
            "M_MISSING_PARAMS",
        ),
        (
            "no address",
            format!(r#"{{"mxid":"{bob_mxid}","threepid":{{"medium":"email"}}}}"#),
            "M_MISSING_PARAMS",
        ),
        ("a JSON array", "[]".to_owned(), "M_BAD_JSON"),
        (
            "a letter cased only since Unicode 13",
            format!(
                r#"{{"mxid":"{bob_mxid}","threepid":{{"address":"bob.smith\ua7c9@example.org","medium":"email"}}}}"#
            ),
            "M_INVALID_PARAM",
        ),
        (
            "a tab in the address",
            format!(
                r#"{{"mxid":"{bob_mxid}","threepid":{{"address":"bob.smith@example.org\t","medium":"email"}}}}"#
            ),
            "M_INVALID_PARAM",
        ),
        (
            "two at signs",
            format!(
                r#"{{"mxid":"{bob_mxid}","threepid":{{"address":"bob.smith@example.org@x","medium":"email"}}}}"#
            ),
            "M_INVALID_PARAM",
        ),
    ] {
        let bytes = raw(text);
        // Signed over what a JSON parser reads of it, where it reads.
        let authorization = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .map(|_| hs.authorization("POST", V2, IS_NAME, &bytes));
        refused(
            name,
            V2,
            bytes,
            authorization.or_else(|| good_auth.clone()),
            400,
            Some(errcode),
            AtSydent::NotTried,
        );
    }
    for (name, bytes) in [
        ("not JSON", b"mxid=@bob".to_vec()),
        (
            "a byte-order mark first",
            [&b"\xEF\xBB\xBF"[..], &good].concat(),
        ),
        (
            "invalid UTF-8",
            [&good[..good.len() - 3], &b"\xFF\"}}"[..]].concat(),
        ),
        (
            "a lone surrogate escape",
            raw(format!(
                r#"{{"mxid":"{bob_mxid}","threepid":{{"address":"bob\ud800@example.org","medium":"email"}}}}"#
            )),
        ),
        (
            "NaN for a value",
            raw(format!(
                r#"{{"mxid":"{bob_mxid}","threepid":{{"address":"bob.smith@example.org","medium":"email"}},"x":NaN}}"#
            )),
        ),
        ("trailing data", [&good[..], &b"{}"[..]].concat()),
    ] {
        refused(
            name,
            V2,
            bytes,
            good_auth.clone(),
            400,
            Some("M_NOT_JSON"),
            AtSydent::NotTried,
        );
    }
    // Signatures that must not pass.
    let wrong_is = Some(hs.authorization("POST", V2, "other.is.test", &good));
    refused(
        "signed for another identity server",
        V2,
        good.clone(),
        wrong_is,
        401,
        Some("M_UNAUTHORIZED"),
        AtSydent::Keeps,
    );
    let other_key = Homeserver::new(&hs.name, 99);
    refused(
        "signed by another key under the same id",
        V2,
        good.clone(),
        Some(other_key.authorization("POST", V2, IS_NAME, &good)),
        401,
        Some("M_UNAUTHORIZED"),
        AtSydent::Keeps,
    );
    let unknown_id = Homeserver::with_key_version(&hs.name, 21, "unknown");
    refused(
        "a key id the server never published",
        V2,
        good.clone(),
        Some(unknown_id.authorization("POST", V2, IS_NAME, &good)),
        401,
        Some("M_UNAUTHORIZED"),
        AtSydent::Keeps,
    );
    refused(
        "signed for v2, sent to v1",
        V1,
        good.clone(),
        good_auth.clone(),
        401,
        Some("M_UNAUTHORIZED"),
        AtSydent::Keeps,
    );
    let tampered = body(&bob_mxid, "bob.smith@example.net");
    refused(
        "body changed after signing",
        V2,
        tampered,
        good_auth.clone(),
        401,
        Some("M_UNAUTHORIZED"),
        AtSydent::Keeps,
    );
    let reordered = raw(format!(
        r#"{{"threepid":{{"medium":"email","address":"bob.smith@example.org"}},"mxid":"{}"}}"#,
        hs.mxid("mallory")
    ));
    refused(
        "another mxid under the same signature",
        V2,
        reordered,
        good_auth.clone(),
        401,
        Some("M_UNAUTHORIZED"),
        AtSydent::Keeps,
    );
    let foreign = body("@bob:elsewhere.example", "bob.smith@example.org");
    refused(
        "a Matrix ID on another server",
        V2,
        foreign.clone(),
        signed(V2, &foreign),
        403,
        Some("M_FORBIDDEN"),
        AtSydent::Keeps,
    );
    refused(
        "no signature at all",
        V2,
        good.clone(),
        None,
        401,
        Some("M_UNAUTHORIZED"),
        AtSydent::Keeps,
    );
    let bad_header = Some("X-Matrix origin=\"x\",key=\"ed25519:1\"".to_owned());
    refused(
        "a signature header without sig",
        V2,
        good.clone(),
        bad_header,
        401,
        Some("M_UNAUTHORIZED"),
        AtSydent::Keeps,
    );

    // Paths that sydent routes to its unbind, or another server might:
    // never passed through; each signed over the path as sent.
    for (name, target, path, at_sydent) in [
        (
            "percent-encoded 3pid",
            ("pia", "pia@example.org"),
            "/_matrix/identity/v2/%33pid/unbind",
            AtSydent::Unbinds,
        ),
        (
            "percent-encoded unbind",
            ("quinn", "quinn@example.org"),
            "/_matrix/identity/v2/3pid/%75nbind",
            AtSydent::Unbinds,
        ),
        (
            "percent-encoded underscore",
            ("ray", "ray@example.org"),
            "/%5Fmatrix/identity/v2/3pid/unbind",
            AtSydent::Unbinds,
        ),
        (
            "percent-encoded v1",
            ("sue", "sue@example.org"),
            "/_matrix/identity/api/v%31/3pid/unbind",
            AtSydent::Unbinds,
        ),
        (
            "lower-case percent escape",
            ("tom", "tom@example.org"),
            "/_matrix/identity/v2/3pid/unbin%64",
            AtSydent::Unbinds,
        ),
        (
            "trailing slash",
            ("bob", "bob.smith@example.org"),
            "/_matrix/identity/v2/3pid/unbind/",
            AtSydent::Keeps,
        ),
        (
            "double slash",
            ("bob", "bob.smith@example.org"),
            "/_matrix//identity/v2/3pid/unbind",
            AtSydent::Keeps,
        ),
        (
            "dot segment",
            ("bob", "bob.smith@example.org"),
            "/_matrix/identity/v2/./3pid/unbind",
            AtSydent::Keeps,
        ),
        (
            "dot-dot segment",
            ("bob", "bob.smith@example.org"),
            "/_matrix/identity/v2/x/../3pid/unbind",
            AtSydent::Keeps,
        ),
        (
            "encoded slash",
            ("bob", "bob.smith@example.org"),
            "/_matrix/identity/v2/3pid%2Funbind",
            AtSydent::Keeps,
        ),
        (
            "upper case",
            ("bob", "bob.smith@example.org"),
            "/_matrix/identity/v2/3PID/unbind",
            AtSydent::Keeps,
        ),
        (
            "path parameter",
            ("bob", "bob.smith@example.org"),
            "/_matrix/identity/v2/3pid/unbind;x=1",
            AtSydent::Keeps,
        ),
    ] {
        let b = body(&hs.mxid(target.0), target.1);
        cases.push(Case {
            name,
            target,
            path: path.to_owned(),
            authorization: signed(path, &b),
            body: b,
            expect: Outcome::Error(404, Some("M_UNRECOGNIZED")),
            at_sydent,
        });
    }
    assert!(cases.len() >= 60, "{} cases", cases.len());

    // Every target bound at sydent first.
    let mut bound = std::collections::BTreeSet::new();
    for case in &cases {
        if bound.insert(case.target) {
            sydent.bind(case.target.1, &hs.mxid(case.target.0)).await;
        }
    }
    for (local, address) in &bound {
        assert_eq!(
            sydent.lookup(address).await,
            Some(hs.mxid(local)),
            "bound {address}"
        );
    }

    for case in &cases {
        let requests = assent.count("requests").await;
        let mails = mail_files(&mail);
        let (status, answer) = send(
            &assent.base,
            &case.path,
            case.authorization.as_deref(),
            &case.body,
        )
        .await;
        let name = case.name;
        match case.expect {
            Outcome::Hold(folded) => {
                assert_eq!((status, &answer), (202, &json!({})), "{name}: {answer}");
                assert_eq!(assent.count("requests").await, requests + 1, "{name}");
                let text = mail_to(&mail, folded).await;
                let sent: String = serde_json::from_slice::<Value>(&case.body).unwrap()["threepid"]
                    ["address"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                let look_alike = sent.to_ascii_lowercase() != folded;
                let stored = assent
                    .count(&format!(
                        "requests WHERE address = '{folded}' AND {}",
                        if look_alike {
                            format!("address_as_sent = '{sent}'")
                        } else {
                            "address_as_sent IS NULL".to_owned()
                        }
                    ))
                    .await;
                assert_eq!(
                    stored, 1,
                    "{name}: stored folded, with the spelling as sent when it differs"
                );
                assert_eq!(
                    text.contains("look-alike"),
                    look_alike,
                    "{name}: the email says so exactly when the spelling differs"
                );
            }
            Outcome::Nothing => {
                assert_eq!((status, &answer), (200, &json!({})), "{name}: {answer}");
                assert_eq!(assent.count("requests").await, requests, "{name}");
            }
            Outcome::Error(want, errcode) => {
                assert_eq!(status, want, "{name}: {answer}");
                if let Some(errcode) = errcode {
                    assert_eq!(answer["errcode"], errcode, "{name}: {answer}");
                }
                assert_eq!(assent.count("requests").await, requests, "{name}");
            }
        }
        if !matches!(case.expect, Outcome::Hold(_)) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(mail_files(&mail), mails, "{name}: no email");
        }
        assert_eq!(
            sydent.lookup(case.target.1).await,
            Some(hs.mxid(case.target.0)),
            "{name}: the binding is still there at sydent"
        );
    }
    // Nothing reached sydent's unbind: every binding is still there.
    for (local, address) in &bound {
        assert_eq!(
            sydent.lookup(address).await,
            Some(hs.mxid(local)),
            "{address}"
        );
    }

    // What sydent itself does with each request: first those it keeps.
    let mut order: Vec<&Case> = cases
        .iter()
        .filter(|c| c.at_sydent == AtSydent::Keeps)
        .collect();
    order.extend(cases.iter().filter(|c| c.at_sydent == AtSydent::Unbinds));
    for case in order {
        let (status, answer) = send(
            &sydent.base,
            &case.path,
            case.authorization.as_deref(),
            &case.body,
        )
        .await;
        let now = sydent.lookup(case.target.1).await;
        match case.at_sydent {
            AtSydent::Unbinds => assert_eq!(
                now,
                None,
                "{}: sydent answered {status} {answer} and kept the binding:\n{}",
                case.name,
                sydent.log()
            ),
            AtSydent::Keeps => assert_eq!(
                now,
                Some(hs.mxid(case.target.0)),
                "{}: sydent answered {status} {answer} and unbound",
                case.name
            ),
            AtSydent::NotTried => {}
        }
    }
}

/// Repeats: whatever their bytes, a repeat of a pending request joins it and
/// is counted, and a repeat of a decided one is answered from the decision
/// (a denial for `deny_cooldown`): no new request, no new email.
#[tokio::test]
async fn repeats_in_any_spelling_are_answered_from_the_request_or_its_decision() {
    let sydent = Sydent::start(IS_NAME).await;
    let hs = Homeserver::new("hs.test", 23);
    let config = format!(
        "{}\n[[identity_servers]]\nname = \"{IS_NAME}\"\ndisplay_name = \"Test identity server\"\n\
         operator = \"Tests\"\nupstream = \"{}\"\nbinding_check = \"v1_lookup\"\n",
        hs.pinned_toml(),
        sydent.base
    );
    let assent = Assent::start(Options {
        config: Some(config),
        ..Options::default()
    })
    .await;
    let mail = assent.data_dir.join("mail");
    sydent.bind("una@example.org", &hs.mxid("una")).await;
    let spellings = [
        body(&hs.mxid("una"), "una@example.org"),
        body(&hs.mxid("una"), "UNA@example.org"),
        format!(r#"{{"threepid":{{"medium":"email","address":"una@example.org"}},"mxid":"{}"}}"#, hs.mxid("una")).into_bytes(),
        format!(r#"{{ "mxid" : "{}", "threepid" : {{ "address" : "una@example.org", "medium" : "email" }} }}"#, hs.mxid("una")).into_bytes(),
        body(&hs.mxid("una"), "una@EXAMPLE.org"),
    ];
    for (i, b) in spellings.iter().enumerate() {
        let authorization = hs.authorization("POST", V2, IS_NAME, b);
        let (status, _) = send(&assent.base, V2, Some(&authorization), b).await;
        assert_eq!(status, 202, "spelling {i}");
    }
    assert_eq!(assent.count("requests").await, 1);
    assert_eq!(
        assent.count("requests WHERE repeats = 4").await,
        1,
        "four repeats counted"
    );
    assert_eq!(
        assent
            .count("audit_events WHERE kind NOT LIKE 'email%'")
            .await,
        1,
        "repeats add no audit event each"
    );
    let text = mail_to(&mail, "una@example.org").await;
    let at = text.find("/consent/").unwrap() + "/consent/".len();
    let token: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    let denied = reqwest::Client::new()
        .post(assent.url(&format!("/_assent/v1/consent/{token}/decision")))
        .json(&json!({"decision": "deny"}))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 200);
    // After the denial, every spelling is answered from it.
    for (i, b) in spellings.iter().enumerate() {
        let authorization = hs.authorization("POST", V2, IS_NAME, b);
        let (status, answer) = send(&assent.base, V2, Some(&authorization), b).await;
        assert_eq!(
            (status, answer),
            (202, json!({})),
            "spelling {i} after the denial"
        );
    }
    assert_eq!(assent.count("requests").await, 1, "no new request");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mail_files(&mail), 1, "no new email");
    // The raw intake (with its replayable Authorization) is gone once the
    // request ended with nothing to relay.
    assert_eq!(
        assent
            .count("requests WHERE raw_body IS NULL AND raw_headers IS NULL")
            .await,
        1
    );
    assert_eq!(sydent.lookup("una@example.org").await, Some(hs.mxid("una")));
}
