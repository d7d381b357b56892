//! The configuration: one typed struct, read from an optional TOML file with
//! `ASSENT_…` environment overrides, and validated with messages that name the
//! key and the fix.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

/// Everything an operator can set. Every key has a default that lets
/// `assent serve` start with no file at all.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address and port the HTTP server listens on.
    pub listen: SocketAddr,
    /// Base of every link Assent sends (emails, printed links).
    pub public_url: Url,
    /// The name Assent signs decisions as (names its signing key).
    pub server_name: String,
    /// Holds the signing key, mail files and the SQLite database.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; by default a SQLite file in `data_dir`.
    pub database_url: Option<String>,
    /// A file holding `database_url` (instead of it), for its password.
    pub database_url_file: Option<PathBuf>,
    /// A built web front end (Trunk's `dist/`) to serve instead of the one
    /// embedded in the binary: for people who change the front end.
    pub dist_dir: Option<PathBuf>,
    /// How long a request waits for the owner before it expires.
    #[serde(with = "humantime_serde")]
    pub request_ttl: Duration,
    /// How long after a decision its relay keeps trying a sink that fails
    /// (network errors, 5xx) before it gives up.
    #[serde(with = "humantime_serde")]
    pub relay_give_up_after: Duration,
    /// How long after an owner denied an unbind a repeat of it (the same
    /// identity server, requesting server, Matrix ID and address, however
    /// its bytes differ) is answered from that denial: no new request, no
    /// new email.
    #[serde(with = "humantime_serde")]
    pub deny_cooldown: Duration,
    /// Reverse proxies (CIDRs) whose `Forwarded` / `X-Forwarded-For` is
    /// believed: behind them, the client is the first untrusted address
    /// from the right. Empty: every connection is its own client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The header those proxies name the client in: `x-forwarded-for`
    /// (nginx, Caddy) or `forwarded` (RFC 7239). Only that one is read.
    pub trusted_proxy_header: crate::client::ProxyHeader,
    /// Where `/metrics` is served, apart from the public listener (which
    /// then has none); empty: on `listen`, beside everything else.
    #[serde(with = "optional_address")]
    pub metrics_listen: Option<SocketAddr>,
    /// `text` (for people) or `json` (a JSON object a line, for collectors).
    pub log_format: LogFormat,
    /// What loading noticed but did not refuse, logged once logging runs
    /// (so that JSON logs stay JSON).
    #[serde(skip)]
    pub load_warnings: Vec<String>,
    /// What a homeserver is told while its request is held.
    pub held_response: HeldResponse,
    /// What happens to phone-number unbinds, which have no owner to ask.
    pub msisdn_policy: MsisdnPolicy,
    pub email: EmailConfig,
    pub admin: AdminConfig,
    pub keys: KeysConfig,
    pub http: HttpConfig,
    pub limits: LimitsConfig,
    pub identity_servers: Vec<IdentityServerConfig>,
}

/// Rate limits on unbinds, answered with `M_LIMIT_EXCEEDED`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Signed unbinds accepted from one requesting server per minute.
    pub unbinds_per_origin_per_minute: u32,
    /// New held requests (each one sends an email) for one address per hour.
    pub holds_per_address_per_hour: u32,
    /// Unbinds refused for their signature (each may have cost a key fetch)
    /// per claimed homeserver and client address per minute; past it, that
    /// client's requests for that server wait if they need a key fetch.
    /// A homeserver whose key is pinned or cached never waits.
    pub failed_unbinds_per_client_per_minute: u32,
    /// Unbinds with a validation session (`sid` + `client_secret`, passed to
    /// the identity server to check) per requesting server, as the Matrix ID
    /// names it, and client address per minute.
    pub owner_proven_per_server_per_minute: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            unbinds_per_origin_per_minute: 600,
            holds_per_address_per_hour: 5,
            failed_unbinds_per_client_per_minute: 30,
            owner_proven_per_server_per_minute: 30,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeldResponse {
    /// 202 `{}`: Synapse reports success and carries on.
    Accepted,
    /// 403: Synapse fails the owner's `/3pid/delete` and blocks deactivation.
    Forbidden,
    /// 501: Synapse reports `no-support` and removes the address locally.
    NotSupported,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MsisdnPolicy {
    Hold,
    Forward,
    Reject,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailConfig {
    /// The sender, e.g. `Example identity server <noreply@example.org>`.
    pub from: String,
    pub transport: EmailTransport,
    /// `smtp://user:pass@host:587?tls=required`; needed when `transport = "smtp"`.
    pub smtp_url: Option<String>,
    /// A file holding `smtp_url` (instead of it).
    pub smtp_url_file: Option<PathBuf>,
    /// Language of the emails: `en` or `de`.
    pub language: String,
    /// Longest wait for the SMTP server at each step.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Wait before the first retry after a temporary failure; it doubles
    /// with each further one (with jitter), up to `retry_max`.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Attempts before a message that keeps failing temporarily is given up.
    pub max_attempts: u32,
    /// DKIM signing; off when absent.
    pub dkim: Option<DkimSettings>,
    /// Whether this process sends queued email. With several replicas, some
    /// may only take requests (false) while others send; rows wait in the
    /// outbox meanwhile.
    pub send: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimSettings {
    /// The selector published in DNS (`<selector>._domainkey.<domain>`).
    pub selector: String,
    /// The signing domain (`d=`), usually the domain of `email.from`.
    pub domain: String,
    /// PKCS#1 PEM for RSA, or the base64 32-byte seed for Ed25519.
    pub key_file: PathBuf,
    #[serde(default)]
    pub algorithm: DkimAlgorithm,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DkimAlgorithm {
    #[default]
    Rsa,
    Ed25519,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailTransport {
    /// Writes each message as an `.eml` file into `data_dir/mail`.
    File,
    Smtp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Bearer tokens for the admin console and API, or `sha256:<hex>` of them.
    pub tokens: Vec<String>,
    /// A file with more tokens, one a line (`#` comments and blank lines
    /// skipped), so that none need be in the config or the environment.
    pub tokens_file: Option<PathBuf>,
    /// How long a console sign-in lasts.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            tokens: Vec::new(),
            tokens_file: None,
            session_ttl: Duration::from_secs(12 * 3600),
        }
    }
}

/// An address that may be written as `""` for none.
mod optional_address {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::net::SocketAddr;

    pub fn serialize<S: Serializer>(value: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&value.map(|a| a.to_string()).unwrap_or_default())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim().is_empty() {
            return Ok(None);
        }
        text.trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom("not an address and port"))
    }
}

/// How long a connection may take, and how many there may be: a client
/// that sends a byte at a time cannot hold a connection for ever.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// How long a request's headers may take to arrive: from the accept on
    /// a new connection, from their first byte on a kept-alive one.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    /// Keep a reverse proxy's upstream keep-alive shorter than this.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How long a request's body may take to arrive (answered 408 after).
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Connections open at once; past it, new ones wait to be accepted.
    pub max_connections: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            // A phone on a slow network gets its headers out in far less.
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(60),
            max_connections: 4096,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// Whether key fetches (whose server names come from requests) may reach
    /// loopback and private addresses.
    pub allow_private_addresses: bool,
    /// Homeserver keys to trust without discovery: server name → key id → key.
    pub pinned: BTreeMap<String, BTreeMap<String, String>>,
    /// DNS servers (`address:port`) for server discovery; empty: the
    /// system's, from /etc/resolv.conf.
    pub nameservers: Vec<SocketAddr>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityServerConfig {
    /// What homeservers sign as `destination_is`; matched against `Host`.
    pub name: String,
    pub display_name: String,
    pub operator: String,
    pub privacy_policy_url: Option<Url>,
    /// The real identity server behind Assent.
    pub upstream: Url,
    #[serde(default)]
    pub proxy_all: bool,
    #[serde(default = "default_binding_check")]
    pub binding_check: BindingCheck,
    /// Origins allowed to frame the embedded consent page.
    #[serde(default)]
    pub frame_ancestors: Vec<String>,
    /// Bearer tokens for this identity server's integrated-mode calls.
    #[serde(default)]
    pub api_tokens: Vec<String>,
    /// A file with more of them, one a line.
    #[serde(default)]
    pub api_tokens_file: Option<PathBuf>,
    /// Email language for this identity server's requests.
    pub language: Option<String>,
    #[serde(default = "default_relay")]
    pub relay: Vec<RelaySink>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindingCheck {
    V1Lookup,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum RelaySink {
    Replay,
    SydentInternal { url: Url },
    Webhook { url: Url },
}

fn default_binding_check() -> BindingCheck {
    BindingCheck::V1Lookup
}

fn default_relay() -> Vec<RelaySink> {
    vec![RelaySink::Replay]
}

pub const LANGUAGES: [&str; 2] = ["en", "de"];

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: Url::parse("http://127.0.0.1:8080/").unwrap_or_else(|_| unreachable!()),
            server_name: "localhost".to_owned(),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            database_url_file: None,
            dist_dir: None,
            request_ttl: Duration::from_secs(7 * 24 * 3600),
            relay_give_up_after: Duration::from_secs(36 * 3600),
            deny_cooldown: Duration::from_secs(30 * 24 * 3600),
            trusted_proxies: Vec::new(),
            trusted_proxy_header: crate::client::ProxyHeader::XForwardedFor,
            metrics_listen: None,
            log_format: LogFormat::Text,
            load_warnings: Vec::new(),
            held_response: HeldResponse::Accepted,
            msisdn_policy: MsisdnPolicy::Hold,
            email: EmailConfig::default(),
            admin: AdminConfig::default(),
            keys: KeysConfig::default(),
            http: HttpConfig::default(),
            limits: LimitsConfig::default(),
            identity_servers: Vec::new(),
        }
    }
}

impl Default for EmailConfig {
    fn default() -> Self {
        EmailConfig {
            from: "Assent <noreply@localhost>".to_owned(),
            transport: EmailTransport::File,
            smtp_url: None,
            smtp_url_file: None,
            language: "en".to_owned(),
            timeout: Duration::from_secs(30),
            retry_initial: Duration::from_secs(60),
            retry_max: Duration::from_secs(3600),
            max_attempts: 12,
            dkim: None,
            send: true,
        }
    }
}

/// One problem in the configuration: where, what, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}\n    fix: {}", self.key, self.problem, self.fix)
    }
}

/// All the problems found, so an operator can fix them in one go.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "the configuration has {} problem(s):", self.0.len())?;
        for error in &self.0 {
            writeln!(f, "  {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Whether cookies are marked `Secure`: always, unless Assent is reached
    /// over plain HTTP on a loopback address (a development machine).
    pub fn secure_cookies(&self) -> bool {
        !(self.public_url.scheme() == "http" && is_loopback_host(&self.public_url))
    }
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        // smtp: is not a special scheme, so addresses come as opaque names.
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost")
                || d.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn problem(
    key: impl Into<String>,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> ConfigError {
    ConfigError {
        key: key.into(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// The environment variables that override config keys: `ASSENT_LISTEN`,
/// `ASSENT_EMAIL__TRANSPORT` (a double underscore enters a table).
pub const ENV_PREFIX: &str = "ASSENT_";

impl Config {
    /// Reads the file (when given), then the environment, then validates.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigErrors> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigErrors(vec![problem(
                    "--config",
                    format!("no config file at {}", path.display()),
                    "give the path of an existing TOML file, or leave --config out to run on the defaults",
                )]));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        // Only variables naming a config key are read: orchestrators set
        // others with this prefix (Kubernetes: ASSENT_PORT for a Service
        // named `assent`), and those must not stop the server.
        let mut load_warnings = Vec::new();
        for (name, _) in std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v))) {
            if let Some(key) = name.strip_prefix(ENV_PREFIX) {
                if !is_config_key(&key.to_ascii_lowercase()) {
                    load_warnings.push(format!(
                        "ignoring the environment variable {name}: it names no config key"
                    ));
                }
            }
        }
        figment = figment.merge(
            Env::prefixed(ENV_PREFIX)
                .split("__")
                .filter(|key| is_config_key(&key.as_str().to_ascii_lowercase())),
        );
        let mut config: Config = figment.extract().map_err(from_figment)?;
        config.load_warnings = load_warnings;
        config.read_secret_files()?;
        config.validate()?;
        Ok(config)
    }

    /// Reads the secrets given as `*_file`: admin and API tokens (one a
    /// line, added to the listed ones), the SMTP URL and the database URL
    /// (instead of the value, not beside it).
    fn read_secret_files(&mut self) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        if let Some(path) = &self.admin.tokens_file {
            match read_secret(path) {
                Ok(text) => self.admin.tokens.extend(token_lines(&text)),
                Err(why) => errors.push(file_problem("admin.tokens_file", path, &why)),
            }
        }
        for (i, is) in self.identity_servers.iter_mut().enumerate() {
            if let Some(path) = &is.api_tokens_file {
                match read_secret(path) {
                    Ok(text) => is.api_tokens.extend(token_lines(&text)),
                    Err(why) => errors.push(file_problem(
                        &format!("identity_servers[{i}].api_tokens_file"),
                        path,
                        &why,
                    )),
                }
            }
        }
        for (key, path, value) in [
            (
                "email.smtp_url_file",
                &self.email.smtp_url_file,
                &mut self.email.smtp_url,
            ),
            (
                "database_url_file",
                &self.database_url_file,
                &mut self.database_url,
            ),
        ] {
            let Some(path) = path else { continue };
            if value.is_some() {
                errors.push(problem(
                    key,
                    "is set together with the value it would hold",
                    "keep one of the two",
                ));
                continue;
            }
            match read_secret(path) {
                Ok(text) if !text.trim().is_empty() => *value = Some(text.trim().to_owned()),
                Ok(_) => errors.push(file_problem(key, path, "the file is empty")),
                Err(why) => errors.push(file_problem(key, path, &why)),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }

    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("assent.db").display()),
        }
    }

    /// The link an owner follows, for a raw token.
    pub fn consent_link(&self, token: &str) -> String {
        format!("{}consent/{token}", self.public_base())
    }

    /// `public_url` with exactly one trailing slash.
    pub fn public_base(&self) -> String {
        let url = self.public_url.as_str();
        if url.ends_with('/') {
            url.to_owned()
        } else {
            format!("{url}/")
        }
    }

    pub fn identity_server(&self, name: &str) -> Option<&IdentityServerConfig> {
        self.identity_servers
            .iter()
            .find(|is| is.name.eq_ignore_ascii_case(name))
    }

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
                errors.push(problem(format!("admin.tokens[{i}]"), why, TOKEN_FIX));
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
                let usable = crate::keys::decode_unpadded(public)
                    .and_then(|k| crate::intake::signature_batch::usable_key(&k));
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
                    why,
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

    /// Settings that are fine for trying Assent out but not for serving real
    /// owners: each a key and why, for `check-config` to warn about.
    pub fn demo_like_settings(&self) -> Vec<(&'static str, String)> {
        let mut warnings = Vec::new();
        if self.email.transport == EmailTransport::File {
            warnings.push((
                "email.transport",
                "is `file`: emails are written into data_dir/mail, and no owner receives one"
                    .to_owned(),
            ));
        }
        let is_local = |host: &str| {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        };
        if is_local(self.server_name.split(':').next().unwrap_or_default()) {
            warnings.push((
                "server_name",
                format!(
                    "is `{}`: receipts are signed under a name no one can look up",
                    self.server_name
                ),
            ));
        }
        let public_host = self.public_url.host_str().unwrap_or_default();
        if is_local(public_host) {
            warnings.push((
                "public_url",
                format!("points at {public_host}: the links in emails only open on this machine"),
            ));
        } else if self.public_url.scheme() == "http" {
            warnings.push((
                "public_url",
                "is http:// on a public host: consent links and the admin sign-in travel unencrypted"
                    .to_owned(),
            ));
        }
        if self.identity_servers.is_empty() {
            warnings.push((
                "identity_servers",
                "is empty: no unbind is taken, only the demo works".to_owned(),
            ));
        }
        warnings
    }

    /// The effective configuration as TOML, with every secret masked.
    pub fn to_masked_toml(&self) -> String {
        let mut masked = self.clone();
        masked.database_url = Some(mask_url_password(&self.database_url()));
        masked.email.smtp_url = self.email.smtp_url.as_deref().map(mask_url_password);
        masked.admin.tokens = mask_all(&self.admin.tokens);
        for is in &mut masked.identity_servers {
            is.api_tokens = mask_all(&is.api_tokens);
            mask_password(&mut is.upstream);
            for sink in &mut is.relay {
                if let RelaySink::SydentInternal { url } | RelaySink::Webhook { url } = sink {
                    mask_password(url);
                }
            }
        }
        toml::to_string_pretty(&masked)
            .unwrap_or_else(|e| format!("# could not print the config: {e}\n"))
    }
}

/// The top-level keys, which environment variables may set.
const TOP_LEVEL_KEYS: [&str; 22] = [
    "listen",
    "public_url",
    "server_name",
    "data_dir",
    "database_url",
    "database_url_file",
    "dist_dir",
    "request_ttl",
    "relay_give_up_after",
    "deny_cooldown",
    "trusted_proxies",
    "trusted_proxy_header",
    "metrics_listen",
    "log_format",
    "limits",
    "held_response",
    "msisdn_policy",
    "email",
    "admin",
    "keys",
    "http",
    "identity_servers",
];

/// Whether an environment key (prefix removed, lower case, `__` or `.`
/// between levels) starts with a config key.
fn is_config_key(key: &str) -> bool {
    let first = key.split("__").next().unwrap_or(key);
    let first = first.split('.').next().unwrap_or(first);
    TOP_LEVEL_KEYS.contains(&first)
}

const TOKEN_FIX: &str = "use a random token of at least 32 characters (e.g. `openssl rand -hex 32`), or `sha256:` and the 64 hex digits of its SHA-256";

/// A token is either the secret itself (long enough not to be guessed) or
/// `sha256:<64 hex digits>` of it.
fn check_token(token: &str) -> Result<(), String> {
    if let Some(hex) = token.strip_prefix("sha256:") {
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(());
        }
        return Err("`sha256:` must be followed by 64 hex digits".to_owned());
    }
    if token.len() < 32 {
        return Err(format!(
            "is {} characters long; tokens need at least 32",
            token.len()
        ));
    }
    Ok(())
}

/// An origin exactly as browsers serialise it (scheme, ASCII host, port),
/// so that it can go into a CSP header as it is.
fn is_origin(origin: &str) -> bool {
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

fn mask_password(url: &mut Url) {
    if url.password().is_some() {
        let _ = url.set_password(Some("********"));
    }
}

fn mask_all(tokens: &[String]) -> Vec<String> {
    tokens.iter().map(|_| "********".to_owned()).collect()
}

fn mask_url_password(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            if parsed.set_password(Some("********")).is_ok() {
                parsed.to_string()
            } else {
                "********".to_owned()
            }
        }
        Ok(_) => url.to_owned(),
        // Not a URL the parser accepts, but it may still carry a password:
        // hide everything between the scheme and the last '@'.
        Err(_) => match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme + 3 => {
                format!("{}********{}", &url[..scheme + 3], &url[at..])
            }
            _ => url.to_owned(),
        },
    }
}

/// Turns figment's errors into ones that name the key and the fix.
fn from_figment(error: figment::Error) -> ConfigErrors {
    ConfigErrors(
        error
            .into_iter()
            .map(|e| {
                let source = e
                    .metadata
                    .as_ref()
                    .map(|m| match &m.source {
                        Some(source) => format!(" (from {} {source})", m.name),
                        None => format!(" (from {})", m.name),
                    })
                    .unwrap_or_default();
                let mut key = e.path.join(".");
                let what = match &e.kind {
                    figment::error::Kind::UnknownField(field, expected) => {
                        // figment puts the field at the end of the path already.
                        if e.path.last() != Some(field) {
                            if !key.is_empty() {
                                key.push('.');
                            }
                            key.push_str(field);
                        }
                        let fix = if expected.is_empty() {
                            "remove it".to_owned()
                        } else {
                            format!("remove it, or use one of: {}", expected.join(", "))
                        };
                        return problem(key, format!("unknown key{source}"), fix);
                    }
                    // Type errors quote the value; for secrets, say less.
                    _ if is_secret_key(&key) => {
                        "has the wrong type or form (the value is not shown: it may be secret)"
                            .to_owned()
                    }
                    kind => kind.to_string(),
                };
                if key.is_empty() {
                    key = "(top level)".to_owned();
                }
                problem(key.clone(), format!("{what}{source}"), fix_for(&key))
            })
            .collect(),
    )
}

/// A secret file's text (the error never quotes its content).
fn read_secret(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| e.to_string())
}

fn file_problem(key: &str, path: &Path, why: &str) -> ConfigError {
    problem(
        key,
        format!("cannot read {}: {why}", path.display()),
        "give the path of a file this user can read",
    )
}

/// Tokens from a file: a line each, `#` comments and blank lines skipped.
fn token_lines(text: &str) -> impl Iterator<Item = String> + '_ {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
}

fn is_secret_key(key: &str) -> bool {
    [
        "tokens",
        "api_tokens",
        "smtp_url",
        "database_url",
        "upstream",
        "relay",
    ]
    .iter()
    .any(|secret| key.split('.').any(|part| part.starts_with(secret)))
}

fn fix_for(key: &str) -> String {
    let last = key.rsplit('.').next().unwrap_or(key);
    match last {
        "listen" => "write an address and port, e.g. \"127.0.0.1:8080\"",
        "metrics_listen" => "write an address and port, e.g. \"127.0.0.1:9464\", or \"\" for none",
        "public_url" | "upstream" | "privacy_policy_url" | "url" => {
            "write a full URL, e.g. \"https://consent.example.org\""
        }
        "request_ttl"
        | "relay_give_up_after"
        | "session_ttl"
        | "deny_cooldown"
        | "header_read_timeout"
        | "idle_timeout"
        | "body_read_timeout" => "write a duration, e.g. \"7d\" or \"48h\"",
        "held_response" => "use \"accepted\", \"forbidden\" or \"not_supported\"",
        "msisdn_policy" => "use \"hold\", \"forward\" or \"reject\"",
        "log_format" => "use \"text\" or \"json\"",
        "transport" => "use \"file\" or \"smtp\"",
        "binding_check" => "use \"v1_lookup\" or \"none\"",
        "kind" => "use \"replay\", \"sydent-internal\" or \"webhook\"",
        "tokens" | "api_tokens" | "frame_ancestors" => "write a list of strings, e.g. [\"…\"]",
        "trusted_proxy_header" => "use \"x-forwarded-for\" or \"forwarded\"",
        "trusted_proxies" => "write a list of CIDRs, e.g. [\"127.0.0.1/32\", \"10.0.0.0/8\"]",
        "proxy_all" | "allow_private_addresses" => "write true or false",
        _ => "see docs/configuration.md for this key's type",
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn load_str(toml: &str) -> Result<Config, ConfigErrors> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(toml.as_bytes()).unwrap();
        Config::load(Some(file.path()))
    }

    fn keys_of(errors: &ConfigErrors) -> Vec<&str> {
        errors.0.iter().map(|e| e.key.as_str()).collect()
    }

    #[test]
    fn defaults_are_valid_and_use_sqlite_in_the_data_dir() {
        let config = Config::default();
        config.validate().unwrap();
        assert_eq!(config.database_url(), "sqlite://./data/assent.db");
        assert_eq!(
            config.consent_link("abc"),
            "http://127.0.0.1:8080/consent/abc"
        );
    }

    #[test]
    fn the_design_example_loads() {
        let config = load_str(
            r#"
listen = "127.0.0.1:8080"
public_url = "http://127.0.0.1:8080"
server_name = "consent.example.org"
data_dir = "./data"
database_url = "sqlite://./data/assent.db"
request_ttl = "7d"
held_response = "accepted"
msisdn_policy = "hold"

[email]
from = "Example identity server <noreply@example.org>"
transport = "file"
smtp_url = "smtp://user:pass@mail.example.org:587?tls=required"
language = "en"

[admin]
tokens = ["0123456789abcdef0123456789abcdef"]

[keys]
allow_private_addresses = false
[keys.pinned."hs.example.org"]
"ed25519:a_AbCd" = "1oqOQhXJ5QqSnZija6zHwdsAgOUakzBGnEHrvDatgdU"

[[identity_servers]]
name = "matrix.example.org"
display_name = "Example identity server"
operator = "Example Ltd"
privacy_policy_url = "https://example.org/privacy"
upstream = "http://127.0.0.1:8090"
proxy_all = false
binding_check = "v1_lookup"
frame_ancestors = ["https://matrix.example.org"]
api_tokens = ["sha256:0000000000000000000000000000000000000000000000000000000000000000"]
relay = [{ kind = "replay" }, { kind = "webhook", url = "https://is.example.org/assent-hook" }]
"#,
        )
        .unwrap();
        assert_eq!(config.request_ttl, Duration::from_secs(7 * 86400));
        assert_eq!(config.identity_servers[0].relay.len(), 2);
        assert_eq!(config.keys.pinned["hs.example.org"].len(), 1);
        let printed = config.to_masked_toml();
        assert!(
            !printed.contains("pass@"),
            "smtp password must be masked:\n{printed}"
        );
        assert!(
            !printed.contains("0123456789abcdef"),
            "admin token must be masked"
        );
        assert!(printed.contains("********"));
    }

    #[test]
    fn an_unknown_key_is_named_with_the_known_ones() {
        let errors = load_str("listen = \"127.0.0.1:1\"\nlisten_port = 3\n").unwrap_err();
        assert_eq!(keys_of(&errors), ["listen_port"]);
        assert!(errors.0[0].fix.contains("listen"), "{}", errors);
        let errors = load_str("[email]\nfrm = \"a@b.c\"\n").unwrap_err();
        assert_eq!(keys_of(&errors), ["email.frm"]);
    }

    #[test]
    fn a_wrong_type_names_the_key_and_the_fix() {
        let errors = load_str("listen = 8080\n").unwrap_err();
        assert_eq!(keys_of(&errors), ["listen"]);
        assert!(errors.0[0].fix.contains("127.0.0.1:8080"));
        let errors = load_str("request_ttl = \"soon\"\n").unwrap_err();
        assert_eq!(keys_of(&errors), ["request_ttl"]);
        let errors = load_str("held_response = \"maybe\"\n").unwrap_err();
        assert_eq!(keys_of(&errors), ["held_response"]);
    }

    #[test]
    fn semantic_problems_are_all_reported() {
        let errors = load_str(
            r#"
server_name = "not a name"
database_url = "mysql://x"
[email]
from = "nobody"
transport = "smtp"
language = "fr"
[admin]
tokens = ["short"]
[[identity_servers]]
name = "is.example.org"
display_name = "IS"
operator = "Op"
upstream = "http://127.0.0.1:8090"
frame_ancestors = ["https://is.example.org/path"]
"#,
        )
        .unwrap_err();
        assert_eq!(
            keys_of(&errors),
            [
                "server_name",
                "database_url",
                "email.from",
                "email.language",
                "email.smtp_url",
                "admin.tokens[0]",
                "identity_servers[0].frame_ancestors[0]"
            ]
        );
    }

    #[test]
    fn pinned_keys_must_be_ed25519_public_keys() {
        // 32 bytes that are no point on the curve, found rather than written
        // down so that the test says what it checks.
        let not_a_point = (0..=255u8)
            .map(|b| [b; 32])
            .find(|raw| ed25519_dalek::VerifyingKey::try_from(raw.as_slice()).is_err())
            .map(|raw| crate::keys::encode_unpadded(&raw))
            .unwrap();
        let good = "1oqOQhXJ5QqSnZija6zHwdsAgOUakzBGnEHrvDatgdU";
        let errors = load_str(&format!(
            r#"
[keys.pinned."hs.example.org"]
"ed25519:good" = "{good}"
"ed25519:curve" = "{not_a_point}"
"ed25519:short" = "AAAA"
"ed25519:weak" = "{identity}"
"#,
            // The identity point: of small order, anyone can sign for it.
            identity = crate::keys::encode_unpadded(&{
                let mut raw = [0u8; 32];
                raw[0] = 1;
                raw
            }),
        ))
        .unwrap_err();
        assert_eq!(
            keys_of(&errors),
            [
                "keys.pinned.\"hs.example.org\".\"ed25519:curve\"",
                "keys.pinned.\"hs.example.org\".\"ed25519:short\"",
                "keys.pinned.\"hs.example.org\".\"ed25519:weak\""
            ]
        );
        assert!(errors
            .to_string()
            .contains("is not a usable ed25519 public key"));
    }

    #[test]
    fn smtp_in_the_clear_only_to_loopback() {
        let smtp = |url: &str| {
            load_str(&format!(
                "[email]\ntransport = \"smtp\"\nsmtp_url = \"{url}\"\n"
            ))
        };
        for fine in [
            "smtp://user:pass@mail.example.org:587?tls=required",
            "smtps://user:pass@mail.example.org",
            "smtp://127.0.0.1:2525",
            "smtp://localhost:25",
            "smtp://127.0.0.1:25?tls=opportunistic",
        ] {
            assert!(smtp(fine).is_ok(), "{fine}");
        }
        assert!(smtp("smtp://mail.example.org:587?tls=opportunistic").is_err());
        let errors = smtp("smtp://user:secret@mail.example.org:587").unwrap_err();
        assert_eq!(keys_of(&errors), ["email.smtp_url"]);
        assert!(errors.to_string().contains("tls=required"), "{errors}");
        assert!(!errors.to_string().contains("secret"), "{errors}");
        let errors =
            load_str("[email]\nretry_initial = \"2h\"\nmax_attempts = 0\ntimeout = \"0s\"\n")
                .unwrap_err();
        assert_eq!(
            keys_of(&errors),
            ["email.timeout", "email.retry_initial", "email.max_attempts"]
        );
        let errors = load_str(
            "[email.dkim]\nselector = \"assent\"\ndomain = \"example.org\"\nkey_file = \"/nonexistent/dkim.key\"\n",
        )
        .unwrap_err();
        assert_eq!(keys_of(&errors), ["email.dkim.key_file"]);
    }

    #[test]
    fn secret_values_are_not_repeated_in_errors() {
        let errors = load_str("[admin]\ntokens = \"hunter2-the-admin-token\"\n").unwrap_err();
        assert_eq!(keys_of(&errors), ["admin.tokens"]);
        assert!(!errors.to_string().contains("hunter2"), "{errors}");
    }

    #[test]
    fn origins_must_be_exactly_as_browsers_write_them() {
        for good in [
            "https://matrix.example.org",
            "http://127.0.0.1:8765",
            "https://xn--bcher-kva.example",
        ] {
            assert!(is_origin(good), "{good}");
        }
        for bad in [
            "https://matrix.example.org/",
            "https://a.example;script-src *",
            "https://a.example;x",
            "https://a.example, https://b.example",
            "https://bücher.example",
            "https://user@a.example",
            "https://a.example/path",
            "ftp://a.example",
            "'none'",
        ] {
            assert!(!is_origin(bad), "{bad}");
        }
    }

    #[test]
    fn only_config_keys_are_taken_from_the_environment() {
        assert!(is_config_key("listen"));
        assert!(is_config_key("email__transport"));
        assert!(is_config_key("email.transport"));
        assert!(!is_config_key("port"));
        assert!(!is_config_key("service_host"));
    }

    #[test]
    fn passwords_are_masked_even_in_urls_that_do_not_parse() {
        assert_eq!(
            mask_url_password("postgres://assent:s3cret@db/assent"),
            "postgres://assent:********@db/assent"
        );
        // A space in the host makes the URL parser refuse it.
        assert_eq!(
            mask_url_password("smtp://user:s3cret@bad host:587"),
            "smtp://********@bad host:587"
        );
        assert_eq!(
            mask_url_password("sqlite://./data/assent.db"),
            "sqlite://./data/assent.db"
        );
    }

    #[test]
    fn a_missing_file_is_an_error_not_the_defaults() {
        let errors = Config::load(Some(Path::new("/nonexistent/assent.toml"))).unwrap_err();
        assert_eq!(keys_of(&errors), ["--config"]);
    }
}

#[cfg(test)]
mod secret_file_tests {
    use super::*;
    use std::io::Write;

    fn load(toml: &str) -> Result<Config, ConfigErrors> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(toml.as_bytes()).unwrap();
        Config::load(Some(file.path()))
    }

    #[test]
    fn secrets_can_be_read_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("admin-tokens");
        std::fs::write(
            &tokens,
            "# the operators' tokens\n\nadmin-token-from-a-file-0123456789abcdef\n",
        )
        .unwrap();
        let api = dir.path().join("api-tokens");
        std::fs::write(&api, "api-token-from-a-file-0123456789abcdefgh\n").unwrap();
        let smtp = dir.path().join("smtp-url");
        std::fs::write(&smtp, "smtp://user:s3cret@127.0.0.1:25\n").unwrap();
        let database = dir.path().join("database-url");
        std::fs::write(&database, "postgres://assent:s3cret@db.example/assent\n").unwrap();
        let config = load(&format!(
            "database_url_file = \"{}\"\n[admin]\ntokens_file = \"{}\"\n[email]\ntransport = \"smtp\"\nsmtp_url_file = \"{}\"\n\
             [[identity_servers]]\nname = \"is.example.org\"\ndisplay_name = \"IS\"\noperator = \"Op\"\n\
             upstream = \"http://127.0.0.1:8090\"\napi_tokens_file = \"{}\"\n",
            database.display(),
            tokens.display(),
            smtp.display(),
            api.display()
        ))
        .unwrap();
        assert_eq!(
            config.admin.tokens,
            ["admin-token-from-a-file-0123456789abcdef"]
        );
        assert_eq!(
            config.identity_servers[0].api_tokens,
            ["api-token-from-a-file-0123456789abcdefgh"]
        );
        assert_eq!(
            config.email.smtp_url.as_deref(),
            Some("smtp://user:s3cret@127.0.0.1:25")
        );
        assert_eq!(
            config.database_url.as_deref(),
            Some("postgres://assent:s3cret@db.example/assent")
        );
        // The effective config printed by check-config still hides them.
        let printed = config.to_masked_toml();
        assert!(
            !printed.contains("s3cret") && !printed.contains("from-a-file"),
            "{printed}"
        );
    }

    #[test]
    fn a_missing_unreadable_or_doubled_secret_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nowhere");
        let errors = load(&format!(
            "[admin]\ntokens_file = \"{}\"\n",
            missing.display()
        ))
        .unwrap_err();
        let text = errors.to_string();
        assert!(text.contains("admin.tokens_file"), "{text}");
        assert!(text.contains(&missing.display().to_string()), "{text}");
        // A folder cannot be read as a file (root reads every file, so a
        // folder stands for the unreadable one).
        let errors = load(&format!(
            "[email]\nsmtp_url_file = \"{}\"\n",
            dir.path().display()
        ))
        .unwrap_err();
        assert!(
            errors.to_string().contains("email.smtp_url_file"),
            "{errors}"
        );
        // Empty, or set beside the value it would hold.
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let errors = load(&format!(
            "database_url = \"sqlite://./x.db\"\n[email]\nsmtp_url_file = \"{}\"\n",
            empty.display()
        ))
        .unwrap_err();
        assert!(errors.to_string().contains("the file is empty"), "{errors}");
        let errors = load(&format!(
            "database_url = \"sqlite://./x.db\"\ndatabase_url_file = \"{}\"\n",
            empty.display()
        ))
        .unwrap_err();
        assert!(errors.to_string().contains("database_url_file"), "{errors}");
        assert!(
            errors.to_string().contains("keep one of the two"),
            "{errors}"
        );
    }
}
