//! `sqlx::migrate!` embeds the migrations when the crate is compiled: a new
//! or changed migration must compile it again.
//!
//! It also names the git revision the binary is built from, for
//! `assent --version` (`unknown` outside a git checkout).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .map(|text| text.trim().to_owned())
            .filter(|text| !text.is_empty())
    };
    let revision =
        git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=ASSENT_GIT_REVISION={revision}");
    // Built again when HEAD moves (a commit, a checkout). Only files that
    // exist are named: Cargo runs a build script every time for a missing one.
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        let dir = std::path::PathBuf::from(dir);
        let mut watched = vec![dir.join("HEAD"), dir.join("packed-refs")];
        if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watched.push(dir.join(reference));
        }
        for path in watched.iter().filter(|path| path.is_file()) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
