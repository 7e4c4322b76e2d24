//! [`PrivateKey`]: the device's private key bytes, held in the workspace's one secret type,
//! `secrecy`'s [`SecretSlice`] (zeroized on drop, `[REDACTED]` in Debug, no Display, no
//! `PartialEq`), and read only through [`ExposeSecret`].

use alloc::vec::Vec;
use secrecy::{ExposeSecret, SecretSlice};
use zeroize::Zeroize;

/// A private key file's bytes (PEM or DER), held as a secret.
///
/// A domain name for a [`SecretSlice<u8>`]: the bytes are wiped when the value is dropped,
/// `Debug` prints `PrivateKey(SecretBox<[u8]>([REDACTED]))`, there is no `Display` and no
/// `PartialEq`, and the only way to the bytes is [`ExposeSecret::expose_secret`].
///
/// ```compile_fail
/// // Not comparable: a comparison could leak the key through timing, and a test's failed
/// // `assert_eq!` would print it.
/// let a = acorn_certs::PrivateKey::from_slice(b"key");
/// let _ = a == acorn_certs::PrivateKey::from_slice(b"key");
/// ```
#[derive(Clone, Debug)]
pub struct PrivateKey(SecretSlice<u8>);

impl PrivateKey {
    /// Takes ownership of key bytes (PEM text or DER).
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(secret_bytes(bytes))
    }

    /// Copies key bytes into a new secret.
    pub fn from_slice(bytes: &[u8]) -> Self {
        Self(SecretSlice::from(bytes.to_vec()))
    }

    /// Length of the key bytes (not secret: it only tells the key's size).
    pub fn len(&self) -> usize {
        self.0.expose_secret().len()
    }

    /// True when there are no key bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ExposeSecret<[u8]> for PrivateKey {
    /// The key bytes. Do not log them.
    fn expose_secret(&self) -> &[u8] {
        self.0.expose_secret()
    }
}

/// Moves `bytes` into a [`SecretSlice`] without leaving an unwiped copy behind.
///
/// `SecretSlice::from(Vec)` shrinks the vector to its length, and a shrink that reallocates
/// frees the old buffer unwiped; a vector with spare capacity (e.g. from
/// `String::into_bytes`) is therefore copied into an exact-size one and wiped instead.
pub(crate) fn secret_bytes(mut bytes: Vec<u8>) -> SecretSlice<u8> {
    if bytes.len() == bytes.capacity() {
        return SecretSlice::from(bytes);
    }
    let secret = SecretSlice::from(bytes.as_slice().to_vec());
    bytes.zeroize();
    secret
}
