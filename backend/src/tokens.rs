//! Consent tokens: 256 bits in the link, only their SHA-256 at rest.
//!
//! A token is HMAC-SHA256(secret, nonce) for a fresh nonce, which is the
//! time it was made (6 bytes, milliseconds, big-endian) and 32 random bytes.
//! The token begins with those 6 time bytes, and so does its stored form,
//! followed by the SHA-256 of the whole token: new requests land at the end
//! of the unique index on that column, on one page, instead of on a random
//! page each (`tests/bench/wal_pages.py`: 13 % fewer log pages per held
//! request). The time is not secret; the 256-bit MAC is.
//!
//! The nonce travels in the email outbox row, so the mail worker (possibly on
//! another replica) can put the link in the message, while a copy of the
//! database alone still yields no working link: that needs the secret, which
//! is derived from the signing key.
//!
//! Tokens made before the time prefix (43 characters, from a 32-byte nonce,
//! stored as their SHA-256 alone) still work, and an email queued with such a
//! nonce still gets its link.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// Bytes of the time prefix.
const TIME_LEN: usize = 6;
/// Characters of the time prefix in a token: 6 bytes are 8 base64 characters.
const TIME_CHARS: usize = 8;

/// Length of a token as text: 6 time bytes and a 32-byte MAC in unpadded
/// URL-safe base64.
pub const TOKEN_LEN: usize = 51;

/// Length of a token made before the time prefix: the 32-byte MAC alone.
pub const LEGACY_TOKEN_LEN: usize = 43;

/// Length of a nonce: the time prefix and 32 random bytes.
pub const NONCE_LEN: usize = TIME_LEN + 32;

/// 32 random bytes in unpadded URL-safe base64.
pub fn encode(bytes: &[u8; 32]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A fresh nonce made at `now_ms` from 32 random bytes.
pub fn nonce(now_ms: i64, random: [u8; 32]) -> [u8; NONCE_LEN] {
    let mut nonce = [0; NONCE_LEN];
    let time = u64::try_from(now_ms).unwrap_or(0).to_be_bytes();
    nonce[..TIME_LEN].copy_from_slice(&time[8 - TIME_LEN..]);
    nonce[TIME_LEN..].copy_from_slice(&random);
    nonce
}

/// Turns nonces into consent tokens.
pub struct TokenMinter {
    secret: [u8; 32],
}

impl TokenMinter {
    pub fn new(secret: [u8; 32]) -> Self {
        TokenMinter { secret }
    }

    /// The token for a fresh `nonce`: its time prefix and the MAC.
    pub fn mint(&self, nonce: &[u8; NONCE_LEN]) -> String {
        self.make(&nonce[..TIME_LEN], nonce)
    }

    /// The token for a stored `nonce`: one of [`NONCE_LEN`] bytes gives its
    /// time prefix and the MAC, a 32-byte one (an email queued by an earlier
    /// version) the MAC alone. `None` for any other length.
    pub fn token(&self, nonce: &[u8]) -> Option<String> {
        match nonce.len() {
            NONCE_LEN => Some(self.make(&nonce[..TIME_LEN], nonce)),
            32 => Some(self.make(&[], nonce)),
            _ => None,
        }
    }

    fn make(&self, prefix: &[u8], nonce: &[u8]) -> String {
        use hmac::Mac;
        let mut mac = match hmac::Hmac::<Sha256>::new_from_slice(&self.secret) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts a 32-byte key"),
        };
        mac.update(b"consent-token:");
        mac.update(nonce);
        let mut bytes = prefix.to_vec();
        bytes.extend_from_slice(&mac.finalize().into_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }
}

/// The stored form of a token: its time prefix (decoded) and its SHA-256;
/// for a token from before the prefix, the SHA-256 alone.
pub fn hash(token: &str) -> Vec<u8> {
    let digest = Sha256::digest(token.as_bytes());
    let mut stored = Vec::with_capacity(TIME_LEN + digest.len());
    if token.len() == TOKEN_LEN {
        if let Some(time) = token
            .get(..TIME_CHARS)
            .and_then(|t| URL_SAFE_NO_PAD.decode(t).ok())
        {
            stored.extend_from_slice(&time);
        }
    }
    stored.extend_from_slice(&digest);
    stored
}

/// Whether `text` could be a token at all; anything else is refused before
/// it reaches the database.
pub fn looks_valid(text: &str) -> bool {
    (text.len() == TOKEN_LEN || text.len() == LEGACY_TOKEN_LEN)
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_51_url_safe_characters_and_made_from_their_nonce() {
        let minter = TokenMinter::new([7; 32]);
        let nonce = nonce(1_764_000_000_123, [1; 32]);
        let a = minter.mint(&nonce);
        assert_eq!(Some(&a), minter.token(&nonce).as_ref());
        assert_eq!(a.len(), TOKEN_LEN);
        assert!(looks_valid(&a));
        assert_eq!(Some(&a), minter.token(&nonce).as_ref());
        assert_ne!(
            Some(&a),
            minter
                .token(&super::nonce(1_764_000_000_123, [2; 32]))
                .as_ref()
        );
        assert_ne!(Some(&a), TokenMinter::new([8; 32]).token(&nonce).as_ref());
        // The time goes with the MAC: the same random bytes at another time
        // give another MAC, not the same one with another prefix.
        let later = minter
            .token(&super::nonce(1_764_000_000_124, [1; 32]))
            .unwrap();
        assert_ne!(a[TIME_CHARS..], later[TIME_CHARS..]);
        for bad in [&[][..], &[0; 31], &[0; 33], &[0; NONCE_LEN + 1]] {
            assert_eq!(minter.token(bad), None, "{}", bad.len());
        }
        let legacy = encode(&[0xfb; 32]);
        for bad in [
            "",
            "short",
            &format!("{a}x"),
            &a[1..],
            &a.replace('-', "+"),
            &format!("{legacy}x"),
        ] {
            assert!(!looks_valid(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_stored_form_is_the_time_then_the_sha256() {
        let minter = TokenMinter::new([7; 32]);
        let token = minter.token(&nonce(0x0102_0304_0506, [9; 32])).unwrap();
        let stored = hash(&token);
        assert_eq!(stored[..TIME_LEN], [1, 2, 3, 4, 5, 6]);
        assert_eq!(stored[TIME_LEN..], Sha256::digest(token.as_bytes())[..]);
        // Later tokens sort after earlier ones, whatever their random part.
        let mut stored: Vec<Vec<u8>> = (0..50)
            .map(|i| {
                hash(
                    &minter
                        .token(&nonce(1_764_000_000_000 + i, [255 - i as u8; 32]))
                        .unwrap(),
                )
            })
            .collect();
        let made = stored.clone();
        stored.sort();
        assert_eq!(stored, made);
    }

    #[test]
    fn tokens_from_before_the_time_prefix_still_work() {
        let minter = TokenMinter::new([7; 32]);
        let legacy = minter.token(&[1; 32]).unwrap();
        assert_eq!(legacy.len(), LEGACY_TOKEN_LEN);
        assert!(looks_valid(&legacy));
        assert_eq!(hash(&legacy), Sha256::digest(legacy.as_bytes()).to_vec());
        assert_eq!(hash(&encode(&[0xfb; 32])).len(), 32);
    }
}
