//! Keys and namespace names: 1 to 15 ASCII bytes, stored NUL-padded in 16 bytes.

use crate::error::{Error, Result};
use crate::format::MAX_KEY_LEN;

/// Checks a key or namespace name and returns its 16-byte on-flash form.
pub fn encode_key(key: &str) -> Result<[u8; 16]> {
    let invalid = |reason| Error::InvalidKey {
        key: key.into(),
        reason,
    };
    if key.is_empty() {
        return Err(invalid("it is empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(invalid("it is longer than 15 bytes"));
    }
    if !key.bytes().all(|b| b.is_ascii() && b != 0) {
        return Err(invalid("it contains a non-ASCII or NUL byte"));
    }
    let mut raw = [0u8; 16];
    raw[..key.len()].copy_from_slice(key.as_bytes());
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::encode_key;

    #[test]
    fn rules() {
        assert!(encode_key("device_cert").is_ok());
        assert!(encode_key("123456789012345").is_ok());
        assert!(encode_key("1234567890123456").is_err());
        assert!(encode_key("").is_err());
        assert!(encode_key("clé").is_err());
        assert!(encode_key("a\0b").is_err());
    }
}
