//! The recipes in docs/decisions.md for verifying a decision document, run against a
//! real receipt: Python with signedjson (the interpreter of the sydent
//! virtualenv, which has it) and Rust with ruma-signatures; also across a
//! rotation of Assent's signing key.

use assent_e2e::{Assent, Options};
use std::process::Command;

use assent_e2e::recipes::verify_decision;

fn python() -> std::path::PathBuf {
    std::env::var_os("ASSENT_SYDENT_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_default();
            std::path::PathBuf::from(home).join(".cache/assent/tools/sydent-venv/bin/python")
        })
}

#[tokio::test]
async fn the_readme_recipes_accept_a_receipt_and_refuse_a_forged_one() {
    let assent = Assent::start(Options {
        demo: true,
        ..Options::default()
    })
    .await;
    let link = assent.stdout_line_containing("/consent/").unwrap();
    let token = link.rsplit('/').next().unwrap().trim().to_owned();
    let decided = reqwest::Client::new()
        .post(assent.url(&format!("/_assent/v1/consent/{token}/decision")))
        .json(&serde_json::json!({"decision": "deny"}))
        .send()
        .await
        .unwrap();
    assert_eq!(decided.status(), 200);
    let receipt = reqwest::get(assent.url(&format!("/_assent/v1/consent/{token}/receipt")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let forged = receipt.replace("\"deny\"", "\"approve\"");
    assert_ne!(forged, receipt);

    // Rust.
    let document = verify_decision(&assent.base, &receipt).await.unwrap();
    assert_eq!(document["decision"], "deny");
    assert!(verify_decision(&assent.base, &forged).await.is_err());

    // Python.
    let dir = tempfile::tempdir().unwrap();
    let recipe = assent_e2e::workspace_root().join("tests/recipes/verify_decision.py");
    for (name, text, ok) in [
        ("receipt.json", &receipt, true),
        ("forged.json", &forged, false),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let run = Command::new(python())
            .arg(&recipe)
            .arg(&assent.base)
            .arg(&path)
            .output()
            .expect("run the Python recipe (sydent's virtualenv; `cargo xtask test` installs it)");
        let out = String::from_utf8_lossy(&run.stdout);
        let err = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.success(), ok, "{name}: {out}{err}");
        if ok {
            assert!(out.starts_with("deny req_"), "{out}");
        }
    }
}

/// Runs the Python recipe on `document`; its output, or why it refused.
fn python_recipe(assent: &str, document: &str) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("document.json");
    std::fs::write(&path, document).unwrap();
    let run = Command::new(python())
        .arg(assent_e2e::workspace_root().join("tests/recipes/verify_decision.py"))
        .arg(assent)
        .arg(&path)
        .output()
        .expect("run the Python recipe (sydent's virtualenv; `cargo xtask test` installs it)");
    let out = String::from_utf8_lossy(&run.stdout).into_owned();
    let err = String::from_utf8_lossy(&run.stderr).into_owned();
    if run.status.success() {
        Ok(out)
    } else {
        Err(format!("{out}{err}"))
    }
}

/// `assent keys rotate`: a receipt signed before the rotation and one
/// signed after both verify with both recipes; a consent link mailed before
/// the rotation still works; the keys document lists the old key under
/// `old_verify_keys` with its `expired_ts`; a receipt claiming a time after
/// the old key expired is refused.
#[tokio::test]
async fn receipts_from_before_and_after_a_key_rotation_both_verify() {
    use assent_e2e::homeserver::Homeserver;
    let hs = Homeserver::new("hs.test", 12);
    let config = format!(
        "{}\n[[identity_servers]]\nname = \"is.test\"\ndisplay_name = \"Test identity server\"\n\
         operator = \"Tests\"\nupstream = \"http://127.0.0.1:9/\"\nbinding_check = \"none\"\n\
         relay = []\n",
        hs.pinned_toml()
    );
    let mut assent = Assent::start(Options {
        config: Some(config),
        ..Options::default()
    })
    .await;
    let v2 = "/_matrix/identity/v2/3pid/unbind";
    let hold = |local: &'static str| {
        let body = hs.unbind_body(local, &format!("{local}@example.org"));
        let authorization = hs.authorization("POST", v2, "is.test", &body);
        let url = assent.url(v2);
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .header("authorization", authorization)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 202);
        }
    };
    hold("before").await;
    hold("across").await;
    let mail = assent.data_dir.join("mail");
    let token = |address: &'static str| {
        let mail = mail.clone();
        async move {
            let started = std::time::Instant::now();
            loop {
                let found = std::fs::read_dir(&mail).ok().and_then(|entries| {
                    entries
                        .filter_map(Result::ok)
                        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                        .map(|text| text.replace("=\r\n", ""))
                        .find(|text| text.contains(&format!("To: {address}")))
                });
                if let Some(text) = found {
                    let at = text.find("/consent/").unwrap() + "/consent/".len();
                    return text[at..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                        .collect::<String>();
                }
                assert!(
                    started.elapsed() < std::time::Duration::from_secs(15),
                    "no email to {address}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    let before_token = token("before@example.org").await;
    let across_token = token("across@example.org").await;
    let decide = |base: String, token: String, word: &'static str| async move {
        let decided = reqwest::Client::new()
            .post(format!("{base}/_assent/v1/consent/{token}/decision"))
            .json(&serde_json::json!({ "decision": word }))
            .send()
            .await
            .unwrap();
        assert_eq!(decided.status(), 200, "{word}");
        reqwest::get(format!("{base}/_assent/v1/consent/{token}/receipt"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let before = decide(assent.base.clone(), before_token, "deny").await;
    let old_keys: serde_json::Value = reqwest::get(assent.url("/_assent/v1/keys"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (old_id, old_key) = old_keys["verify_keys"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .map(|(id, key)| (id.clone(), key["key"].clone()))
        .unwrap();

    // Rotate with the server stopped, as the command's help says.
    assent.kill();
    let data_dir = assent.data_dir.display().to_string();
    let rotated = assent_e2e::run_assent(
        &["keys", "rotate"],
        &assent.data_dir,
        &[("ASSENT_DATA_DIR", data_dir.as_str())],
    );
    let said = String::from_utf8_lossy(&rotated.stdout).into_owned();
    assert!(
        rotated.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    assert!(said.contains(&old_id), "{said}");
    assent.restart().await;

    let keys: serde_json::Value = reqwest::get(assent.url("/_assent/v1/keys"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(keys["verify_keys"].get(&old_id).is_none(), "{keys}");
    assert_eq!(keys["old_verify_keys"][&old_id]["key"], old_key, "{keys}");
    let expired_ts = keys["old_verify_keys"][&old_id]["expired_ts"]
        .as_i64()
        .expect("expired_ts");
    // The link mailed before the rotation still works.
    let after = decide(assent.base.clone(), across_token, "approve").await;
    let after_doc: serde_json::Value = serde_json::from_str(&after).unwrap();
    let new_id = keys["verify_keys"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    assert!(
        after_doc["signatures"]["localhost"].get(&new_id).is_some(),
        "{after}"
    );

    for (name, document, decision) in [("before", &before, "deny"), ("after", &after, "approve")] {
        let verified = verify_decision(&assent.base, document)
            .await
            .unwrap_or_else(|e| panic!("Rust recipe, {name}: {e}"));
        assert_eq!(verified["decision"], decision);
        let out = python_recipe(&assent.base, document)
            .unwrap_or_else(|e| panic!("Python recipe, {name}: {e}"));
        assert!(out.starts_with(decision), "{out}");
    }
    // Forged: a changed decision, and a document signed with the old key
    // that claims a time after it expired (its signature breaks too, but
    // the recipes refuse it for its time first).
    let forged = before.replace("\"deny\"", "\"approve\"");
    assert!(verify_decision(&assent.base, &forged).await.is_err());
    assert!(python_recipe(&assent.base, &forged).is_err());
    let before_doc: serde_json::Value = serde_json::from_str(&before).unwrap();
    let decided_at = before_doc["decided_at"].as_i64().unwrap();
    let late = before.replace(
        &format!("\"decided_at\":{decided_at}"),
        &format!("\"decided_at\":{}", expired_ts + 1),
    );
    assert_ne!(late, before);
    let refused = verify_decision(&assent.base, &late)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("expired"), "{refused}");
    let refused = python_recipe(&assent.base, &late).unwrap_err();
    assert!(refused.contains("expired"), "{refused}");
}
