//! Homeserver signing keys: the `/_matrix/key/v2/server` document, checked
//! against its own signature.

use crate::keys::decode_unpadded;
use ruma_common::canonical_json::CanonicalJsonObject;
use ruma_common::serde::Base64;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyDocError {
    #[error("the key document is not a JSON object: {0}")]
    NotJson(String),
    #[error("the key document is for `{found}`, not `{expected}`")]
    WrongServer { expected: String, found: String },
    #[error("the key document lacks `{0}`")]
    Missing(&'static str),
    #[error("the key document's self-signature does not verify: {0}")]
    BadSignature(String),
    #[error("key `{0}` is not 32 bytes of unpadded base64")]
    BadKey(String),
}

/// A server's verify keys as its own signed document states them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerKeySet {
    pub server_name: String,
    /// Key id (`ed25519:…`) → raw public key.
    pub keys: BTreeMap<String, Vec<u8>>,
    /// Until when the document may be used (ms since the Unix epoch).
    pub valid_until_ts: i64,
}

/// Reads a `/_matrix/key/v2/server` answer for `server_name` and checks that
/// every key it lists signed it, as the spec asks.
pub fn verify_key_document(server_name: &str, body: &[u8]) -> Result<ServerKeySet, KeyDocError> {
    let doc: CanonicalJsonObject =
        serde_json::from_slice(body).map_err(|e| KeyDocError::NotJson(e.to_string()))?;
    let found = doc
        .get("server_name")
        .and_then(|v| v.as_str())
        .ok_or(KeyDocError::Missing("server_name"))?;
    if !found.eq_ignore_ascii_case(server_name) {
        return Err(KeyDocError::WrongServer {
            expected: server_name.to_owned(),
            found: found.to_owned(),
        });
    }
    let valid_until_ts = doc
        .get("valid_until_ts")
        .and_then(|v| v.as_integer())
        .map(i64::from)
        .ok_or(KeyDocError::Missing("valid_until_ts"))?;
    let verify_keys = doc
        .get("verify_keys")
        .and_then(|v| v.as_object())
        .ok_or(KeyDocError::Missing("verify_keys"))?;
    let mut keys = BTreeMap::new();
    let mut public_key_set = BTreeMap::new();
    for (key_id, entry) in verify_keys {
        let encoded = entry
            .as_object()
            .and_then(|o| o.get("key"))
            .and_then(|k| k.as_str())
            .ok_or(KeyDocError::Missing("verify_keys.*.key"))?;
        let raw = decode_unpadded(encoded)
            .filter(|k| k.len() == 32)
            .ok_or_else(|| KeyDocError::BadKey(key_id.clone()))?;
        public_key_set.insert(key_id.clone(), Base64::new(raw.clone()));
        keys.insert(key_id.clone(), raw);
    }
    if keys.is_empty() {
        return Err(KeyDocError::Missing("verify_keys.*"));
    }
    // Every listed key must have signed the document.
    let signatures = doc
        .get("signatures")
        .and_then(|v| v.as_object())
        .and_then(|s| s.get(found))
        .and_then(|v| v.as_object())
        .ok_or(KeyDocError::Missing("signatures"))?;
    for key_id in keys.keys() {
        if !signatures.contains_key(key_id) {
            return Err(KeyDocError::BadSignature(format!(
                "{key_id} did not sign it"
            )));
        }
    }
    let map = BTreeMap::from([(found.to_owned(), public_key_set)]);
    ruma_signatures::verify_json(&map, &doc)
        .map_err(|e| KeyDocError::BadSignature(e.to_string()))?;
    Ok(ServerKeySet {
        server_name: found.to_owned(),
        keys,
        valid_until_ts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SigningKey;

    fn synapse_document() -> Vec<u8> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/synapse/synapse_server_key.json"
        );
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        serde_json::to_vec(&fixture["body"]).unwrap()
    }

    #[test]
    fn synapse_key_document_verifies() {
        let set = verify_key_document("hs.test", &synapse_document()).unwrap();
        assert_eq!(set.valid_until_ts, 1_795_894_570_820);
        assert_eq!(set.keys.len(), 1);
        assert_eq!(set.keys["ed25519:a_iNuw"].len(), 32);
    }

    #[test]
    fn a_document_for_another_server_or_altered_is_refused() {
        assert!(matches!(
            verify_key_document("evil.test", &synapse_document()),
            Err(KeyDocError::WrongServer { .. })
        ));
        let altered = String::from_utf8(synapse_document())
            .unwrap()
            .replace("1795894570820", "1895894570820");
        assert!(matches!(
            verify_key_document("hs.test", altered.as_bytes()),
            Err(KeyDocError::BadSignature(_))
        ));
        assert!(matches!(
            verify_key_document("hs.test", b"[]"),
            Err(KeyDocError::NotJson(_))
        ));
    }

    #[test]
    fn a_key_listed_but_not_signing_is_refused() {
        // A document signed by one key that also lists a second, unsigned key.
        let key = SigningKey::from_seed("a_one", &[1u8; 32]).unwrap();
        let mut doc = key.server_keys_document("hs.test", 0).unwrap();
        doc.remove("signatures");
        let other = SigningKey::from_seed("a_two", &[2u8; 32]).unwrap();
        let mut entry = CanonicalJsonObject::new();
        entry.insert("key".to_owned(), other.public_key_base64().into());
        if let Some(ruma_common::canonical_json::CanonicalJsonValue::Object(keys)) =
            doc.get_mut("verify_keys")
        {
            keys.insert(other.key_id().to_owned(), entry.into());
        }
        key.sign_json("hs.test", &mut doc).unwrap();
        let body = serde_json::to_vec(&doc).unwrap();
        assert!(matches!(
            verify_key_document("hs.test", &body),
            Err(KeyDocError::BadSignature(_))
        ));
    }
}
