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
