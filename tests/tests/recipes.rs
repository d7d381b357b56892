//! The recipes in docs/decisions.md for verifying a decision document, run against a
//! real receipt: Python with signedjson (the interpreter of the sydent
//! virtualenv, which has it) and Rust with ruma-signatures.

use assent_e2e::{Assent, Options};
use std::process::Command;

/// The Rust recipe, as docs/decisions.md gives it.
async fn verify_decision(
    assent: &str,
    document: &str,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    use ruma_common::serde::Base64;
    use ruma_common::CanonicalJsonObject;

    let keys: serde_json::Value = reqwest::get(format!("{assent}/_assent/v1/keys"))
        .await?
        .json()
        .await?;
    let server = keys["server_name"].as_str().ok_or("no server_name")?;
    let mut verify_keys = std::collections::BTreeMap::new();
    for (key_id, key) in keys["verify_keys"].as_object().ok_or("no verify_keys")? {
        let key = key["key"].as_str().ok_or("no key")?;
        verify_keys.insert(key_id.clone(), Base64::parse(key)?);
    }
    let mut public = ruma_signatures::PublicKeyMap::new();
    public.insert(server.to_owned(), verify_keys);
    let object: CanonicalJsonObject = serde_json::from_str(document)?;
    ruma_signatures::verify_json(&public, &object)?;
    Ok(serde_json::from_str(document)?)
}

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
