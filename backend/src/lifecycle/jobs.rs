//! What an outbox row asks a worker to do, as types: written here when a
//! request is held or decided, read back by `workers::email` and
//! `workers::relay`. Storage keeps them as JSON and does not look inside.

use crate::config::RelaySink;
use crate::storage::{NewOutbox, OutboxKind, OutboxRow};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// An email to the owner with a consent link.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmailJob {
    /// What the consent token is made from (the token itself is not stored).
    #[serde(with = "base64url")]
    pub nonce: Vec<u8>,
    /// The language to write in.
    #[serde(default = "english")]
    pub language: String,
    /// `initial`, or one per resend: keeps each email apart.
    #[serde(default)]
    pub purpose: String,
}

fn english() -> String {
    "en".to_owned()
}

impl EmailJob {
    pub fn outbox(&self, request_id: &str) -> NewOutbox {
        NewOutbox {
            kind: OutboxKind::Email,
            sink: None,
            idempotency_key: format!("email:{request_id}:{}", self.purpose),
            payload: serde_json::to_value(self).unwrap_or_default(),
        }
    }

    pub fn of(row: &OutboxRow) -> Result<Self, serde_json::Error> {
        Self::deserialize(&row.payload)
    }
}

/// A decision to deliver: to `sink`, else to each of `fallbacks` in turn
/// when the one before refuses. The sinks are stored as configured when the
/// decision was made, so a later config change does not redirect it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RelayJob {
    pub sink: RelaySink,
    #[serde(default)]
    pub fallbacks: Vec<RelaySink>,
    pub decision_id: String,
}

impl RelayJob {
    /// The row; `index` is the first sink's place in the configured list.
    pub fn outbox(&self, index: usize) -> NewOutbox {
        NewOutbox {
            kind: OutboxKind::Relay,
            sink: Some(self.sink.name().to_owned()),
            idempotency_key: format!("relay:{}:{index}", self.decision_id),
            payload: serde_json::to_value(self).unwrap_or_default(),
        }
    }

    pub fn of(row: &OutboxRow) -> Result<Self, serde_json::Error> {
        Self::deserialize(&row.payload)
    }

    /// The sinks in the order they are tried.
    pub fn chain(&self) -> impl Iterator<Item = &RelaySink> {
        std::iter::once(&self.sink).chain(&self.fallbacks)
    }
}

mod base64url {
    use super::{Engine, URL_SAFE_NO_PAD};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <&str>::deserialize(d)?;
        URL_SAFE_NO_PAD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_round_trip_and_keep_their_json_shape() {
        let email = EmailJob {
            nonce: vec![1, 2, 255],
            language: "de".to_owned(),
            purpose: "initial".to_owned(),
        };
        let row = email.outbox("req_1");
        assert_eq!(row.idempotency_key, "email:req_1:initial");
        assert_eq!(
            row.payload,
            serde_json::json!({"nonce": "AQL_", "language": "de", "purpose": "initial"})
        );
        let relay = RelayJob {
            sink: RelaySink::Replay,
            fallbacks: vec![],
            decision_id: "dec_1".to_owned(),
        };
        let row = relay.outbox(2);
        assert_eq!(row.idempotency_key, "relay:dec_1:2");
        assert_eq!(row.sink.as_deref(), Some("replay"));
        assert_eq!(RelayJob::deserialize(&row.payload).ok(), Some(relay));
        assert!(EmailJob::deserialize(&serde_json::json!({"nonce": "not base64!"})).is_err());
        assert!(RelayJob::deserialize(
            &serde_json::json!({"sink": {"kind": "nowhere"}, "decision_id": "d"})
        )
        .is_err());
    }
}
