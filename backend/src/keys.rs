//! Assent's ed25519 signing key: generated on first start in Synapse's key-file
//! format (`ed25519 <version> <unpadded base64 seed>`), and published as a
//! self-signed Matrix server-keys document.
//!
//! `assent keys rotate` puts a new key on the first line; the keys it
//! replaced stay below it, each with the time it expired
//! (`ed25519 <version> <seed> <expired_ts>`), and are published under
//! `old_verify_keys`, so that receipts and webhook bodies they signed still
//! verify. The secrets derived from the key (consent links, form proofs,
//! tombstone hashes) come from the oldest key in the file, so a rotation
//! changes none of them.

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use rand::RngCore;
use ruma_common::canonical_json::{CanonicalJsonObject, CanonicalJsonValue};
use ruma_signatures::{Ed25519KeyPair, KeyPair};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const KEY_FILE: &str = "signing.key";

/// The largest integer canonical JSON carries.
const MAX_JSON_INTEGER: i64 = (1 << 53) - 1;

/// How long a published key document may be cached by those who fetch it.
pub const KEYS_VALID_FOR_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the signing key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write a new signing key to {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the signing key file {path} is not `ed25519 <version> <unpadded base64 32-byte seed>`: {why}")]
    Format { path: PathBuf, why: String },
}

/// A key that signed before the current one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OldKey {
    /// `ed25519:<version>`
    pub key_id: String,
    /// Unpadded base64.
    pub public_key: String,
    /// When it stopped signing (milliseconds since the Unix epoch).
    pub expired_ts: i64,
}

/// The server's signing key.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    /// `ed25519:<version>`
    key_id: String,
    /// Root of the secrets derived from this key (never leaves the process).
    derive_root: [u8; 32],
    /// The keys it replaced, newest first.
    old: Vec<OldKey>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

pub fn decode_unpadded(text: &str) -> Option<Vec<u8>> {
    STANDARD_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

pub fn encode_unpadded(bytes: &[u8]) -> String {
    STANDARD_NO_PAD.encode(bytes)
}

/// A new key's version (Synapse's form: `a_` and four random letters or
/// digits) and seed.
fn new_version_and_seed(rng: &mut rand::rngs::OsRng) -> (String, [u8; 32]) {
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let version: String =
        std::iter::once("a_".to_owned())
            .chain((0..4).map(|_| {
                (ALPHABET[(rng.next_u32() as usize) % ALPHABET.len()] as char).to_string()
            }))
            .collect();
    (version, seed)
}

/// RFC 8410 PKCS#8 v1 wrapping of a raw ed25519 seed, the form ruma reads.
/// Why a seed and version make no signing key.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("key version `{0}` must be letters, digits and `_`")]
    Version(String),
    #[error("{0}")]
    Key(String),
}

fn pkcs8_from_seed(seed: &[u8; 32]) -> Vec<u8> {
    const PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let mut der = PREFIX.to_vec();
    der.extend_from_slice(seed);
    der
}
/// `raw` as a key to check signatures with: a point on the curve, and not
/// one of the small-order points for which anyone can make signatures.
pub fn usable_key(raw: &[u8]) -> Option<ed25519_dalek::VerifyingKey> {
    ed25519_dalek::VerifyingKey::try_from(raw)
        .ok()
        .filter(|key| !key.is_weak())
}

impl SigningKey {
    pub fn from_seed(version: &str, seed: &[u8; 32]) -> Result<Self, SeedError> {
        if version.is_empty()
            || !version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(SeedError::Version(version.to_owned()));
        }
        let pair = Ed25519KeyPair::from_der(&pkcs8_from_seed(seed), version.to_owned())
            .map_err(|e| SeedError::Key(e.to_string()))?;
        use hmac::Mac;
        let mut root = hmac::Hmac::<sha2::Sha256>::new_from_slice(seed)
            .map_err(|e| SeedError::Key(e.to_string()))?;
        root.update(b"assent: derived secrets v1");
        Ok(SigningKey {
            pair,
            key_id: format!("ed25519:{version}"),
            derive_root: root.finalize().into_bytes().into(),
            old: Vec::new(),
        })
    }

    /// The keys this one replaced, newest first.
    pub fn old_keys(&self) -> &[OldKey] {
        &self.old
    }

    /// A new key for `assent keys rotate`: the current key of
    /// `data_dir/signing.key` is kept below the new one, expired at
    /// `now_ms`. Returns the old and the new key id. Replicas must be given
    /// the new file and restarted.
    pub fn rotate(data_dir: &Path, now_ms: i64) -> Result<(String, String), KeyError> {
        let path = data_dir.join(KEY_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| KeyError::Read {
            path: path.clone(),
            source,
        })?;
        let current = Self::parse_file(&path, &text)?;
        let mut lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let first = lines.remove(0);
        let mut rng = rand::rngs::OsRng;
        let taken: Vec<&str> = std::iter::once(current.key_id.as_str())
            .chain(current.old.iter().map(|k| k.key_id.as_str()))
            .collect();
        let (version, seed) = loop {
            let (version, seed) = new_version_and_seed(&mut rng);
            if !taken.contains(&format!("ed25519:{version}").as_str()) {
                break (version, seed);
            }
        };
        let new = Self::from_seed(&version, &seed).map_err(|why| KeyError::Format {
            path: path.clone(),
            why: why.to_string(),
        })?;
        let mut file = format!(
            "ed25519 {version} {}\n{first} {now_ms}\n",
            encode_unpadded(&seed)
        );
        for line in lines {
            file.push_str(line);
            file.push('\n');
        }
        let write_err = |source| KeyError::Write {
            path: path.clone(),
            source,
        };
        let tmp = path.with_extension(format!("tmp-{}-{}", std::process::id(), rng.next_u32()));
        let original = std::fs::metadata(&path).map_err(write_err)?;
        let written = (|| {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut handle = options.open(&tmp)?;
            handle.write_all(file.as_bytes())?;
            // The same owner and mode as the file it replaces, so that the
            // service can still read it when root rotated it.
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                std::os::unix::fs::chown(&tmp, Some(original.uid()), Some(original.gid()))?;
            }
            handle.set_permissions(original.permissions())?;
            handle.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(write_err)?;
        Ok((current.key_id, new.key_id))
    }

    /// Loads `data_dir/signing.key`, creating it first when there is none.
    /// Returns the key and whether it was created now.
    pub fn load_or_generate(data_dir: &Path) -> Result<(Self, bool), KeyError> {
        let path = data_dir.join(KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok((Self::parse_file(&path, &text)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok((Self::generate_into(&path)?, true))
            }
            Err(source) => Err(KeyError::Read { path, source }),
        }
    }

    fn parse_file(path: &Path, text: &str) -> Result<Self, KeyError> {
        let format = |why: String| KeyError::Format {
            path: path.to_owned(),
            why,
        };
        // Synapse's files may hold several keys, one a line; the first signs.
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .ok_or_else(|| format("the file is empty".to_owned()))?;
        let mut parts = line.split_whitespace();
        let (Some(algorithm), Some(version), Some(seed), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format("expected three words on the first line".to_owned()));
        };
        if algorithm != "ed25519" {
            return Err(format(format!("unsupported algorithm `{algorithm}`")));
        }
        let seed: [u8; 32] = decode_unpadded(seed)
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| format("the seed is not 32 bytes of base64".to_owned()))?;
        let mut key = Self::from_seed(version, &seed).map_err(|e| format(e.to_string()))?;
        // The keys it replaced: `ed25519 <version> <seed> <expired_ts>`.
        // (Further keys of a Synapse file, without a time, are not ours to
        // publish and are left alone, as before.)
        for (n, line) in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .enumerate()
            .skip(1)
        {
            let words: Vec<&str> = line.split_whitespace().collect();
            let bad = |why: &str| format(format!("line {}: {why}", n + 1));
            let [algorithm, version, seed, expired] = words[..] else {
                if words.len() == 3 {
                    continue;
                }
                return Err(bad(
                    "expected `ed25519 <version> <seed>` or, for a key rotated out, `ed25519 <version> <seed> <expired_ts>`",
                ));
            };
            if algorithm != "ed25519" {
                return Err(bad("unsupported algorithm"));
            }
            let seed: [u8; 32] = decode_unpadded(seed)
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(|| bad("the seed is not 32 bytes of base64"))?;
            let expired_ts: i64 = expired
                .parse()
                .ok()
                .filter(|ts| (0..=MAX_JSON_INTEGER).contains(ts))
                .ok_or_else(|| bad("the fourth word is not a time in milliseconds"))?;
            let old = Self::from_seed(version, &seed).map_err(|e| bad(&e.to_string()))?;
            if old.key_id == key.key_id || key.old.iter().any(|k| k.key_id == old.key_id) {
                return Err(bad("a key id that is already in the file"));
            }
            key.old.push(OldKey {
                public_key: old.public_key_base64(),
                key_id: old.key_id,
                expired_ts,
            });
            // The oldest key is the root of the derived secrets.
            key.derive_root = old.derive_root;
        }
        Ok(key)
    }

    fn generate_into(path: &Path) -> Result<Self, KeyError> {
        let write_err = |source| KeyError::Write {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(write_err)?;
        }
        let mut rng = rand::rngs::OsRng;
        let (version, seed) = new_version_and_seed(&mut rng);
        let key = Self::from_seed(&version, &seed).map_err(|why| KeyError::Format {
            path: path.to_owned(),
            why: why.to_string(),
        })?;
        // Written whole to a temporary file, then linked into place: a crash
        // never leaves a half-written key, and a hard link never overwrites
        // one that another process put there first.
        let tmp = path.with_extension(format!("tmp-{}-{}", std::process::id(), rng.next_u32()));
        let written = (|| {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(&tmp)?;
            writeln!(file, "ed25519 {version} {}", encode_unpadded(&seed))?;
            file.sync_all()?;
            std::fs::hard_link(&tmp, path)
        })();
        let _ = std::fs::remove_file(&tmp);
        match written {
            Ok(()) => Ok(key),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Self::parse_file(path, &text)
            }
            Err(e) => Err(write_err(e)),
        }
    }

    /// A 256-bit secret for `purpose`, derived from the signing key, so that
    /// replicas sharing the key share it too and nothing else must be stored.
    pub fn derive_secret(&self, purpose: &str) -> [u8; 32] {
        use hmac::Mac;
        let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.derive_root) {
            Ok(mac) => mac,
            // HMAC takes keys of any length.
            Err(_) => unreachable!("HMAC accepts a 32-byte key"),
        };
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn public_key_base64(&self) -> String {
        encode_unpadded(&self.pair.public_key())
    }

    /// Signs `object` in place as `server_name` (adds `signatures`).
    pub fn sign_json(
        &self,
        server_name: &str,
        object: &mut CanonicalJsonObject,
    ) -> Result<(), ruma_signatures::JsonError> {
        ruma_signatures::sign_json(server_name, &self.pair, object)
    }

    /// Raw signature, for callers that build their own signed bytes.
    pub fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_bytes().to_vec()
    }

    /// The server-keys document (`GET /_matrix/key/v2/server` shape), self-signed.
    pub fn server_keys_document(
        &self,
        server_name: &str,
        now_ms: i64,
    ) -> Result<CanonicalJsonObject, ruma_signatures::JsonError> {
        let mut verify_key = CanonicalJsonObject::new();
        verify_key.insert(
            "key".to_owned(),
            CanonicalJsonValue::String(self.public_key_base64()),
        );
        let mut verify_keys = CanonicalJsonObject::new();
        verify_keys.insert(self.key_id.clone(), CanonicalJsonValue::Object(verify_key));
        let mut doc = CanonicalJsonObject::new();
        doc.insert(
            "server_name".to_owned(),
            CanonicalJsonValue::String(server_name.to_owned()),
        );
        doc.insert(
            "verify_keys".to_owned(),
            CanonicalJsonValue::Object(verify_keys),
        );
        let mut old_verify_keys = CanonicalJsonObject::new();
        for old in &self.old {
            let mut entry = CanonicalJsonObject::new();
            entry.insert(
                "key".to_owned(),
                CanonicalJsonValue::String(old.public_key.clone()),
            );
            entry.insert(
                "expired_ts".to_owned(),
                CanonicalJsonValue::Integer(old.expired_ts.try_into().unwrap_or_default()),
            );
            old_verify_keys.insert(old.key_id.clone(), CanonicalJsonValue::Object(entry));
        }
        doc.insert(
            "old_verify_keys".to_owned(),
            CanonicalJsonValue::Object(old_verify_keys),
        );
        doc.insert(
            "valid_until_ts".to_owned(),
            CanonicalJsonValue::Integer(
                (now_ms + KEYS_VALID_FOR_MS).try_into().unwrap_or_default(),
            ),
        );
        self.sign_json(server_name, &mut doc)?;
        Ok(doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma_common::serde::Base64;
    use std::collections::BTreeMap;

    fn verify(
        doc: &CanonicalJsonObject,
        server: &str,
        key_id: &str,
        public: &str,
    ) -> Result<(), ruma_signatures::VerificationError> {
        let mut set = BTreeMap::new();
        set.insert(key_id.to_owned(), Base64::parse(public).unwrap());
        let mut map = BTreeMap::new();
        map.insert(server.to_owned(), set);
        ruma_signatures::verify_json(&map, doc)
    }

    #[test]
    fn a_key_is_generated_once_and_then_loaded_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let (first, created) = SigningKey::load_or_generate(dir.path()).unwrap();
        assert!(created);
        let text = std::fs::read_to_string(dir.path().join(KEY_FILE)).unwrap();
        let words: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(words[0], "ed25519");
        assert_eq!(format!("ed25519:{}", words[1]), first.key_id());
        assert!(words[1].starts_with("a_") && words[1].len() == 6);
        assert!(!words[2].contains('='), "seed must be unpadded base64");
        let (second, created) = SigningKey::load_or_generate(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(first.key_id(), second.key_id());
        assert_eq!(first.public_key_base64(), second.public_key_base64());
        assert_eq!(
            std::fs::read_to_string(dir.path().join(KEY_FILE)).unwrap(),
            text
        );
    }

    #[test]
    fn a_synapse_key_file_gives_the_same_public_key_as_synapse() {
        // Seed 0x00..0x1f; public key as signedjson / libsodium derive it.
        let seed: Vec<u8> = (0u8..32).collect();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(KEY_FILE),
            format!("ed25519 a_test {}\n", encode_unpadded(&seed)),
        )
        .unwrap();
        let (key, created) = SigningKey::load_or_generate(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(key.key_id(), "ed25519:a_test");
        assert_eq!(
            key.public_key_base64(),
            "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg"
        );
    }

    #[test]
    fn replicas_starting_together_end_up_with_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || {
                    SigningKey::load_or_generate(&path)
                        .unwrap()
                        .0
                        .public_key_base64()
                })
            })
            .collect();
        let keys: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(keys.iter().all(|k| k == &keys[0]), "{keys:?}");
        let leftovers: Vec<_> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            leftovers,
            [std::ffi::OsString::from(KEY_FILE)],
            "no temporary files left"
        );
    }

    #[test]
    fn a_broken_key_file_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            "",
            "ed25519 a_x",
            "rsa a_x AAAA",
            "ed25519 a_x notbase64!",
            "ed25519 a_x AAAA",
        ] {
            std::fs::write(dir.path().join(KEY_FILE), bad).unwrap();
            assert!(
                matches!(
                    SigningKey::load_or_generate(dir.path()),
                    Err(KeyError::Format { .. })
                ),
                "{bad:?}"
            );
            assert_eq!(
                std::fs::read_to_string(dir.path().join(KEY_FILE)).unwrap(),
                bad
            );
        }
    }

    #[test]
    fn the_server_keys_document_verifies_and_fails_when_altered() {
        let key = SigningKey::from_seed("a_abcd", &[7u8; 32]).unwrap();
        let doc = key
            .server_keys_document("consent.example.org", 1_000)
            .unwrap();
        assert_eq!(
            doc["valid_until_ts"],
            CanonicalJsonValue::Integer((1_000 + KEYS_VALID_FOR_MS).try_into().unwrap())
        );
        verify(
            &doc,
            "consent.example.org",
            key.key_id(),
            &key.public_key_base64(),
        )
        .unwrap();
        let mut altered = doc.clone();
        altered.insert(
            "server_name".to_owned(),
            CanonicalJsonValue::String("evil.example.org".to_owned()),
        );
        assert!(verify(
            &altered,
            "consent.example.org",
            key.key_id(),
            &key.public_key_base64()
        )
        .is_err());
    }

    #[test]
    fn a_rotated_key_keeps_what_the_old_one_signed_verifiable_and_the_derived_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _) = SigningKey::load_or_generate(dir.path()).unwrap();
        let mut signed = CanonicalJsonObject::new();
        signed.insert(
            "decision".to_owned(),
            CanonicalJsonValue::String("deny".to_owned()),
        );
        first.sign_json("consent.example.org", &mut signed).unwrap();

        let (old_id, new_id) = SigningKey::rotate(dir.path(), 5_000).unwrap();
        assert_eq!(old_id, first.key_id());
        let (_, newer_id) = SigningKey::rotate(dir.path(), 9_000).unwrap();
        let (key, created) = SigningKey::load_or_generate(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(key.key_id(), newer_id);
        assert_ne!(new_id, newer_id);
        let old: Vec<(&str, i64)> = key
            .old_keys()
            .iter()
            .map(|k| (k.key_id.as_str(), k.expired_ts))
            .collect();
        assert_eq!(old, [(new_id.as_str(), 9_000), (old_id.as_str(), 5_000)]);
        assert_eq!(key.old_keys()[1].public_key, first.public_key_base64());
        // Consent links, form proofs and tombstone hashes are unchanged.
        assert_eq!(
            key.derive_secret("consent tokens"),
            first.derive_secret("consent tokens")
        );
        // Published as Matrix servers publish old keys, self-signed by the new one.
        let doc = key
            .server_keys_document("consent.example.org", 10_000)
            .unwrap();
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(json["old_verify_keys"][&old_id]["expired_ts"], 5_000);
        assert_eq!(
            json["old_verify_keys"][&old_id]["key"],
            first.public_key_base64()
        );
        assert!(json["verify_keys"][&newer_id].is_object());
        assert!(json["verify_keys"].get(&old_id).is_none());
        verify(
            &doc,
            "consent.example.org",
            key.key_id(),
            &key.public_key_base64(),
        )
        .unwrap();
        // What the first key signed verifies with its published old key.
        let published = json["old_verify_keys"][&old_id]["key"].as_str().unwrap();
        verify(&signed, "consent.example.org", &old_id, published).unwrap();
        // A damaged old line is an error, not a silently lost key.
        let path = dir.path().join(KEY_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace(" 5000", " soon")).unwrap();
        let error = SigningKey::load_or_generate(dir.path())
            .unwrap_err()
            .to_string();
        assert!(error.contains("line 3"), "{error}");
    }
}
