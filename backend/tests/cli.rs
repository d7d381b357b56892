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
