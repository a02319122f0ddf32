//! Session tokens: 256 random bits from the operating system, shown once to their holder as
//! `ps_<base64url>`; the server keeps only their SHA-256. A hash with no salt and no cost is
//! right here: the token is as strong as a 256-bit key, so no guessing attack on a stolen
//! hash can succeed, and the lookup is one index probe.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use password_hash::rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

/// What every token starts with, so that a leaked one is recognisable (secret scanners, logs).
pub const PREFIX: &str = "ps_";
/// Random bytes per token.
const BYTES: usize = 32;
/// A token's length: the prefix and 43 base64url characters.
const LEN: usize = PREFIX.len() + 43;

/// A fresh token and its hash.
pub fn generate() -> (String, String) {
    let mut bytes = [0u8; BYTES];
    OsRng.fill_bytes(&mut bytes);
    let token = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash(&token);
    (token, hash)
}

/// The stored form of a token: its SHA-256, in hex.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether `token` has the shape of a token this server hands out (no lookup is worth making
/// otherwise).
pub fn well_formed(token: &str) -> bool {
    token.len() == LEN
        && token.starts_with(PREFIX)
        && token[PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_fresh_well_formed_and_stored_as_their_hash_only() {
        let (a, hash_a) = generate();
        let (b, _) = generate();
        assert_ne!(a, b);
        assert!(well_formed(&a), "{a}");
        assert_eq!(hash_a, hash(&a));
        assert_eq!(hash_a.len(), 64);
        assert!(!hash_a.contains(&a[PREFIX.len()..]));
        assert!(!well_formed("ps_short"));
        assert!(!well_formed(&a.replacen("ps_", "xx_", 1)));
        assert!(!well_formed(&format!("{}!", &a[..a.len() - 1])));
    }
}
