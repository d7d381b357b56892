//! Behind the real nginx, with `deploy/nginx.conf` adapted only in ports and
//! certificate paths: homeservers, owners and admins each keep their own
//! rate limits, told apart by the client address nginx forwards.

use assent_e2e::homeserver::Homeserver;
use assent_e2e::key_server::self_signed_certificate;
use assent_e2e::{free_port, workspace_root, Assent, Options};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const IS_HOST: &str = "matrix.example.org";
const CONSENT_HOST: &str = "consent.example.org";
const V2: &str = "/_matrix/identity/v2/3pid/unbind";
const ADMIN_TOKEN: &str = "admin-token-behind-nginx-0123456789abcdef";

struct Nginx {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx with the shipped config: its ports, certificates and upstream
/// addresses replaced, nothing else.
fn start_nginx(port: u16, assent_port: u16, identity_server_port: u16) -> Nginx {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = self_signed_certificate(dir.path(), IS_HOST, &[IS_HOST, CONSENT_HOST]);
    let plain_port = free_port();
    let shipped = std::fs::read_to_string(workspace_root().join("deploy/nginx.conf"))
        .expect("deploy/nginx.conf");
    let mut site = shipped
        .replace(
            "listen 443 ssl http2;",
            &format!("listen 127.0.0.1:{port} ssl http2;"),
        )
        .replace("listen [::]:443 ssl http2;\n", "")
        .replace("listen 80;", &format!("listen 127.0.0.1:{plain_port};"))
        .replace("listen [::]:80;\n", "")
        .replace(
            "server 127.0.0.1:8080;",
            &format!("server 127.0.0.1:{assent_port};"),
        )
        .replace(
            "server 127.0.0.1:8090;",
            &format!("server 127.0.0.1:{identity_server_port};"),
        );
    for host in [IS_HOST, CONSENT_HOST] {
        site = site
            .replace(
                &format!("/etc/letsencrypt/live/{host}/fullchain.pem"),
                &cert.display().to_string(),
            )
            .replace(
                &format!("/etc/letsencrypt/live/{host}/privkey.pem"),
                &key.display().to_string(),
            );
    }
    assert!(
        !site.contains("letsencrypt")
            && !site.contains("listen 443")
            && !site.contains("listen 80;")
            && !site.contains("[::]"),
        "{site}"
    );
    std::fs::write(dir.path().join("site.conf"), site).unwrap();
    let d = dir.path().display();
    std::fs::write(
        dir.path().join("nginx.conf"),
        format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n\
             proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
             scgi_temp_path {d}/scgi;\n  include {d}/site.conf;\n}}\n"
        ),
    )
    .unwrap();
    let child = Command::new("/usr/sbin/nginx")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(dir.path().join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx from Debian's package (cargo xtask test installs it)");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nginx did not start: {}",
            std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Nginx {
        child,
        port,
        _dir: dir,
    }
}

/// An HTTPS client of nginx connecting from `from` (any 127.0.0.0/8
/// address is this machine): one distinct client each.
fn client(nginx: &Nginx, from: [u8; 4]) -> reqwest::Client {
    let at = SocketAddr::from(([127, 0, 0, 1], nginx.port));
    reqwest::Client::builder()
        .resolve(IS_HOST, at)
        .resolve(CONSENT_HOST, at)
        .danger_accept_invalid_certs(true)
        .local_address(IpAddr::from(from))
        .build()
        .unwrap()
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
async fn behind_nginx_every_client_keeps_its_own_limits() {
    let hs = Homeserver::new("hs.test", 41);
    let identity_server_port = free_port();
    let nginx_port = free_port();
    let config = format!(
        "trusted_proxies = [\"127.0.0.1/32\"]\n{pin}\n[admin]\ntokens = [\"{ADMIN_TOKEN}\"]\n\n\
         [[identity_servers]]\nname = \"{IS_HOST}\"\ndisplay_name = \"Example identity server\"\n\
         operator = \"Tests\"\nupstream = \"http://127.0.0.1:{identity_server_port}\"\nbinding_check = \"none\"\n",
        pin = hs.pinned_toml()
    );
    let assent = Assent::start(Options {
        config: Some(config),
        // Links in emails point at the consent host, through nginx.
        env: vec![(
            "ASSENT_PUBLIC_URL".to_owned(),
            format!("https://{CONSENT_HOST}:{nginx_port}"),
        )],
        ..Options::default()
    })
    .await;
    let assent_port: u16 = assent.base.rsplit(':').next().unwrap().parse().unwrap();
    let nginx = start_nginx(nginx_port, assent_port, identity_server_port);
    let (alice, mallory) = (
        client(&nginx, [127, 0, 0, 2]),
        client(&nginx, [127, 0, 0, 3]),
    );
    let is_url = |path: &str| format!("https://{IS_HOST}:{}{path}", nginx.port);
    let consent_url = |path: &str| format!("https://{CONSENT_HOST}:{}{path}", nginx.port);
    let unbind = |client: &reqwest::Client, local: &str| {
        let body = hs.unbind_body(local, &format!("{local}@example.org"));
        let authorization = hs.authorization("POST", V2, IS_HOST, &body);
        client
            .post(is_url(V2))
            .header("authorization", authorization)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    // A Synapse-shaped signed unbind, held.
    let held = unbind(&alice, "ann").await.unwrap();
    assert_eq!(held.status(), 202);
    assert_eq!(assent.count("requests").await, 1);

    // Its consent page loads through the consent host.
    let mail = assent.data_dir.join("mail");
    let started = Instant::now();
    let token = loop {
        if let Some(token) = token_in(&mail) {
            break token;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "no email");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let page = alice
        .get(consent_url(&format!("/consent/{token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let view = alice
        .get(consent_url(&format!("/_assent/v1/consent/{token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(view.status(), 200);

    // The admin signs in.
    let signed_in = alice
        .post(consent_url("/_assent/v1/admin/session"))
        .header("x-assent-csrf", "1")
        .json(&serde_json::json!({"token": ADMIN_TOKEN}))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 200);
    assert!(signed_in.headers().get("set-cookie").is_some());

    // /metrics is not served through nginx.
    let metrics = alice.get(consent_url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 404);

    // Mallory floods forged unbinds (for a server whose key would need a
    // fetch), spoofing X-Forwarded-For as Alice: Mallory alone is stopped.
    let forged_body =
        br#"{"mxid":"@m:nowhere.test","threepid":{"address":"m@example.org","medium":"email"}}"#;
    let mut statuses = Vec::new();
    for _ in 0..35 {
        let response = mallory
            .post(is_url(V2))
            .header("x-forwarded-for", "127.0.0.2")
            .header(
                "authorization",
                "X-Matrix origin=\"nowhere.test\",key=\"ed25519:x\",sig=\"AAAA\"",
            )
            .header("content-type", "application/json")
            .body(forged_body.to_vec())
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    // Mallory's guesses at consent links use up Mallory's allowance only.
    let mut last = 0;
    for _ in 0..61 {
        last = mallory
            .get(consent_url(&format!(
                "/_assent/v1/consent/{}",
                "A".repeat(43)
            )))
            .header("x-forwarded-for", "127.0.0.2")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
    }
    assert_eq!(last, 429);
    // Alice, meanwhile: her homeserver's unbinds are held, her page loads.
    let held = unbind(&alice, "bea").await.unwrap();
    assert_eq!(held.status(), 202);
    let view = alice
        .get(consent_url(&format!("/_assent/v1/consent/{token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(view.status(), 200);
    assert_eq!(assent.count("requests").await, 2);
}
