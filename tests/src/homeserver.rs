//! A homeserver's side of an unbind: an ed25519 key, and requests signed the
//! way Synapse signs them (`destination_is`, raw path and query).

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use ruma_signatures::{Ed25519KeyPair, KeyPair};

pub struct Homeserver {
    pub name: String,
    key: Ed25519KeyPair,
}

impl Homeserver {
    /// A homeserver called `name` with a key from `seed`.
    pub fn new(name: &str, seed: u8) -> Homeserver {
        Homeserver::with_key_version(name, seed, "test1")
    }

    /// A homeserver called `name` whose key from `seed` is `ed25519:<version>`.
    pub fn with_key_version(name: &str, seed: u8, version: &str) -> Homeserver {
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(&[seed; 32]);
        let key = Ed25519KeyPair::from_der(&der, version.to_owned()).expect("ed25519 key");
        Homeserver {
            name: name.to_owned(),
            key,
        }
    }

    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.key.version())
    }

    /// The public key in unpadded base64, as config pins take it.
    pub fn public_key(&self) -> String {
        STANDARD_NO_PAD.encode(self.key.public_key())
    }

    /// `keys.pinned` TOML for this homeserver.
    pub fn pinned_toml(&self) -> String {
        format!(
            "[keys.pinned.\"{}\"]\n\"{}\" = \"{}\"\n",
            self.name,
            self.key_id(),
            self.public_key()
        )
    }

    /// Its `/_matrix/key/v2/server` document, self-signed, valid for a day.
    pub fn key_document(&self) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let value = serde_json::json!({
            "server_name": self.name,
            "verify_keys": {self.key_id(): {"key": self.public_key()}},
            "old_verify_keys": {},
            "valid_until_ts": now + 86_400_000,
        });
        let ruma_common::CanonicalJsonValue::Object(mut object) =
            ruma_common::canonical_json::to_canonical_value(value).expect("canonical JSON")
        else {
            unreachable!("an object")
        };
        ruma_signatures::sign_json(&self.name, &self.key, &mut object).expect("sign");
        serde_json::to_string(&object).expect("JSON")
    }

    pub fn mxid(&self, local: &str) -> String {
        format!("@{local}:{}", self.name)
    }

    /// An unbind body as Synapse writes it.
    pub fn unbind_body(&self, local: &str, address: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "mxid": self.mxid(local),
            "threepid": {"address": address, "medium": "email"},
        }))
        .expect("JSON")
    }

    /// `Authorization: X-Matrix …` for a request to identity server `destination_is`.
    pub fn authorization(
        &self,
        method: &str,
        uri: &str,
        destination_is: &str,
        body: &[u8],
    ) -> String {
        let mut object = serde_json::json!({
            "method": method,
            "uri": uri,
            "origin": self.name,
            "destination_is": destination_is,
        });
        if !body.is_empty() {
            object["content"] = serde_json::from_slice(body).expect("a JSON body");
        }
        let canonical =
            ruma_common::canonical_json::to_canonical_value(object).expect("canonical JSON");
        let text = serde_json::to_string(&canonical).expect("JSON");
        let signature = self.key.sign(text.as_bytes());
        format!(
            "X-Matrix origin=\"{}\",key=\"{}\",sig=\"{}\",destination=\"{destination_is}\"",
            self.name,
            self.key_id(),
            signature.base64()
        )
    }
}
