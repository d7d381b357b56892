//! The Rust recipe of docs/decisions.md for verifying a decision document
//! (a receipt or a webhook body), as it is given there, for the tests that
//! check receipts.

/// The Rust recipe, as docs/decisions.md gives it.
pub async fn verify_decision(
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
    let value: serde_json::Value = serde_json::from_str(document)?;
    let mut verify_keys = std::collections::BTreeMap::new();
    for (key_id, key) in keys["verify_keys"].as_object().ok_or("no verify_keys")? {
        let key = key["key"].as_str().ok_or("no key")?;
        verify_keys.insert(key_id.clone(), Base64::parse(key)?);
    }
    // Keys Assent rotated out count for what they signed before they expired.
    for (key_id, key) in keys["old_verify_keys"].as_object().into_iter().flatten() {
        let signed_with_it = value["signatures"][server].get(key_id).is_some();
        let expired = key["expired_ts"].as_i64().ok_or("no expired_ts")?;
        if signed_with_it && value["decided_at"].as_i64().ok_or("no decided_at")? > expired {
            return Err(format!("{key_id} had expired before this decision was made").into());
        }
        let key = key["key"].as_str().ok_or("no key")?;
        verify_keys.insert(key_id.clone(), Base64::parse(key)?);
    }
    let mut public = ruma_signatures::PublicKeyMap::new();
    public.insert(server.to_owned(), verify_keys);
    let object: CanonicalJsonObject = serde_json::from_str(document)?;
    ruma_signatures::verify_json(&public, &object)?;
    Ok(value)
}
