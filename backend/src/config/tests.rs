use super::load::{is_config_key, mask_url_password};
use super::validate::is_origin;
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
    let errors = load_str("[email]\nretry_initial = \"2h\"\nmax_attempts = 0\ntimeout = \"0s\"\n")
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
