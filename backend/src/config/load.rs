//! Reading the configuration: defaults, the file, `ASSENT_…` variables and
//! `*_file` secrets; and printing it back with the secrets masked.

use super::*;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;

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
                Err(why) => errors.push(file_problem("admin.tokens_file", path, &why.to_string())),
            }
        }
        for (i, is) in self.identity_servers.iter_mut().enumerate() {
            if let Some(path) = &is.api_tokens_file {
                match read_secret(path) {
                    Ok(text) => is.api_tokens.extend(token_lines(&text)),
                    Err(why) => errors.push(file_problem(
                        &format!("identity_servers[{i}].api_tokens_file"),
                        path,
                        &why.to_string(),
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
                Err(why) => errors.push(file_problem(key, path, &why.to_string())),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
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
pub(super) const TOP_LEVEL_KEYS: [&str; 23] = [
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
    "retention",
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
pub(super) fn is_config_key(key: &str) -> bool {
    let first = key.split("__").next().unwrap_or(key);
    let first = first.split('.').next().unwrap_or(first);
    TOP_LEVEL_KEYS.contains(&first)
}

pub(super) fn mask_password(url: &mut Url) {
    if url.password().is_some() {
        let _ = url.set_password(Some("********"));
    }
}

pub(super) fn mask_all(tokens: &[String]) -> Vec<String> {
    tokens.iter().map(|_| "********".to_owned()).collect()
}

pub(super) fn mask_url_password(url: &str) -> String {
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
pub(super) fn from_figment(error: figment::Error) -> ConfigErrors {
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
pub(super) fn read_secret(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

pub(super) fn file_problem(key: &str, path: &Path, why: &str) -> ConfigError {
    problem(
        key,
        format!("cannot read {}: {why}", path.display()),
        "give the path of a file this user can read",
    )
}

/// Tokens from a file: a line each, `#` comments and blank lines skipped.
pub(super) fn token_lines(text: &str) -> impl Iterator<Item = String> + '_ {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
}

pub(super) fn is_secret_key(key: &str) -> bool {
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

pub(super) fn fix_for(key: &str) -> String {
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
        | "retention"
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
