//! Checking a configuration as a whole, with messages that name the key and
//! the fix.

use super::*;

impl Config {
    /// Every check that types alone cannot make.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        if !matches!(self.public_url.scheme(), "http" | "https") || self.public_url.host().is_none()
        {
            errors.push(problem(
                "public_url",
                format!("`{}` is not an http(s) URL with a host", self.public_url),
                "set the address owners reach Assent at, e.g. https://consent.example.org",
            ));
        }
        if self.public_url.query().is_some() || self.public_url.fragment().is_some() {
            errors.push(problem(
                "public_url",
                "has a query or fragment",
                "give only scheme, host, port and path",
            ));
        }
        if ruma_common::ServerName::parse(&self.server_name).is_err() {
            errors.push(problem(
                "server_name",
                format!("`{}` is not a valid Matrix server name", self.server_name),
                "use a host name such as consent.example.org (optionally with :port)",
            ));
        }
        let db = self.database_url();
        if !(db.starts_with("sqlite:")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://"))
        {
            errors.push(problem(
                "database_url",
                "is neither a sqlite: nor a postgres:// URL",
                "use sqlite://./data/assent.db or postgres://user:pass@host/db",
            ));
        }
        if self.relay_give_up_after < Duration::from_secs(60)
            || self.relay_give_up_after > Duration::from_secs(30 * 24 * 3600)
        {
            errors.push(problem(
                "relay_give_up_after",
                format!(
                    "{} is outside 1 minute to 30 days",
                    humantime::format_duration(self.relay_give_up_after)
                ),
                "use a duration such as \"36h\"",
            ));
        }
        if self.admin.session_ttl < Duration::from_secs(60)
            || self.admin.session_ttl > Duration::from_secs(30 * 24 * 3600)
        {
            errors.push(problem(
                "admin.session_ttl",
                format!(
                    "{} is outside 1 minute to 30 days",
                    humantime::format_duration(self.admin.session_ttl)
                ),
                "use a duration such as \"12h\"",
            ));
        }
        if self.request_ttl < Duration::from_secs(60)
            || self.request_ttl > Duration::from_secs(366 * 24 * 3600)
        {
            errors.push(problem(
                "request_ttl",
                format!(
                    "{} is outside 1 minute to 366 days",
                    humantime::format_duration(self.request_ttl)
                ),
                "use a duration such as \"7d\" or \"48h\"",
            ));
        }
        for (key, value) in [
            ("http.header_read_timeout", self.http.header_read_timeout),
            ("http.idle_timeout", self.http.idle_timeout),
            ("http.body_read_timeout", self.http.body_read_timeout),
        ] {
            if value < Duration::from_secs(1) || value > Duration::from_secs(3600) {
                errors.push(problem(
                    key,
                    format!(
                        "{} is outside 1 second to 1 hour",
                        humantime::format_duration(value)
                    ),
                    "use a duration such as \"30s\"",
                ));
            }
        }
        if self.http.max_connections == 0 {
            errors.push(problem(
                "http.max_connections",
                "is 0, which would accept no connection",
                "use a positive number; leave it out for the default (4096)",
            ));
        }
        if self.deny_cooldown < Duration::from_secs(60)
            || self.deny_cooldown > Duration::from_secs(3660 * 24 * 3600)
        {
            errors.push(problem(
                "deny_cooldown",
                format!(
                    "{} is outside 1 minute to 3660 days",
                    humantime::format_duration(self.deny_cooldown)
                ),
                "use a duration such as \"30d\"",
            ));
        }
        if self.retention < Duration::from_secs(60)
            || self.retention > Duration::from_secs(3660 * 24 * 3600)
        {
            errors.push(problem(
                "retention",
                format!(
                    "{} is outside 1 minute to 3660 days",
                    humantime::format_duration(self.retention)
                ),
                "use a duration such as \"90d\"",
            ));
        }
        self.validate_email(&mut errors);
        self.validate_email_delivery(&mut errors);
        for (key, value) in [
            (
                "limits.unbinds_per_origin_per_minute",
                self.limits.unbinds_per_origin_per_minute,
            ),
            (
                "limits.holds_per_address_per_hour",
                self.limits.holds_per_address_per_hour,
            ),
            (
                "limits.failed_unbinds_per_client_per_minute",
                self.limits.failed_unbinds_per_client_per_minute,
            ),
            (
                "limits.owner_proven_per_server_per_minute",
                self.limits.owner_proven_per_server_per_minute,
            ),
        ] {
            if value == 0 {
                errors.push(problem(
                    key,
                    "is 0, which would refuse every unbind",
                    "use a positive number; leave it out for the default",
                ));
            }
        }
        for (i, token) in self.admin.tokens.iter().enumerate() {
            if let Err(why) = check_token(token) {
                errors.push(problem(
                    format!("admin.tokens[{i}]"),
                    why.to_string(),
                    TOKEN_FIX,
                ));
            }
        }
        for (server, keys) in &self.keys.pinned {
            let key = format!("keys.pinned.\"{server}\"");
            if ruma_common::ServerName::parse(server).is_err() {
                errors.push(problem(
                    &key,
                    "is not a valid Matrix server name",
                    "name the homeserver as in its user IDs",
                ));
            }
            for (key_id, public) in keys {
                if !key_id.starts_with("ed25519:") || key_id.len() <= "ed25519:".len() {
                    errors.push(problem(
                        format!("{key}.\"{key_id}\""),
                        "key id is not `ed25519:<version>`",
                        "copy the key id from the homeserver's /_matrix/key/v2/server",
                    ));
                }
                let usable =
                    crate::keys::decode_unpadded(public).and_then(|k| crate::keys::usable_key(&k));
                if usable.is_none() {
                    errors.push(problem(
                        format!("{key}.\"{key_id}\""),
                        "is not a usable ed25519 public key (32 bytes in unpadded base64, a point on the curve, not of small order)",
                        "copy `verify_keys.<id>.key` from the homeserver's /_matrix/key/v2/server",
                    ));
                }
            }
        }
        let mut seen = Vec::new();
        for (i, is) in self.identity_servers.iter().enumerate() {
            self.validate_identity_server(i, is, &mut errors);
            let name = is.name.to_ascii_lowercase();
            if seen.contains(&name) {
                errors.push(problem(
                    format!("identity_servers[{i}].name"),
                    format!("`{}` is listed twice", is.name),
                    "give each identity server once",
                ));
            }
            seen.push(name);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }

    fn validate_email(&self, errors: &mut Vec<ConfigError>) {
        if self.email.from.parse::<lettre::message::Mailbox>().is_err() {
            errors.push(problem(
                "email.from",
                format!("`{}` is not a mailbox", self.email.from),
                "write it as `Name <address@example.org>` or `address@example.org`",
            ));
        }
        if !LANGUAGES.contains(&self.email.language.as_str()) {
            errors.push(problem(
                "email.language",
                format!("`{}` is not a supported language", self.email.language),
                "use \"en\" or \"de\"",
            ));
        }
        match (&self.email.transport, &self.email.smtp_url) {
            (EmailTransport::Smtp, None) => errors.push(problem(
                "email.smtp_url",
                "is missing, but `email.transport` is \"smtp\"",
                "set smtp_url = \"smtp://user:pass@mail.example.org:587?tls=required\"",
            )),
            (_, Some(url)) => match Url::parse(url) {
                Ok(url)
                    if url.scheme() == "smtp"
                        && url
                            .query_pairs()
                            .find(|(k, _)| k == "tls")
                            .is_none_or(|(_, v)| v != "required")
                        && !is_loopback_host(&url) =>
                {
                    errors.push(problem(
                        "email.smtp_url",
                        "may send mail and the password unencrypted (no tls, or tls=opportunistic) to a host that is not loopback",
                        "add ?tls=required (STARTTLS, usually port 587), or use smtps:// (port 465)",
                    ))
                }
                Ok(url) if matches!(url.scheme(), "smtp" | "smtps") && url.host().is_some() => {}
                _ => errors.push(problem(
                    "email.smtp_url",
                    "is not an smtp:// or smtps:// URL with a host",
                    "set smtp_url = \"smtp://user:pass@mail.example.org:587?tls=required\"",
                )),
            },
            _ => {}
        }
    }

    fn validate_email_delivery(&self, errors: &mut Vec<ConfigError>) {
        let email = &self.email;
        if email.timeout.is_zero() || email.timeout > Duration::from_secs(600) {
            errors.push(problem(
                "email.timeout",
                "must be above zero and at most 10 minutes",
                "use e.g. \"30s\"",
            ));
        }
        if email.retry_initial.is_zero() || email.retry_max < email.retry_initial {
            errors.push(problem(
                "email.retry_initial",
                "must be above zero and at most email.retry_max",
                "use e.g. retry_initial = \"1m\" and retry_max = \"1h\"",
            ));
        }
        if email.max_attempts == 0 {
            errors.push(problem("email.max_attempts", "is zero", "use e.g. 12"));
        }
        if let Some(dkim) = &email.dkim {
            if dkim.selector.is_empty() || dkim.domain.is_empty() {
                errors.push(problem(
                    "email.dkim",
                    "needs a selector and a domain",
                    "set selector = \"assent\" and domain = \"example.org\"",
                ));
            }
            if !dkim.key_file.is_file() {
                errors.push(problem(
                    "email.dkim.key_file",
                    format!("{} is not a readable file", dkim.key_file.display()),
                    "point it at the private key (PKCS#1 PEM for rsa)",
                ));
            }
        }
    }

    fn validate_identity_server(
        &self,
        i: usize,
        is: &IdentityServerConfig,
        errors: &mut Vec<ConfigError>,
    ) {
        let key = |field: &str| format!("identity_servers[{i}].{field}");
        if ruma_common::ServerName::parse(&is.name).is_err() {
            errors.push(problem(
                key("name"),
                format!("`{}` is not a valid server name", is.name),
                "use the name homeservers use for this identity server, e.g. matrix.example.org",
            ));
        }
        if !matches!(is.upstream.scheme(), "http" | "https") || is.upstream.host().is_none() {
            errors.push(problem(
                key("upstream"),
                "is not an http(s) URL with a host",
                "point it at the real identity server, e.g. http://127.0.0.1:8090",
            ));
        }
        if let Some(url) = &is.privacy_policy_url {
            if !matches!(url.scheme(), "http" | "https") {
                errors.push(problem(
                    key("privacy_policy_url"),
                    "is not an http(s) URL",
                    "link the identity server's privacy policy page",
                ));
            }
        }
        for (j, origin) in is.frame_ancestors.iter().enumerate() {
            if !is_origin(origin) {
                errors.push(problem(
                    format!("identity_servers[{i}].frame_ancestors[{j}]"),
                    format!("`{origin}` is not an origin"),
                    "give scheme, host (international names in punycode) and optional port only, e.g. https://matrix.example.org",
                ));
            }
        }
        for (j, token) in is.api_tokens.iter().enumerate() {
            if let Err(why) = check_token(token) {
                errors.push(problem(
                    format!("identity_servers[{i}].api_tokens[{j}]"),
                    why.to_string(),
                    TOKEN_FIX,
                ));
            }
        }
        if let Some(language) = &is.language {
            if !LANGUAGES.contains(&language.as_str()) {
                errors.push(problem(
                    key("language"),
                    format!("`{language}` is not a supported language"),
                    "use \"en\" or \"de\", or leave it out to use email.language",
                ));
            }
        }
        for (j, sink) in is.relay.iter().enumerate() {
            if let RelaySink::SydentInternal { url } | RelaySink::Webhook { url } = sink {
                if !matches!(url.scheme(), "http" | "https") {
                    errors.push(problem(
                        format!("identity_servers[{i}].relay[{j}].url"),
                        "is not an http(s) URL",
                        "give the full URL the relay posts to",
                    ));
                }
            }
        }
    }
}

pub(super) const TOKEN_FIX: &str = "use a random token of at least 32 characters (e.g. `openssl rand -hex 32`), or `sha256:` and the 64 hex digits of its SHA-256";

/// A token is either the secret itself (long enough not to be guessed) or
/// `sha256:<64 hex digits>` of it.
/// What is wrong with a configured token.
#[derive(Debug, thiserror::Error)]
pub(super) enum TokenProblem {
    #[error("`sha256:` must be followed by 64 hex digits")]
    NotAHash,
    #[error("is {0} characters long; tokens need at least 32")]
    TooShort(usize),
}

pub(super) fn check_token(token: &str) -> Result<(), TokenProblem> {
    if let Some(hex) = token.strip_prefix("sha256:") {
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(());
        }
        return Err(TokenProblem::NotAHash);
    }
    if token.len() < 32 {
        return Err(TokenProblem::TooShort(token.len()));
    }
    Ok(())
}

/// An origin exactly as browsers serialise it (scheme, ASCII host, port),
/// so that it can go into a CSP header as it is.
pub(super) fn is_origin(origin: &str) -> bool {
    match Url::parse(origin) {
        Ok(url) => {
            let host_ok = match url.host() {
                Some(url::Host::Domain(domain)) => domain
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'),
                Some(_) => true,
                None => false,
            };
            host_ok
                && matches!(url.scheme(), "http" | "https")
                && url.origin().ascii_serialization() == origin
        }
        Err(_) => false,
    }
}
