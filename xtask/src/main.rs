//! `cargo xtask run | test | build`: everything a newcomer, CI or a packager
//! needs, set up from a fresh machine.
//!
//! Tools that cargo cannot provide on its own (Trunk, wasm-bindgen-cli,
//! binaryen's wasm-opt) are installed once into a reusable folder outside the
//! repository: `$XTASK_TOOLS_DIR`, else `$XDG_CACHE_HOME/assent/tools`, else
//! `~/.cache/assent/tools`.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

const TRUNK_VERSION: &str = "0.21.14";
const BINARYEN_VERSION: &str = "132";
const WASM_TARGET: &str = "wasm32-unknown-unknown";
const TEST_PACKAGES: [&str; 10] = [
    // `caddy validate` checks deploy/Caddyfile.
    "caddy",
    "chromium",
    "chromium-driver",
    // The DNS server the server-discovery tests publish SRV records with.
    "dnsmasq-base",
    // The reverse proxy the deployment tests put in front of Assent, with
    // deploy/nginx.conf.
    "nginx",
    // The test homeserver's key server makes its TLS certificate with it.
    "openssl",
    "postgresql",
    "python3-aiosmtpd",
    "python3-venv",
    // `systemd-analyze verify` checks deploy/assent.service.
    "systemd",
];
/// What `cargo xtask container` builds the image with: the static binary's
/// C compiler (ring, SQLite) and daemonless buildah and podman.
const CONTAINER_PACKAGES: [&str; 5] =
    ["buildah", "ca-certificates", "musl-tools", "podman", "runc"];
/// The image `cargo xtask container` builds.
const IMAGE: &str = "localhost/assent:latest";
/// The real identity server the tests put Assent in front of.
const SYDENT_REQUIREMENTS: [&str; 2] = ["matrix-sydent[prometheus]==2.6.1", "canonicaljson<2"];
/// The homeserver the end-to-end suite drives: its own wheels from PyPI.
const SYNAPSE_REQUIREMENTS: [&str; 1] = ["matrix-synapse==1.163.2"];

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let started = Instant::now();
    let result = match args.first().map(String::as_str) {
        Some("run") => run(&args[1..]),
        Some("test") => test(),
        Some("build") => build().map(|_| ()),
        Some("dist") => dist(),
        Some("container") => container(IMAGE).map(|_| ()),
        Some("bench") => bench(&args[1..]),
        Some("chaos") => chaos(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n  run    build everything and start Assent with a demo request\n  \
                 test   run every check and test (fmt, clippy, unit, integration, wasm, browser)\n  \
                 build  build the front end and the release binary, start nothing\n  \
                 dist   a release tarball: binary, example config, unit file, proxy configs, licence\n  \
                 container  the container image (static binary, FROM scratch) with buildah, as localhost/assent:latest\n  \
                 bench intake [flags]  held unbinds/s, latency and memory of `assent serve` on SQLite\n  \
                 chaos [--kills 100] [--seed N] [--fail-percent 10] [--database sqlite|postgres]  SIGKILL the server amid work; check nothing was lost or done twice"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nxtask: FAILED after {}: {e}", elapsed(started));
            ExitCode::FAILURE
        }
    }
}

fn elapsed(since: Instant) -> String {
    let secs = since.elapsed().as_secs();
    format!("{}m{:02}s", secs / 60, secs % 60)
}

fn step(message: &str) {
    println!("\n==> {message}");
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn tools_dir() -> PathBuf {
    if let Some(dir) = env::var_os("XTASK_TOOLS_DIR") {
        return PathBuf::from(dir);
    }
    let cache = env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(|| root().join("target"));
    cache.join("assent").join("tools")
}

/// PATH with the tools folder first, so Trunk finds our wasm-bindgen and
/// wasm-opt (never Debian's old binaryen).
fn tool_path() -> OsString {
    let tools = tools_dir();
    let mut paths = vec![
        tools.join("bin"),
        tools.join("npm").join("node_modules").join(".bin"),
    ];
    if let Some(path) = env::var_os("PATH") {
        paths.extend(env::split_paths(&path));
    }
    env::join_paths(paths).unwrap_or_default()
}

fn command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(root()).env("PATH", tool_path());
    cmd
}

fn run_cmd(cmd: &mut Command) -> Result {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .map_err(|e| format!("cannot start {shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} exited with {status}"))
    }
}

/// The first line a tool prints for `--version`, or None when it is missing.
fn version_of(program: &Path) -> Option<String> {
    let output = Command::new(program)
        .arg("--version")
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output.status.success().then(|| {
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_owned()
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The wasm-bindgen version in Cargo.lock; the CLI must match it exactly.
fn locked_wasm_bindgen() -> Result<String> {
    let lock = std::fs::read_to_string(root().join("Cargo.lock"))
        .map_err(|e| format!("cannot read Cargo.lock: {e}"))?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"wasm-bindgen\"" {
            if let Some(version) = lines.next().and_then(|l| l.strip_prefix("version = \"")) {
                return Ok(version.trim_end_matches('"').to_owned());
            }
        }
    }
    Err("Cargo.lock names no wasm-bindgen".to_owned())
}

fn ensure_target(target: &str) -> Result {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(out)
            if String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim() == target) =>
        {
            println!("    {target} target: present");
            Ok(())
        }
        _ => {
            println!("    {target} target: installing");
            run_cmd(Command::new("rustup").args(["target", "add", target]))
        }
    }
}

fn ensure_tools() -> Result {
    let tools = tools_dir();
    step(&format!("Tools (kept in {})", tools.display()));
    ensure_target(WASM_TARGET)?;

    let trunk = tools.join("bin").join("trunk");
    if version_of(&trunk).is_some_and(|v| v.contains(TRUNK_VERSION)) {
        println!("    trunk {TRUNK_VERSION}: present");
    } else {
        println!("    trunk {TRUNK_VERSION}: installing with cargo (about 6 minutes, once)");
        run_cmd(
            command("cargo")
                .args([
                    "install",
                    &format!("trunk@{TRUNK_VERSION}"),
                    "--locked",
                    "--root",
                ])
                .arg(&tools),
        )?;
    }

    let bindgen_version = locked_wasm_bindgen()?;
    let bindgen = tools.join("bin").join("wasm-bindgen");
    if version_of(&bindgen)
        .is_some_and(|v| v.split_whitespace().nth(1) == Some(bindgen_version.as_str()))
    {
        println!("    wasm-bindgen-cli {bindgen_version}: present");
    } else {
        println!(
            "    wasm-bindgen-cli {bindgen_version}: installing with cargo (about 2 minutes, once)"
        );
        // Not --locked: its lock file names a crate version the registry may lack.
        run_cmd(
            command("cargo")
                .args([
                    "install",
                    &format!("wasm-bindgen-cli@{bindgen_version}"),
                    "--force",
                    "--root",
                ])
                .arg(&tools),
        )?;
    }

    let npm_dir = tools.join("npm");
    let wasm_opt = npm_dir.join("node_modules").join(".bin").join("wasm-opt");
    if version_of(&wasm_opt).is_some_and(|v| v.contains(&format!("version {BINARYEN_VERSION}"))) {
        println!("    binaryen {BINARYEN_VERSION} (wasm-opt): present");
    } else {
        if version_of(Path::new("npm")).is_none() {
            if is_root() {
                println!("    npm: installing Debian's nodejs and npm");
                apt_install(&["nodejs", "npm"])?;
            } else {
                return Err("npm is needed to install binaryen's wasm-opt: install Node.js and npm (e.g. `sudo apt-get install nodejs npm`)".to_owned());
            }
        }
        println!("    binaryen {BINARYEN_VERSION} (wasm-opt): installing with npm");
        std::fs::create_dir_all(&npm_dir)
            .map_err(|e| format!("cannot create {}: {e}", npm_dir.display()))?;
        run_cmd(
            command("npm")
                .args(["install", "--prefix"])
                .arg(&npm_dir)
                .args([
                    &format!("binaryen@{BINARYEN_VERSION}"),
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                ]),
        )?;
    }

    step("Fetching crates (Trunk builds offline)");
    run_cmd(command("cargo").args(["fetch", "--quiet"]))
}

fn apt_install(packages: &[&str]) -> Result {
    run_cmd(
        Command::new("apt-get")
            .args(["update", "-qq"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Builds both bundles, the consent app and the admin console (in
/// `console/`), into `target/trunk-dist/` (which Trunk empties first), then
/// brings `dist/` level with it, touching only files whose bytes changed:
/// the server embeds `dist/` and is compiled again only when it changes.
fn build_frontend() -> Result {
    let stage = root().join("target").join("trunk-dist");
    step("Building the web front end (Trunk, release, offline)");
    let trunk = || {
        let mut trunk = command("trunk");
        trunk
            .arg("build")
            .env("TRUNK_SKIP_VERSION_CHECK", "true")
            .env("TRUNK_BUILD_DIST", &stage)
            // Size-oriented release profile for the wasm only; the server
            // keeps the workspace's release profile.
            .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "z")
            .env("CARGO_PROFILE_RELEASE_LTO", "true")
            .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
            .env("CARGO_PROFILE_RELEASE_PANIC", "abort");
        trunk
    };
    run_cmd(&mut trunk())?;
    step("Building the admin console (Trunk, into console/)");
    run_cmd(
        trunk()
            .args(["frontend/console.html", "--public-url", "/console/"])
            .env("TRUNK_BUILD_DIST", stage.join("console")),
    )?;
    sync_dir(&stage, &root().join("dist"))
}

/// Makes `to` hold exactly the files of `from`, writing only those that
/// differ.
fn sync_dir(from: &Path, to: &Path) -> Result {
    let fail = |path: &Path, e: std::io::Error| format!("{}: {e}", path.display());
    fs::create_dir_all(to).map_err(|e| fail(to, e))?;
    let mut wanted = std::collections::HashSet::new();
    for entry in fs::read_dir(from).map_err(|e| fail(from, e))? {
        let entry = entry.map_err(|e| fail(from, e))?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        wanted.insert(entry.file_name());
        if source.is_dir() {
            sync_dir(&source, &target)?;
            continue;
        }
        let bytes = fs::read(&source).map_err(|e| fail(&source, e))?;
        if fs::read(&target).ok().as_deref() != Some(bytes.as_slice()) {
            fs::write(&target, &bytes).map_err(|e| fail(&target, e))?;
        }
    }
    for entry in fs::read_dir(to).map_err(|e| fail(to, e))? {
        let entry = entry.map_err(|e| fail(to, e))?;
        if wanted.contains(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        let removed = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.map_err(|e| fail(&path, e))?;
    }
    Ok(())
}

/// `cargo xtask bench intake [--seconds N] [--concurrency N] [--server sydent]`.
fn bench(args: &[String]) -> Result {
    match args.first().map(String::as_str) {
        Some("intake") => {}
        Some("consent") => return bench_consent(&args[1..]),
        Some("admin") => return bench_admin(&args[1..]),
        _ => {
            return Err(
                "usage: cargo xtask bench intake [--seconds 15] [--concurrency 16] [--send-email false] [--server assent|sydent]\n       \
                 cargo xtask bench consent [--loads 15]\n       \
                 cargo xtask bench admin [--rows 10000,100000] [--calls 101]"
                    .to_owned(),
            )
        }
    }
    let mut load = Command::new(release_dir().join("intake-bench"));
    load.arg("--assent")
        .arg(release_dir().join("assent"))
        .args(&args[1..]);
    // The same unbinds against sydent 2.6.1, the yardstick.
    let sydent = args
        .windows(2)
        .any(|w| w[0] == "--server" && w[1] == "sydent");
    if sydent {
        step("sydent (the yardstick)");
        load.env("ASSENT_SYDENT_PYTHON", ensure_sydent()?);
    }
    let title = if sydent {
        "the same pre-signed unbinds against sydent 2.6.1"
    } else {
        "pre-signed unbinds against assent serve on SQLite"
    };
    run_bench("intake-bench", "the load generator", title, &mut load)
}

/// `cargo xtask bench consent [--loads N]`: cold loads of the consent page
/// in headless Chromium against the release server and front end.
fn bench_consent(args: &[String]) -> Result {
    ensure_tools()?;
    ensure_test_dependencies()?;
    build_frontend()?;
    run_bench(
        "consent-bench",
        "the page-load benchmark",
        "cold loads of /consent/{token} in headless Chromium",
        Command::new(release_dir().join("consent-bench")).args(args),
    )
}

/// `cargo xtask bench admin [--rows N] [--calls N]`: the admin list and
/// search with 10,000 and 100,000 stored requests in SQLite, against the
/// release server.
fn bench_admin(args: &[String]) -> Result {
    run_bench(
        "admin-bench",
        "the admin benchmark",
        "the admin list at 10,000 and 100,000 requests in SQLite",
        Command::new(release_dir().join("admin-bench")).args(args),
    )
}

/// `cargo xtask chaos [--kills N] [--seed N] [--fail-percent N]
/// [--database sqlite|postgres]`: the kill sweep against the release
/// server, on SQLite or on a throwaway PostgreSQL.
fn chaos(args: &[String]) -> Result {
    let mut database = "sqlite";
    let mut pass = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--database" {
            database = match args.next().map(String::as_str) {
                Some("sqlite") => "sqlite",
                Some("postgres") => "postgres",
                _ => return Err("--database takes sqlite or postgres".to_owned()),
            };
        } else {
            pass.push(arg.clone());
        }
    }
    step("The mail server and PostgreSQL (Debian packages)");
    if database == "postgres" {
        ensure_packages(&["postgresql", "python3-aiosmtpd"])?;
    } else {
        ensure_packages(&["python3-aiosmtpd"])?;
    }
    step("Building the server and the kill sweep (release)");
    run_cmd(command("cargo").args([
        "build",
        "--release",
        "--package",
        "assent-backend",
        "--bin",
        "assent",
        "--package",
        "assent-e2e",
        "--bin",
        "chaos",
    ]))?;
    let postgres = if database == "postgres" {
        Some(Postgres::start()?)
    } else {
        None
    };
    step("Kill sweep");
    let mut sweep = Command::new(release_dir().join("chaos"));
    sweep
        .current_dir(root())
        .args(&pass)
        .env("E2E_ASSENT_BIN", release_dir().join("assent"))
        .env_remove("TEST_POSTGRES_URL");
    if let Some(pg) = &postgres {
        sweep.env("TEST_POSTGRES_URL", pg.url());
    }
    run_cmd(&mut sweep)
}

fn release_dir() -> PathBuf {
    root().join("target").join("release")
}

/// Builds the release server and the benchmark binary `bin`, then runs
/// `run` from the repository root against that server.
fn run_bench(bin: &str, what: &str, title: &str, run: &mut Command) -> Result {
    step(&format!("Building the server and {what} (release)"));
    run_cmd(command("cargo").args([
        "build",
        "--release",
        "--package",
        "assent-backend",
        "--bin",
        "assent",
        "--package",
        "assent-e2e",
        "--bin",
        bin,
    ]))?;
    step(&format!("Benchmark: {title}"));
    run_cmd(
        run.current_dir(root())
            .env("E2E_ASSENT_BIN", release_dir().join("assent")),
    )
}

fn build() -> Result<PathBuf> {
    ensure_tools()?;
    build_frontend()?;
    step("Building the server (release)");
    run_cmd(command("cargo").args([
        "build",
        "--release",
        "--package",
        "assent-backend",
        "--bin",
        "assent",
    ]))?;
    let binary = root().join("target").join("release").join("assent");
    println!(
        "\nBuilt {} (the front end is embedded in it)",
        binary.display()
    );
    println!("Run it from any directory with: assent serve [--config assent.toml]");
    Ok(binary)
}

/// `cargo xtask dist`: `target/dist/assent-<version>-<target>.tar.gz` with
/// what an operator installs: the binary (the front end embedded in it),
/// the example config, the systemd unit, the reverse-proxy configs, the
/// licence, the changelog and the README.
fn dist() -> Result {
    let binary = build()?;
    step("Packing the release tarball");
    let version = env!("CARGO_PKG_VERSION");
    let target = format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS);
    let name = format!("assent-{version}-{target}");
    let out = root().join("target").join("dist");
    let stage = out.join(&name);
    if stage.exists() {
        fs::remove_dir_all(&stage).map_err(|e| format!("cannot clear {}: {e}", stage.display()))?;
    }
    fs::create_dir_all(&stage).map_err(|e| format!("cannot create {}: {e}", stage.display()))?;
    let copy = |from: &Path, to: &str| {
        fs::copy(from, stage.join(to))
            .map(|_| ())
            .map_err(|e| format!("cannot copy {}: {e}", from.display()))
    };
    copy(&binary, "assent")?;
    for (from, to) in [
        ("deploy/assent.example.toml", "assent.example.toml"),
        ("deploy/assent.service", "assent.service"),
        ("deploy/nginx.conf", "nginx.conf"),
        ("deploy/Caddyfile", "Caddyfile"),
        ("LICENSE", "LICENSE"),
        ("CHANGELOG.md", "CHANGELOG.md"),
        ("README.md", "README.md"),
    ] {
        copy(&root().join(from), to)?;
    }
    // The reference the README links to, with its pictures.
    fs::create_dir_all(stage.join("docs")).map_err(|e| format!("cannot create docs/: {e}"))?;
    let docs = fs::read_dir(root().join("docs")).map_err(|e| format!("cannot read docs/: {e}"))?;
    for entry in docs {
        let path = entry.map_err(|e| format!("cannot read docs/: {e}"))?.path();
        if path.is_file() {
            if let Some(file) = path.file_name().and_then(|f| f.to_str()) {
                copy(&path, &format!("docs/{file}"))?;
            }
        }
    }
    let tarball = out.join(format!("{name}.tar.gz"));
    run_cmd(
        Command::new("tar")
            .arg("-czf")
            .arg(&tarball)
            .arg("-C")
            .arg(&out)
            .arg(&name),
    )?;
    let size = fs::metadata(&tarball).map(|m| m.len()).unwrap_or(0);
    println!(
        "\nPacked {} ({:.1} MB)",
        tarball.display(),
        size as f64 / 1_000_000.0
    );
    Ok(())
}

/// `cargo xtask container`: the static (musl) release binary, the front end
/// embedded, in a `FROM scratch` image built by buildah without a daemon
/// (`deploy/Containerfile`). Returns the image's name.
fn container(image: &str) -> Result<String> {
    ensure_tools()?;
    step("Container tools (buildah, podman, runc, musl-tools)");
    ensure_packages(&CONTAINER_PACKAGES)?;
    let target = format!("{}-unknown-linux-musl", std::env::consts::ARCH);
    ensure_target(&target)?;
    build_frontend()?;
    step(&format!("Building the static server ({target}, release)"));
    run_cmd(
        command("cargo")
            .args(["build", "--release", "--target", &target])
            .args(["--package", "assent-backend", "--bin", "assent"])
            .env(format!("CC_{}", target.replace('-', "_")), "musl-gcc"),
    )?;
    step(&format!(
        "Building the image {image} (buildah, FROM scratch)"
    ));
    let context = root().join("target").join("container");
    if context.exists() {
        fs::remove_dir_all(&context)
            .map_err(|e| format!("cannot clear {}: {e}", context.display()))?;
    }
    fs::create_dir_all(&context)
        .map_err(|e| format!("cannot create {}: {e}", context.display()))?;
    for (from, to) in [
        (
            root()
                .join("target")
                .join(&target)
                .join("release")
                .join("assent"),
            "assent",
        ),
        (
            PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
            "ca-certificates.crt",
        ),
    ] {
        fs::copy(&from, context.join(to))
            .map_err(|e| format!("cannot copy {}: {e}", from.display()))?;
    }
    run_cmd(
        Command::new("buildah")
            .args([
                "--storage-driver",
                "vfs",
                "bud",
                "--isolation",
                "chroot",
                "--quiet",
            ])
            .args(["--tag", image, "--file"])
            .arg(root().join("deploy").join("Containerfile"))
            .arg(&context),
    )?;
    let size = fs::metadata(context.join("assent"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "\nBuilt {image} (binary {:.1} MB). Run it with:\n  podman run -p 8080:8080 -v assent-data:/var/lib/assent {image}",
        size as f64 / 1_000_000.0
    );
    Ok(image.to_owned())
}

fn run(extra: &[String]) -> Result {
    let binary = build()?;
    step("Starting Assent on the embedded defaults with a demo request (Ctrl-C stops it)");
    run_cmd(
        Command::new(binary)
            .current_dir(root())
            .args(["serve", "--demo"])
            .args(extra),
    )
}

fn ensure_test_dependencies() -> Result {
    step("Test dependencies (Caddy, Chromium, ChromeDriver, dnsmasq, nginx, OpenSSL, PostgreSQL, aiosmtpd, Python venv, systemd-analyze, and the container tools)");
    ensure_packages(&TEST_PACKAGES)?;
    ensure_packages(&CONTAINER_PACKAGES)
}

/// Installs the Debian packages of `packages` that are missing (as root),
/// or says how to.
fn ensure_packages(packages: &[&str]) -> Result {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|package| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", package])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false)
        })
        .collect();
    if missing.is_empty() {
        println!("    all present");
        return Ok(());
    }
    if is_root() {
        println!("    installing: {}", missing.join(" "));
        apt_install(&missing)
    } else {
        Err(format!(
            "these Debian packages are needed: {}. Install them with `sudo apt-get install {}` and run again.",
            missing.join(", "),
            missing.join(" ")
        ))
    }
}

/// sydent in a virtualenv under the tools folder; returns its Python.
fn ensure_sydent() -> Result<PathBuf> {
    ensure_venv(
        "sydent-venv",
        "sydent 2.6.1",
        &SYDENT_REQUIREMENTS,
        "about a minute",
    )
}

/// Synapse in a virtualenv under the tools folder; returns its Python.
fn ensure_synapse() -> Result<PathBuf> {
    ensure_venv(
        "synapse-venv",
        "Synapse 1.163.2",
        &SYNAPSE_REQUIREMENTS,
        "about 30 s",
    )
}

/// A virtualenv `name` under the tools folder with `requirements` from
/// PyPI, made once (again when the requirements change); returns its Python.
fn ensure_venv(name: &str, label: &str, requirements: &[&str], takes: &str) -> Result<PathBuf> {
    let venv = tools_dir().join(name);
    let python = venv.join("bin").join("python");
    let stamp = venv.join("assent-requirements.txt");
    let wanted = requirements.join("\n");
    if python.exists() && fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        println!("    {label}: present");
        return Ok(python);
    }
    println!("    {label}: installing into {} ({takes})", venv.display());
    run_cmd(command("python3").args(["-m", "venv"]).arg(&venv))?;
    run_cmd(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(requirements),
    )?;
    fs::write(&stamp, wanted).map_err(|e| format!("write {}: {e}", stamp.display()))?;
    Ok(python)
}

/// A throwaway PostgreSQL server in a temporary folder, stopped on drop.
struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
}

impl Postgres {
    fn start() -> Result<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .map_err(|e| format!("PostgreSQL is not installed under /usr/lib/postgresql: {e}"))?
            .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
            .filter(|bin| bin.join("initdb").exists())
            .max()
            .ok_or("no PostgreSQL initdb found under /usr/lib/postgresql/*/bin")?;
        let port = free_port()?;
        let dir = env::temp_dir().join(format!("assent-pg-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let as_root = is_root();
        if as_root {
            run_cmd(Command::new("chown").args(["postgres:postgres"]).arg(&dir))?;
        }
        let pg = Postgres { dir, bin, port };
        pg.pg_cmd("initdb", |cmd| {
            cmd.arg("-D")
                .arg(pg.dir.join("data"))
                .args([
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ])
                .stdout(Stdio::null());
        })?;
        pg.pg_cmd("pg_ctl", |cmd| {
            cmd.arg("-D")
                .arg(pg.dir.join("data"))
                .arg("-l")
                .arg(pg.dir.join("log"))
                .args(["-w", "-o"])
                .arg(format!(
                    "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off -c max_connections=200",
                    pg.dir.display()
                ))
                .arg("start")
                .stdout(Stdio::null());
        })?;
        Ok(pg)
    }

    fn pg_cmd(&self, tool: &str, configure: impl FnOnce(&mut Command)) -> Result {
        let program = self.bin.join(tool);
        let mut cmd = if is_root() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        };
        configure(&mut cmd);
        run_cmd(&mut cmd)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = self.pg_cmd("pg_ctl", |cmd| {
            cmd.arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "stop"])
                .stdout(Stdio::null());
        });
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn test() -> Result {
    let started = Instant::now();
    ensure_tools()?;
    ensure_test_dependencies()?;
    step("sydent and Synapse (the identity server and homeserver in the tests)");
    let sydent = ensure_sydent()?;
    let synapse = ensure_synapse()?;

    // First: the server embeds the built front end, so every build of it
    // below (clippy's included) sees the same dist/ and none repeats another.
    build_frontend()?;

    step("Formatting (cargo fmt --check)");
    run_cmd(command("cargo").args(["fmt", "--all", "--", "--check"]))?;

    step("Lints (cargo clippy, native crates)");
    run_cmd(command("cargo").args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    step("Lints (cargo clippy, front end for wasm32)");
    run_cmd(command("cargo").args([
        "clippy",
        "--package",
        "assent-frontend",
        "--target",
        WASM_TARGET,
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;

    step("Unit, integration and browser tests on SQLite");
    run_cmd(
        command("cargo")
            .arg("test")
            .env_remove("TEST_POSTGRES_URL")
            .env("ASSENT_SYDENT_PYTHON", &sydent)
            .env("ASSENT_SYNAPSE_PYTHON", &synapse),
    )?;

    step("Unit, integration and browser tests on PostgreSQL (throwaway server)");
    {
        let pg = Postgres::start()?;
        println!("    PostgreSQL on 127.0.0.1:{}", pg.port);
        run_cmd(
            command("cargo")
                .arg("test")
                .env("TEST_POSTGRES_URL", pg.url())
                .env("ASSENT_SYDENT_PYTHON", &sydent)
                .env("ASSENT_SYNAPSE_PYTHON", &synapse),
        )?;
    }

    step("Front-end component tests (wasm32 in headless Chromium)");
    run_cmd(
        command("cargo")
            .args([
                "test",
                "--package",
                "assent-frontend",
                "--target",
                WASM_TARGET,
            ])
            .env(
                "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER",
                "wasm-bindgen-test-runner",
            )
            .env("CHROMEDRIVER", "/usr/bin/chromedriver")
            .env("WASM_BINDGEN_TEST_TIMEOUT", "120"),
    )?;

    step("The container image, built and started with podman");
    let image = container("localhost/assent:test")?;
    let tested = run_cmd(
        command("cargo")
            .args(["test", "--test", "container", "--", "--ignored"])
            .env("ASSENT_CONTAINER_IMAGE", &image),
    );
    // vfs storage keeps a full copy per image: do not pile them up.
    let _ = Command::new("podman")
        .args(["--storage-driver", "vfs", "rmi", "--force", &image])
        .stdout(Stdio::null())
        .status();
    tested?;

    println!(
        "\nxtask test: all passed in {} — fmt, clippy (native + wasm32), unit/integration/browser tests on SQLite and PostgreSQL, wasm component tests, the container image",
        elapsed(started)
    );
    Ok(())
}
