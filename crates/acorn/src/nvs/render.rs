//! How stored values are shown: integers as numbers, text as text, binary as hex, and private
//! keys as `<redacted N bytes>` unless secrets are asked for.

use acorn_nvs::{IntValue, MemFlash, Namespace, Nvs, ValueInfo};
use anyhow::Result;
use serde_json::{json, Value as Json};

/// A value read from an image.
pub enum Shown {
    /// An integer.
    Int(IntValue),
    /// Bytes of a string or blob.
    Bytes(Vec<u8>),
}

/// Whether a value is (or holds) a secret: a private key (by its key name or by PEM
/// private-key armor) or a password (the Wi-Fi password of namespace `wifi`).
pub fn is_secret(key: &str, bytes: &[u8]) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("private_key")
        || key.contains("password")
        || bytes.windows(16).any(|w| w == b"PRIVATE KEY-----")
}

/// Reads a value of any type.
pub fn read(nvs: &mut Nvs<MemFlash>, ns: Namespace, key: &str, info: ValueInfo) -> Result<Shown> {
    if info.value_type.is_integer() {
        let value = nvs
            .get_int(ns, key)?
            .ok_or_else(|| anyhow::anyhow!("key {key:?} vanished"))?;
        return Ok(Shown::Int(value));
    }
    let mut buf = vec![0u8; info.len];
    nvs.get_bytes_into(ns, key, &mut buf)?;
    Ok(Shown::Bytes(buf))
}

fn printable(bytes: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(bytes).ok()?;
    text.chars()
        .all(|c| !c.is_control() || c == '\n' || c == '\r' || c == '\t')
        .then_some(text)
}

/// One-line text form, shortened to `max` characters when `max` is set.
pub fn text(key: &str, value: &Shown, show_secrets: bool, max: Option<usize>) -> String {
    match value {
        Shown::Int(v) => v.to_string(),
        Shown::Bytes(b) if !show_secrets && is_secret(key, b) => {
            format!("<redacted {} bytes>", b.len())
        }
        Shown::Bytes(b) => {
            let full = match printable(b) {
                Some(text) => format!("{text:?}"),
                None => hex::encode(b),
            };
            match max {
                Some(max) if full.chars().count() > max => {
                    let cut: String = full.chars().take(max).collect();
                    format!("{cut}… ({} bytes)", b.len())
                }
                _ => full,
            }
        }
    }
}

/// JSON form: numbers, text as a string, binary as `{"hex": ...}`, secrets redacted.
pub fn json(key: &str, value: &Shown, show_secrets: bool) -> Json {
    match value {
        Shown::Int(v) => serde_json::from_str(&v.to_string()).unwrap_or(Json::Null),
        Shown::Bytes(b) if !show_secrets && is_secret(key, b) => {
            json!({ "redacted": true, "bytes": b.len() })
        }
        Shown::Bytes(b) => match printable(b) {
            Some(text) => Json::String(text.to_string()),
            None => json!({ "hex": hex::encode(b) }),
        },
    }
}
