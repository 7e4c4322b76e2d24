//! Secret strings (private keys, tokens, the admin key): zeroized on drop, never printed.

use core::fmt;
use zeroize::Zeroizing;

/// A secret text value, such as a PEM private key, a registration token or the admin key.
///
/// The bytes are wiped from memory when the value is dropped, and `Debug`/`Display` print
/// `<redacted>`. Read the value with [`Secret::expose`] only where it must leave the process.
///
/// It has no `PartialEq`: compare with [`Secret::constant_time_eq`].
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret string.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// The secret text. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares with `other` in time that does not depend on where the first difference is.
    pub fn constant_time_eq(&self, other: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(other.as_bytes()).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn debug_and_display_are_redacted() {
        let s = Secret::new("-----BEGIN PRIVATE KEY-----abc");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{s}"), "<redacted>");
        assert!(s.constant_time_eq("-----BEGIN PRIVATE KEY-----abc"));
        assert!(!s.constant_time_eq("-----BEGIN PRIVATE KEY-----abd"));
        assert!(!s.constant_time_eq("short"));
    }
}
