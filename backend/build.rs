//! `sqlx::migrate!` embeds the migrations when the crate is compiled: a new
//! or changed migration must compile it again.
//!
//! It names the git revision the binary is built from, for `assent --version`
//! (`unknown` outside a git checkout).
//!
//! And it embeds the built web front end (Trunk's `dist/`, or the folder in
//! `ASSENT_EMBED_DIST`), each file compressed once here with brotli and gzip
//! and given an `ETag`, so that the binary serves its pages from any
//! directory. Without a built front end the binary embeds none and answers
//! its pages with 503 unless `dist_dir` names one.
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    git_revision();
    if let Err(e) = embed_front_end() {
        panic!("embedding the web front end: {e}");
    }
}

fn git_revision() {
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
    // `--absolute-git-dir` and `--git-common-dir` cover linked worktrees too,
    // whose branch refs live in the common directory.
    let mut watched = Vec::new();
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        watched.push(PathBuf::from(dir).join("HEAD"));
    }
    if let Some(common) = git(&["rev-parse", "--path-format=absolute", "--git-common-dir"]) {
        let common = PathBuf::from(common);
        watched.push(common.join("packed-refs"));
        if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watched.push(common.join(reference));
        }
    }
    for path in watched.iter().filter(|path| path.is_file()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

fn embed_front_end() -> Result<(), String> {
    println!("cargo:rerun-if-env-changed=ASSENT_EMBED_DIST");
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let dist = match std::env::var_os("ASSENT_EMBED_DIST") {
        Some(dir) => PathBuf::from(dir),
        None => manifest.join("..").join("dist"),
    };
    // Watched whether or not it exists yet: a missing path makes Cargo run
    // this script on every build, which is what picks up a front end built
    // after the server.
    println!("cargo:rerun-if-changed={}", dist.display());
    let out = PathBuf::from(std::env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let mut files = Vec::new();
    if dist.join("index.html").is_file() {
        collect(&dist, &dist, &mut files)?;
    }
    files.sort();
    let store = out.join("web");
    std::fs::create_dir_all(&store).map_err(|e| format!("{}: {e}", store.display()))?;
    let mut code = String::from("&[\n");
    for (n, (route, path)) in files.iter().enumerate() {
        let raw = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let etag = etag(&raw);
        let br = compressed(&store, n, "br", &raw, brotli)?;
        let gz = compressed(&store, n, "gz", &raw, gzip)?;
        writeln!(
            code,
            "    EmbeddedFile {{ route: {route:?}, raw: include_bytes!({raw:?}), br: {br}, gzip: {gz}, etag: {etag:?} }},",
            raw = path.display().to_string(),
        )
        .map_err(|e| e.to_string())?;
    }
    code.push(']');
    write_if_changed(&out.join("embedded_front_end.rs"), code.as_bytes())
}

/// Every file under `dir`, as (`/route`, path), skipping precompressed copies.
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_dir() {
            collect(root, &path, files)?;
            continue;
        }
        if matches!(path.extension().and_then(|e| e.to_str()), Some("br" | "gz")) {
            continue;
        }
        let relative = path
            .strip_prefix(root)
            .map_err(|e| e.to_string())?
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        files.push((format!("/{relative}"), path));
    }
    Ok(())
}

/// A strong validator from the content: the same bytes give the same tag in
/// every build and every replica.
fn etag(raw: &[u8]) -> String {
    let digest = Sha256::digest(raw);
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// `Some(include_bytes!(…))` for the compressed form, or `None` when
/// compressing does not make the file smaller.
fn compressed(
    store: &Path,
    n: usize,
    extension: &str,
    raw: &[u8],
    compress: fn(&[u8]) -> Result<Vec<u8>, String>,
) -> Result<String, String> {
    let packed = compress(raw)?;
    if packed.len() >= raw.len() {
        return Ok("None".to_owned());
    }
    let path = store.join(format!("{n}.{extension}"));
    write_if_changed(&path, &packed)?;
    Ok(format!(
        "Some(include_bytes!({:?}))",
        path.display().to_string()
    ))
}

fn brotli(raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    {
        let mut writer = brotli::CompressorWriter::new(&mut out, 64 * 1024, 11, 22);
        writer.write_all(raw).map_err(|e| e.to_string())?;
        writer.flush().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

fn gzip(raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(raw).map_err(|e| e.to_string())?;
    encoder.finish().map_err(|e| e.to_string())
}

/// Leaves an unchanged file alone, so that what includes it is not rebuilt.
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}
