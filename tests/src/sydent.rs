//! A real sydent 2.6.1 (from PyPI) on loopback, started by the test.
//!
//! `cargo xtask test` installs it into a virtualenv and names its Python in
//! `ASSENT_SYDENT_PYTHON`; without it the default tools folder is tried.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sydent {
    child: Child,
    /// The client API, e.g. `http://127.0.0.1:40123`.
    pub base: String,
    /// The internal API (bind and unbind without authentication).
    pub internal: String,
    pub name: String,
    dir: tempfile::TempDir,
}

fn python() -> PathBuf {
    crate::tools_python("ASSENT_SYDENT_PYTHON", "sydent-venv")
}

impl Sydent {
    /// Starts sydent under `name` (what homeservers sign as `destination_is`).
    pub async fn start(name: &str) -> Sydent {
        Sydent::start_with(name, None).await
    }

    /// Starts sydent under `name`, sending its own validation emails (the
    /// code in the body, `Your validation code: <token>`) to the SMTP server
    /// on `smtp_port`, or nowhere when `None`.
    pub async fn start_with(name: &str, smtp_port: Option<u16>) -> Sydent {
        let python = python();
        assert!(
            python.exists(),
            "sydent is not installed at {}; run `cargo xtask test`, which installs it",
            python.display()
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let port = crate::free_port();
        let internal_port = crate::free_port();
        // PyPI's sydent ships no email templates: a plain one of our own,
        // in sydent's %-substitution form, under its default brand.
        let brand = dir.path().join("templates/matrix-org");
        std::fs::create_dir_all(&brand).expect("template folder");
        std::fs::write(
            brand.join("verification_template.eml"),
            "Date: %(date)s\r\nFrom: %(from)s\r\nTo: %(to)s\r\nMessage-ID: %(messageid)s\r\n\
             Subject: Your validation code\r\nMIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=UTF-8\r\n\r\nYour validation code: %(token)s\r\n",
        )
        .expect("write the email template");
        let config = format!(
            "[general]\nserver.name = {name}\nlog.path =\npidfile.path = {dir}/sydent.pid\n\
             templates.path = {dir}/templates\n\
             ip.whitelist = 127.0.0.0/8\n\n\
             [db]\ndb.file = {dir}/sydent.db\n\n\
             [http]\nclientapi.http.bind_address = 127.0.0.1\nclientapi.http.port = {port}\n\
             internalapi.http.bind_address = 127.0.0.1\ninternalapi.http.port = {internal_port}\n\
             federation.verifycerts = False\n\n\
             [email]\nemail.smtphost = 127.0.0.1\nemail.smtpport = {smtp_port}\n\
             email.from = Sydent <sydent@example.org>\n",
            dir = dir.path().display(),
            smtp_port = smtp_port.unwrap_or(9)
        );
        let conf = dir.path().join("sydent.conf");
        std::fs::write(&conf, config).expect("write sydent.conf");
        let log = std::fs::File::create(dir.path().join("sydent.log")).expect("log file");
        let child = Command::new(&python)
            .args(["-m", "sydent.sydent"])
            .current_dir(dir.path())
            .env("SYDENT_CONF", &conf)
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("start sydent with {}: {e}", python.display()));
        let mut sydent = Sydent {
            child,
            base: format!("http://127.0.0.1:{port}"),
            internal: format!("http://127.0.0.1:{internal_port}"),
            name: name.to_owned(),
            dir,
        };
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            let up = http
                .get(format!("{}/_matrix/identity/v2", sydent.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            let internal_up = http
                .get(format!("{}/", sydent.internal))
                .send()
                .await
                .is_ok();
            if up && internal_up {
                break;
            }
            if let Ok(Some(status)) = sydent.child.try_wait() {
                panic!("sydent exited with {status}:\n{}", sydent.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "sydent did not answer within 60 s:\n{}",
                sydent.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sydent
    }

    /// The sydent process's id (for its memory and CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sydent.log")).unwrap_or_default()
    }

    /// Binds `address` to `mxid` through sydent's internal API.
    pub async fn bind(&self, address: &str, mxid: &str) {
        let response = reqwest::Client::new()
            .post(format!("{}/_matrix/identity/internal/bind", self.internal))
            .json(&serde_json::json!({"medium": "email", "address": address, "mxid": mxid}))
            .send()
            .await
            .expect("sydent internal bind");
        assert!(
            response.status().is_success(),
            "bind: {}",
            response.status()
        );
    }

    /// The mxid sydent's v1 lookup gives for `address`, if any.
    pub async fn lookup(&self, address: &str) -> Option<String> {
        let answer: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/_matrix/identity/api/v1/lookup", self.base))
            .query(&[("medium", "email"), ("address", address)])
            .send()
            .await
            .expect("sydent lookup")
            .json()
            .await
            .expect("lookup JSON");
        answer["mxid"].as_str().map(str::to_owned)
    }
}

impl Drop for Sydent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
