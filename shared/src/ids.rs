//! Validation of what a request names: the Matrix user ID and the third-party
//! identifier (an email address or a phone number).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why an identifier was refused, in words fit for an error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValidationError {
    InvalidMxid(String),
    InvalidEmail(&'static str),
    InvalidMsisdn(&'static str),
    UnknownMedium(String),
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValidationError::InvalidMxid(why) => write!(f, "invalid Matrix user ID: {why}"),
            ValidationError::InvalidEmail(why) => write!(f, "invalid email address: {why}"),
            ValidationError::InvalidMsisdn(why) => write!(f, "invalid phone number: {why}"),
            ValidationError::UnknownMedium(medium) => {
                write!(
                    f,
                    "unknown medium `{medium}` (expected `email` or `msisdn`)"
                )
            }
        }
    }
}

impl std::error::Error for ValidationError {}

/// Checks a Matrix user ID (`@localpart:server.name`) by the rules ruma uses,
/// and returns its server name.
pub fn mxid_server_name(mxid: &str) -> Result<&str, ValidationError> {
    ruma_identifiers_validation::user_id::validate(mxid)
        .map_err(|e| ValidationError::InvalidMxid(e.to_string()))?;
    // Validation guarantees a leading `@` and a `:` before the server name.
    match mxid.split_once(':') {
        Some(("@", _)) => Err(ValidationError::InvalidMxid("empty localpart".to_owned())),
        // The spec's historical grammar: printable ASCII except `:`.
        Some((local, _)) if !local.bytes().all(|b| (0x21..=0x7e).contains(&b)) => {
            Err(ValidationError::InvalidMxid(
                "localpart has characters outside printable ASCII".to_owned(),
            ))
        }
        Some((_, server)) => Ok(server),
        None => Err(ValidationError::InvalidMxid(
            "missing server name".to_owned(),
        )),
    }
}

/// The kind of third-party identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Medium {
    Email,
    Msisdn,
}

impl Medium {
    pub fn as_str(self) -> &'static str {
        match self {
            Medium::Email => "email",
            Medium::Msisdn => "msisdn",
        }
    }

    pub fn parse(medium: &str) -> Result<Self, ValidationError> {
        match medium {
            "email" => Ok(Medium::Email),
            "msisdn" => Ok(Medium::Msisdn),
            other => Err(ValidationError::UnknownMedium(other.to_owned())),
        }
    }
}

/// A third-party identifier as the Identity Service API carries it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ThreePid {
    pub medium: Medium,
    pub address: String,
}

impl ThreePid {
    /// Validates the address for its medium. Email addresses are compared as
    /// identity servers store them: the whole address lower-cased.
    pub fn new(medium: Medium, address: &str) -> Result<Self, ValidationError> {
        let address = match medium {
            Medium::Email => validate_email(address)?.to_lowercase(),
            Medium::Msisdn => validate_msisdn(address)?.to_owned(),
        };
        Ok(ThreePid { medium, address })
    }
}

fn validate_email(address: &str) -> Result<&str, ValidationError> {
    use ValidationError::InvalidEmail;
    if address.len() > 254 {
        return Err(InvalidEmail("longer than 254 characters"));
    }
    if address.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(InvalidEmail("contains white space or control characters"));
    }
    let (local, domain) = address
        .rsplit_once('@')
        .ok_or(InvalidEmail("no `@` in the address"))?;
    if local.is_empty() || local.len() > 64 {
        return Err(InvalidEmail(
            "the part before `@` must have 1 to 64 characters",
        ));
    }
    let quoted = local.len() >= 2 && local.starts_with('"') && local.ends_with('"');
    if local.contains('@') && !quoted {
        return Err(InvalidEmail("more than one `@` outside quotes"));
    }
    if domain.is_empty()
        || domain.starts_with('.')
        || domain.ends_with('.')
        || domain.contains("..")
    {
        return Err(InvalidEmail("the part after `@` is not a domain"));
    }
    if domain.contains(['@', '<', '>', '(', ')', ',', ';', '"', '[', ']', '\\']) {
        return Err(InvalidEmail(
            "the domain contains characters a domain cannot have",
        ));
    }
    Ok(address)
}

fn validate_msisdn(address: &str) -> Result<&str, ValidationError> {
    use ValidationError::InvalidMsisdn;
    // MSISDNs travel without `+` and without separators (E.164, up to 15 digits).
    if address.is_empty() || address.len() > 15 || !address.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InvalidMsisdn(
            "expected 1 to 15 digits without `+` or spaces",
        ));
    }
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mxids_are_validated_and_give_their_server() {
        assert_eq!(mxid_server_name("@alice:hs.test"), Ok("hs.test"));
        assert_eq!(
            mxid_server_name("@bob:127.0.0.1:8448"),
            Ok("127.0.0.1:8448")
        );
        assert_eq!(mxid_server_name("@x:[::1]:80"), Ok("[::1]:80"));
        for bad in [
            "alice:hs.test",
            "@alice",
            "@:hs.test",
            "",
            "@alice:",
            "@al ice:hs.test",
        ] {
            assert!(mxid_server_name(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn emails_are_checked_and_lower_cased() {
        let pid = ThreePid::new(Medium::Email, "Alice@Example.ORG").unwrap();
        assert_eq!(pid.address, "alice@example.org");
        for bad in [
            "",
            "alice",
            "@example.org",
            "alice@",
            "a b@example.org",
            "a@.org",
            "a@b..org",
            "a@b@example.org",
        ] {
            assert!(
                ThreePid::new(Medium::Email, bad).is_err(),
                "{bad:?} should be refused"
            );
        }
        assert!(ThreePid::new(Medium::Email, &format!("{}@example.org", "a".repeat(65))).is_err());
        assert!(ThreePid::new(Medium::Email, "\"a@b\"@example.org").is_ok());
    }

    #[test]
    fn phone_numbers_are_digits_only() {
        assert!(ThreePid::new(Medium::Msisdn, "447700900123").is_ok());
        for bad in ["", "+447700900123", "4477 0090", "1234567890123456"] {
            assert!(
                ThreePid::new(Medium::Msisdn, bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn media_are_named_as_in_the_spec() {
        assert_eq!(Medium::parse("email"), Ok(Medium::Email));
        assert_eq!(Medium::parse("msisdn"), Ok(Medium::Msisdn));
        assert!(matches!(
            Medium::parse("fax"),
            Err(ValidationError::UnknownMedium(_))
        ));
    }
}
