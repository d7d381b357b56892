//! Starting up: data folder, signing key, database, web assets, listener.
//! Every failure names the config key to look at.

mod timed_io;

use crate::app;
use crate::assets::WebAssets;
use crate::config::Config;
use crate::email::transport::Mailer;
use crate::keys::SigningKey;
use crate::state::{AppState, SystemClock};
use crate::storage::{self, Repo};
use crate::workers::{email, expiry, relay, retention};
use crate::{demo, tokens};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Why Assent could not start.
#[derive(Debug)]
pub struct StartError {
    /// The config key to look at.
    pub key: &'static str,
    pub problem: String,
    pub fix: &'static str,
}

impl StartError {
    pub fn exit_code(&self) -> u8 {
        2
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}\n    fix: {}", self.key, self.problem, self.fix)
    }
}

impl std::error::Error for StartError {}

const DB_FIX: &str =
    "check that the database server runs and that the URL, user and password are right \
                      (sqlite://path/to/file.db or postgres://user:pass@host:5432/db)";

/// Logs on stderr, written by a thread of their own a buffer at a time: a
/// write per line on the request path cost more than the rest of logging.
/// None is lost or reordered (a full queue makes the logging thread wait); what is
/// queued is written when the returned guard is dropped.
/// With `log_format = "json"`, each line is one JSON object (`timestamp`,
/// `level`, `fields`, `span`, `spans`), for log collectors.
pub fn init_logging(
    format: crate::config::LogFormat,
) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        // The queue is allocated whole: 4,096 lines (128 KiB), not the
        // default 128,000 (4 MiB of resident memory).
        .buffered_lines_limit(4096)
        .thread_name("assent-log")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    // Logs on stderr; stdout carries only what `serve` prints for people.
    // A second call (tests) keeps the first subscriber.
    let installed = match format {
        crate::config::LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_target(false)
            .with_writer(writer)
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        crate::config::LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_target(false)
            .with_writer(writer)
            .try_init(),
    };
    installed.ok().map(|()| guard)
}

/// `assent check-config`: prints the effective config, then checks that the
/// database answers.
pub async fn check_config(config: &Config) -> Result<(), StartError> {
    print!("{}", config.to_masked_toml());
    for (key, why) in config.demo_like_settings() {
        eprintln!("assent: warning: `{key}` {why}");
    }
    let url = config.database_url();
    if url.starts_with("postgres") {
        use sqlx::Connection;
        let attempt =
            tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect(&url)).await;
        match attempt {
            Ok(Ok(connection)) => {
                let _ = connection.close().await;
            }
            Ok(Err(e)) => return Err(db_error(config, e.to_string())),
            Err(_) => return Err(db_error(config, "no answer within 10 s".to_owned())),
        }
    }
    eprintln!("assent: the configuration is valid");
    Ok(())
}

fn db_error(config: &Config, why: String) -> StartError {
    StartError {
        key: "database_url",
        problem: format!("cannot open {}: {why}", masked_db_url(config)),
        fix: DB_FIX,
    }
}

fn masked_db_url(config: &Config) -> String {
    match url::Url::parse(&config.database_url()) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("********"));
            url.to_string()
        }
        _ => config.database_url(),
    }
}

pub async fn open_database(config: &Config) -> Result<Repo, StartError> {
    match tokio::time::timeout(
        Duration::from_secs(15),
        storage::connect(&config.database_url()),
    )
    .await
    {
        Ok(Ok(repo)) => Ok(repo),
        Ok(Err(e)) => Err(db_error(config, e.to_string())),
        Err(_) => Err(db_error(config, "no answer within 15 s".to_owned())),
    }
}

/// `assent serve`: runs until SIGINT or SIGTERM.
pub async fn serve(mut config: Config, demo_mode: bool) -> Result<(), StartError> {
    let started = std::time::Instant::now();
    std::fs::create_dir_all(&config.data_dir).map_err(|e| StartError {
        key: "data_dir",
        problem: format!("cannot create {}: {e}", config.data_dir.display()),
        fix: "point data_dir at a folder Assent may write to",
    })?;
    let (key, created) =
        SigningKey::load_or_generate(&config.data_dir).map_err(|e| StartError {
            key: "data_dir",
            problem: e.to_string(),
            fix: "restore the key file from a backup, or move it away to have a new key generated",
        })?;
    if created {
        tracing::info!(key_id = key.key_id(), "generated a new signing key");
    }
    let repo = open_database(&config).await?;

    let mut demo_admin_token = None;
    if demo_mode {
        demo::prepare_config(&mut config);
        if config.admin.tokens.is_empty() {
            let mut bytes = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
            let token = tokens::encode(&bytes);
            config.admin.tokens.push(token.clone());
            demo_admin_token = Some(token);
        }
    }
    let web = match &config.dist_dir {
        Some(dir) => {
            let web = WebAssets::load(dir);
            if !web.is_built() {
                tracing::warn!(dist_dir = %dir.display(), "no index.html in dist_dir; pages answer 503 until there is one");
            }
            web
        }
        None => {
            let web = WebAssets::embedded();
            if !web.is_built() {
                tracing::warn!("this binary was built without its web front end; pages answer 503 (build it with `cargo xtask build`, or set dist_dir)");
            }
            web
        }
    };
    let state = AppState::new(config, repo, Arc::new(SystemClock), crate::state::os_rng(), key, web)
        .map_err(|e| StartError {
            key: "keys",
            problem: e.to_string(),
            fix: "name DNS servers in keys.nameservers (e.g. [\"127.0.0.53:53\"]) if the system has no /etc/resolv.conf",
        })?;
    let mailer =
        Mailer::new(&state.config.email, &state.config.data_dir).map_err(|e| StartError {
            key: e.key,
            problem: e.problem,
            fix: "see the [email] section of docs/configuration.md",
        })?;
    let mail_dir = mailer.mail_dir().map(|d| d.to_path_buf());
    // Every process relays and expires: leases and the first-decision-wins
    // rule keep replicas from doing anything twice.
    relay::spawn(state.clone());
    expiry::spawn(state.clone(), Duration::from_secs(30));
    retention::spawn(state.clone());
    if state.config.email.send {
        email::spawn(state.clone(), mailer);
    } else {
        tracing::info!("email.send is false: this process queues email but does not send it");
    }
    let listen = state.config.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| StartError {
            key: "listen",
            problem: format!("cannot listen on {listen}: {e}"),
            fix: "choose a free address and port, e.g. listen = \"127.0.0.1:8081\"",
        })?;
    let local = listener
        .local_addr()
        .map_or_else(|_| listen.to_string(), |a| a.to_string());
    tracing::info!(
        address = %local,
        database = state.repo.kind(),
        key_id = state.key.key_id(),
        startup_ms = started.elapsed().as_millis() as u64,
        "Assent is listening"
    );
    println!(
        "Assent is listening on http://{local} (public URL {})",
        state.config.public_base()
    );
    if demo_mode {
        let link = demo::seed(&state)
            .await
            .map_err(|e| db_error(&state.config, e.to_string()))?;
        println!();
        println!(
            "Demo request for {} held. Open the consent page:",
            demo::DEMO_ADDRESS
        );
        println!("    {link}");
        state.outbox_wake.notify_one();
        if let Some(dir) = &mail_dir {
            println!("Its email (open it in a mail program or a text editor) is written to:");
            println!("    {}", dir.display());
        }
        match &demo_admin_token {
            Some(token) => println!("Admin console (sign-in link, valid while this process runs):\n    {}admin#token={token}", state.config.public_base()),
            None => println!("Admin console (sign in with a token from [admin] tokens):\n    {}admin", state.config.public_base()),
        }
        println!();
    }
    if let Some(address) = state.config.metrics_listen {
        let metrics = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| StartError {
                key: "metrics_listen",
                problem: format!("cannot listen on {address}: {e}"),
                fix: "choose a free address and port, e.g. metrics_listen = \"127.0.0.1:9101\"",
            })?;
        let router = axum::Router::new()
            .route("/metrics", axum::routing::get(crate::api::metrics))
            .with_state(state.clone());
        tracing::info!(address = %address, "metrics are served on their own listener");
        tokio::spawn(async move {
            if let Err(e) = axum::serve(metrics, router).await {
                tracing::error!(error = %e, "the metrics listener stopped");
            }
        });
    }
    let checks = state.signature_checks.clone();
    let http = state.config.http.clone();
    accept(listener, app::router(state), &http).await;
    let (batches, signatures) = checks.counts();
    tracing::info!(batches, signatures, "homeserver signatures checked");
    Ok(())
}

/// Serves connections until SIGINT or SIGTERM, then lets the open ones
/// finish (for up to 30 s). Headers must arrive within
/// `http.header_read_timeout` and a kept-alive connection's next request
/// within `http.idle_timeout` (see `timed_io`; bodies: `app::body_deadline`);
/// past `http.max_connections`, new connections wait in the listen queue.
async fn accept(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    http: &crate::config::HttpConfig,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use std::sync::Arc;
    use tower::ServiceExt;

    // HTTP/1.1 only, which reverse proxies speak to their upstreams: a
    // connection that sends nothing cannot keep its slot (HTTP/2's preface
    // and idle streams would need timers of their own). The header and idle
    // timers are `TimedIo`'s; hyper's own, which counts an idle kept-alive
    // wait as header time, stays only as a backstop past both.
    let timeouts = timed_io::Timeouts {
        header: http.header_read_timeout,
        idle: http.idle_timeout,
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(http.header_read_timeout + http.idle_timeout);
    let slots = Arc::new(tokio::sync::Semaphore::new(
        usize::try_from(http.max_connections).unwrap_or(usize::MAX),
    ));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut stop = std::pin::pin!(shutdown_signal());
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut stop => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause, go on.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        // The peer goes with each request (a cheap map, not a layer over
        // every route per connection).
        let phase = timed_io::Phase::new();
        let (begun, ended) = (phase.clone(), phase.clone());
        let service = router
            .clone()
            .map_request(move |mut request: hyper::Request<hyper::body::Incoming>| {
                begun.begin();
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                request.map(axum::body::Body::new)
            })
            .map_future(move |response| {
                let phase = ended.clone();
                async move {
                    let response = response.await;
                    phase.end();
                    response
                }
            });
        let service = hyper_util::service::TowerToHyperService::new(service);
        let stream = timed_io::TimedIo::new(stream, phase, timeouts);
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A connection ends with an error when the client goes away or
            // times out: nothing to report.
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open 30 s after the shutdown began were dropped");
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
