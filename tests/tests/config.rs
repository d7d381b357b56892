//! A wrong configuration stops `assent` with the key named; `check-config`
//! prints the effective configuration with secrets masked.

use assent_e2e::{free_port, run_assent};

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn wrong_configs_exit_non_zero_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("listen = 8080\n", "`listen`"),
        ("request_ttl = \"soon\"\n", "`request_ttl`"),
        ("listne = \"127.0.0.1:1\"\n", "`listne`: unknown key"),
        ("[email]\nlanguage = \"fr\"\n", "`email.language`"),
    ];
    for (toml, expected) in cases {
        let path = dir.path().join("assent.toml");
        std::fs::write(&path, toml).unwrap();
        for command in ["serve", "check-config"] {
            let output = run_assent(
                &[command, "--config", path.to_str().unwrap()],
                dir.path(),
                &[],
            );
            assert_eq!(output.status.code(), Some(2), "{command} with {toml:?}");
            assert!(
                stderr(&output).contains(expected),
                "{command} with {toml:?} said:\n{}",
                stderr(&output)
            );
        }
    }
    // The environment overrides the file, with the same checks.
    let output = run_assent(
        &["check-config"],
        dir.path(),
        &[("ASSENT_HELD_RESPONSE", "maybe")],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("`held_response`"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn an_unreachable_database_names_database_url() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("postgres://assent:hunter2@127.0.0.1:{}/assent", free_port());
    for command in ["serve", "check-config"] {
        let output = run_assent(
            &[command],
            dir.path(),
            &[
                ("ASSENT_DATABASE_URL", &url),
                ("ASSENT_DATA_DIR", dir.path().join("data").to_str().unwrap()),
                ("ASSENT_LISTEN", &format!("127.0.0.1:{}", free_port())),
            ],
        );
        assert_eq!(output.status.code(), Some(2), "{command}");
        let said = stderr(&output);
        assert!(said.contains("`database_url`"), "{command}: {said}");
        assert!(
            !said.contains("hunter2"),
            "{command} printed the database password: {said}"
        );
    }
}

#[test]
fn check_config_prints_the_effective_config_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("assent.toml");
    std::fs::write(
        &path,
        "[admin]\ntokens = [\"an-admin-token-that-is-long-enough-123\"]\n[email]\ntransport = \"smtp\"\nsmtp_url = \"smtp://user:mailpass@mail.example.org:587?tls=required\"\n",
    )
    .unwrap();
    let output = run_assent(
        &["check-config", "--config", path.to_str().unwrap()],
        dir.path(),
        &[("ASSENT_LISTEN", "127.0.0.1:9999")],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.contains("listen = \"127.0.0.1:9999\""),
        "the environment override is shown:\n{printed}"
    );
    assert!(printed.contains("mail.example.org"), "{printed}");
    for secret in ["an-admin-token-that-is-long-enough-123", "mailpass"] {
        assert!(
            !printed.contains(secret),
            "{secret} was printed:\n{printed}"
        );
    }
}

#[test]
fn environment_variables_that_name_no_key_are_ignored_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    // Kubernetes sets these for a Service named `assent`.
    let output = run_assent(
        &["check-config"],
        dir.path(),
        &[
            ("ASSENT_PORT", "tcp://10.0.0.1:80"),
            ("ASSENT_SERVICE_HOST", "10.0.0.1"),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("ignoring the environment variable ASSENT_PORT"),
        "{}",
        stderr(&output)
    );
}
