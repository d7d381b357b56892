//! The kill sweep behind `cargo xtask chaos`: a steady mix of work against
//! `assent serve` while the server is SIGKILLed and started again at random
//! moments, then a reckoning from the records of everyone Assent promised
//! something to: the homeserver's answers, the owner's mail and decisions,
//! and what the identity server and the webhook receiver were sent.
//!
//! Acknowledged means durable and once means once:
//! - every unbind answered 202 is stored, once per (Matrix ID, address);
//! - every stored request's email, and every resend answered 200, reached
//!   the mail server; twice only with the same `Message-ID`;
//! - every decision answered 200 is stored as given and reached the webhook
//!   receiver (and, when approved, the identity server); more than once
//!   only with the same `decision_id`, and the replay byte for byte the
//!   homeserver's request;
//! - nothing reached the identity server without an approval;
//! - the database passes its own integrity check.

use crate::homeserver::Homeserver;
use crate::smtp::SmtpServer;
use crate::{Assent, Options};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const IS_NAME: &str = "is.test";
const V2: &str = "/_matrix/identity/v2/3pid/unbind";
const ADMIN_TOKEN: &str = "chaos-admin-token-0123456789abcdef0123456789";
/// How long the outboxes may take to drain after the last kill: a row
/// leased by a killed process waits out its lease (two minutes for a relay).
const DRAIN: Duration = Duration::from_secs(420);

#[derive(Debug, Clone)]
pub struct Settings {
    /// SIGKILLs to deliver.
    pub kills: u32,
    /// Drives the work, the failures and the kill times.
    pub seed: u64,
    /// Percent of deliveries the mail server, the identity server and the
    /// webhook receiver refuse (a 451 or a 500), to be retried.
    pub fail_percent: u64,
}

/// SplitMix64: small, and the same sequence for a seed on every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    pub fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

/// One delivery a receiver accepted.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub at: Instant,
    pub path: String,
    pub idempotency_key: Option<String>,
    pub authorization: Option<String>,
    pub body: Vec<u8>,
}

/// An HTTP receiver that refuses `fail_percent` of requests with a 500 and
/// records the ones it accepts.
pub struct Receiver {
    pub url: String,
    pub accepted: Arc<Mutex<Vec<Delivery>>>,
}

impl Receiver {
    pub async fn start(seed: u64, fail_percent: u64) -> Receiver {
        Receiver::slow(seed, fail_percent, Duration::ZERO).await
    }

    /// Like [`Receiver::start`], but each accepted delivery is answered
    /// only after `delay` (it is recorded at once): sends stay in flight.
    pub async fn slow(seed: u64, fail_percent: u64, delay: Duration) -> Receiver {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind a receiver");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let accepted: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let rng = Arc::new(Mutex::new(Rng::new(seed)));
        let record = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (record, rng) = (record.clone(), rng.clone());
                tokio::spawn(serve_one(stream, record, rng, fail_percent, delay));
            }
        });
        Receiver { url, accepted }
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.accepted.lock().expect("lock").clone()
    }
}

async fn serve_one(
    mut stream: tokio::net::TcpStream,
    record: Arc<Mutex<Vec<Delivery>>>,
    rng: Arc<Mutex<Rng>>,
    fail_percent: u64,
    delay: Duration,
) {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).into_owned();
            let header = |name: &str| {
                head.lines().find_map(|line| {
                    let (key, value) = line.split_once(':')?;
                    key.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| value.trim().to_owned())
                })
            };
            let length: usize = header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                let fail = rng.lock().expect("lock").percent(fail_percent);
                let reply: &[u8] = if fail {
                    b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                } else {
                    record.lock().expect("lock").push(Delivery {
                        at: Instant::now(),
                        path: head
                            .split_whitespace()
                            .nth(1)
                            .unwrap_or_default()
                            .to_owned(),
                        idempotency_key: header("idempotency-key"),
                        authorization: header("authorization"),
                        body: data[end + 4..end + 4 + length].to_vec(),
                    });
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
                };
                if !fail {
                    tokio::time::sleep(delay).await;
                }
                let _ = stream.write_all(reply).await;
                return;
            }
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
}

/// An owner, the homeserver's unbind for them, and what Assent answered.
#[derive(Debug, Clone)]
struct Owner {
    address: String,
    body: Vec<u8>,
    authorization: String,
    /// The decision this owner makes (the same word on every try).
    word: &'static str,
    /// An unbind for this owner was answered 202.
    held: bool,
    /// The decision was answered 200.
    decided: bool,
    /// Resends answered 200.
    resends: u32,
}

/// What the work saw, shared by the workers.
#[derive(Default)]
struct Book {
    owners: Vec<Owner>,
    /// Consent tokens per address, in the order their mail arrived.
    tokens: HashMap<String, Vec<String>>,
    mail_read: usize,
    sent: BTreeMap<&'static str, u64>,
}

impl Book {
    fn count(&mut self, what: &'static str) {
        *self.sent.entry(what).or_default() += 1;
    }
}

/// The result: what was checked and every counter-example found.
#[derive(Debug, Default)]
pub struct Report {
    pub kills: u32,
    pub seed: u64,
    pub held: usize,
    pub decisions: usize,
    pub resends: usize,
    pub mails: usize,
    pub relayed: usize,
    /// Mail accepted twice with one `Message-ID` (a kill between the hand-over and its record).
    pub mails_again: usize,
    /// Deliveries repeated with one `decision_id` (a kill between the send and its record).
    pub deliveries_again: usize,
    pub lost: Vec<String>,
    pub duplicated: Vec<String>,
    pub broken: Vec<String>,
    pub took: Duration,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.lost.is_empty() && self.duplicated.is_empty() && self.broken.is_empty()
    }

    pub fn summary(&self) -> String {
        let mut text = format!(
            "{} kills, {} lost, {} duplicated (seed {}, {:.0?})\n  \
             {} unbinds held, {} decisions, {} resends; {} mails, {} relay deliveries; \
             again after a kill: {} mails (same Message-ID), {} relay deliveries",
            self.kills,
            self.lost.len(),
            self.duplicated.len(),
            self.seed,
            self.took,
            self.held,
            self.decisions,
            self.resends,
            self.mails,
            self.relayed,
            self.mails_again,
            self.deliveries_again,
        );
        for (what, list) in [
            ("lost", &self.lost),
            ("duplicated", &self.duplicated),
            ("broken", &self.broken),
        ] {
            if let Some(first) = list.first() {
                text.push_str(&format!(
                    "\n  first {what}: {first} (replay: --seed {})",
                    self.seed
                ));
            }
        }
        text
    }
}

fn config(hs: &Homeserver, smtp: &SmtpServer, upstream: &Receiver, hook: &Receiver) -> String {
    format!(
        "{pinned}\n\
         [limits]\nunbinds_per_origin_per_minute = 1000000\nholds_per_address_per_hour = 1000\n\
         [email]\ntransport = \"smtp\"\nsmtp_url = \"{smtp}\"\nfrom = \"Assent <assent@example.org>\"\n\
         retry_initial = \"1s\"\nretry_max = \"2s\"\nmax_attempts = 50\ntimeout = \"5s\"\n\
         [admin]\ntokens = [\"{ADMIN_TOKEN}\"]\n\
         [[identity_servers]]\nname = \"{IS_NAME}\"\ndisplay_name = \"Chaos\"\noperator = \"Tests\"\n\
         upstream = \"{upstream}\"\nbinding_check = \"none\"\n\
         relay = [{{ kind = \"replay\" }}, {{ kind = \"webhook\", url = \"{hook}/hook\" }}]\n",
        pinned = hs.pinned_toml(),
        smtp = smtp.url(),
        upstream = upstream.url,
        hook = hook.url,
    )
}

/// Reads the mail that arrived since last time into the book's tokens.
fn read_mail(book: &mut Book, smtp: &SmtpServer) {
    let dir = smtp.dir();
    while let Ok(raw) = std::fs::read(dir.join(format!("{}.eml", book.mail_read + 1))) {
        book.mail_read += 1;
        let text = String::from_utf8_lossy(&raw).replace("=\r\n", "");
        let to = text
            .lines()
            .find_map(|l| l.strip_prefix("To: "))
            .map(|t| t.trim().trim_matches(['<', '>']).to_owned());
        let token = text.find("/consent/").map(|at| {
            text[at + "/consent/".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect::<String>()
        });
        if let (Some(to), Some(token)) = (to, token) {
            book.tokens.entry(to).or_default().push(token);
        }
    }
}

/// One step of work, chosen by `rng`.
async fn step(
    http: &reqwest::Client,
    base: &str,
    hs: &Homeserver,
    book: &Mutex<Book>,
    smtp: &SmtpServer,
    rng: &mut Rng,
) {
    let roll = rng.below(100);
    if roll < 45 {
        // An unbind: mostly a new owner, else a repeat of an earlier one.
        let owner = {
            let mut book = book.lock().expect("lock");
            let n = book.owners.len();
            if n == 0 || rng.percent(70) {
                let local = format!("owner{n}");
                let address = format!("owner{n}@example.org");
                let body = hs.unbind_body(&local, &address);
                let authorization = hs.authorization("POST", V2, IS_NAME, &body);
                let word = if rng.percent(50) { "approve" } else { "deny" };
                book.owners.push(Owner {
                    address,
                    body,
                    authorization,
                    word,
                    held: false,
                    decided: false,
                    resends: 0,
                });
                n
            } else {
                rng.below(n as u64) as usize
            }
        };
        let (body, authorization) = {
            let book = book.lock().expect("lock");
            let o = &book.owners[owner];
            (o.body.clone(), o.authorization.clone())
        };
        let answer = http
            .post(format!("{base}{V2}"))
            .header("host", IS_NAME)
            .header("content-type", "application/json")
            .header("authorization", authorization)
            .body(body)
            .send()
            .await;
        let mut book = book.lock().expect("lock");
        book.count("unbinds");
        if answer.is_ok_and(|a| a.status() == 202) {
            book.owners[owner].held = true;
        }
    } else if roll < 85 {
        // A decision by an owner whose request is held and mailed.
        let chosen = {
            let mut book = book.lock().expect("lock");
            read_mail(&mut book, smtp);
            let open: Vec<usize> = (0..book.owners.len())
                .filter(|&i| {
                    let o = &book.owners[i];
                    o.held && !o.decided && book.tokens.contains_key(&o.address)
                })
                .collect();
            if open.is_empty() {
                return;
            }
            let i = open[rng.below(open.len() as u64) as usize];
            let o = &book.owners[i];
            (i, o.word, book.tokens[&o.address].clone())
        };
        let (i, word, tokens) = chosen;
        // The newest link first: a resend retires the ones before it.
        for token in tokens.iter().rev() {
            let answer = http
                .post(format!("{base}/_assent/v1/consent/{token}/decision"))
                .json(&serde_json::json!({ "decision": word }))
                .send()
                .await;
            let Ok(answer) = answer else { return };
            match answer.status().as_u16() {
                200 => {
                    let mut book = book.lock().expect("lock");
                    book.count("decisions");
                    book.owners[i].decided = true;
                    return;
                }
                404 => continue,
                _ => return,
            }
        }
    } else {
        // An admin resends the email of a pending request.
        let chosen = {
            let book = book.lock().expect("lock");
            let open: Vec<usize> = (0..book.owners.len())
                .filter(|&i| book.owners[i].held && !book.owners[i].decided)
                .collect();
            if open.is_empty() {
                return;
            }
            let i = open[rng.below(open.len() as u64) as usize];
            (i, book.owners[i].address.clone())
        };
        let (i, address) = chosen;
        let listed = http
            .get(format!("{base}/_assent/v1/admin/requests"))
            .query(&[("q", address.as_str()), ("status", "pending")])
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await;
        let Ok(listed) = listed else { return };
        let Ok(listed) = listed.json::<serde_json::Value>().await else {
            return;
        };
        let Some(id) = listed["requests"][0]["id"].as_str() else {
            return;
        };
        let answer = http
            .post(format!("{base}/_assent/v1/admin/requests/{id}/resend"))
            .bearer_auth(ADMIN_TOKEN)
            .header("x-assent-csrf", "1")
            .send()
            .await;
        if answer.is_ok_and(|a| a.status() == 200) {
            let mut book = book.lock().expect("lock");
            book.count("resends");
            book.owners[i].resends += 1;
        }
    }
}

/// Rows of Assent's database as text, whichever database it is.
async fn rows(assent: &Assent, sql: &str) -> Vec<Vec<String>> {
    use sqlx::Row;
    macro_rules! collect {
        ($pool:expr) => {{
            let pool = $pool;
            let rows = sqlx::query(sql).fetch_all(&pool).await.expect(sql);
            pool.close().await;
            rows.iter()
                .map(|row| {
                    (0..row.len())
                        .map(|i| {
                            row.try_get::<String, _>(i)
                                .or_else(|_| row.try_get::<i64, _>(i).map(|n| n.to_string()))
                                .unwrap_or_default()
                        })
                        .collect()
                })
                .collect()
        }};
    }
    match &assent.database_url {
        Some(url) => collect!(sqlx::PgPool::connect(url).await.expect("PostgreSQL")),
        None => collect!(sqlx::SqlitePool::connect(&format!(
            "sqlite://{}/assent.db",
            assent.data_dir.display()
        ))
        .await
        .expect("SQLite")),
    }
}

/// Runs the sweep and reckons up.
pub async fn run(settings: &Settings) -> Report {
    let started = Instant::now();
    let mut seeds = Rng::new(settings.seed);
    let hs = Homeserver::new("hs.test", 7);
    // The mail server refuses a share of messages with 451, to be retried.
    let mut mail_rng = Rng::new(seeds.next_u64());
    let script: Vec<u16> = (0..5000)
        .map(|_| {
            if mail_rng.percent(settings.fail_percent) {
                451
            } else {
                250
            }
        })
        .collect();
    let smtp = SmtpServer::start(&script, 0);
    let upstream = Receiver::start(seeds.next_u64(), settings.fail_percent).await;
    let hook = Receiver::start(seeds.next_u64(), settings.fail_percent).await;
    let assent = Assent::start(Options {
        config: Some(config(&hs, &smtp, &upstream, &hook)),
        env: vec![("RUST_LOG".to_owned(), "warn".to_owned())],
        ..Options::default()
    })
    .await;
    let base = assent.base.clone();
    let book = Arc::new(Mutex::new(Book::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let hs = Arc::new(hs);
    let smtp = Arc::new(smtp);

    // Four clients at once, so that kills land in the middle of things.
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (book, stop, hs, smtp, base) = (
            book.clone(),
            stop.clone(),
            hs.clone(),
            smtp.clone(),
            base.clone(),
        );
        let mut rng = Rng::new(seeds.next_u64());
        workers.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("a client");
            while !stop.load(Ordering::SeqCst) {
                step(&http, &base, &hs, &book, &smtp, &mut rng).await;
                // About a hundred steps a second in all: enough to be in
                // the middle of something at each kill, little enough that
                // the mail server keeps up.
                tokio::time::sleep(Duration::from_millis(20 + rng.below(40))).await;
            }
        }));
    }

    let mut assent = assent;
    let mut kill_rng = Rng::new(seeds.next_u64());
    let mut kills = Vec::new();
    for _ in 0..settings.kills {
        tokio::time::sleep(Duration::from_millis(100 + kill_rng.below(500))).await;
        kills.push(Instant::now());
        assent.restart().await;
    }
    // Some work after the last start, then none.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        let _ = worker.await;
    }

    // Everything acknowledged must now come out of the outboxes.
    let deadline = Instant::now() + DRAIN;
    loop {
        let due = rows(
            &assent,
            "SELECT COUNT(*) FROM outbox WHERE state = 'pending'",
        )
        .await;
        if due.first().and_then(|r| r.first()).map(String::as_str) == Some("0") {
            break;
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut report = reckon(&assent, &book, &smtp, &upstream, &hook, settings, &kills).await;
    report.took = started.elapsed();
    report
}

async fn reckon(
    assent: &Assent,
    book: &Mutex<Book>,
    smtp: &SmtpServer,
    upstream: &Receiver,
    hook: &Receiver,
    settings: &Settings,
    kills: &[Instant],
) -> Report {
    let mut report = Report {
        kills: settings.kills,
        seed: settings.seed,
        ..Report::default()
    };
    let (owners, sent) = {
        let book = book.lock().expect("lock");
        (book.owners.clone(), book.sent.clone())
    };
    report.decisions = sent.get("decisions").copied().unwrap_or(0) as usize;
    report.resends = sent.get("resends").copied().unwrap_or(0) as usize;

    let stored = rows(
        assent,
        "SELECT id, address, status, COALESCE(decision_id, '') FROM requests",
    )
    .await;
    let mut by_address: HashMap<&str, Vec<&Vec<String>>> = HashMap::new();
    for row in &stored {
        by_address.entry(row[1].as_str()).or_default().push(row);
    }
    for (address, rows) in &by_address {
        if rows.len() > 1 {
            report
                .duplicated
                .push(format!("{address} is stored {} times", rows.len()));
        }
    }
    report.held = owners.iter().filter(|o| o.held).count();
    for owner in &owners {
        let rows = by_address.get(owner.address.as_str());
        if owner.held && rows.is_none() {
            report.lost.push(format!(
                "the unbind for {} was answered 202 and is not stored",
                owner.address
            ));
        }
        let Some(row) = rows.and_then(|r| r.first()) else {
            continue;
        };
        let wanted = if owner.word == "approve" {
            "approved"
        } else {
            "denied"
        };
        if owner.decided && row[2] != wanted {
            report.lost.push(format!(
                "{}: the decision `{}` was answered 200 but the request is {}",
                owner.address, owner.word, row[2]
            ));
        }
    }

    // Mail: each stored request's first email and each acknowledged resend.
    let accepted: Vec<String> = smtp
        .log()
        .into_iter()
        .filter(|(code, _)| *code == 250)
        .map(|(_, id)| id)
        .collect();
    report.mails = accepted.len();
    let mut times: HashMap<&str, usize> = HashMap::new();
    for id in &accepted {
        *times.entry(id.as_str()).or_default() += 1;
    }
    report.mails_again = times.values().map(|n| n - 1).sum();
    // Each repeat is a mail handed over just before a kill and resent.
    if report.mails_again > kills.len() {
        report.duplicated.push(format!(
            "{} mails were accepted twice, more than the {} kills explain",
            report.mails_again,
            kills.len()
        ));
    }
    let status_of: HashMap<&str, &str> = stored
        .iter()
        .map(|row| (row[0].as_str(), row[2].as_str()))
        .collect();
    for row in &stored {
        let id = &row[0];
        if !times
            .keys()
            .any(|m| m.starts_with(&format!("<email.{id}.")))
        {
            report
                .lost
                .push(format!("request {id} ({}) never had an email", row[1]));
        }
    }
    // Every email row, each resend's included, reached the mail server,
    // unless a later link replaced it before it went out, or the request
    // was decided first (through the link a resend replaced, in the same
    // moment): then it was skipped, as nobody needs it.
    let email_rows = rows(
        assent,
        "SELECT request_id, idempotency_key FROM outbox WHERE kind = 'email' ORDER BY id",
    )
    .await;
    let mut resend_rows: HashMap<&str, u32> = HashMap::new();
    for (i, row) in email_rows.iter().enumerate() {
        let (request, key) = (row[0].as_str(), row[1].as_str());
        if key.contains(":resend-") {
            *resend_rows.entry(request).or_default() += 1;
        }
        let local: String = key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '.'
                }
            })
            .collect();
        let mailed = times.contains_key(format!("<{local}@example.org>").as_str());
        let replaced = email_rows[i + 1..].iter().any(|later| later[0] == request);
        let decided = status_of.get(request).is_some_and(|s| *s != "pending");
        if !mailed && !replaced && !decided {
            report.lost.push(format!(
                "the email {key} of a pending request was never mailed"
            ));
        }
    }
    for owner in owners.iter().filter(|o| o.resends > 0) {
        let request = stored.iter().find(|row| row[1] == owner.address);
        let rows_made = request
            .and_then(|row| resend_rows.get(row[0].as_str()))
            .copied()
            .unwrap_or(0);
        if rows_made < owner.resends {
            report.lost.push(format!(
                "{}: {} resends answered 200, {rows_made} stored",
                owner.address, owner.resends
            ));
        }
    }

    // Relays: every decision to the webhook; approvals, replayed, upstream.
    let hooks = hook.deliveries();
    let replays = upstream.deliveries();
    report.relayed = hooks.len() + replays.len();
    // A repeat is a delivery made just before a kill and made again after
    // it: between two deliveries of one decision there must be a kill. A
    // receiver notes a delivery when it has read it, which can be a moment
    // after the killed process sent it: hence the margin.
    let margin = Duration::from_secs(2);
    let straddles = |mut times: Vec<Instant>| {
        times.sort();
        times
            .windows(2)
            .all(|w| kills.iter().any(|k| w[0] <= *k + margin && *k <= w[1]))
    };
    let mut hook_times: HashMap<String, Vec<Instant>> = HashMap::new();
    let mut hooks_by_request: HashMap<String, Vec<String>> = HashMap::new();
    for delivery in &hooks {
        let doc: serde_json::Value = serde_json::from_slice(&delivery.body).unwrap_or_default();
        let request = doc["request_id"].as_str().unwrap_or_default().to_owned();
        let decision = doc["decision_id"].as_str().unwrap_or_default().to_owned();
        if delivery.idempotency_key.as_deref() != Some(decision.as_str()) {
            report.broken.push(format!(
                "a webhook for {request} carried Idempotency-Key {:?}, not its decision_id {decision}",
                delivery.idempotency_key
            ));
        }
        hook_times
            .entry(decision.clone())
            .or_default()
            .push(delivery.at);
        hooks_by_request.entry(request).or_default().push(decision);
    }
    for (decision, times) in hook_times {
        if !straddles(times) {
            report.duplicated.push(format!(
                "decision {decision} reached the webhook twice with no kill between"
            ));
        }
    }
    for row in &stored {
        let (id, address, status, decision_id) = (&row[0], &row[1], &row[2], &row[3]);
        if status == "pending" {
            if hooks_by_request.contains_key(id) {
                report.broken.push(format!(
                    "request {id} is pending but a decision was relayed"
                ));
            }
            continue;
        }
        match hooks_by_request.get(id) {
            None => report.lost.push(format!(
                "the decision on {id} ({status}) never reached the webhook"
            )),
            Some(ids) => {
                report.deliveries_again += ids.len() - 1;
                if ids.iter().any(|d| d != decision_id) {
                    report.duplicated.push(format!(
                        "request {id} reached the webhook with decision ids {ids:?}"
                    ));
                }
            }
        }
        let owner = owners.iter().find(|o| &o.address == address);
        let replayed: Vec<&Delivery> = replays
            .iter()
            .filter(|d| owner.is_some_and(|o| d.body == o.body))
            .collect();
        if status == "approved" {
            if replayed.is_empty() {
                report.lost.push(format!(
                    "the approval of {id} never reached the identity server"
                ));
            }
            report.deliveries_again += replayed.len().saturating_sub(1);
            if !straddles(replayed.iter().map(|d| d.at).collect()) {
                report.duplicated.push(format!(
                    "the approval of {id} was replayed twice with no kill between"
                ));
            }
        } else if !replayed.is_empty() {
            report.broken.push(format!(
                "{address} was unbound at the identity server, but the request is {status}"
            ));
        }
    }
    for delivery in &replays {
        let owner = owners.iter().find(|o| o.body == delivery.body);
        match owner {
            None => report.broken.push(format!(
                "the identity server got an unbind no homeserver sent: {}",
                String::from_utf8_lossy(&delivery.body)
            )),
            Some(o) => {
                let status = stored
                    .iter()
                    .find(|row| row[1] == o.address)
                    .map_or("not stored", |row| row[2].as_str());
                if status != "approved" {
                    report.broken.push(format!(
                        "{} was unbound at the identity server, but its request is {status}",
                        o.address
                    ));
                }
                if delivery.authorization.as_deref() != Some(o.authorization.as_str())
                    || delivery.path != V2
                {
                    report.broken.push(format!(
                        "the replay for {} is not the homeserver's request byte for byte",
                        o.address
                    ));
                }
            }
        }
    }
    let unfinished = rows(
        assent,
        "SELECT kind, state, COUNT(*) FROM outbox WHERE state <> 'done' GROUP BY kind, state",
    )
    .await;
    for row in unfinished {
        report
            .lost
            .push(format!("{} {} outbox rows left {}", row[2], row[0], row[1]));
    }
    report.broken.extend(integrity(assent).await);
    report
}

/// The database's own check of itself.
async fn integrity(assent: &Assent) -> Vec<String> {
    match &assent.database_url {
        None => {
            let result = rows(assent, "PRAGMA integrity_check").await;
            let lines: Vec<String> = result.into_iter().flatten().collect();
            if lines == ["ok"] {
                Vec::new()
            } else {
                vec![format!("SQLite integrity_check: {lines:?}")]
            }
        }
        Some(_) => {
            // amcheck verifies every B-tree index against its table.
            let checked = rows(
                assent,
                "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
                 JOIN pg_am am ON am.oid = c.relam \
                 WHERE c.relnamespace = 'public'::regnamespace AND am.amname = 'btree'",
            )
            .await;
            let mut problems = Vec::new();
            let url = assent.database_url.clone().unwrap_or_default();
            let pool = sqlx::PgPool::connect(&url).await.expect("PostgreSQL");
            if let Err(e) = sqlx::query("CREATE EXTENSION IF NOT EXISTS amcheck")
                .execute(&pool)
                .await
            {
                // It needs a superuser; the throwaway server's is one.
                eprintln!("chaos: the index check is skipped: amcheck: {e}");
                pool.close().await;
                return problems;
            }
            for index in checked.iter().filter_map(|r| r.first()) {
                let sql = format!("SELECT bt_index_check('{index}'::regclass, true)::text");
                if let Err(e) = sqlx::query(&sql).execute(&pool).await {
                    problems.push(format!("index {index}: {e}"));
                }
            }
            pool.close().await;
            problems
        }
    }
}

/// The seed of a run that names none: different each time.
pub fn fresh_seed() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    Rng::new(now ^ u64::from(std::process::id())).next_u64() % 1_000_000
}
