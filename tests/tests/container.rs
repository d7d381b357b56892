//! The container image (`deploy/Containerfile`, `FROM scratch` with the
//! static binary) started with podman and no daemon: healthy, and a signed
//! unbind is held, its email written to the data volume and its consent
//! page served from the embedded front end.
//!
//! `cargo xtask test` builds the image (`cargo xtask container`) and runs
//! this test with `ASSENT_CONTAINER_IMAGE` naming it.

use assent_e2e::free_port;
use assent_e2e::homeserver::Homeserver;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const IS_HOST: &str = "matrix.example.org";
const V2: &str = "/_matrix/identity/v2/3pid/unbind";

fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .args(["--storage-driver", "vfs", "--runtime", "runc"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run podman: {e} (cargo xtask test installs it)"))
}

/// Removed (and its log printed) however the test ends.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let logs = podman(&["logs", &self.0]);
        eprintln!(
            "[container log]\n{}{}",
            String::from_utf8_lossy(&logs.stdout),
            String::from_utf8_lossy(&logs.stderr)
        );
        podman(&["rm", "--force", &self.0]);
    }
}

fn token_in(mail_dir: &Path) -> Option<String> {
    std::fs::read_dir(mail_dir).ok()?.find_map(|entry| {
        let text = std::fs::read_to_string(entry.ok()?.path())
            .ok()?
            .replace("=\r\n", "");
        let at = text.find("/consent/")? + "/consent/".len();
        Some(
            text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect(),
        )
    })
}

#[tokio::test]
#[ignore = "needs the image: `cargo xtask test` builds it and runs this"]
async fn the_image_starts_holds_an_unbind_and_serves_its_page() {
    let image = std::env::var("ASSENT_CONTAINER_IMAGE")
        .expect("ASSENT_CONTAINER_IMAGE names the image (cargo xtask container builds one)");
    let hs = Homeserver::new("hs.test", 43);
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let (config_dir, data_dir) = (dir.path().join("config"), dir.path().join("data"));
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::create_dir_all(&data_dir).unwrap();
    // The image runs as nobody: the data volume must be theirs.
    let chown = Command::new("chown")
        .args(["65534:65534"])
        .arg(&data_dir)
        .status()
        .unwrap();
    assert!(chown.success());
    std::fs::write(
        config_dir.join("assent.toml"),
        format!(
            "public_url = \"http://127.0.0.1:{port}\"\n\
             server_name = \"consent.example.org\"\n{pin}\n\
             [[identity_servers]]\nname = \"{IS_HOST}\"\ndisplay_name = \"Example identity server\"\n\
             operator = \"Tests\"\nupstream = \"http://127.0.0.1:{upstream}\"\nbinding_check = \"none\"\n",
            pin = hs.pinned_toml(),
            upstream = free_port(),
        ),
    )
    .unwrap();
    let name = format!("assent-test-{port}");
    let started = Instant::now();
    let run = podman(&[
        "run",
        "--detach",
        "--name",
        &name,
        "--network",
        "host",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        // The image listens on 0.0.0.0:8080; the host network is shared here.
        "--env",
        &format!("ASSENT_LISTEN=127.0.0.1:{port}"),
        "--volume",
        &format!("{}:/etc/assent:ro", config_dir.display()),
        "--volume",
        &format!("{}:/var/lib/assent", data_dir.display()),
        &image,
        "serve",
        "--config",
        "/etc/assent/assent.toml",
    ]);
    assert!(
        run.status.success(),
        "podman run: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let _container = Container(name);

    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    loop {
        if let Ok(response) = http.get(format!("{base}/health")).send().await {
            if response.status().is_success() {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the container was not healthy within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "container healthy after {} ms",
        started.elapsed().as_millis()
    );

    let body = hs.unbind_body("ann", "ann@example.org");
    let held = http
        .post(format!("{base}{V2}"))
        .header("host", IS_HOST)
        .header(
            "authorization",
            hs.authorization("POST", V2, IS_HOST, &body),
        )
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(held.status(), 202, "{}", held.text().await.unwrap());

    // The email (file transport) lands in the data volume, written by the
    // container's own user; the database and signing key are there too.
    let mail = data_dir.join("mail");
    let token = loop {
        if let Some(token) = token_in(&mail) {
            break token;
        }
        assert!(started.elapsed() < Duration::from_secs(45), "no email");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(data_dir.join("signing.key").is_file());
    assert!(data_dir.join("assent.db").is_file());

    // The consent page comes from the front end embedded in the binary.
    let page = http
        .get(format!("{base}/consent/{token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains("ann@example.org"), "{page}");
    assert!(page.contains("_bg.wasm"), "no app in the page:\n{page}");
}
