//! The `X-Matrix` signature on a homeserver's request to an identity server.
//!
//! Synapse signs the canonical JSON of `{method, uri, origin, destination_is,
//! content}`: `destination_is` is the identity server's name (not the
//! federation `destination`), and `uri` is the path and query exactly as sent.
//! ruma's federation helpers build `destination`, so the object is built here.

use ruma_common::canonical_json::{CanonicalJsonObject, CanonicalJsonValue};
use ruma_common::SigningKeyAlgorithm;
pub use ruma_federation_api::authentication::XMatrix;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum XMatrixError {
    #[error("no X-Matrix Authorization header")]
    Missing,
    #[error("the X-Matrix Authorization header cannot be read: {0}")]
    Malformed(String),
    #[error("the request body is not canonical JSON: {0}")]
    BadBody(String),
    #[error("the header's destination `{0}` is not this identity server")]
    WrongDestination(String),
    #[error("only ed25519 keys are supported, not `{0}`")]
    UnsupportedAlgorithm(String),
    #[error("the signature does not verify")]
    BadSignature,
}

/// Reads the `Authorization` header value. Values may be quoted or not:
/// Synapse and sydent accept `key=ed25519:abc` and `sig=ab/c+d` unquoted,
/// although `:` and `/` are not allowed in an unquoted HTTP auth parameter.
pub fn parse_header(value: Option<&str>) -> Result<XMatrix, XMatrixError> {
    let value = value.ok_or(XMatrixError::Missing)?;
    match XMatrix::parse(value) {
        Ok(header) => Ok(header),
        Err(strict) => match requote(value) {
            Some(quoted) => {
                XMatrix::parse(quoted).map_err(|e| XMatrixError::Malformed(e.to_string()))
            }
            None => Err(XMatrixError::Malformed(strict.to_string())),
        },
    }
}

/// Rewrites `X-Matrix a=b,c="d"` with every value quoted, splitting the way
/// Synapse does (on `,`, then on the first `=`).
fn requote(value: &str) -> Option<String> {
    let (scheme, params) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("X-Matrix") {
        return None;
    }
    let mut out = Vec::new();
    for param in params.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, raw) = param.split_once('=')?;
        let quoted = if raw.starts_with('"') {
            raw.to_owned()
        } else {
            format!("\"{}\"", raw.replace('\\', "\\\\").replace('"', "\\\""))
        };
        out.push(format!("{}={quoted}", name.trim()));
    }
    Some(format!("X-Matrix {}", out.join(",")))
}

/// The object a homeserver signs for a request to identity server `destination_is`.
pub fn signed_object(
    method: &str,
    uri: &str,
    origin: &str,
    destination_is: &str,
    body: &[u8],
) -> Result<CanonicalJsonObject, XMatrixError> {
    let mut object = CanonicalJsonObject::new();
    object.insert(
        "method".to_owned(),
        CanonicalJsonValue::String(method.to_owned()),
    );
    object.insert("uri".to_owned(), CanonicalJsonValue::String(uri.to_owned()));
    object.insert(
        "origin".to_owned(),
        CanonicalJsonValue::String(origin.to_owned()),
    );
    object.insert(
        "destination_is".to_owned(),
        CanonicalJsonValue::String(destination_is.to_owned()),
    );
    if !body.is_empty() {
        let content: CanonicalJsonValue =
            serde_json::from_slice(body).map_err(|e| XMatrixError::BadBody(e.to_string()))?;
        object.insert("content".to_owned(), content);
    }
    Ok(object)
}

/// The bytes a homeserver signed for this request, with the header's
/// signature over them, for a check against the key the header names.
pub struct Signed {
    pub message: Vec<u8>,
    pub signature: ed25519_dalek::Signature,
}

/// What `header` signs for this request to identity server
/// `destination_is`; refused if the header names another destination, a key
/// that is not ed25519, or a signature that is not 64 bytes.
pub fn signed_message(
    header: &XMatrix,
    method: &str,
    uri: &str,
    destination_is: &str,
    body: &[u8],
) -> Result<Signed, XMatrixError> {
    if let Some(destination) = &header.destination {
        if !destination.as_str().eq_ignore_ascii_case(destination_is) {
            return Err(XMatrixError::WrongDestination(destination.to_string()));
        }
    }
    if header.key.algorithm() != SigningKeyAlgorithm::Ed25519 {
        return Err(XMatrixError::UnsupportedAlgorithm(header.key.to_string()));
    }
    let object = signed_object(method, uri, header.origin.as_str(), destination_is, body)?;
    let message = serde_json::to_vec(&object).map_err(|e| XMatrixError::BadBody(e.to_string()))?;
    let signature = ed25519_dalek::Signature::from_slice(header.sig.as_bytes())
        .map_err(|_| XMatrixError::BadSignature)?;
    Ok(Signed { message, signature })
}

/// Checks `header`'s signature over the request with `public_key` (raw
/// ed25519 bytes of the key the header names), one request alone, as
/// ruma-signatures checks it. The gateway checks concurrent requests
/// together ([`crate::homeserver_keys::signature_batch`]).
pub fn verify(
    header: &XMatrix,
    public_key: &[u8],
    method: &str,
    uri: &str,
    destination_is: &str,
    body: &[u8],
) -> Result<(), XMatrixError> {
    let signed = signed_message(header, method, uri, destination_is, body)?;
    ruma_signatures::verify_canonical_json_bytes(
        &SigningKeyAlgorithm::Ed25519,
        public_key,
        &signed.signature.to_bytes(),
        &signed.message,
    )
    .map_err(|_| XMatrixError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::decode_unpadded;
    use serde_json::Value;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/synapse");

    fn fixture(name: &str) -> Value {
        serde_json::from_str(&std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap())
            .unwrap()
    }

    struct Captured {
        authorization: String,
        path: String,
        body: Vec<u8>,
    }

    fn captured(name: &str) -> Captured {
        let request = &fixture(name)["unbind_requests"][0];
        let authorization = request["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h[0] == "Authorization")
            .unwrap()[1]
            .as_str()
            .unwrap()
            .to_owned();
        Captured {
            authorization,
            path: request["path"].as_str().unwrap().to_owned(),
            body: request["body"].as_str().unwrap().as_bytes().to_vec(),
        }
    }

    fn synapse_key() -> Vec<u8> {
        let doc = fixture("synapse_server_key.json");
        decode_unpadded(
            doc["body"]["verify_keys"]["ed25519:a_iNuw"]["key"]
                .as_str()
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn real_synapse_unbinds_verify_as_synapse_signed_them() {
        for name in ["unbind_user_delete.json", "unbind_admin_deactivate.json"] {
            let request = captured(name);
            let header = parse_header(Some(&request.authorization)).unwrap();
            assert_eq!(header.origin.as_str(), "hs.test");
            assert_eq!(header.key.as_str(), "ed25519:a_iNuw");
            verify(
                &header,
                &synapse_key(),
                "POST",
                &request.path,
                "is.test",
                &request.body,
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn any_changed_byte_breaks_the_signature() {
        let request = captured("unbind_user_delete.json");
        let header = parse_header(Some(&request.authorization)).unwrap();
        let key = synapse_key();
        let check = |method: &str, path: &str, is: &str, body: &[u8]| {
            verify(&header, &key, method, path, is, body)
        };
        let mut body = request.body.clone();
        let at = body.iter().position(|&b| b == b'@').unwrap() + 1;
        body[at] = b'x';
        assert_eq!(
            check("POST", &request.path, "is.test", &body),
            Err(XMatrixError::BadSignature)
        );
        assert_eq!(
            check(
                "POST",
                "/_matrix/identity/api/v1/3pid/unbind",
                "is.test",
                &request.body
            ),
            Err(XMatrixError::BadSignature)
        );
        assert_eq!(
            check(
                "POST",
                &format!("{}?", request.path),
                "is.test",
                &request.body
            ),
            Err(XMatrixError::BadSignature)
        );
        assert_eq!(
            check("PUT", &request.path, "is.test", &request.body),
            Err(XMatrixError::BadSignature)
        );
        // The header names is.test as destination, so another name is refused outright…
        assert!(matches!(
            check("POST", &request.path, "other.test", &request.body),
            Err(XMatrixError::WrongDestination(_))
        ));
        // …and without that parameter the signature still binds the name.
        let without_destination = request
            .authorization
            .replace(",destination=\"is.test\"", "");
        let header = parse_header(Some(&without_destination)).unwrap();
        assert_eq!(
            verify(
                &header,
                &key,
                "POST",
                &request.path,
                "other.test",
                &request.body
            ),
            Err(XMatrixError::BadSignature)
        );
        assert!(verify(
            &header,
            &key,
            "POST",
            &request.path,
            "is.test",
            &request.body
        )
        .is_ok());
        // Another key does not verify it.
        assert_eq!(
            verify(
                &header,
                &[7u8; 32],
                "POST",
                &request.path,
                "is.test",
                &request.body
            ),
            Err(XMatrixError::BadSignature)
        );
    }

    #[test]
    fn quoted_and_unquoted_header_values_are_read_alike() {
        let request = captured("unbind_admin_deactivate.json");
        let unquoted = request.authorization.replace('"', "");
        let header = parse_header(Some(&unquoted)).unwrap();
        verify(
            &header,
            &synapse_key(),
            "POST",
            &request.path,
            "is.test",
            &request.body,
        )
        .unwrap();
        assert_eq!(parse_header(None).unwrap_err(), XMatrixError::Missing);
        assert!(matches!(
            parse_header(Some("Bearer abc")),
            Err(XMatrixError::Malformed(_))
        ));
        assert!(matches!(
            parse_header(Some("X-Matrix origin=hs.test,key=\"ed25519:a\"")),
            Err(XMatrixError::Malformed(_))
        ));
    }

    #[test]
    fn a_body_that_is_not_canonical_json_is_refused() {
        assert!(matches!(
            signed_object("POST", "/", "hs", "is", b"{\"a\": 1.5}"),
            Err(XMatrixError::BadBody(_))
        ));
        assert!(matches!(
            signed_object("POST", "/", "hs", "is", b"not json"),
            Err(XMatrixError::BadBody(_))
        ));
    }
}
