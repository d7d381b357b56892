//! A homeserver's key document (`GET /_matrix/key/v2/server`). The server
//! names any key it likes in it, so it must sign the document with every
//! key it lists: a document read back gives exactly the keys that signed
//! it, and one changed anywhere it is signed is refused.

use super::check;
use crate::homeserver_keys::server_keys::verify_key_document;
use crate::keys::{encode_unpadded, SigningKey};
use proptest::prelude::*;
use ruma_common::canonical_json::{CanonicalJsonObject, CanonicalJsonValue};
use serde_json::{json, Value};

fn server_name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,12}(\\.[a-z][a-z0-9-]{0,12}){0,2}(:[1-9][0-9]{0,3})?"
}

/// Keys with distinct versions, each from its own seed.
fn keys() -> impl Strategy<Value = Vec<SigningKey>> {
    proptest::collection::btree_map("[a-zA-Z0-9_]{1,8}", any::<[u8; 32]>(), 1..4).prop_map(|keys| {
        keys.into_iter()
            .map(|(version, seed)| SigningKey::from_seed(&version, &seed).unwrap())
            .collect()
    })
}

/// The document `server` serves, listing and signed by every key in `keys`.
fn document(server: &str, keys: &[SigningKey], valid_until_ts: i64) -> Value {
    let mut verify_keys = serde_json::Map::new();
    for key in keys {
        verify_keys.insert(
            key.key_id().to_owned(),
            json!({"key": key.public_key_base64()}),
        );
    }
    let unsigned = json!({
        "server_name": server,
        "verify_keys": verify_keys,
        "old_verify_keys": {},
        "valid_until_ts": valid_until_ts,
    });
    let mut object: CanonicalJsonObject = serde_json::from_value(unsigned).unwrap();
    for key in keys {
        key.sign_json(server, &mut object).unwrap();
    }
    serde_json::to_value(CanonicalJsonValue::Object(object)).unwrap()
}

#[test]
fn a_document_reads_back_as_the_keys_that_signed_it() {
    let strategy = (server_name(), keys(), 0..i64::from(i32::MAX) * 1000);
    check(strategy, |(server, keys, valid_until_ts)| {
        let doc = document(&server, &keys, valid_until_ts);
        let read = verify_key_document(&server.to_uppercase(), &serde_json::to_vec(&doc).unwrap());
        prop_assert!(read.is_ok(), "{read:?}");
        let read = read.unwrap();
        prop_assert_eq!(&read.server_name, &server);
        prop_assert_eq!(read.valid_until_ts, valid_until_ts);
        let listed: Vec<(String, String)> = read
            .keys
            .iter()
            .map(|(id, raw)| (id.clone(), encode_unpadded(raw)))
            .collect();
        let mut signed: Vec<(String, String)> = keys
            .iter()
            .map(|k| (k.key_id().to_owned(), k.public_key_base64()))
            .collect();
        signed.sort();
        prop_assert_eq!(listed, signed);
        Ok(())
    });
}

/// One change to a signed document.
#[derive(Debug, Clone)]
enum Change {
    /// Served for another server than the one asked.
    ServerName(String),
    /// Valid for longer (or shorter).
    ValidUntil(i64),
    /// A listed key swapped for another.
    SwapKey([u8; 32]),
    /// A key listed that did not sign.
    ExtraKey([u8; 32]),
    /// A field added to the signed part.
    ExtraField(String, String),
    /// A bit of a signature flipped.
    FlipSignature(prop::sample::Index, u8),
    /// A field left out.
    Drop(&'static str),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        server_name().prop_map(Change::ServerName),
        (1..i64::from(u32::MAX)).prop_map(Change::ValidUntil),
        any::<[u8; 32]>().prop_map(Change::SwapKey),
        any::<[u8; 32]>().prop_map(Change::ExtraKey),
        ("[a-z_]{1,12}", any::<String>()).prop_map(|(k, v)| Change::ExtraField(k, v)),
        (any::<prop::sample::Index>(), 0..8u8).prop_map(|(at, bit)| Change::FlipSignature(at, bit)),
        prop::sample::select(vec![
            "server_name",
            "verify_keys",
            "valid_until_ts",
            "signatures"
        ])
        .prop_map(Change::Drop),
    ]
}

#[test]
fn a_document_changed_where_it_is_signed_is_refused() {
    let strategy = (
        server_name(),
        keys(),
        0..i64::from(i32::MAX) * 1000,
        change(),
    );
    check(strategy, |(server, keys, valid_until_ts, change)| {
        let mut doc = document(&server, &keys, valid_until_ts);
        let first = keys[0].key_id().to_owned();
        match &change {
            Change::ServerName(other) => {
                prop_assume!(!other.eq_ignore_ascii_case(&server));
                doc["server_name"] = json!(other);
            }
            Change::ValidUntil(delta) => {
                doc["valid_until_ts"] = json!(valid_until_ts + delta);
            }
            Change::SwapKey(seed) => {
                let other = SigningKey::from_seed("x", seed).unwrap();
                prop_assume!(other.public_key_base64() != keys[0].public_key_base64());
                doc["verify_keys"][&first] = json!({"key": other.public_key_base64()});
            }
            Change::ExtraKey(seed) => {
                let other = SigningKey::from_seed("x", seed).unwrap();
                doc["verify_keys"]["ed25519:unsigned_extra"] =
                    json!({"key": other.public_key_base64()});
            }
            Change::ExtraField(name, value) => {
                // `signatures` and `unsigned` are outside what is signed.
                prop_assume!(doc.get(name).is_none() && name != "unsigned");
                doc[name] = json!(value);
            }
            Change::FlipSignature(at, bit) => {
                let sig = doc["signatures"][&server][&first].as_str().unwrap();
                let mut raw = crate::keys::decode_unpadded(sig).unwrap();
                let at = at.index(raw.len());
                raw[at] ^= 1 << bit;
                doc["signatures"][&server][&first] = json!(encode_unpadded(&raw));
            }
            Change::Drop(field) => {
                doc.as_object_mut().unwrap().remove(*field);
            }
        }
        let read = verify_key_document(&server, &serde_json::to_vec(&doc).unwrap());
        prop_assert!(read.is_err(), "{change:?} was accepted: {read:?}");
        Ok(())
    });
}

#[test]
fn any_bytes_from_a_key_server_are_refused_without_a_panic() {
    let bytes = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        any::<String>().prop_map(String::into_bytes),
        proptest::collection::btree_map("[a-z_]{1,14}", any::<String>(), 0..5)
            .prop_map(|map| serde_json::to_vec(&map).unwrap()),
    ];
    check((server_name(), bytes), |(server, bytes)| {
        prop_assert!(verify_key_document(&server, &bytes).is_err());
        Ok(())
    });
}
