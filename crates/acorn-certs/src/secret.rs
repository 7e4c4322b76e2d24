//! [`PrivateKey`]: the device's private key bytes, zeroized on drop and never printed.

use alloc::vec::Vec;
use core::fmt;
use zeroize::Zeroizing;

/// A private key file's bytes (PEM or DER), held as a secret.
///
/// The bytes are wiped when the value is dropped, and `Debug` prints `<redacted>`.
/// There is no `Display`: the only way to the bytes is [`PrivateKey::expose_secret`].
#[derive(Clone)]
pub struct PrivateKey(Zeroizing<Vec<u8>>);

impl PrivateKey {
    /// Takes ownership of key bytes (PEM text or DER).
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Copies key bytes into a new secret.
    pub fn from_slice(bytes: &[u8]) -> Self {
        Self::new(bytes.to_vec())
    }

    /// The key bytes. Do not log them.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    /// Length of the key bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no key bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl PartialEq for PrivateKey {
    /// Constant time in the key bytes (only the lengths may show through timing).
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_slice().ct_eq(other.0.as_slice()).into()
    }
}

impl Eq for PrivateKey {}
