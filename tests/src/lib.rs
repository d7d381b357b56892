//! The end-to-end harness: starts the real `assent` binary on a free port
//! with its own data folder, talks HTTP to it, and drives headless Chromium
//! through ChromeDriver. Screenshots land in `target/e2e-artifacts/`.
//!
//! The database is SQLite, or a fresh PostgreSQL database when
//! `TEST_POSTGRES_URL` names a server (as `cargo xtask test` does).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod admin;
pub mod browser;
pub mod chaos;
pub mod homeserver;
pub mod key_server;
pub mod page_server;
pub mod recipes;
pub mod smtp;
pub mod sydent;
pub mod synapse;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The `assent` binary under test: `E2E_ASSENT_BIN`, or the debug build
/// (`cargo test` builds it, since the backend has integration tests).
pub fn assent_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("E2E_ASSENT_BIN") {
        return PathBuf::from(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("debug").join("assent")
}

pub fn artifact_dir() -> PathBuf {
    let dir = workspace_root().join("target").join("e2e-artifacts");
    std::fs::create_dir_all(&dir).expect("create the artifact folder");
    dir
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A database URL for one test: a new PostgreSQL database, or None for the
/// default SQLite file in the data folder.
pub async fn test_database() -> Option<String> {
    let admin = std::env::var("TEST_POSTGRES_URL")
        .ok()
        .filter(|url| !url.is_empty())?;
    let name = format!("assent_e2e_{}_{}", std::process::id(), free_port());
    let status = Command::new("psql")
        .arg(&admin)
        .args(["-q", "-c", &format!("CREATE DATABASE {name}")])
        .status()
        .expect("run psql");
    assert!(status.success(), "could not create database {name}");
    let mut url = url::Url::parse(&admin).expect("TEST_POSTGRES_URL is a URL");
    url.set_path(&name);
    Some(url.to_string())
}

/// A running `assent serve`, killed on drop.
pub struct Assent {
    child: Option<Child>,
    pub base: String,
    port: u16,
    config_path: Option<PathBuf>,
    options: Options,
    pub data_dir: PathBuf,
    /// The PostgreSQL database, when the run uses one (else SQLite in `data_dir`).
    pub database_url: Option<String>,
    _dir: tempfile::TempDir,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// From spawn to the first healthy answer.
    pub startup: Duration,
}

#[derive(Default)]
pub struct Options {
    pub demo: bool,
    /// Extra TOML for a config file; None runs without a config file.
    pub config: Option<String>,
    pub env: Vec<(String, String)>,
}

fn collect(
    stream: impl std::io::Read + Send + 'static,
    into: Arc<Mutex<Vec<String>>>,
    echo: &'static str,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            eprintln!("[assent {echo}] {line}");
            into.lock().expect("log lock").push(line);
        }
    });
}

impl Assent {
    pub async fn start(options: Options) -> Assent {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().join("data");
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let database_url = test_database().await;
        let config_path = options.config.as_ref().map(|config| {
            let path = dir.path().join("assent.toml");
            std::fs::write(&path, config).expect("write config");
            path
        });
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut assent = Assent {
            child: None,
            base,
            port,
            data_dir,
            database_url,
            config_path,
            options,
            _dir: dir,
            stdout,
            stderr,
            startup: Duration::ZERO,
        };
        assent.spawn().await;
        assent
    }

    /// Starts the process (again) on the same port, data and database.
    async fn spawn(&mut self) {
        let mut command = Command::new(assent_binary());
        command.current_dir(self._dir.path()).arg("serve");
        if self.options.demo {
            command.arg("--demo");
        }
        // Everything through the environment: the run has no config file
        // unless the test gives one.
        command
            .env("ASSENT_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("ASSENT_PUBLIC_URL", &self.base)
            .env("ASSENT_DATA_DIR", &self.data_dir)
            .env("RUST_LOG", "info");
        if let Some(url) = &self.database_url {
            command.env("ASSENT_DATABASE_URL", url);
        }
        if let Some(path) = &self.config_path {
            command.arg("--config").arg(path);
        }
        for (key, value) in &self.options.env {
            command.env(key, value);
        }
        let started = Instant::now();
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "start {}: {e} (run `cargo build` first)",
                    assent_binary().display()
                )
            });
        collect(
            child.stdout.take().expect("stdout"),
            self.stdout.clone(),
            "out",
        );
        collect(
            child.stderr.take().expect("stderr"),
            self.stderr.clone(),
            "err",
        );
        let http = reqwest::Client::new();
        loop {
            if let Ok(response) = http.get(format!("{}/health", self.base)).send().await {
                if response.status().is_success() {
                    break;
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "assent exited with {status} before it was healthy:\n{}",
                    self.stderr.lock().expect("lock").join("\n")
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "assent did not become healthy within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.startup = started.elapsed();
        self.child = Some(child);
        if self.options.demo {
            // The links are printed once the demo request is stored.
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.stdout_line_containing("/consent/").is_none() {
                assert!(Instant::now() < deadline, "no demo link printed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Kills the process at once (SIGKILL: no shutdown of any kind).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends the running process a signal (`STOP`, `CONT`, …).
    pub fn signal(&self, name: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args(["-s", name, &child.id().to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -s {name} failed");
        }
    }

    /// Kills the process and starts it again on the same data.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Like [`Assent::restart`], but without `--demo` this time, so the demo
    /// request keeps its link (a demo start gives it a fresh one).
    pub async fn restart_keeping_links(&mut self) {
        self.kill();
        let demo = std::mem::replace(&mut self.options.demo, false);
        self.spawn().await;
        self.options.demo = demo;
    }

    /// Rows in one of Assent's tables, read straight from its database.
    pub async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        match &self.database_url {
            Some(url) => {
                let pool = sqlx::PgPool::connect(url)
                    .await
                    .expect("connect to PostgreSQL");
                let (n,): (i64,) = sqlx::query_as(&sql).fetch_one(&pool).await.expect("count");
                pool.close().await;
                n
            }
            None => {
                let url = format!("sqlite://{}/assent.db", self.data_dir.display());
                let pool = sqlx::SqlitePool::connect(&url).await.expect("open SQLite");
                let (n,): (i64,) = sqlx::query_as(&sql).fetch_one(&pool).await.expect("count");
                pool.close().await;
                n
            }
        }
    }

    /// Runs one statement straight on Assent's database (to put a request
    /// into a state the product reaches only through later features or
    /// time, such as cancelled or past its expiry).
    pub async fn execute(&self, sql: &str) {
        match &self.database_url {
            Some(url) => {
                let pool = sqlx::PgPool::connect(url)
                    .await
                    .expect("connect to PostgreSQL");
                sqlx::query(sql).execute(&pool).await.expect("execute");
                pool.close().await;
            }
            None => {
                let url = format!("sqlite://{}/assent.db", self.data_dir.display());
                let pool = sqlx::SqlitePool::connect(&url).await.expect("open SQLite");
                sqlx::query(sql).execute(&pool).await.expect("execute");
                pool.close().await;
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn stdout_line_containing(&self, needle: &str) -> Option<String> {
        self.stdout
            .lock()
            .expect("lock")
            .iter()
            .find(|line| line.contains(needle))
            .map(|line| line.trim().to_owned())
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().expect("lock").join("\n")
    }

    /// Everything the process printed on either stream.
    pub fn output_text(&self) -> String {
        format!(
            "{}\n{}",
            self.stdout.lock().expect("lock").join("\n"),
            self.stderr_text()
        )
    }
}

impl Drop for Assent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `assent` to completion (for `check-config` and failed starts); a run
/// still going after 30 s (a `serve` that started when it should not have)
/// is killed and fails the test.
pub fn run_assent(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(assent_binary());
    command
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("run assent");
    let started = Instant::now();
    while child.try_wait().expect("wait for assent").is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let output = child.wait_with_output().expect("collect output");
            panic!(
                "assent {args:?} was still running after 30 s:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect output")
}

/// The environment that runs a process with its wall clock `seconds` off
/// (`tests/skew/skew.c`, built with `cc` and loaded with `LD_PRELOAD`):
/// for replicas whose clocks disagree. Monotonic clocks are left alone.
pub fn skewed_clock(seconds: i64) -> Vec<(String, String)> {
    let dir = workspace_root().join("target").join("e2e-skew");
    std::fs::create_dir_all(&dir).expect("create the skew folder");
    let library = dir.join(format!("libskew-{}.so", std::process::id()));
    if !library.exists() {
        let building = library.with_extension("part");
        let built = Command::new("cc")
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(&building)
            .arg(workspace_root().join("tests/skew/skew.c"))
            .arg("-ldl")
            .output()
            .expect("run cc (Rust's linker on Linux)");
        assert!(
            built.status.success(),
            "cc tests/skew/skew.c: {}",
            String::from_utf8_lossy(&built.stderr)
        );
        std::fs::rename(&building, &library).expect("move the skew library in place");
    }
    vec![
        ("LD_PRELOAD".to_owned(), library.display().to_string()),
        (
            "ASSENT_TEST_CLOCK_SKEW_SECONDS".to_owned(),
            seconds.to_string(),
        ),
    ]
}

/// The Python of a virtualenv `cargo xtask test` made in the tools folder:
/// the one the environment variable `env` names, else `<tools>/<venv>`.
pub fn tools_python(env: &str, venv: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let tools = std::env::var_os("XTASK_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".cache/assent/tools"));
    tools.join(venv).join("bin/python")
}
