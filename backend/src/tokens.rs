//! Consent tokens: 256 bits in the link, only their SHA-256 at rest.
//!
//! A token is HMAC-SHA256(secret, nonce) for a fresh random 256-bit nonce.
//! The nonce travels in the email outbox row, so the mail worker (possibly on
//! another replica) can put the link in the message, while a copy of the
//! database alone still yields no working link: that needs the secret, which
//! is derived from the signing key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// Length of a token as text: 32 bytes in unpadded URL-safe base64.
pub const TOKEN_LEN: usize = 43;

pub fn encode(bytes: &[u8; 32]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Turns nonces into consent tokens.
pub struct TokenMinter {
    secret: [u8; 32],
}

impl TokenMinter {
    pub fn new(secret: [u8; 32]) -> Self {
        TokenMinter { secret }
    }

    pub fn token(&self, nonce: &[u8; 32]) -> String {
        use hmac::Mac;
        let mut mac = match hmac::Hmac::<Sha256>::new_from_slice(&self.secret) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts a 32-byte key"),
        };
        mac.update(b"consent-token:");
        mac.update(nonce);
        encode(&mac.finalize().into_bytes().into())
    }
}

/// The stored form of a token.
pub fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Whether `text` could be a token at all; anything else is refused before
/// it reaches the database.
pub fn looks_valid(text: &str) -> bool {
    text.len() == TOKEN_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_43_url_safe_characters_and_hash_to_32_bytes() {
        let token = encode(&[0xfb; 32]);
        assert_eq!(token.len(), TOKEN_LEN);
        assert!(looks_valid(&token));
        assert_eq!(hash(&token).len(), 32);
        let minter = TokenMinter::new([7; 32]);
        let a = minter.token(&[1; 32]);
        assert!(looks_valid(&a));
        assert_eq!(a, minter.token(&[1; 32]));
        assert_ne!(a, minter.token(&[2; 32]));
        assert_ne!(a, TokenMinter::new([8; 32]).token(&[1; 32]));
        for bad in ["", "short", &format!("{token}x"), &token.replace('-', "+")] {
            assert!(!looks_valid(bad), "{bad:?}");
        }
    }
}
