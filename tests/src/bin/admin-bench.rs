//! `cargo xtask bench admin`: the admin list with 100,000 stored requests in
//! SQLite. Seeds the database of a running `assent serve` (30 days of
//! requests from 200 homeservers, one of them flooding, in every status, each
//! with an audit event and an email row), then times the admin API over
//! loopback HTTP, one call at a time, and prints the median and p90 of each
//! case beside `GET /health` (the cost of an HTTP round trip alone), at each
//! table size side by side with the ratio between the largest and smallest.
//!
//! Usage: admin-bench [--rows 10000,100000] [--calls 101]

use assent_e2e::{Assent, Options};
use serde_json::Value;
use std::time::{Duration, Instant};

const TOKEN: &str = "admin-token-for-the-admin-benchmark-0123456789";
const DAY_MS: i64 = 24 * 3600 * 1000;

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn seed(assent: &Assent, rows: usize) -> Result<(), String> {
    let url = format!("sqlite://{}/assent.db", assent.data_dir.display());
    let pool = sqlx::SqlitePool::connect(&url)
        .await
        .map_err(|e| e.to_string())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_millis() as i64;
    let statuses = [
        "pending",
        "approved",
        "approved",
        "denied",
        "expired",
        "expired",
        "pending",
        "denied",
        "approved",
        "cancelled",
    ];
    let started = Instant::now();
    for chunk in (0..rows).collect::<Vec<_>>().chunks(5_000) {
        let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
        for &i in chunk {
            let created = now - 30 * DAY_MS + (i as i64 * 30 * DAY_MS) / rows as i64;
            // Every third request comes from one flooding homeserver.
            let origin = if i % 3 == 0 {
                "flood.example.net".to_owned()
            } else {
                format!("hs{}.example.org", i % 199)
            };
            let status = statuses[i % statuses.len()];
            let id = format!("req_{created:012x}{i:016x}");
            let decided = (status != "pending").then_some(created + 3_600_000);
            sqlx::query(
                "INSERT INTO requests (id, source, identity_server, origin, origin_key_id, verified_at, mxid, medium, \
                 address, initiator, reason, status, token_hash, created_at, expires_at, decided_at, updated_at) \
                 VALUES ($1, 'gateway', 'matrix.example.org', $2, 'ed25519:a_key', $3, $4, 'email', $5, 'admin', NULL, \
                 $6, $7, $3, $8, $9, $3)",
            )
            .bind(&id)
            .bind(&origin)
            .bind(created)
            .bind(format!("@user{i}:{origin}"))
            .bind(format!("user{i}@mail{}.example.com", i % 50))
            .bind(status)
            .bind(format!("token-hash-{i}").into_bytes())
            .bind(created + 7 * DAY_MS)
            .bind(decided)
            .execute(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
            sqlx::query("INSERT INTO audit_events (request_id, at, kind, actor, detail) VALUES ($1, $2, 'received', $3, '{}')")
                .bind(&id)
                .bind(created)
                .bind(&origin)
                .execute(&mut *tx)
                .await
                .map_err(|e| e.to_string())?;
            sqlx::query(
                "INSERT INTO outbox (request_id, kind, idempotency_key, payload, state, attempts, next_attempt_at, created_at, updated_at) \
                 VALUES ($1, 'email', $2, '{}', 'done', 1, $3, $3, $3)",
            )
            .bind(&id)
            .bind(format!("email:{id}:initial"))
            .bind(created)
            .execute(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
        }
        tx.commit().await.map_err(|e| e.to_string())?;
    }
    pool.close().await;
    println!(
        "seeded {rows} requests (with audit and outbox rows) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn time(
    client: &reqwest::Client,
    url: &str,
    calls: usize,
    auth: bool,
) -> Result<(Vec<f64>, Value), String> {
    let mut times = Vec::with_capacity(calls);
    let mut last = Value::Null;
    for _ in 0..calls {
        let mut request = client.get(url);
        if auth {
            request = request.bearer_auth(TOKEN);
        }
        let started = Instant::now();
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        if !status.is_success() {
            return Err(format!("{url}: {status}"));
        }
        last = serde_json::from_slice(&body).unwrap_or(Value::Null);
    }
    Ok((times, last))
}

struct Case {
    name: &'static str,
    median: f64,
    p90: f64,
    results: String,
}

/// Seeds `rows` requests into a fresh `assent serve` and times each case.
async fn measure(rows: usize, calls: usize) -> Result<Vec<Case>, String> {
    let assent = Assent::start(Options {
        config: Some(format!("[admin]\ntokens = [\"{TOKEN}\"]\n")),
        ..Options::default()
    })
    .await;
    seed(&assent, rows).await?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let list = assent.url("/_assent/v1/admin/requests");
    // A cursor 100 pages deep (or as deep as the table goes), for the keyset case.
    let mut deep = String::new();
    for _ in 0..(rows / 50).saturating_sub(1).min(100) {
        let from = if deep.is_empty() {
            String::new()
        } else {
            format!("&from={deep}")
        };
        let (_, page) = time(&client, &format!("{list}?limit=50{from}"), 1, true).await?;
        deep = page["next"].as_str().unwrap_or_default().to_owned();
    }
    let probe = rows / 2;
    let week_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_millis() as i64
        - 7 * DAY_MS;
    let cases: Vec<(&'static str, String, bool)> = vec![
        ("GET /health (HTTP round trip alone)", assent.url("/health"), false),
        ("first page, all requests, with counts", format!("{list}?limit=50"), true),
        ("first page, status=pending", format!("{list}?limit=50&status=pending"), true),
        ("first page, requesting_server=flood…", format!("{list}?limit=50&requesting_server=flood.example.net"), true),
        ("first page, status + server + last 7 days", format!("{list}?limit=50&status=denied&requesting_server=hs7.example.org&created_from={week_ago}"), true),
        ("search: an exact address", format!("{list}?q=user{probe}%40mail{}.example.com", probe % 50), true),
        ("search: a Matrix ID localpart prefix", format!("{list}?q=user{}", probe / 10), true),
        ("search: a server name prefix", format!("{list}?q=hs12.example"), true),
        ("search: a broad prefix (hs1: 111 servers)", format!("{list}?q=hs1"), true),
        ("a page deep in the list (keyset cursor)", format!("{list}?limit=50&from={deep}"), true),
        ("per-server stats (24 h / 7 d)", assent.url("/_assent/v1/admin/stats/servers"), true),
    ];
    let mut measured = Vec::new();
    for (name, url, auth) in cases {
        let (times, body) = time(&client, &url, calls, auth).await?;
        let results = body["requests"].as_array().map_or_else(
            || {
                body["servers"]
                    .as_array()
                    .map_or(String::from("-"), |s| s.len().to_string())
            },
            |r| r.len().to_string(),
        );
        measured.push(Case {
            name,
            median: percentile(&times, 0.5),
            p90: percentile(&times, 0.9),
            results,
        });
    }
    Ok(measured)
}

fn main() -> Result<(), String> {
    let mut sizes = vec![10_000usize, 100_000];
    let mut calls = 101usize;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--rows", Some(list)) => {
                sizes = list
                    .split(',')
                    .map(|n| n.trim().parse().map_err(|e| format!("--rows: {e}")))
                    .collect::<Result<_, _>>()?
            }
            ("--calls", Some(n)) => calls = n.parse().map_err(|e| format!("--calls: {e}"))?,
            _ => {
                return Err(format!(
                    "unknown flag {flag}; usage: admin-bench [--rows 10000,100000] [--calls 101]"
                ))
            }
        }
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let mut runs = Vec::new();
        for &rows in &sizes {
            runs.push(measure(rows, calls).await?);
        }
        println!("\nmedian (p90) in ms per case, {calls} calls each, one at a time, over loopback HTTP; SQLite\n");
        print!("{:<42}", "case");
        for rows in &sizes {
            print!(" {:>22}", format!("{rows} requests"));
        }
        if sizes.len() > 1 {
            print!(" {:>8}", "ratio");
        }
        println!();
        for (i, case) in runs[0].iter().enumerate() {
            print!("{:<42}", case.name);
            for run in &runs {
                let c = &run[i];
                print!(" {:>22}", format!("{:.2} ({:.2}) [{}]", c.median, c.p90, c.results));
            }
            if let (Some(first), Some(last)) = (runs.first(), runs.last()) {
                if sizes.len() > 1 {
                    print!(" {:>7.2}×", last[i].median / first[i].median);
                }
            }
            println!();
        }
        if let Some(largest) = runs.last() {
            let worst = largest
                .iter()
                .skip(1)
                .filter(|c| !c.name.starts_with("per-server"))
                .map(|c| c.median)
                .fold(0.0, f64::max);
            println!(
                "\nslowest first page or search at {} requests: median {worst:.2} ms (budget 20 ms)",
                sizes.last().copied().unwrap_or_default()
            );
        }
        Ok(())
    })
}
