//! A real homeserver in the loop: unmodified Synapse 1.163.2 calls the
//! identity server over HTTPS (nginx with a certificate Synapse checks),
//! Assent answers at the door, and unmodified sydent is behind it.
//!
//! Each owner's address is bound the way a user binds it: an account at
//! sydent from a Synapse OpenID token, sydent's own validation email, then
//! Synapse's `/account/3pid/bind`, so Synapse remembers which identity
//! server to unbind from. Then each of the five ways Synapse unbinds is
//! driven; each must be held and mailed while Synapse reports success (so a
//! deactivation is never blocked), and the owner's decision is carried out
//! at sydent.

use assent_e2e::smtp::SmtpServer;
use assent_e2e::sydent::Sydent;
use assent_e2e::synapse::{Synapse, TlsProxy, User};
use assent_e2e::{Assent, Options};
use reqwest::Method;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// Everything one test needs: the three servers and the proxy.
struct World {
    proxy: TlsProxy,
    smtp: SmtpServer,
    sydent: Sydent,
    synapse: Synapse,
    assent: Assent,
    admin: User,
}

async fn world() -> World {
    let mut proxy = TlsProxy::prepare();
    let smtp = SmtpServer::start(&[], 0);
    let sydent = Sydent::start_with(&proxy.name(), Some(smtp.port)).await;
    let synapse = Synapse::start(41, &proxy.ca).await;
    println!(
        "Synapse answered {:?} after it was started",
        synapse.startup
    );
    let config = format!(
        "trusted_proxies = [\"127.0.0.1/32\"]\n{pinned}\n[[identity_servers]]\nname = \"{name}\"\n\
         display_name = \"Test identity server\"\noperator = \"Tests\"\nupstream = \"{upstream}\"\n\
         proxy_all = true\nbinding_check = \"v1_lookup\"\nrelay = [{{ kind = \"replay\" }}]\n",
        pinned = synapse.hs.pinned_toml(),
        name = proxy.name(),
        upstream = sydent.base,
    );
    let assent = Assent::start(Options {
        config: Some(config),
        ..Options::default()
    })
    .await;
    proxy.start(&assent.base);
    let admin = synapse.register("admin", true).await;
    World {
        proxy,
        smtp,
        sydent,
        synapse,
        assent,
        admin,
    }
}

impl World {
    /// Binds `address` to `user` as a client does: an identity-server
    /// account from an OpenID token, sydent's emailed code, Synapse's bind;
    /// then an admin adds it to the account, as Synapse lists it.
    async fn bind(&self, user: &User, address: &str) {
        let (status, openid) = self
            .synapse
            .call(
                Method::POST,
                &format!("/_matrix/client/v3/user/{}/openid/request_token", user.mxid),
                Some(&user.token),
                json!({}),
            )
            .await;
        assert_eq!(status, 200, "OpenID token: {openid}");
        let id_token = self
            .identity_server(Method::POST, "/account/register", None, openid)
            .await["token"]
            .as_str()
            .expect("an identity-server token")
            .to_owned();
        let client_secret = format!("secret-of-{}", user.local);
        let sid = self
            .identity_server(
                Method::POST,
                "/validate/email/requestToken",
                Some(&id_token),
                json!({"client_secret": client_secret, "email": address, "send_attempt": 1}),
            )
            .await["sid"]
            .as_str()
            .expect("a validation session")
            .to_owned();
        let code = self.validation_code(address).await;
        let submitted = self
            .identity_server(
                Method::POST,
                "/validate/email/submitToken",
                Some(&id_token),
                json!({"sid": sid, "client_secret": client_secret, "token": code}),
            )
            .await;
        assert_eq!(submitted["success"], true, "{submitted}");
        let (status, bound) = self
            .synapse
            .call(
                Method::POST,
                "/_matrix/client/v3/account/3pid/bind",
                Some(&user.token),
                json!({"client_secret": client_secret, "id_server": self.proxy.name(),
                       "id_access_token": id_token, "sid": sid}),
            )
            .await;
        assert_eq!(
            status,
            200,
            "Synapse's bind: {bound}\n{}",
            self.synapse.log()
        );
        self.set_addresses(user, &[address]).await;
        assert_eq!(
            self.sydent.lookup(address).await.as_deref(),
            Some(user.mxid.as_str()),
            "{address} is bound at sydent"
        );
    }

    /// An admin sets `user`'s addresses (`PUT /_synapse/admin/v2/users/…`).
    async fn set_addresses(&self, user: &User, addresses: &[&str]) -> (u16, Value) {
        let threepids: Vec<Value> = addresses
            .iter()
            .map(|a| json!({"medium": "email", "address": a}))
            .collect();
        let answer = self
            .synapse
            .call(
                Method::PUT,
                &format!("/_synapse/admin/v2/users/{}", user.mxid),
                Some(&self.admin.token),
                json!({ "threepids": threepids }),
            )
            .await;
        assert_eq!(answer.0, 200, "admin sets addresses: {}", answer.1);
        answer
    }

    /// A call to the identity server through nginx and Assent, as a client
    /// makes it; the JSON answer of a 200.
    async fn identity_server(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> Value {
        let mut request = self
            .proxy
            .client()
            .request(
                method,
                format!("https://{}/_matrix/identity/v2{path}", self.proxy.name()),
            )
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("call the identity server");
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(
            status,
            200,
            "{path}: {answer}\nsydent:\n{}",
            self.sydent.log()
        );
        answer
    }

    /// The code sydent mailed to `address`.
    async fn validation_code(&self, address: &str) -> String {
        let started = Instant::now();
        loop {
            let found = self.smtp.messages().iter().find_map(|raw| {
                let text = String::from_utf8_lossy(raw);
                if !text.contains(&format!("To: {address}")) {
                    return None;
                }
                let at = text.find("Your validation code: ")? + "Your validation code: ".len();
                Some(text[at..].split_whitespace().next()?.to_owned())
            });
            if let Some(code) = found {
                return code;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "sydent mailed no code to {address}:\n{}",
                self.sydent.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The consent link's token Assent mailed to `address`.
    async fn consent_token(&self, address: &str) -> String {
        let started = Instant::now();
        loop {
            if let Some(token) = token_mailed_to(&self.assent.data_dir.join("mail"), address) {
                return token;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "Assent mailed nothing to {address}:\n{}",
                self.assent.output_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The owner decides, on Assent's own address (the email's link; the
    /// identity server's name is the identity server's, passed through).
    async fn decide(&self, token: &str, word: &str) {
        let response = reqwest::Client::new()
            .post(
                self.assent
                    .url(&format!("/_assent/v1/consent/{token}/decision")),
            )
            .json(&json!({ "decision": word }))
            .send()
            .await
            .expect("decide");
        assert_eq!(response.status(), 200, "{word}");
    }
}

fn token_mailed_to(dir: &Path, address: &str) -> Option<String> {
    std::fs::read_dir(dir).ok()?.find_map(|entry| {
        let text = std::fs::read_to_string(entry.ok()?.path())
            .ok()?
            .replace("=\r\n", "");
        if !text.contains(&format!("To: {address}")) {
            return None;
        }
        let at = text.find("/consent/")? + "/consent/".len();
        let token: String = text[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        Some(token)
    })
}

/// Synapse's answer to a user's or an admin's unbind: 200, and where it
/// reports the identity server's part, success.
fn reported_success(what: &str, (status, answer): (u16, Value), synapse: &Synapse) {
    assert_eq!(status, 200, "{what}: {answer}\n{}", synapse.log());
    if let Some(result) = answer.get("id_server_unbind_result") {
        assert_eq!(result, "success", "{what}: {answer}");
    }
}

#[tokio::test]
async fn synapse_s_five_ways_to_unbind_are_held_mailed_and_carried_out_as_decided() {
    let w = world().await;
    let password_auth = |user: &User| {
        json!({"auth": {"type": "m.login.password",
                        "identifier": {"type": "m.id.user", "user": user.local},
                        "password": user.password}})
    };
    // (local part, address, approve?)
    let cases = [
        ("deleter", "deleter@example.org", true),
        ("unbinder", "unbinder@example.org", false),
        ("replaced", "replaced@example.org", true),
        ("leaver", "leaver@example.org", false),
        ("removed", "removed@example.org", true),
    ];
    let mut users = Vec::new();
    for (local, address, _) in cases {
        let user = w.synapse.register(local, false).await;
        w.bind(&user, address).await;
        users.push(user);
    }
    let email = |address: &str| json!({"medium": "email", "address": address});

    // 1. The user deletes the address from the account.
    let answer = w
        .synapse
        .call(
            Method::POST,
            "/_matrix/client/v3/account/3pid/delete",
            Some(&users[0].token),
            email(cases[0].1),
        )
        .await;
    reported_success("a user deletes an address", answer, &w.synapse);
    // 2. The user unbinds it from the identity server only.
    let answer = w
        .synapse
        .call(
            Method::POST,
            "/_matrix/client/v3/account/3pid/unbind",
            Some(&users[1].token),
            email(cases[1].1),
        )
        .await;
    reported_success("a user unbinds an address", answer, &w.synapse);
    // 3. An admin replaces the user's addresses.
    let answer = w
        .set_addresses(&users[2], &["replacement@example.org"])
        .await;
    reported_success("an admin replaces the addresses", answer, &w.synapse);
    // 4. The user deactivates the account.
    let answer = w
        .synapse
        .call(
            Method::POST,
            "/_matrix/client/v3/account/deactivate",
            Some(&users[3].token),
            password_auth(&users[3]),
        )
        .await;
    reported_success("a user deactivates", answer, &w.synapse);
    // 5. An admin deactivates the account.
    let answer = w
        .synapse
        .call(
            Method::POST,
            &format!("/_synapse/admin/v1/deactivate/{}", users[4].mxid),
            Some(&w.admin.token),
            json!({}),
        )
        .await;
    reported_success("an admin deactivates", answer, &w.synapse);

    // Every one held at Assent's door and mailed to its owner; sydent still
    // has every binding.
    let mut tokens = Vec::new();
    for (_, address, _) in cases {
        tokens.push(w.consent_token(address).await);
        assert!(
            w.sydent.lookup(address).await.is_some(),
            "{address} was unbound before its owner decided"
        );
    }
    assert!(
        w.proxy
            .access_log()
            .contains("/_matrix/identity/v2/3pid/unbind"),
        "Synapse's unbinds came through nginx"
    );

    // Denials first, so that by the time the approvals are carried out the
    // denials have long been decided.
    for ((_, _, approve), token) in cases.iter().zip(&tokens) {
        if !approve {
            w.decide(token, "deny").await;
        }
    }
    for ((_, _, approve), token) in cases.iter().zip(&tokens) {
        if *approve {
            w.decide(token, "approve").await;
        }
    }
    let started = Instant::now();
    for (local, address, approve) in cases {
        if !approve {
            continue;
        }
        while w.sydent.lookup(address).await.is_some() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the approved unbind of {local}'s {address} was not carried out:\n{}",
                w.assent.output_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for ((local, address, approve), user) in cases.iter().zip(&users) {
        if !approve {
            assert_eq!(
                w.sydent.lookup(address).await.as_deref(),
                Some(user.mxid.as_str()),
                "{local} denied, and {address} stays bound"
            );
        }
    }
}
