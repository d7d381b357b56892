//! A real Synapse 1.163.2 (from PyPI) on loopback, started by the test, and
//! nginx terminating TLS in front of Assent, so that Synapse's calls to the
//! identity server go over HTTPS to a certificate it checks, as they do in a
//! deployment.
//!
//! `cargo xtask test` installs Synapse into a virtualenv and names its
//! Python in `ASSENT_SYNAPSE_PYTHON`; without it the default tools folder is
//! tried.
//!
//! Synapse is named `127.0.0.1:<port>` (a server name with an explicit port
//! needs no discovery): that port is its TLS listener for federation and
//! OpenID, which sydent calls to check signatures and account tokens. The
//! client API is plain HTTP on another port. Its signing key is the test
//! [`Homeserver`]'s, so Assent can pin it.

use crate::homeserver::Homeserver;
use crate::key_server::{certificate_from_test_ca, self_signed_certificate};
use base64::Engine;
use hmac::Mac;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SHARED_SECRET: &str = "registration-secret-for-the-tests";

pub struct Synapse {
    child: Child,
    /// Its keys, name and Matrix IDs, as the other test helpers use them.
    pub hs: Homeserver,
    /// The client API, e.g. `http://127.0.0.1:40123`.
    pub client_base: String,
    /// From spawn to the client API's first answer.
    pub startup: Duration,
    http: reqwest::Client,
    dir: tempfile::TempDir,
}

fn python() -> PathBuf {
    crate::tools_python("ASSENT_SYNAPSE_PYTHON", "synapse-venv")
}

/// A registered user: its Matrix ID, password and access token.
pub struct User {
    pub mxid: String,
    pub local: String,
    pub password: String,
    pub token: String,
}

impl Synapse {
    /// Starts Synapse with its key from `seed`, trusting `ca` (a PEM file)
    /// for its HTTPS calls, identity servers included.
    pub async fn start(seed: u8, ca: &Path) -> Synapse {
        let python = python();
        assert!(
            python.exists(),
            "Synapse is not installed at {}; run `cargo xtask test`, which installs it",
            python.display()
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let federation_port = crate::free_port();
        let client_port = crate::free_port();
        let hs = Homeserver::new(&format!("127.0.0.1:{federation_port}"), seed);
        let d = dir.path().display();
        // Synapse's key file: `ed25519 <version> <unpadded base64 seed>`.
        std::fs::write(
            dir.path().join("signing.key"),
            format!(
                "ed25519 test1 {}\n",
                base64::engine::general_purpose::STANDARD_NO_PAD.encode([seed; 32])
            ),
        )
        .expect("write the signing key");
        let (cert, key) = self_signed_certificate(dir.path(), "127.0.0.1", &[]);
        let config = format!(
            "server_name: \"{name}\"\n\
             pid_file: {d}/homeserver.pid\n\
             listeners:\n\
             \x20 - port: {client_port}\n\
             \x20   bind_addresses: ['127.0.0.1']\n\
             \x20   type: http\n\
             \x20   resources: [{{names: [client], compress: false}}]\n\
             \x20 - port: {federation_port}\n\
             \x20   bind_addresses: ['127.0.0.1']\n\
             \x20   type: http\n\
             \x20   tls: true\n\
             \x20   resources: [{{names: [federation, openid], compress: false}}]\n\
             tls_certificate_path: {cert}\n\
             tls_private_key_path: {key}\n\
             database: {{name: sqlite3, args: {{database: {d}/homeserver.db}}}}\n\
             media_store_path: {d}/media\n\
             signing_key_path: {d}/signing.key\n\
             registration_shared_secret: \"{SHARED_SECRET}\"\n\
             macaroon_secret_key: \"macaroon-secret-for-the-tests\"\n\
             form_secret: \"form-secret-for-the-tests\"\n\
             report_stats: false\n\
             trusted_key_servers: []\n\
             suppress_key_server_warning: true\n\
             # Identity servers on loopback are this test's, not an attack.\n\
             ip_range_whitelist: ['127.0.0.0/8', '::1/128']\n\
             rc_login: {{address: {{per_second: 100, burst_count: 100}}, account: {{per_second: 100, burst_count: 100}}}}\n",
            name = hs.name,
            cert = cert.display(),
            key = key.display(),
        );
        let config_path = dir.path().join("homeserver.yaml");
        std::fs::write(&config_path, config).expect("write homeserver.yaml");
        let log = std::fs::File::create(dir.path().join("synapse.log")).expect("log file");
        let started = Instant::now();
        let child = Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&config_path)
            .current_dir(dir.path())
            // Twisted's HTTPS client trusts OpenSSL's default paths, which
            // this names.
            .env("SSL_CERT_FILE", ca)
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("start Synapse with {}: {e}", python.display()));
        let mut synapse = Synapse {
            child,
            hs,
            client_base: format!("http://127.0.0.1:{client_port}"),
            startup: Duration::ZERO,
            http: reqwest::Client::new(),
            dir,
        };
        loop {
            let up = synapse
                .http
                .get(format!("{}/_matrix/client/versions", synapse.client_base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                break;
            }
            if let Ok(Some(status)) = synapse.child.try_wait() {
                panic!("Synapse exited with {status}:\n{}", synapse.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "Synapse did not answer within 60 s:\n{}",
                synapse.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        synapse.startup = started.elapsed();
        synapse
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("synapse.log")).unwrap_or_default()
    }

    /// Registers `local` through the shared-secret admin API.
    pub async fn register(&self, local: &str, admin: bool) -> User {
        let url = format!("{}/_synapse/admin/v1/register", self.client_base);
        let nonce = self.http.get(&url).send().await.expect("register nonce");
        let nonce: Value = nonce.json().await.expect("nonce JSON");
        let nonce = nonce["nonce"].as_str().expect("a nonce").to_owned();
        let password = format!("password-of-{local}");
        let mut mac =
            hmac::Hmac::<sha1::Sha1>::new_from_slice(SHARED_SECRET.as_bytes()).expect("HMAC key");
        let role = if admin { "admin" } else { "notadmin" };
        mac.update(format!("{nonce}\0{local}\0{password}\0{role}").as_bytes());
        let mac: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let (status, answer) = self
            .call(
                reqwest::Method::POST,
                "/_synapse/admin/v1/register",
                None,
                json!({"nonce": nonce, "username": local, "password": password, "admin": admin, "mac": mac}),
            )
            .await;
        assert_eq!(status, 200, "register {local}: {answer}");
        User {
            mxid: answer["user_id"].as_str().expect("user_id").to_owned(),
            local: local.to_owned(),
            password,
            token: answer["access_token"]
                .as_str()
                .expect("access_token")
                .to_owned(),
        }
    }

    /// One client-server or admin API call; the status and the JSON answer.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.client_base))
            .timeout(Duration::from_secs(60))
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("call Synapse");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx terminating TLS for `localhost:<port>` and passing everything to
/// an upstream, as an identity server's reverse proxy does. `Host` goes on
/// as the client sent it, port included, since that is the identity
/// server's name here.
pub struct TlsProxy {
    child: Option<Child>,
    pub port: u16,
    /// The test CA that issued its certificate (for `localhost`): what
    /// clients trust.
    pub ca: PathBuf,
    certificate: PathBuf,
    key: PathBuf,
    dir: tempfile::TempDir,
}

impl TlsProxy {
    /// Its port and certificate, before it starts.
    pub fn prepare() -> TlsProxy {
        let dir = tempfile::tempdir().expect("temp dir");
        let (ca, certificate, key) = certificate_from_test_ca(dir.path(), "localhost");
        TlsProxy {
            child: None,
            port: crate::free_port(),
            ca,
            certificate,
            key,
            dir,
        }
    }

    /// The name clients reach it by: `localhost:<port>`.
    pub fn name(&self) -> String {
        format!("localhost:{}", self.port)
    }

    /// Starts nginx, passing everything to `upstream` (`http://host:port`).
    pub fn start(&mut self, upstream: &str) {
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/');
        let d = self.dir.path().display();
        std::fs::write(
            self.dir.path().join("nginx.conf"),
            format!(
                "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
                 events {{}}\nhttp {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n\
                 proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
                 scgi_temp_path {d}/scgi;\n\
                 upstream assent {{ server {upstream}; keepalive 8; }}\n\
                 server {{\n    listen 127.0.0.1:{port} ssl;\n    server_name localhost;\n\
                 ssl_certificate {cert};\n    ssl_certificate_key {key};\n\
                 location / {{\n      proxy_pass http://assent;\n      proxy_http_version 1.1;\n\
                 proxy_set_header Connection \"\";\n      proxy_set_header Host $http_host;\n\
                 proxy_set_header X-Forwarded-For $remote_addr;\n    }}\n  }}\n}}\n",
                port = self.port,
                cert = self.certificate.display(),
                key = self.key.display(),
            ),
        )
        .expect("write nginx.conf");
        let child = Command::new("/usr/sbin/nginx")
            .arg("-p")
            .arg(self.dir.path())
            .arg("-c")
            .arg(self.dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx from Debian's package (cargo xtask test installs it)");
        self.child = Some(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nginx did not start: {}",
                std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// An HTTPS client that trusts the test CA only.
    pub fn client(&self) -> reqwest::Client {
        let pem = std::fs::read(&self.ca).expect("read the CA certificate");
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("a PEM certificate"))
            .tls_built_in_root_certs(false)
            .timeout(Duration::from_secs(60))
            .build()
            .expect("an HTTPS client")
    }

    /// What nginx passed on, one line a request.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
