//! What the unit tests share: a harness with the real router on a real
//! SQLite database, a clock the test moves, and a homeserver on loopback
//! that serves its keys and signs requests the way Synapse does.

use crate::assets::WebAssets;
use crate::config::{BindingCheck, Config, IdentityServerConfig, RelaySink};
use crate::homeserver_keys::key_fetch::KeyFetcher;
use crate::intake::xmatrix::signed_object;
use crate::keys::{encode_unpadded, SigningKey};
use crate::state::{AppState, Clock};
use crate::storage::RequestKey;
use assent_shared::Medium;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use tower::ServiceExt;

/// The identity server every harness configures.
pub(crate) const IS_NAME: &str = "is.test";
pub(crate) const V2: &str = "/_matrix/identity/v2/3pid/unbind";
pub(crate) const V1: &str = "/_matrix/identity/api/v1/3pid/unbind";
pub(crate) const START_MS: i64 = 1_800_000_000_000;

pub(crate) struct TestClock(pub(crate) AtomicI64);

impl Clock for TestClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A homeserver: a signing key, and its key document served over HTTP.
pub(crate) struct TestHomeserver {
    pub(crate) name: String,
    pub(crate) key: SigningKey,
}

impl TestHomeserver {
    pub(crate) async fn start() -> Self {
        let key = SigningKey::from_seed("hs1", &[42; 32]).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let name = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
        // Valid for a month of test time, so tests may move the clock.
        let doc = serde_json::to_value(
            key.server_keys_document(&name, START_MS + 30 * 24 * 3600 * 1000)
                .unwrap(),
        )
        .unwrap();
        let app = axum::Router::new().route(
            "/_matrix/key/v2/server",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc) }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        TestHomeserver { name, key }
    }

    pub(crate) fn mxid(&self, local: &str) -> String {
        format!("@{local}:{}", self.name)
    }

    /// The `Authorization` header Synapse would send.
    pub(crate) fn authorization(
        &self,
        method: &str,
        uri: &str,
        destination_is: &str,
        body: &[u8],
    ) -> String {
        // A body that is not JSON cannot be signed as Synapse would; sign it as
        // empty, since the gateway must refuse it before looking at signatures.
        let object = signed_object(method, uri, &self.name, destination_is, body)
            .or_else(|_| signed_object(method, uri, &self.name, destination_is, b""))
            .unwrap();
        let canonical = serde_json::to_vec(&object).unwrap();
        let sig = encode_unpadded(&self.key.sign_bytes(&canonical));
        format!(
            "X-Matrix origin=\"{}\",key=\"{}\",sig=\"{sig}\",destination=\"{destination_is}\"",
            self.name,
            self.key.key_id()
        )
    }
}

pub(crate) struct Harness {
    pub(crate) state: AppState,
    pub(crate) app: axum::Router,
    pub(crate) hs: TestHomeserver,
    pub(crate) clock: Arc<TestClock>,
    _dir: tempfile::TempDir,
    /// The database of [`Harness::on_test_database`], kept while it runs.
    database: Option<crate::storage::TestDb>,
}

pub(crate) fn identity_server(name: &str) -> IdentityServerConfig {
    IdentityServerConfig {
        name: name.to_owned(),
        display_name: "Test identity server".to_owned(),
        operator: "Test operator".to_owned(),
        privacy_policy_url: None,
        upstream: url::Url::parse("http://127.0.0.1:9/").unwrap(),
        proxy_all: false,
        binding_check: BindingCheck::None,
        frame_ancestors: Vec::new(),
        api_tokens: vec!["integrated-token-for-tests-0123456789abcdef".to_owned()],
        api_tokens_file: None,
        language: None,
        relay: vec![RelaySink::Replay],
    }
}

/// A front end of one page, as Trunk would build it, so that the
/// server-rendered consent page has a shell to go into.
pub(crate) fn test_shell(dir: &std::path::Path) -> std::path::PathBuf {
    let dist = dir.join("dist");
    std::fs::create_dir_all(&dist).unwrap();
    std::fs::write(
        dist.join("index.html"),
        "<!DOCTYPE html><html lang=\"en\"><head><script type=\"module\">init()</script></head>\
         <body><noscript><p>This page needs JavaScript.</p></noscript></body></html>",
    )
    .unwrap();
    dist
}

impl Harness {
    pub(crate) async fn new(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/assent.db", dir.path().display());
        Self::on(dir, &url, adjust).await
    }

    /// The database of [`Harness::on_test_database`].
    pub(crate) fn test_database(&self) -> &crate::storage::TestDb {
        self.database
            .as_ref()
            .expect("a harness made by Harness::on_test_database")
    }

    /// A harness on the database under test: SQLite, or a fresh PostgreSQL
    /// database when `TEST_POSTGRES_URL` names a server (as `cargo xtask
    /// test`'s second pass does). [`Harness::count`] reads SQLite only.
    pub(crate) async fn on_test_database(adjust: impl FnOnce(&mut Config)) -> Self {
        let db = crate::storage::test_db().await;
        let dir = tempfile::tempdir().unwrap();
        let mut harness = Self::on(dir, &db.url, adjust).await;
        harness.database = Some(db);
        harness
    }

    async fn on(dir: tempfile::TempDir, url: &str, adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config {
            data_dir: dir.path().to_owned(),
            identity_servers: vec![identity_server(IS_NAME)],
            ..Config::default()
        };
        config.keys.allow_private_addresses = true;
        adjust(&mut config);
        let repo = crate::storage::connect(url).await.unwrap();
        let clock = Arc::new(TestClock(AtomicI64::new(START_MS)));
        let fetcher = KeyFetcher::with_scheme(&config.keys, "http").unwrap();
        let state = AppState::with_key_fetcher(
            config,
            repo,
            clock.clone(),
            crate::state::os_rng(),
            SigningKey::from_seed("assent", &[7; 32]).unwrap(),
            WebAssets::load(&test_shell(dir.path())),
            fetcher,
        )
        .unwrap();
        let app = crate::app::router(state.clone());
        Harness {
            state,
            app,
            hs: TestHomeserver::start().await,
            clock,
            _dir: dir,
            database: None,
        }
    }

    /// The consent token of request `id`, made again from the nonce its
    /// email outbox row carries (as the mail worker makes it).
    pub(crate) async fn token_of(&self, id: &str) -> String {
        let outbox = self.state.repo.outbox_for(id).await.unwrap();
        let job = crate::lifecycle::jobs::EmailJob::of(&outbox[0]).unwrap();
        self.state.tokens.token(&job.nonce).unwrap()
    }

    /// Holds a signed unbind for `local`: (request id, consent token).
    pub(crate) async fn hold(&self, local: &str) -> (String, String) {
        let (status, _) = self
            .send(self.signed(V2, &self.body_for(local), IS_NAME))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let id = self.stored(local).await.unwrap().id;
        let token = self.token_of(&id).await;
        (id, token)
    }

    /// The test homeserver's Matrix ID for `local`.
    pub(crate) fn hs_mxid(&self, local: &str) -> String {
        self.hs.mxid(local)
    }

    pub(crate) fn body_for(&self, local: &str) -> Vec<u8> {
        format!(
            r#"{{"mxid":"{}","threepid":{{"address":"{local}@example.org","medium":"email"}}}}"#,
            self.hs.mxid(local)
        )
        .into_bytes()
    }

    /// A request as Synapse sends it, signed for `destination_is`.
    pub(crate) fn signed(&self, path: &str, body: &[u8], destination_is: &str) -> Request<Body> {
        let authorization = self.hs.authorization("POST", path, destination_is, body);
        raw_request(path, body, Some(&authorization))
    }

    pub(crate) async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    pub(crate) async fn count(&self, table: &str) -> i64 {
        let pool = sqlx::SqlitePool::connect(&format!(
            "sqlite://{}/assent.db",
            self.state.config.data_dir.display()
        ))
        .await
        .unwrap();
        let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&pool)
            .await
            .unwrap();
        n
    }

    pub(crate) fn key_for(&self, local: &str) -> (String, String, String) {
        (
            IS_NAME.to_owned(),
            self.hs.mxid(local),
            format!("{local}@example.org"),
        )
    }

    pub(crate) async fn stored(&self, local: &str) -> Option<crate::storage::StoredRequest> {
        let (is, mxid, address) = self.key_for(local);
        self.state
            .repo
            .latest_for(&RequestKey {
                identity_server: &is,
                origin: &self.hs.name,
                mxid: &mxid,
                medium: Medium::Email,
                address: &address,
            })
            .await
            .unwrap()
    }
}

pub(crate) fn raw_request(path: &str, body: &[u8], authorization: Option<&str>) -> Request<Body> {
    let mut builder = Request::post(path)
        .header("host", IS_NAME)
        .header("content-type", "application/json")
        .extension(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    if let Some(authorization) = authorization {
        builder = builder.header("authorization", authorization);
    }
    builder.body(Body::from(body.to_vec())).unwrap()
}
