//! Password hashes in RabbitMQ's `rabbit_password_hashing_sha256` scheme, so a definitions
//! export from either broker loads in the other.
//!
//! Layout of a stored hash (base64 of 36 bytes, standard alphabet with padding):
//!
//! ```text
//! 0        4                                   36
//! +--------+-----------------------------------+
//! |  salt  |  SHA-256(salt ++ UTF-8 password)  |
//! +--------+-----------------------------------+
//!   4 random bytes        32 bytes
//! ```
//!
//! Not implemented: the MD5 and SHA-512 variants RabbitMQ can also read.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// The `hashing_algorithm` value written next to every hash.
pub(crate) const ALGORITHM: &str = "rabbit_password_hashing_sha256";

/// Hashes `password` with a fresh random 4-byte salt.
pub(crate) fn hash(password: &str) -> String {
    let mut salt = [0u8; 4];
    rand::rng().fill_bytes(&mut salt);
    hash_with_salt(salt, password)
}

fn hash_with_salt(salt: [u8; 4], password: &str) -> String {
    let mut stored = Vec::with_capacity(36);
    stored.extend_from_slice(&salt);
    stored.extend_from_slice(
        &Sha256::new()
            .chain_update(salt)
            .chain_update(password)
            .finalize(),
    );
    STANDARD.encode(stored)
}

/// True when `password` hashes to `stored` (false for a malformed `stored`).
pub(crate) fn verify(stored: &str, password: &str) -> bool {
    let Ok(bytes) = STANDARD.decode(stored) else {
        return false;
    };
    if bytes.len() != 36 {
        return false;
    }
    let computed = Sha256::new()
        .chain_update(&bytes[..4])
        .chain_update(password)
        .finalize();
    // Compare every byte so the time taken does not reveal the matching prefix.
    bytes[4..]
        .iter()
        .zip(computed.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn matches_rabbitmq_byte_layout() {
        // salt 0x908DC60A, password "test12": the example of RabbitMQ's passwords guide.
        let stored = hash_with_salt([0x90, 0x8D, 0xC6, 0x0A], "test12");
        assert_eq!(stored, "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR");
        let bytes = STANDARD.decode(&stored).unwrap();
        assert_eq!(bytes.len(), 36);
        assert_eq!(&bytes[..4], &[0x90, 0x8D, 0xC6, 0x0A]);
        let mut direct = Sha256::new();
        direct.update([0x90, 0x8D, 0xC6, 0x0A]);
        direct.update(b"test12");
        assert_eq!(&bytes[4..], direct.finalize().as_slice());
    }

    #[test]
    fn verify_accepts_only_the_password() {
        let stored = hash("s3cret");
        assert!(verify(&stored, "s3cret"));
        assert!(!verify(&stored, "s3cret "));
        assert!(!verify(&stored, ""));
        assert!(!verify("not base64!", "s3cret"));
        assert_ne!(hash("same"), hash("same"), "salted");
    }
}
