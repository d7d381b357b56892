//! The unbind body, as the Identity Service API defines it:
//! `{"mxid", "threepid": {"medium", "address"}, "sid"?, "client_secret"?}`.
//!
//! Read by hand rather than through a derived `Deserialize`, so that each
//! problem gets its own Matrix error code and a message naming the field.

use crate::errors::{ApiError, IntakeError};
use assent_shared::{mxid_server_name, Medium, ThreePid, ValidationError};
use serde_json::{Map, Value};

/// Largest unbind body read. Real ones are about 120 bytes.
pub const MAX_BODY: usize = 16 * 1024;

/// A parsed, validated unbind body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnbindBody {
    pub mxid: String,
    /// The server name in the mxid.
    pub mxid_server: String,
    /// Validated and normalised as the identity server normalises it
    /// (email addresses case-folded).
    pub threepid: ThreePid,
    /// The address exactly as the request spelt it.
    pub address_as_sent: String,
    /// The owner's validation session, when they proved control of the 3PID.
    pub session: Option<Session>,
}

impl UnbindBody {
    /// The unbind as proven by the owner's validation session.
    pub fn proven(self) -> crate::lifecycle::Proven {
        crate::lifecycle::Proven {
            address_as_sent: self
                .threepid
                .is_look_alike(&self.address_as_sent)
                .then_some(self.address_as_sent),
            mxid: self.mxid,
            mxid_server: self.mxid_server,
            threepid: self.threepid,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub sid: String,
    pub client_secret: String,
}

fn not_json(why: impl std::fmt::Display) -> ApiError {
    IntakeError::NotJson(format!("the body is not valid JSON: {why}")).into()
}

fn bad_json(error: impl Into<String>) -> ApiError {
    IntakeError::BadJson(error.into()).into()
}

fn missing(field: &str) -> ApiError {
    IntakeError::MissingParam(field.to_owned()).into()
}

fn invalid(error: impl Into<String>) -> ApiError {
    IntakeError::InvalidParam(error.into()).into()
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
    let value = serde_json::from_slice::<Unique>(bytes).map_err(not_json)?.0;
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
    // sydent takes the session path when both keys are present, whatever
    // their values: so a present key must hold a string, never null.
    let session_field = |name: &str| match object.get(name) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.as_str())),
        Some(_) => Err(bad_json(format!("`{name}` must be a string"))),
    };
    let sid = session_field("sid")?;
    let client_secret = session_field("client_secret")?;

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
        address_as_sent: address.to_owned(),
        session,
    })
}

/// A JSON value in which no object has a key twice. Parsers disagree on
/// which of two values counts (serde_json and Python both keep the last, a
/// homeserver's may keep the first), so such a body is refused rather than
/// read one way here and another way upstream.
struct Unique(Value);

impl<'de> serde::Deserialize<'de> for Unique {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueVisitor).map(Unique)
    }
}

struct UniqueVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Unique(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!(
                    "the key `{key}` appears twice in one object"
                )));
            }
            let Unique(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

pub fn too_large() -> ApiError {
    IntakeError::TooLarge(MAX_BODY).into()
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
    fn a_key_given_twice_is_refused_at_any_depth() {
        for body in [
            &br#"{"mxid":"@a:hs.test","mxid":"@b:hs.test","threepid":{"address":"a@b.org","medium":"email"}}"#[..],
            br#"{"mxid":"@a:hs.test","threepid":{"address":"a@b.org","address":"c@b.org","medium":"email"}}"#,
            br#"{"mxid":"@a:hs.test","threepid":{"address":"a@b.org","medium":"email"},"x":[{"k":1,"k":2}]}"#,
        ] {
            let e = parse(body).unwrap_err();
            assert_eq!(e.errcode, "M_NOT_JSON");
            assert!(e.error.contains("appears twice"), "{}", e.error);
        }
        let extra = br#"{"mxid":"@a:hs.test","threepid":{"address":"a@b.org","medium":"email"},"x":[1,2.5,null,true,{"k":"v"}]}"#;
        assert_eq!(parse(extra).unwrap().threepid.address, "a@b.org");
    }

    #[test]
    fn numbers_where_strings_belong_are_refused() {
        let e = parse(br#"{"mxid":"@a:hs.test","threepid":{"address":1,"medium":"email"}}"#)
            .unwrap_err();
        assert_eq!(e.errcode, "M_BAD_JSON");
        let e =
            parse(br#"{"mxid":5,"threepid":{"address":"a@b.org","medium":"email"}}"#).unwrap_err();
        assert_eq!(e.errcode, "M_BAD_JSON");
    }

    #[test]
    fn a_session_needs_both_halves() {
        let both = br#"{"mxid":"@a:hs.test","threepid":{"address":"a@b.org","medium":"email"},"sid":"1","client_secret":"s"}"#;
        assert!(parse(both).unwrap().session.is_some());
        let half =
            br#"{"mxid":"@a:hs.test","threepid":{"address":"a@b.org","medium":"email"},"sid":"1"}"#;
        assert_eq!(parse(half).unwrap_err().errcode, "M_MISSING_PARAMS");
        // Present but null is not absent: the identity server would take the
        // session path, so it is refused rather than read as no session.
        let null = br#"{"mxid":"@a:hs.test","threepid":{"address":"a@b.org","medium":"email"},"sid":null,"client_secret":null}"#;
        assert_eq!(parse(null).unwrap_err().errcode, "M_BAD_JSON");
    }
}
