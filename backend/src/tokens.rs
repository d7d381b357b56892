//! Consent tokens: 256 random bits in the link, only their SHA-256 at rest.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// Length of a token as text: 32 bytes in unpadded URL-safe base64.
pub const TOKEN_LEN: usize = 43;

pub fn encode(bytes: &[u8; 32]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
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
        for bad in ["", "short", &format!("{token}x"), &token.replace('-', "+")] {
            assert!(!looks_valid(bad), "{bad:?}");
        }
    }
}
