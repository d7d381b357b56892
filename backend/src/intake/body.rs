//! The unbind body, as the Identity Service API defines it:
//! `{"mxid", "threepid": {"medium", "address"}, "sid"?, "client_secret"?}`.
//!
//! Read by hand rather than through a derived `Deserialize`, so that each
//! problem gets its own Matrix error code and a message naming the field.

use crate::errors::ApiError;
use assent_shared::{mxid_server_name, Medium, ThreePid, ValidationError};
use axum::http::StatusCode;
use serde_json::{Map, Value};

/// Largest unbind body read. Real ones are about 120 bytes.
pub const MAX_BODY: usize = 16 * 1024;

/// A parsed, validated unbind body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnbindBody {
    pub mxid: String,
    /// The server name in the mxid.
    pub mxid_server: String,
    /// Validated and normalised (email addresses lower-cased).
    pub threepid: ThreePid,
    /// The owner's validation session, when they proved control of the 3PID.
    pub session: Option<Session>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub sid: String,
    pub client_secret: String,
}

fn bad(status: StatusCode, errcode: &'static str, error: impl Into<String>) -> ApiError {
    ApiError::new(status, errcode, error)
}

fn not_json(why: impl std::fmt::Display) -> ApiError {
    bad(
        StatusCode::BAD_REQUEST,
        "M_NOT_JSON",
        format!("the body is not valid JSON: {why}"),
    )
}

fn bad_json(error: impl Into<String>) -> ApiError {
    bad(StatusCode::BAD_REQUEST, "M_BAD_JSON", error)
}

fn missing(field: &str) -> ApiError {
    bad(
        StatusCode::BAD_REQUEST,
        "M_MISSING_PARAMS",
        format!("`{field}` is missing"),
    )
}

fn invalid(error: impl Into<String>) -> ApiError {
    bad(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", error)
}

fn string_field<'a>(
    object: &'a Map<String, Value>,
    name: &str,
    path: &str,
) -> Result<Option<&'a str>, ApiError> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(bad_json(format!("`{path}` must be a string"))),
    }
}

/// Parses and validates an unbind body.
pub fn parse(bytes: &[u8]) -> Result<UnbindBody, ApiError> {
    if bytes.len() > MAX_BODY {
        return Err(too_large());
    }
    let value: Value = serde_json::from_slice(bytes).map_err(not_json)?;
    let Value::Object(object) = value else {
        return Err(bad_json("the body must be a JSON object"));
    };
    let mxid = string_field(&object, "mxid", "mxid")?.ok_or_else(|| missing("mxid"))?;
    let threepid = match object.get("threepid") {
        None | Some(Value::Null) => return Err(missing("threepid")),
        Some(Value::Object(threepid)) => threepid,
        Some(_) => return Err(bad_json("`threepid` must be an object")),
    };
    let medium = string_field(threepid, "medium", "threepid.medium")?
        .ok_or_else(|| missing("threepid.medium"))?;
    let address = string_field(threepid, "address", "threepid.address")?
        .ok_or_else(|| missing("threepid.address"))?;
    let sid = string_field(&object, "sid", "sid")?;
    let client_secret = string_field(&object, "client_secret", "client_secret")?;

    let mxid_server = mxid_server_name(mxid)
        .map_err(|e| invalid(format!("`mxid`: {e}")))?
        .to_owned();
    let medium = Medium::parse(medium).map_err(|e| invalid(format!("`threepid.medium`: {e}")))?;
    let threepid = ThreePid::new(medium, address).map_err(|e| match e {
        ValidationError::UnknownMedium(_) | ValidationError::InvalidMxid(_) => {
            invalid(e.to_string())
        }
        _ => invalid(format!("`threepid.address`: {e}")),
    })?;
    let session = match (sid, client_secret) {
        (None, None) => None,
        (Some(sid), Some(client_secret)) => Some(Session {
            sid: sid.to_owned(),
            client_secret: client_secret.to_owned(),
        }),
        (Some(_), None) => return Err(missing("client_secret")),
        (None, Some(_)) => return Err(missing("sid")),
    };
    Ok(UnbindBody {
        mxid: mxid.to_owned(),
        mxid_server,
        threepid,
        session,
    })
}

pub fn too_large() -> ApiError {
    bad(
        StatusCode::PAYLOAD_TOO_LARGE,
        "M_TOO_LARGE",
        format!("the body is larger than {MAX_BODY} bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_synapse_body_parses_and_the_address_is_normalised() {
        let body = br#"{"mxid":"@alice:hs.test","threepid":{"address":"Alice@Example.org","medium":"email"}}"#;
        let parsed = parse(body).unwrap();
        assert_eq!(parsed.mxid, "@alice:hs.test");
        assert_eq!(parsed.mxid_server, "hs.test");
        assert_eq!(parsed.threepid.address, "alice@example.org");
        assert_eq!(parsed.session, None);
    }

    #[test]
    fn a_session_needs_both_halves() {
        let both = br#"{"mxid":"@a:hs.test","threepid":{"address":"a@b.org","medium":"email"},"sid":"1","client_secret":"s"}"#;
        assert!(parse(both).unwrap().session.is_some());
        let half =
            br#"{"mxid":"@a:hs.test","threepid":{"address":"a@b.org","medium":"email"},"sid":"1"}"#;
        assert_eq!(parse(half).unwrap_err().errcode, "M_MISSING_PARAMS");
    }
}
