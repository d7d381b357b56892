//! The configuration file. Whatever an operator writes, loading it either
//! gives a config or names each problem by its key, with a fix, and never
//! echoes a secret; and a loaded config printed by `check-config` loads
//! back to the same config.

use super::{check, near};
use crate::config::Config;
use proptest::prelude::*;
use std::io::Write;

/// Every secret drawn here carries this, so that a leak can be found.
const SECRET: &str = "S3CRETxq";

fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// A TOML value: one of `words` (quoted), or a value of the wrong type.
fn value(words: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        8 => near(words).prop_map(|w| quoted(&w)),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<bool>().prop_map(|b| b.to_string()),
        1 => any::<String>().prop_map(|s| quoted(&s)),
        1 => Just("[]".to_owned()),
    ]
}

fn secret() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-f0-9]{24,40}".prop_map(|tail| format!("{SECRET}{tail}")),
        "[a-f0-9]{0,8}".prop_map(|tail| format!("{SECRET}{tail}")),
    ]
}

fn secret_url(forms: &'static [&'static str]) -> impl Strategy<Value = String> {
    (prop::sample::select(forms), secret())
        .prop_map(|(form, secret)| quoted(&form.replace("PASSWORD", &secret)))
}

fn secrets() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::vec(secret(), 0..3).prop_map(|tokens| format!(
            "[{}]",
            tokens
                .iter()
                .map(|t| quoted(t))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        secret().prop_map(|t| quoted(&t)),
    ]
}

const DURATIONS: &[&str] = &["7d", "1m", "30s", "0s", "1000d", "-1d", "12h", "abc", ""];

/// `key = value` lines of a table: each key present or not.
fn lines(fields: Vec<(&'static str, BoxedStrategy<String>)>) -> BoxedStrategy<String> {
    let each: Vec<BoxedStrategy<Option<String>>> = fields
        .into_iter()
        .map(|(key, value)| {
            proptest::option::of(value.prop_map(move |v| format!("{key} = {v}\n"))).boxed()
        })
        .collect();
    (each, proptest::option::weighted(0.1, "[a-z_]{1,10}"))
        .prop_map(|(lines, unknown)| {
            let mut text: String = lines.into_iter().flatten().collect();
            if let Some(key) = unknown {
                text.push_str(&format!("{key} = \"?\"\n"));
            }
            text
        })
        .boxed()
}

fn config_file() -> impl Strategy<Value = String> {
    let top = lines(vec![
        (
            "listen",
            value(&["127.0.0.1:8080", "[::1]:8443", "localhost:80", "8080"]).boxed(),
        ),
        (
            "public_url",
            value(&[
                "http://127.0.0.1:8080",
                "https://consent.example.org/sub/",
                "ftp://x",
                "not a url",
            ])
            .boxed(),
        ),
        (
            "server_name",
            value(&["consent.example.org", "", "bad name", "ü.example"]).boxed(),
        ),
        (
            "database_url",
            secret_url(&[
                "sqlite://./data/x.db",
                "postgres://u:PASSWORD@db/assent",
                "postgres://u:PASSWORD%zz@db",
                "mysql://u:PASSWORD@db",
            ])
            .boxed(),
        ),
        ("request_ttl", value(DURATIONS).boxed()),
        ("deny_cooldown", value(DURATIONS).boxed()),
        ("retention", value(DURATIONS).boxed()),
        ("relay_give_up_after", value(DURATIONS).boxed()),
        (
            "held_response",
            value(&["accepted", "forbidden", "not_supported"]).boxed(),
        ),
        (
            "msisdn_policy",
            value(&["hold", "forward", "reject"]).boxed(),
        ),
        ("log_format", value(&["text", "json"]).boxed()),
        (
            "trusted_proxy_header",
            value(&["x-forwarded-for", "forwarded"]).boxed(),
        ),
        (
            "metrics_listen",
            value(&["", "127.0.0.1:9100", "x"]).boxed(),
        ),
        (
            "trusted_proxies",
            prop_oneof![
                Just("[\"10.0.0.0/8\", \"::1/128\"]".to_owned()),
                Just("[\"300.1.1.1/8\"]".to_owned()),
                value(&["10.0.0.0/8"]),
            ]
            .boxed(),
        ),
    ]);
    let email = lines(vec![
        (
            "from",
            value(&[
                "Example <noreply@example.org>",
                "noreply@example.org",
                "not an address",
            ])
            .boxed(),
        ),
        ("transport", value(&["file", "smtp"]).boxed()),
        (
            "smtp_url",
            secret_url(&[
                "smtp://user:PASSWORD@mail.example.org:587?tls=required",
                "smtps://u:PASSWORD@mail",
                "smtp://u:PASSWORD@[bad",
            ])
            .boxed(),
        ),
        ("language", value(&["en", "de", "fr", "xx"]).boxed()),
        ("timeout", value(DURATIONS).boxed()),
        (
            "max_attempts",
            prop_oneof![Just("0".to_owned()), Just("8".to_owned()), value(&["8"])].boxed(),
        ),
    ]);
    let admin = lines(vec![
        ("tokens", secrets().boxed()),
        ("session_ttl", value(DURATIONS).boxed()),
    ]);
    let limits = lines(vec![
        (
            "unbinds_per_origin_per_minute",
            any::<i64>().prop_map(|n| n.to_string()).boxed(),
        ),
        (
            "holds_per_address_per_hour",
            (0..10i64).prop_map(|n| n.to_string()).boxed(),
        ),
    ]);
    let identity_server = lines(vec![
        (
            "name",
            value(&["matrix.example.org", "is.test", "", "bad name"]).boxed(),
        ),
        ("display_name", value(&["Example", ""]).boxed()),
        ("operator", value(&["Example Ltd"]).boxed()),
        (
            "privacy_policy_url",
            value(&["https://example.org/privacy", "privacy"]).boxed(),
        ),
        (
            "upstream",
            secret_url(&[
                "http://127.0.0.1:8090",
                "http://u:PASSWORD@127.0.0.1:8090",
                "unix:/x",
            ])
            .boxed(),
        ),
        (
            "proxy_all",
            value(&["true"])
                .prop_map(|v| v.trim_matches('"').to_owned())
                .boxed(),
        ),
        ("binding_check", value(&["v1_lookup", "none"]).boxed()),
        (
            "frame_ancestors",
            prop_oneof![
                Just("[\"https://matrix.example.org\"]".to_owned()),
                Just("[\"*\"]".to_owned()),
                Just("[\"https://x.org/path\"]".to_owned()),
            ]
            .boxed(),
        ),
        ("api_tokens", secrets().boxed()),
        (
            "relay",
            prop_oneof![
                Just("[{ kind = \"replay\" }]".to_owned()),
                Just("[{ kind = \"webhook\", url = \"https://is.example.org/hook\" }]".to_owned()),
                secret_url(&["https://u:PASSWORD@is.example.org/hook"])
                    .prop_map(|url| format!("[{{ kind = \"webhook\", url = {url} }}]")),
                Just("[{ kind = \"carrier-pigeon\" }]".to_owned()),
            ]
            .boxed(),
        ),
    ]);
    (
        top,
        proptest::option::of(email),
        proptest::option::of(admin),
        proptest::option::of(limits),
        proptest::collection::vec(identity_server, 0..3),
    )
        .prop_map(|(top, email, admin, limits, identity_servers)| {
            let mut text = top;
            for (table, body) in [("email", email), ("admin", admin), ("limits", limits)] {
                if let Some(body) = body {
                    text.push_str(&format!("\n[{table}]\n{body}"));
                }
            }
            for body in identity_servers {
                text.push_str(&format!("\n[[identity_servers]]\n{body}"));
            }
            text
        })
}

fn load(text: &str) -> Result<Config, crate::config::ConfigErrors> {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    Config::load(Some(file.path()))
}

#[test]
fn a_config_file_loads_or_each_problem_names_its_key_and_no_secret() {
    check(config_file(), |text| {
        match load(&text) {
            Ok(config) => {
                let printed = config.to_masked_toml();
                prop_assert!(
                    !printed.contains(SECRET),
                    "check-config shows a secret:\n{printed}"
                );
                // What check-config prints loads back to the same config
                // (when it has no tokens, which print masked).
                if config.admin.tokens.is_empty()
                    && config
                        .identity_servers
                        .iter()
                        .all(|is| is.api_tokens.is_empty())
                {
                    let again = load(&printed);
                    prop_assert!(
                        again.is_ok(),
                        "the printed config does not load:\n{printed}\n{again:?}"
                    );
                    prop_assert_eq!(again.unwrap().to_masked_toml(), printed);
                }
            }
            Err(errors) => {
                prop_assert!(!errors.0.is_empty());
                for error in &errors.0 {
                    prop_assert!(
                        !error.key.is_empty() && !error.problem.is_empty() && !error.fix.is_empty(),
                        "an incomplete problem: {error:?}"
                    );
                }
                let shown = errors.to_string();
                prop_assert!(
                    !shown.contains(SECRET),
                    "a config error shows a secret:\n{shown}"
                );
            }
        }
        Ok(())
    });
}

/// A config an operator could well write: every value right, secrets in
/// tokens and URL passwords.
fn valid_config_file() -> impl Strategy<Value = String> {
    let pick = |values: &'static [&'static str]| prop::sample::select(values).prop_map(quoted);
    let top = lines_exact(vec![
        (
            "listen",
            pick(&["127.0.0.1:8080", "[::1]:8443", "0.0.0.0:9000"]).boxed(),
        ),
        (
            "public_url",
            pick(&["http://127.0.0.1:8080", "https://consent.example.org/sub/"]).boxed(),
        ),
        (
            "server_name",
            pick(&["consent.example.org", "assent.test"]).boxed(),
        ),
        (
            "database_url",
            prop_oneof![
                pick(&["sqlite://./data/x.db"]),
                secret_url(&["postgres://u:PASSWORD@db/assent"]),
            ]
            .boxed(),
        ),
        ("request_ttl", pick(&["7d", "1h", "30d"]).boxed()),
        ("deny_cooldown", pick(&["30d", "1d"]).boxed()),
        ("retention", pick(&["90d", "1m", "365d"]).boxed()),
        (
            "held_response",
            pick(&["accepted", "forbidden", "not_supported"]).boxed(),
        ),
        (
            "msisdn_policy",
            pick(&["hold", "forward", "reject"]).boxed(),
        ),
        ("log_format", pick(&["text", "json"]).boxed()),
        (
            "trusted_proxies",
            Just("[\"10.0.0.0/8\", \"::1/128\"]".to_owned()).boxed(),
        ),
    ]);
    let email = prop_oneof![
        Just("transport = \"file\"\n".to_owned()),
        secret_url(&["smtp://user:PASSWORD@mail.example.org:587?tls=required"])
            .prop_map(|url| format!("transport = \"smtp\"\nsmtp_url = {url}\n")),
    ];
    let token = "[a-f0-9]{32}".prop_map(|t| quoted(&format!("{SECRET}{t}")));
    let admin = proptest::collection::vec(token.clone(), 0..3)
        .prop_map(|tokens| format!("tokens = [{}]\n", tokens.join(", ")));
    let identity_server = (
        prop::sample::select(vec!["matrix.example.org", "is.test"]),
        secret_url(&["http://127.0.0.1:8090", "http://u:PASSWORD@127.0.0.1:8090"]),
        proptest::collection::vec(token, 0..2),
        proptest::option::of(secret_url(&["https://u:PASSWORD@is.example.org/hook"])),
    )
        .prop_map(|(name, upstream, tokens, hook)| {
            let relay = match hook {
                Some(url) => {
                    format!("[{{ kind = \"replay\" }}, {{ kind = \"webhook\", url = {url} }}]")
                }
                None => "[{ kind = \"replay\" }]".to_owned(),
            };
            format!(
                "name = \"{name}\"\ndisplay_name = \"Example\"\noperator = \"Example Ltd\"\n\
                 upstream = {upstream}\napi_tokens = [{}]\nrelay = {relay}\n",
                tokens.join(", ")
            )
        });
    (top, email, admin, proptest::option::of(identity_server)).prop_map(
        |(top, email, admin, identity_server)| {
            let mut text = format!("{top}\n[email]\n{email}\n[admin]\n{admin}");
            if let Some(is) = identity_server {
                text.push_str(&format!("\n[[identity_servers]]\n{is}"));
            }
            text
        },
    )
}

/// `key = value` lines, each key present or not, and no other.
fn lines_exact(fields: Vec<(&'static str, BoxedStrategy<String>)>) -> BoxedStrategy<String> {
    let each: Vec<BoxedStrategy<Option<String>>> = fields
        .into_iter()
        .map(|(key, value)| {
            proptest::option::of(value.prop_map(move |v| format!("{key} = {v}\n"))).boxed()
        })
        .collect();
    each.prop_map(|lines| lines.into_iter().flatten().collect())
        .boxed()
}

/// A valid config loads; what `check-config` prints shows no secret and
/// loads back to the same config, except that masked tokens are refused.
#[test]
fn a_valid_config_loads_shows_no_secret_and_reads_back_the_same() {
    check(valid_config_file(), |text| {
        let config = load(&text);
        prop_assert!(config.is_ok(), "{text}\n{config:?}");
        let config = config.unwrap();
        let printed = config.to_masked_toml();
        prop_assert!(
            !printed.contains(SECRET),
            "check-config shows a secret:\n{printed}"
        );
        let again = load(&printed);
        let has_tokens = !config.admin.tokens.is_empty()
            || config
                .identity_servers
                .iter()
                .any(|is| !is.api_tokens.is_empty());
        if has_tokens {
            // A masked token is refused, never taken as a (weak) token.
            prop_assert!(again.is_err(), "masked tokens were accepted:\n{printed}");
            let errors = again.unwrap_err();
            prop_assert!(
                errors.0.iter().all(|e| e.key.contains("tokens")),
                "{errors}"
            );
        } else {
            prop_assert!(
                again.is_ok(),
                "the printed config does not load:\n{printed}\n{again:?}"
            );
            // URL passwords print masked and read back masked; all else the same.
            prop_assert_eq!(again.unwrap().to_masked_toml(), printed);
        }
        Ok(())
    });
}
