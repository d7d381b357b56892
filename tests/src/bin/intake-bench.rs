//! `cargo xtask bench intake`: pre-signed unbinds at a fixed concurrency
//! against `assent serve` on SQLite, with everything on (signature check,
//! dedupe, store, outbox row; the binding check off), reporting requests/s,
//! latency percentiles and the server's memory.
//!
//! Usage: intake-bench --assent <binary> [--seconds 15] [--concurrency 16]
//!        [--warmup 2] [--log <file for the server's log>] [--send-email false]
//!        [--server assent|sydent]
//!
//! By default the server only queues each request's email (the outbox row is
//! written in the request's transaction) and does not send it
//! (`email.send = false`), so the figure is the intake's own; with
//! `--send-email true` its mail worker writes every message to a file
//! meanwhile, on the same two cores and the same SQLite writer.
//!
//! Each request is a distinct (mxid, address), so every one is a new hold.
//!
//! `--server sydent` sends the same signed unbinds to a real sydent 2.6.1
//! instead (the one `cargo xtask test` installs), which fetches the
//! homeserver's key over TLS once and answers 200: the yardstick,
//! measured on the same machine in the same way.
//! The load generator is closed-loop: each of the connections sends its next
//! request when the previous answer arrived (like wrk).

use assent_e2e::homeserver::Homeserver;
use assent_e2e::key_server::KeyServer;
use assent_e2e::sydent::Sydent;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const IS_NAME: &str = "is.bench";
const PATH: &str = "/_matrix/identity/v2/3pid/unbind";

struct Args {
    assent: PathBuf,
    seconds: u64,
    warmup: u64,
    concurrency: usize,
    /// Where the server's log goes (default: a temporary file).
    log: Option<PathBuf>,
    /// Whether the server also sends the queued email (to files) meanwhile.
    send_email: bool,
    /// `assent` or `sydent`.
    server: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        assent: PathBuf::from("target/release/assent"),
        seconds: 15,
        warmup: 2,
        concurrency: 16,
        log: None,
        send_email: false,
        server: "assent".to_owned(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = || value.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--assent" => args.assent = PathBuf::from(&value),
            "--seconds" => args.seconds = number()?,
            "--warmup" => args.warmup = number()?,
            "--concurrency" => args.concurrency = number()? as usize,
            "--log" => args.log = Some(PathBuf::from(&value)),
            "--send-email" => args.send_email = value == "true",
            "--server" if value == "assent" || value == "sydent" => args.server = value,
            "--server" => return Err(format!("--server: {value}: assent or sydent")),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.server == "sydent" && (args.log.is_some() || args.send_email) {
        return Err("--log and --send-email are for Assent, not --server sydent".to_owned());
    }
    Ok(args)
}

struct Signed {
    body: Bytes,
    authorization: String,
}

fn presign(hs: &Homeserver, count: usize, run: &str) -> Vec<Signed> {
    (0..count)
        .map(|i| {
            let local = format!("u{run}x{i}");
            let body = hs.unbind_body(&local, &format!("{local}@bench.example.org"));
            let authorization = hs.authorization("POST", PATH, IS_NAME, &body);
            Signed {
                body: Bytes::from(body),
                authorization,
            }
        })
        .collect()
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time the process has used so far (user + system), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the whole line.
    field(11) + field(12)
}

/// The machine's idle and total clock ticks so far (all CPUs; iowait counts
/// as idle).
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let values: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    (idle, values.iter().take(8).sum())
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
const TICKS_PER_S: f64 = 100.0;

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    f64::from(sorted[rank.min(sorted.len() - 1)]) / 1000.0
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    /// Answers with the server's success status (202 from Assent, 200
    /// from sydent).
    held: u64,
    other: u64,
}

/// The server under load.
enum Server {
    Assent {
        child: std::process::Child,
        log_path: PathBuf,
    },
    Sydent {
        sydent: Sydent,
        _keys: KeyServer,
    },
}

impl Server {
    fn pid(&self) -> u32 {
        match self {
            Server::Assent { child, .. } => child.id(),
            Server::Sydent { sydent, .. } => sydent.pid(),
        }
    }

    /// The status a stored (Assent) or done (sydent) unbind is answered with.
    fn success(&self) -> u16 {
        match self {
            Server::Assent { .. } => 202,
            Server::Sydent { .. } => 200,
        }
    }

    fn log_tail(&self) -> String {
        let log = match self {
            Server::Assent { log_path, .. } => {
                std::fs::read_to_string(log_path).unwrap_or_default()
            }
            Server::Sydent { sydent, .. } => sydent.log(),
        };
        let tail: Vec<_> = log.lines().rev().take(10).collect();
        tail.join("\n")
    }

    /// Asks the server to stop (so that it logs its closing figures), and
    /// kills it if it has not after 5 s.
    fn stop(self) {
        if let Server::Assent { mut child, .. } = self {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts Assent on a free port with the benchmark's configuration.
fn start_assent(
    args: &Args,
    hs: &Homeserver,
    dir: &std::path::Path,
) -> Result<(Server, u16), String> {
    let config = format!(
        "{}\n[limits]\nunbinds_per_origin_per_minute = 100000000\n\n[email]\nsend = {}\n\n\
         [[identity_servers]]\nname = \"{IS_NAME}\"\ndisplay_name = \"Benchmark IS\"\noperator = \"Bench\"\n\
         upstream = \"http://127.0.0.1:9/\"\nbinding_check = \"none\"\n",
        hs.pinned_toml(),
        args.send_email
    );
    let config_path = dir.join("assent.toml");
    std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
    let port = assent_e2e::free_port();
    let log_path = args.log.clone().unwrap_or_else(|| dir.join("assent.log"));
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let child = Command::new(&args.assent)
        .args(["serve", "--config"])
        .arg(&config_path)
        .env("ASSENT_LISTEN", format!("127.0.0.1:{port}"))
        .env("ASSENT_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        .env("ASSENT_DATA_DIR", dir.join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(|e| format!("start {}: {e}", args.assent.display()))?;
    Ok((Server::Assent { child, log_path }, port))
}

async fn worker(
    port: u16,
    requests: Arc<Vec<Signed>>,
    next: Arc<AtomicUsize>,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    success: u16,
) -> Result<Tally, String> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let mut tally = Tally::default();
    while !stop.load(Ordering::Relaxed) {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(signed) = requests.get(i) else {
            return Err("ran out of pre-signed requests; raise the count".to_owned());
        };
        let request = http::Request::post(PATH)
            .header("host", IS_NAME)
            .header("content-type", "application/json")
            .header("authorization", &signed.authorization)
            .body(Full::new(signed.body.clone()))
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        sender.ready().await.map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        let took = started.elapsed();
        if measuring.load(Ordering::Relaxed) {
            tally
                .latencies_us
                .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
            if status.as_u16() == success {
                tally.held += 1;
            } else {
                tally.other += 1;
            }
        }
    }
    Ok(tally)
}

fn main() -> Result<(), String> {
    let args = parse_args()?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (hs, server, port) = if args.server == "sydent" {
        runtime.block_on(async {
            // Named by its key server's address, where sydent fetches its key.
            let listener = KeyServer::reserve().await;
            let name = listener
                .local_addr()
                .map_err(|e| e.to_string())?
                .to_string();
            let hs = Homeserver::new(&name, 5);
            let keys = KeyServer::start(listener, &hs);
            let sydent = Sydent::start(IS_NAME).await;
            let port = sydent
                .base
                .rsplit_once(':')
                .and_then(|(_, port)| port.parse().ok())
                .ok_or("sydent's port")?;
            Ok::<_, String>((
                hs,
                Server::Sydent {
                    sydent,
                    _keys: keys,
                },
                port,
            ))
        })?
    } else {
        let hs = Homeserver::new("hs.bench", 5);
        let (server, port) = start_assent(&args, &hs, dir.path())?;
        (hs, server, port)
    };
    let pid = server.pid();
    let success = server.success();

    // Enough distinct requests for the fastest plausible run.
    let needed = ((args.seconds + args.warmup) as usize) * 25_000;
    eprintln!("pre-signing {needed} unbinds…");
    let signing = Instant::now();
    let run = format!("{}", std::process::id());
    let half = needed / 2;
    let (a, b) = std::thread::scope(|s| {
        let first = s.spawn(|| presign(&hs, half, &format!("{run}a")));
        let second = presign(&hs, needed - half, &format!("{run}b"));
        (first.join().unwrap_or_default(), second)
    });
    let mut requests = a;
    requests.extend(b);
    eprintln!("signed in {:.1} s", signing.elapsed().as_secs_f64());

    let result = runtime.block_on(async {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        // Assent's health check; sydent answered before `start` returned.
        while success == 202
            && !http
                .get(format!("http://127.0.0.1:{port}/health"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        {
            if Instant::now() > deadline {
                return Err("assent did not become healthy".to_owned());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (rss_idle, _) = rss_kib(pid);
        let requests = Arc::new(requests);
        let next = Arc::new(AtomicUsize::new(0));
        let measuring = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..args.concurrency)
            .map(|_| {
                tokio::spawn(worker(
                    port,
                    requests.clone(),
                    next.clone(),
                    measuring.clone(),
                    stop.clone(),
                    success,
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(args.warmup)).await;
        measuring.store(true, Ordering::Relaxed);
        let started = Instant::now();
        let server_cpu_before = cpu_ticks(pid);
        let machine_before = machine_ticks();
        let mut rss_peak = 0;
        while started.elapsed() < Duration::from_secs(args.seconds) {
            tokio::time::sleep(Duration::from_millis(250)).await;
            rss_peak = rss_peak.max(rss_kib(pid).0);
        }
        measuring.store(false, Ordering::Relaxed);
        let measured = started.elapsed();
        let server_cpu = cpu_ticks(pid).saturating_sub(server_cpu_before);
        let machine_after = machine_ticks();
        let idle = (machine_after.0.saturating_sub(machine_before.0)) as f64
            / (machine_after.1.saturating_sub(machine_before.1)).max(1) as f64;
        stop.store(true, Ordering::Relaxed);
        let mut tally = Tally::default();
        for w in workers {
            let t = w.await.map_err(|e| e.to_string())??;
            tally.latencies_us.extend(t.latencies_us);
            tally.held += t.held;
            tally.other += t.other;
        }
        let (rss_end, hwm) = rss_kib(pid);
        Ok((
            tally,
            measured,
            (server_cpu, idle),
            rss_idle,
            rss_peak.max(rss_end),
            hwm,
            next.load(Ordering::Relaxed),
        ))
    });
    let log_tail = server.log_tail();
    server.stop();
    let (mut tally, measured, (server_cpu, idle), rss_idle, rss_peak, hwm, sent) = result?;
    tally.latencies_us.sort_unstable();
    let total = tally.latencies_us.len() as f64;
    let rate = total / measured.as_secs_f64();
    let summary = serde_json::json!({
        "server": args.server,
        "concurrency": args.concurrency,
        "send_email": args.send_email,
        "seconds": measured.as_secs_f64(),
        "requests": total,
        "answered_success": tally.held,
        "success_status": success,
        "other_status": tally.other,
        "requests_per_s": rate.round(),
        "p50_ms": percentile(&tally.latencies_us, 50.0),
        "p90_ms": percentile(&tally.latencies_us, 90.0),
        "p99_ms": percentile(&tally.latencies_us, 99.0),
        "max_ms": percentile(&tally.latencies_us, 100.0),
        // Less sensitive than the rate to what else the machine is doing.
        "server_cpu_us_per_request": (server_cpu as f64 / TICKS_PER_S * 1e6 / total.max(1.0)).round(),
        "machine_idle_percent": (idle * 1000.0).round() / 10.0,
        "rss_idle_mib": rss_idle as f64 / 1024.0,
        "rss_peak_mib": rss_peak as f64 / 1024.0,
        "vm_hwm_mib": hwm as f64 / 1024.0,
        "sent_including_warmup": sent,
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?
    );
    println!(
        "{}: {:.0} {} requests/s, p50 {:.2} ms, p99 {:.2} ms, peak RSS {:.1} MiB, server CPU {:.0} µs/request, machine {:.0} % idle (c={}, {:.0} s, {} non-{})",
        args.server,
        rate,
        if success == 202 { "held" } else { "answered" },
        percentile(&tally.latencies_us, 50.0),
        percentile(&tally.latencies_us, 99.0),
        rss_peak as f64 / 1024.0,
        server_cpu as f64 / TICKS_PER_S * 1e6 / total.max(1.0),
        idle * 100.0,
        args.concurrency,
        measured.as_secs_f64(),
        tally.other,
        success
    );
    if tally.other > 0 {
        eprintln!("some answers were not {success}; the server log ends with:\n{log_tail}");
    }
    Ok(())
}
