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
//!
//! Timing: a login costs one salted SHA-256 and a constant-time comparison of the 32-byte
//! digests (`subtle`), whether the password is right or wrong, and — through
//! [`verify_absent`] — whether the user exists or not, so response times reveal neither a
//! matching digest prefix nor which user names exist.

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

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
    stored.extend_from_slice(&salted_digest(&salt, password));
    STANDARD.encode(stored)
}

/// SHA-256(salt ++ password): the one place a password is hashed.
fn salted_digest(salt: &[u8], password: &str) -> [u8; 32] {
    #[cfg(test)]
    tests::DIGESTS.with(|n| n.set(n.get() + 1));
    Sha256::new()
        .chain_update(salt)
        .chain_update(password)
        .finalize()
        .into()
}

/// True when `a` and `b` are equal, in time that depends only on their lengths.
fn digests_equal(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// True when `stored` has the layout above (base64 of 36 bytes).
pub(crate) fn is_hash(stored: &str) -> bool {
    STANDARD.decode(stored).is_ok_and(|b| b.len() == 36)
}

/// True when `password` hashes to `stored` (false for a malformed `stored`).
pub(crate) fn verify(stored: &str, password: &str) -> bool {
    let Ok(bytes) = STANDARD.decode(stored) else {
        return false;
    };
    if bytes.len() != 36 {
        return false;
    }
    digests_equal(&salted_digest(&bytes[..4], password), &bytes[4..])
}

/// The login check for a user that does not exist: always false, after the same work as
/// [`verify`] against a real hash, so that a wrong user name takes as long as a wrong password.
pub(crate) fn verify_absent(password: &str) -> bool {
    // A hash of a random 32-byte secret nobody knows, made once per process.
    static DECOY: OnceLock<String> = OnceLock::new();
    let decoy = DECOY.get_or_init(|| {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        hash(&STANDARD.encode(secret))
    });
    // black_box: the result is unused, and the work must not be optimised away.
    std::hint::black_box(verify(decoy, password));
    false
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(super) mod tests {
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

    thread_local! {
        /// Salted digests computed on this thread (each test runs on its own thread).
        pub(super) static DIGESTS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    /// Salted digests computed so far on this thread.
    pub(crate) fn digests() -> u64 {
        DIGESTS.with(|n| n.get())
    }

    #[test]
    fn digests_equal_is_equality() {
        let a = [7u8; 32];
        assert!(digests_equal(&a, &a));
        for i in [0, 1, 15, 31] {
            let mut b = a;
            b[i] ^= 0x80;
            assert!(!digests_equal(&a, &b), "differs at byte {i}");
        }
        assert!(!digests_equal(&a, &a[..31]), "lengths differ");
        assert!(digests_equal(&[], &[]));
    }

    #[test]
    fn an_absent_user_costs_the_same_digest_as_a_wrong_password() {
        let stored = hash("right");
        let before = digests();
        assert!(!verify(&stored, "wrong"));
        let wrong_password = digests() - before;
        verify_absent("warm-up"); // the decoy is made once per process
        let before = digests();
        assert!(!verify_absent("wrong"));
        assert!(!verify_absent(""));
        assert_eq!(digests() - before, 2 * wrong_password);
        assert_eq!(wrong_password, 1);
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
