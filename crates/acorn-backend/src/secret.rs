//! Secrets in the backend are the workspace's one secret type, `secrecy::SecretString`
//! (zeroized on drop, redacted in Debug, no Display or `PartialEq`); this module adds the only
//! comparison the backend needs, in constant time.

use secrecy::{ExposeSecret, SecretString};

/// Whether `secret` equals `other`, in time that does not depend on where they differ (only on
/// their lengths).
pub fn constant_time_eq(secret: &SecretString, other: &str) -> bool {
    use subtle::ConstantTimeEq;
    secret
        .expose_secret()
        .as_bytes()
        .ct_eq(other.as_bytes())
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_and_never_prints() {
        let s = SecretString::from("-----BEGIN PRIVATE KEY-----abc");
        assert!(!format!("{s:?}").contains("BEGIN"));
        assert!(constant_time_eq(&s, "-----BEGIN PRIVATE KEY-----abc"));
        assert!(!constant_time_eq(&s, "-----BEGIN PRIVATE KEY-----abd"));
        assert!(!constant_time_eq(&s, "short"));
    }
}
