//! Randomness for `gen-cert`: the system's generator (ring's `SystemRandom`, i.e. getrandom)
//! behind the `rand_core` traits the `rsa` crate's key generation wants, and the new key's
//! password.
//!
//! Any failure to read the system generator becomes [`CertGenError::Entropy`] (MindIE's
//! `failed to read random number from system.`); nothing is written after such a failure.

use std::cell::Cell;

use pkcs8::der::zeroize::Zeroizing;
use ring::rand::{SecureRandom, SystemRandom};
use rsa::rand_core::{self, CryptoRng, RngCore};

use super::CertGenError;

/// Length of the generated key password.
pub const PASSWORD_LEN: usize = 32;

const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGITS: &[u8] = b"0123456789";
/// Special characters that need no quoting in a shell, JSON or a URL query.
const SPECIAL: &[u8] = b"!#%+-.:=@^_~";

/// `len` bytes from the system generator.
pub fn bytes(len: usize) -> Result<Zeroizing<Vec<u8>>, CertGenError> {
    let mut out = Zeroizing::new(vec![0u8; len]);
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| CertGenError::Entropy)?;
    Ok(out)
}

/// A fresh password of [`PASSWORD_LEN`] characters with at least one lower-case letter,
/// upper-case letter, digit and special character (MindIE asks for two of the four).
pub fn password() -> Result<Zeroizing<String>, CertGenError> {
    let alphabet: Vec<u8> = [LOWER, UPPER, DIGITS, SPECIAL].concat();
    // The largest multiple of the alphabet's size below 256: bytes above it are dropped so
    // every character is equally likely.
    let limit = 256 - 256 % alphabet.len();
    loop {
        let mut out = Zeroizing::new(String::with_capacity(PASSWORD_LEN));
        while out.len() < PASSWORD_LEN {
            for b in bytes(PASSWORD_LEN)?.iter() {
                let b = usize::from(*b);
                if b < limit && out.len() < PASSWORD_LEN {
                    out.push(char::from(alphabet[b % alphabet.len()]));
                }
            }
        }
        if has_all_classes(&out) {
            return Ok(out);
        }
    }
}

fn has_all_classes(s: &str) -> bool {
    [LOWER, UPPER, DIGITS, SPECIAL]
        .iter()
        .all(|class| s.bytes().any(|b| class.contains(&b)))
}

/// `rand_core` over the system generator. Its infallible methods cannot report a failure, so
/// one is remembered ([`SystemRng::failed`]) and the caller discards whatever was made.
pub struct SystemRng {
    inner: SystemRandom,
    failed: Cell<bool>,
}

impl SystemRng {
    pub fn new() -> Self {
        SystemRng {
            inner: SystemRandom::new(),
            failed: Cell::new(false),
        }
    }

    /// Whether any read from the system generator failed.
    pub fn failed(&self) -> bool {
        self.failed.get()
    }
}

impl Default for SystemRng {
    fn default() -> Self {
        Self::new()
    }
}

impl RngCore for SystemRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        if self.inner.fill(dest).is_err() {
            self.failed.set(true);
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.inner.fill(dest).map_err(|_| {
            self.failed.set(true);
            rand_core::Error::from(
                std::num::NonZeroU32::new(rand_core::Error::CUSTOM_START)
                    .expect("CUSTOM_START is non-zero"),
            )
        })
    }
}

impl CryptoRng for SystemRng {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_strong_and_differ() {
        let a = password().expect("entropy");
        let b = password().expect("entropy");
        assert_eq!(a.len(), PASSWORD_LEN);
        assert!(has_all_classes(&a));
        assert!(a.bytes().all(|c| c.is_ascii_graphic()));
        assert_ne!(*a, *b);
    }
}
