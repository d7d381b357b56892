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
    /// Validates the address for its medium and puts it in the one form the
    /// identity server acts on: email addresses get Unicode full case
    /// folding, exactly what sydent applies (Python's `str.casefold()`) before
    /// it binds, looks up or unbinds; phone numbers are taken as they are, as
    /// sydent takes them.
    pub fn new(medium: Medium, address: &str) -> Result<Self, ValidationError> {
        let address = match medium {
            Medium::Email => fold_email(validate_email(address)?)?,
            Medium::Msisdn => validate_msisdn(address)?.to_owned(),
        };
        Ok(ThreePid { medium, address })
    }

    /// Whether `sent`, the address as a request spelt it, differs from this
    /// normalised address beyond ASCII case: it used characters that only
    /// look like, or fold into, the ones of the address (`ſ` for `s`, `ß`
    /// for `ss`, a Kelvin sign for `k`, full-width letters). The owner is
    /// shown both spellings then.
    pub fn is_look_alike(&self, sent: &str) -> bool {
        self.medium == Medium::Email && sent.to_ascii_lowercase() != self.address
    }
}

/// Letters whose case folding Unicode defined after version 11.0 (Python
/// 3.7, the oldest Python sydent 2.6.1 runs on): an identity server on an
/// older Python leaves them as they are where Assent would fold them, so the
/// two would act on different addresses. Addresses with them are refused.
/// (Unicode 12.0 and 13.0: Latin; 14.0: Glagolitic, Latin, Vithkuqi; 16.0:
/// Cyrillic, Latin, Garay; 17.0: Latin, Beria Erfe.) A test checks against
/// the machine's Python that every code point whose folding differs from
/// Python's is in here.
const RECENTLY_CASED: [(char, char); 9] = [
    ('\u{1C89}', '\u{1C8A}'),
    ('\u{2C2F}', '\u{2C2F}'),
    ('\u{2C5F}', '\u{2C5F}'),
    ('\u{A7BA}', '\u{A7F6}'),
    ('\u{AB6C}', '\u{AB6F}'),
    ('\u{10570}', '\u{105BF}'),
    ('\u{10D50}', '\u{10D8F}'),
    ('\u{16EA0}', '\u{16EDF}'),
    ('\u{1DF00}', '\u{1DFFF}'),
];

fn recently_cased(c: char) -> bool {
    RECENTLY_CASED
        .iter()
        .any(|&(first, last)| (first..=last).contains(&c))
}

/// Unicode full case folding (the `C` and `F` mappings of
/// CaseFolding.txt, no Turkic special case): Python's `str.casefold()`.
pub fn fold_email(address: &str) -> Result<String, ValidationError> {
    if address.chars().any(recently_cased) {
        return Err(ValidationError::InvalidEmail(
            "contains a letter whose case folding is too recent for identity servers to agree on",
        ));
    }
    Ok(case_fold(address))
}

/// Unicode full case folding of any text, as addresses are stored: for
/// comparing what someone types (an admin's search) with stored addresses.
pub fn case_fold(text: &str) -> String {
    icu_casemap::CaseMapper::new()
        .fold_string(text)
        .into_owned()
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
    fn emails_are_checked_and_folded() {
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
    fn emails_are_case_folded_as_python_casefold_folds_them() {
        for (sent, folded) in [
            ("Bob.Smith@Example.org", "bob.smith@example.org"),
            ("bob.\u{17F}mith@example.org", "bob.smith@example.org"),
            ("STRA\u{DF}E@example.org", "strasse@example.org"),
            ("STRA\u{1E9E}E@example.org", "strasse@example.org"),
            ("\u{FB01}nn@example.org", "finn@example.org"),
            ("\u{212A}im@example.org", "kim@example.org"),
            ("\u{212B}sa@example.org", "\u{E5}sa@example.org"),
            ("\u{3A3}\u{3A3}@example.org", "\u{3C3}\u{3C3}@example.org"),
            ("\u{FF22}ob@example.org", "\u{FF42}ob@example.org"),
        ] {
            let pid = ThreePid::new(Medium::Email, sent).unwrap();
            assert_eq!(pid.address, folded, "{sent:?}");
            assert_eq!(pid.is_look_alike(sent), !sent.is_ascii(), "{sent:?}");
        }
        // Composed and decomposed forms stay apart, as they do at sydent.
        let nfc = ThreePid::new(Medium::Email, "ren\u{E9}@example.org").unwrap();
        let nfd = ThreePid::new(Medium::Email, "rene\u{301}@example.org").unwrap();
        assert_ne!(nfc.address, nfd.address);
        assert!(ThreePid::new(Medium::Email, "a\u{A7C9}@example.org").is_err());
    }

    /// The proof that Assent folds as the identity server does: every code
    /// point, folded here and by the machine's `python3` (`str.casefold()`,
    /// what sydent applies). They agree on every code point whose folding
    /// differs from `lower()`, and anywhere else they differ the code point
    /// is refused in an address.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn folding_agrees_with_python_casefold_on_every_code_point() {
        let script = "import sys\n\
            for c in range(0x110000):\n\
            \x20   if 0xD800 <= c < 0xE000: continue\n\
            \x20   s = chr(c); f = s.casefold()\n\
            \x20   if f != s or f != s.lower():\n\
            \x20       print('%x %s %d' % (c, ','.join('%x' % ord(x) for x in f), f != s.lower()))\n";
        let out = std::process::Command::new("python3")
            .args(["-c", script])
            .output()
            .expect("python3 runs (the tests need it)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let mut python = std::collections::HashMap::new();
        let mut differs_from_lower = 0;
        for line in text.lines() {
            let mut parts = line.split(' ');
            let c = u32::from_str_radix(parts.next().unwrap(), 16).unwrap();
            let folded: String = parts
                .next()
                .unwrap()
                .split(',')
                .map(|x| char::from_u32(u32::from_str_radix(x, 16).unwrap()).unwrap())
                .collect();
            let c = char::from_u32(c).unwrap();
            if parts.next() == Some("1") {
                differs_from_lower += 1;
                let ours = icu_casemap::CaseMapper::new()
                    .fold_string(&c.to_string())
                    .into_owned();
                assert_eq!(ours, folded, "U+{:04X}", c as u32);
            }
            python.insert(c, folded);
        }
        assert!(python.len() > 1400, "python3 folded only {}", python.len());
        assert!(differs_from_lower > 250, "{differs_from_lower}");
        for c in (0..=0x10FFFF_u32).filter_map(char::from_u32) {
            let ours = icu_casemap::CaseMapper::new()
                .fold_string(&c.to_string())
                .into_owned();
            let theirs = python.get(&c).cloned().unwrap_or_else(|| c.to_string());
            if ours != theirs {
                assert!(
                    recently_cased(c),
                    "U+{:04X}: Assent folds to {ours:?}, python3 to {theirs:?}",
                    c as u32
                );
            } else if python.contains_key(&c) && !recently_cased(c) {
                let sent = format!("a{c}b@example.org");
                let folded = format!("a{theirs}b@example.org");
                assert_eq!(fold_email(&sent).unwrap(), folded);
            }
        }
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
