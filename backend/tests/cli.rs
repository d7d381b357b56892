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
