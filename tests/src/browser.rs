//! Headless Chromium through ChromeDriver, with the browser's console log
//! (where CSP violations are reported) and screenshots.

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};
use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Browser {
    driver: Child,
    port: u16,
    profile: tempfile::TempDir,
}

const CHROME: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

impl Browser {
    pub async fn start() -> Browser {
        let port = crate::free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {CHROMEDRIVER}: {e} (install chromium-driver)"));
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Browser {
            driver,
            port,
            profile: tempfile::tempdir().expect("profile dir"),
        }
    }

    async fn session(&self, javascript: bool, extra: &[&str]) -> Client {
        static PROFILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let mut args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--window-size=1024,900".to_owned(),
            // A profile of its own each time: a profile used before keeps
            // what its session set (`--accept-lang` among it).
            format!(
                "--user-data-dir={}",
                self.profile
                    .path()
                    .join(format!(
                        "p{}",
                        PROFILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    ))
                    .display()
            ),
        ];
        if !javascript {
            args.push("--blink-settings=scriptEnabled=false".to_owned());
        }
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROME, "args": args },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let capabilities = match capabilities {
            Value::Object(map) => map,
            _ => unreachable!(),
        };
        // ChromeDriver now and then drops the connection that asks for a
        // session (while an earlier Chromium is still going away): ask again.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&format!("http://127.0.0.1:{}", self.port))
                .await
            {
                Ok(client) => return client,
                Err(e) if attempt < 4 => {
                    eprintln!("no WebDriver session yet ({e}); asking again");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                Err(e) => panic!("a WebDriver session: {e}"),
            }
        }
    }

    /// Runs `steps` in a fresh session and always closes it, even when a step
    /// fails, so no Chromium is left behind; then re-raises the failure.
    pub async fn with_session<F, Fut>(&self, steps: F)
    where
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.with_session_scripts(true, &[], steps).await
    }

    /// Like [`Browser::with_session`], with extra Chromium flags (e.g.
    /// `--lang=de-DE`).
    pub async fn with_session_flags<F, Fut>(&self, flags: &[&str], steps: F)
    where
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.with_session_scripts(true, flags, steps).await
    }

    /// Like [`Browser::with_session`], with JavaScript turned off.
    pub async fn with_session_without_javascript<F, Fut>(&self, steps: F)
    where
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.with_session_scripts(false, &[], steps).await
    }

    async fn with_session_scripts<F, Fut>(&self, javascript: bool, flags: &[&str], steps: F)
    where
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let client = self.session(javascript, flags).await;
        let for_steps = client.clone();
        let outcome = tokio::spawn(async move { steps(for_steps).await }).await;
        let _ = client.close().await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// ChromeDriver's `POST /session/{id}/se/log`: the console messages so far.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}

/// ChromeDriver's `POST /session/{id}/goog/cdp/execute`: one DevTools
/// protocol command.
#[derive(Debug)]
struct Cdp {
    command: &'static str,
    params: Value,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"cmd": self.command, "params": self.params}).to_string()),
        )
    }
}

/// From the next page on, the browser runs scripts but has no WebAssembly
/// (as with some hardened or old browsers): `WebAssembly` is gone before
/// any page script runs.
pub async fn take_webassembly_away(client: &Client) {
    client
        .issue_cmd(Cdp {
            command: "Page.addScriptToEvaluateOnNewDocument",
            params: json!({"source": "delete globalThis.WebAssembly;"}),
        })
        .await
        .expect("DevTools: remove WebAssembly");
}

/// Makes the page a phone's: `width` CSS pixels wide (Chromium's windows
/// cannot be narrower than about 500 px, so the viewport is emulated).
pub async fn emulate_phone(client: &Client, width: u32) {
    client
        .issue_cmd(Cdp {
            command: "Emulation.setDeviceMetricsOverride",
            params: json!({"width": width, "height": 720, "deviceScaleFactor": 2, "mobile": true}),
        })
        .await
        .expect("DevTools: emulate a phone");
}

/// Console entries of level SEVERE (errors, CSP violations) since the last call.
pub async fn console_errors(client: &Client) -> Vec<String> {
    let log = client
        .issue_cmd(BrowserLog)
        .await
        .expect("read the browser log");
    log.as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|entry| entry["level"] == "SEVERE")
                .map(|entry| entry["message"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until the page's text contains `needle`.
pub async fn wait_for_text(client: &Client, needle: &str) -> String {
    let started = Instant::now();
    loop {
        let text = client
            .execute(
                "return document.body ? document.body.innerText : ''",
                vec![],
            )
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "page never showed {needle:?}; it shows:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    std::fs::write(crate::artifact_dir().join(format!("{name}.png")), png)
        .expect("save screenshot");
}

/// Waits until the Leptos app has taken the page over from the
/// server-rendered one and shows a heading.
pub async fn wait_for_app(client: &Client) {
    let started = Instant::now();
    loop {
        let ready = client
            .execute(
                "return !document.getElementById('assent-nojs') && !!document.querySelector('#main h1')",
                vec![],
            )
            .await
            .ok()
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        if ready {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the app never took over the page"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `id` and text of the element that has focus.
pub async fn focused(client: &Client) -> (String, String) {
    let value = client
        .execute(
            "const e = document.activeElement; return [e ? e.id : '', e ? e.innerText || '' : ''];",
            vec![],
        )
        .await
        .expect("read the focused element");
    let part = |i: usize| value[i].as_str().unwrap_or_default().trim().to_owned();
    (part(0), part(1))
}
