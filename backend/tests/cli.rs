//! The `assent` command line itself (its presence here also makes `cargo test`
//! build the binary that the end-to-end tests in `tests/` start).

use std::process::Command;

#[test]
fn help_lists_the_commands() {
    let output = Command::new(env!("CARGO_BIN_EXE_assent"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for command in ["serve", "check-config"] {
        assert!(help.contains(command), "{help}");
    }
}

#[test]
fn the_defaults_pass_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_assent"))
        .arg("check-config")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout)
        .contains("database_url = \"sqlite://./data/assent.db\""));
}

#[test]
fn version_names_the_release_and_the_git_revision() {
    let output = Command::new(env!("CARGO_BIN_EXE_assent"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(output.status.success());
    let version = String::from_utf8_lossy(&output.stdout);
    let expected = format!("assent {} (git ", env!("CARGO_PKG_VERSION"));
    assert!(version.starts_with(&expected), "{version}");
    let revision = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    if let Some(revision) = revision {
        assert!(
            version.contains(&revision),
            "{version} (HEAD is {revision})"
        );
    }
}

fn deploy_file(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(name)
}

#[test]
fn the_example_config_passes_check_config_and_names_every_key() {
    let example = deploy_file("assent.example.toml");
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_assent"))
        .arg("check-config")
        .arg("--config")
        .arg(&example)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Every key the server knows (as check-config prints them all) is in
    // the example, set or commented.
    let text = std::fs::read_to_string(&example).unwrap();
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    for line in printed.lines() {
        let Some((key, _)) = line.split_once(" = ") else {
            continue;
        };
        let key = key.trim().trim_matches('"');
        assert!(
            text.contains(&format!("{key} = ")) || text.contains(&format!("# {key} = ")),
            "deploy/assent.example.toml does not mention `{key}`"
        );
    }
    for secret in [
        "tokens_file",
        "smtp_url_file",
        "database_url_file",
        "api_tokens_file",
        "[email.dkim]",
        "[keys.pinned.",
    ] {
        assert!(
            text.contains(secret),
            "the example does not mention {secret}"
        );
    }
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify_without_a_warning() {
    let unit = std::fs::read_to_string(deploy_file("assent.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/assent serve"));
    for hardening in [
        "DynamicUser=yes",
        "StateDirectory=assent",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
    ] {
        assert!(unit.contains(hardening), "the unit lacks {hardening}");
    }
    // The binary under test where the unit expects the installed one.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("assent.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/assent", env!("CARGO_BIN_EXE_assent")),
    )
    .unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd; cargo xtask test installs it)");
    let warnings = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && warnings.trim().is_empty(),
        "{warnings}"
    );
}

fn check_config_warnings(config: Option<&str>) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_assent"));
    command.arg("check-config").current_dir(dir.path());
    if let Some(config) = config {
        let path = dir.path().join("assent.toml");
        std::fs::write(&path, config).unwrap();
        command.arg("--config").arg(path);
    }
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("assent: warning: `"))
        .filter_map(|l| l.split_once('`').map(|(key, _)| key.to_owned()))
        .collect()
}

#[test]
fn check_config_warns_about_demo_settings_in_production() {
    assert_eq!(
        check_config_warnings(None),
        [
            "email.transport",
            "server_name",
            "public_url",
            "identity_servers"
        ]
    );
    let production = "public_url = \"https://consent.example.org\"\n\
        server_name = \"consent.example.org\"\n\
        [email]\ntransport = \"smtp\"\nsmtp_url = \"smtp://127.0.0.1:25\"\n\
        [[identity_servers]]\nname = \"matrix.example.org\"\ndisplay_name = \"IS\"\n\
        operator = \"Op\"\nupstream = \"http://127.0.0.1:8090\"\n";
    assert!(check_config_warnings(Some(production)).is_empty());
    let plain_http = production.replace("https://consent", "http://consent");
    assert_eq!(check_config_warnings(Some(&plain_http)), ["public_url"]);
    // The shipped example tries mail out in files until SMTP is set up.
    let example = std::fs::read_to_string(deploy_file("assent.example.toml")).unwrap();
    assert_eq!(check_config_warnings(Some(&example)), ["email.transport"]);
}

#[test]
fn the_caddyfile_is_valid_for_caddy() {
    let home = tempfile::tempdir().unwrap();
    let output = Command::new("caddy")
        .args(["validate", "--adapter", "caddyfile", "--config"])
        .arg(deploy_file("Caddyfile"))
        .env("HOME", home.path())
        .env("XDG_DATA_HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path())
        .output()
        .expect("caddy (Debian's package; cargo xtask test installs it)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.contains("Valid configuration"),
        "{said}"
    );
}
