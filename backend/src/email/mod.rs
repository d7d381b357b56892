//! The consent email: what it says (askama templates, one per language and
//! part) and how it is put together as a message (lettre).
//!
//! The message is transactional and self-contained: plain text and HTML
//! alternatives, inline styles only, no images or other remote content, no
//! tracking, no shortened links, `Auto-Submitted: auto-generated`, and a
//! `Message-ID` that depends only on the outbox row, so a resend after a crash
//! carries the same one.

pub mod transport;

use crate::config::{Config, IdentityServerConfig, LANGUAGES};
use crate::storage::StoredRequest;
use askama::Template;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::Message;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The languages emails are written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Language {
    En,
    De,
}

impl Language {
    pub const ALL: [Language; 2] = [Language::En, Language::De];

    pub fn code(self) -> &'static str {
        match self {
            Language::En => "en",
            Language::De => "de",
        }
    }

    /// The language for `code`, English for anything unknown.
    pub fn from_code(code: &str) -> Language {
        Language::ALL
            .into_iter()
            .find(|l| l.code() == code)
            .unwrap_or(Language::En)
    }
}

/// Everything the message tells the owner. Built from the stored request and
/// the config only, never from anything the request body could forge.
#[derive(Clone, Debug)]
pub struct Letter {
    /// The requesting server as verified, in Unicode.
    pub server: String,
    /// Its ASCII (punycode) form, when that differs.
    pub server_ascii: Option<String>,
    pub key_id: Option<String>,
    /// Whether Assent verified the server's signature itself (gateway
    /// intake); otherwise the identity server named it (integrated intake).
    pub verified: bool,
    pub mxid: String,
    pub address: String,
    /// The address as the request spelt it, when it used look-alike
    /// characters (it differs from `address` beyond ASCII case).
    pub address_as_sent: Option<String>,
    pub is_name: String,
    pub is_display: String,
    pub operator: String,
    pub privacy_url: Option<String>,
    /// `user`, `admin`, `deactivation` or `unknown`.
    pub initiator: &'static str,
    pub reason: Option<String>,
    pub asked_at: String,
    pub expires_at: String,
    pub link: String,
    /// How long the request's data is kept once it ended (`retention`, in
    /// milliseconds), when the sender knows it.
    pub retention_ms: Option<i64>,
}

impl Letter {
    pub fn new(request: &StoredRequest, is: Option<&IdentityServerConfig>, link: String) -> Self {
        let (server, server_ascii) = server_names(&request.origin);
        Letter {
            server,
            server_ascii,
            key_id: request.origin_key_id.clone(),
            verified: request.verified_at.is_some() && request.origin_key_id.is_some(),
            mxid: request.mxid.clone(),
            address: request.address.clone(),
            address_as_sent: request.address_as_sent.clone(),
            is_name: request.identity_server.clone(),
            is_display: is.map_or_else(
                || request.identity_server.clone(),
                |is| is.display_name.clone(),
            ),
            operator: is.map_or_else(|| request.identity_server.clone(), |is| is.operator.clone()),
            privacy_url: is
                .and_then(|is| is.privacy_policy_url.as_ref())
                .map(|u| u.to_string()),
            initiator: request.initiator.as_str(),
            reason: request.reason.clone().filter(|r| !r.trim().is_empty()),
            asked_at: utc_minutes(request.created_at),
            expires_at: utc_minutes(request.expires_at),
            link,
            retention_ms: None,
        }
    }

    /// States how long the request's data is kept (`retention`).
    pub fn kept_for(mut self, retention: std::time::Duration) -> Self {
        self.retention_ms = Some(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
        self
    }

    /// The retention period in English words (`90 days`).
    pub fn kept_en(&self) -> Option<String> {
        self.retention_ms
            .map(|ms| assent_shared::i18n::duration_words(ms, assent_shared::i18n::Lang::En))
    }

    /// The retention period in German words (`90 Tage`).
    pub fn kept_de(&self) -> Option<String> {
        self.retention_ms
            .map(|ms| assent_shared::i18n::duration_words(ms, assent_shared::i18n::Lang::De))
    }

    /// The subject names the requesting server in Unicode and, for an
    /// internationalised name, in ASCII too: look-alike letters in a name
    /// must not pass for a server the owner knows.
    pub fn subject(&self, language: Language) -> String {
        let server = match &self.server_ascii {
            Some(ascii) => format!("{} ({ascii})", self.server),
            None => self.server.clone(),
        };
        match language {
            Language::En => format!("{server} asks to unlink your address from {}", self.mxid),
            Language::De => format!("{server} möchte Ihre Adresse von {} trennen", self.mxid),
        }
    }

    /// The plain-text and the HTML part.
    pub fn render(&self, language: Language) -> Result<(String, String), askama::Error> {
        Ok(match language {
            Language::En => (EnText { m: self }.render()?, EnHtml { m: self }.render()?),
            Language::De => (DeText { m: self }.render()?, DeHtml { m: self }.render()?),
        })
    }
}

#[derive(Template)]
#[template(path = "email/en.txt")]
struct EnText<'a> {
    m: &'a Letter,
}

#[derive(Template)]
#[template(path = "email/en.html")]
struct EnHtml<'a> {
    m: &'a Letter,
}

#[derive(Template)]
#[template(path = "email/de.txt")]
struct DeText<'a> {
    m: &'a Letter,
}

#[derive(Template)]
#[template(path = "email/de.html")]
struct DeHtml<'a> {
    m: &'a Letter,
}

/// A server name in Unicode, and its ASCII form when that differs (or the
/// name as given when it is not a valid IDN).
pub(crate) fn server_names(name: &str) -> (String, Option<String>) {
    let (host, port) = match name.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') && !host.contains(':') => (host, Some(port)),
        _ => (name, None),
    };
    let (unicode, result) = idna::domain_to_unicode(host);
    if result.is_err() || unicode == host {
        return (name.to_owned(), None);
    }
    let with_port = |h: &str| match port {
        Some(p) => format!("{h}:{p}"),
        None => h.to_owned(),
    };
    (with_port(&unicode), Some(with_port(host)))
}

/// `2026-12-05 14:03 UTC`.
pub fn utc_minutes(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    let text = humantime::format_rfc3339_seconds(at).to_string();
    // 2026-12-05T14:03:09Z
    match (text.get(..10), text.get(11..16)) {
        (Some(date), Some(time)) => format!("{date} {time} UTC"),
        _ => text,
    }
}

/// The `Message-ID` of the email for an outbox row: the same for every
/// attempt, on the sender's domain.
pub fn message_id(idempotency_key: &str, from: &Mailbox) -> String {
    let local: String = idempotency_key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '.'
            }
        })
        .collect();
    format!("<{local}@{}>", from.email.domain())
}

/// Why a message could not be put together.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("the address is not a mailbox")]
    Recipient,
    #[error("email.from is not a mailbox")]
    Sender,
    #[error("template: {0}")]
    Template(#[from] askama::Error),
    #[error("message: {0}")]
    Message(#[from] lettre::error::Error),
}

/// The whole message for `letter`, ready to sign and send.
pub fn compose(
    config: &Config,
    letter: &Letter,
    language: Language,
    message_id: String,
    at_ms: i64,
) -> Result<Message, ComposeError> {
    let from: Mailbox = config
        .email
        .from
        .parse()
        .map_err(|_| ComposeError::Sender)?;
    let to = Mailbox::new(
        None,
        letter
            .address
            .parse()
            .map_err(|_| ComposeError::Recipient)?,
    );
    let (text, html) = letter.render(language)?;
    let mut message = Message::builder()
        .from(from)
        .to(to)
        .subject(letter.subject(language))
        .date(UNIX_EPOCH + Duration::from_millis(u64::try_from(at_ms).unwrap_or(0)))
        .message_id(Some(message_id))
        .multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(text),
                )
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(html),
                ),
        )?;
    let headers = message.headers_mut();
    headers.insert_raw(HeaderValue::new(
        HeaderName::new_from_ascii_str("Auto-Submitted"),
        "auto-generated".to_owned(),
    ));
    headers.insert_raw(HeaderValue::new(
        HeaderName::new_from_ascii_str("Content-Language"),
        language.code().to_owned(),
    ));
    Ok(message)
}

/// Replaces every copy of each secret in `text` (SMTP servers quote the
/// recipient, spam filters the links), so that what is logged and stored
/// names no one and opens nothing. ASCII case is ignored.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        // ASCII lowercasing keeps every byte offset where it was.
        let lower = out.to_ascii_lowercase();
        let needle = secret.to_ascii_lowercase();
        let mut next = String::with_capacity(out.len());
        let mut rest = 0;
        for (i, _) in lower.match_indices(&needle) {
            if i < rest || !out.is_char_boundary(i) || !out.is_char_boundary(i + needle.len()) {
                continue;
            }
            next.push_str(&out[rest..i]);
            next.push_str("<redacted>");
            rest = i + needle.len();
        }
        next.push_str(&out[rest..]);
        out = next;
    }
    out
}

/// Every supported language has templates: the config's list and
/// [`Language::ALL`] must agree.
pub fn languages_match_config() -> bool {
    LANGUAGES.len() == Language::ALL.len()
        && Language::ALL.iter().all(|l| LANGUAGES.contains(&l.code()))
}

/// The time `SystemTime` for `ms`.
pub fn system_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

#[cfg(test)]
mod tests;
