//! The configuration: one typed struct, read from an optional TOML file with
//! `ASSENT_…` environment overrides, and validated with messages that name the
//! key and the fix.

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
    /// How long an ended request's personal data is kept (counted from its
    /// end: decided and relayed or given up, expired, cancelled); then only
    /// a tombstone is left. A decision still answering repeats of its
    /// unbind (`deny_cooldown`, `request_ttl`) is kept until that ends too.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Reverse proxies (CIDRs) whose `Forwarded` / `X-Forwarded-For` is
    /// believed: behind them, the client is the first untrusted address
    /// from the right. Empty: every connection is its own client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The header those proxies name the client in: `x-forwarded-for`
    /// (nginx, Caddy) or `forwarded` (RFC 7239). Only that one is read.
    pub trusted_proxy_header: ProxyHeader,
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

/// Which header a trusted proxy names the client in. Only that one is
/// read: a proxy passes the other on from the client untouched, so it
/// would let any client choose its own address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyHeader {
    /// `X-Forwarded-For` (nginx's `$proxy_add_x_forwarded_for`, Caddy).
    XForwardedFor,
    /// `Forwarded` (RFC 7239).
    Forwarded,
}

impl IdentityServerConfig {
    /// `upstream` + the path and query exactly as received.
    pub fn upstream_url(&self, path_and_query: &str) -> String {
        format!(
            "{}{}",
            self.upstream.as_str().trim_end_matches('/'),
            path_and_query
        )
    }
}

impl RelaySink {
    /// The sink's kind, as the config, metrics and audit trail name it.
    pub fn name(&self) -> &'static str {
        match self {
            RelaySink::Replay => "replay",
            RelaySink::SydentInternal { .. } => "sydent-internal",
            RelaySink::Webhook { .. } => "webhook",
        }
    }

    /// Whether this sink is told of a decision with this outcome: the
    /// unbinding sinks of approvals only, webhooks of every decision.
    pub fn applies(&self, status: assent_shared::RequestStatus) -> bool {
        match self {
            RelaySink::Replay | RelaySink::SydentInternal { .. } => {
                status == assent_shared::RequestStatus::Approved
            }
            RelaySink::Webhook { .. } => true,
        }
    }
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
            retention: Duration::from_secs(90 * 24 * 3600),
            trusted_proxies: Vec::new(),
            trusted_proxy_header: ProxyHeader::XForwardedFor,
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

pub(super) fn is_loopback_host(url: &Url) -> bool {
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

pub(super) fn problem(
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
    /// `database_url`, or the SQLite file in the data folder.
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
}

mod load;
mod validate;

#[cfg(test)]
mod secret_file_tests;
#[cfg(test)]
mod tests;
