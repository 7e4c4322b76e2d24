//! PEM/DER decoding of certificates and keys, with errors mapped to [`Problem`]s.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use zeroize::Zeroizing;

use crate::Problem;

/// A failed decode: the problem and a plain explanation.
pub(crate) type Failure = (Problem, String);

/// How the input was encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// PEM text with this label.
    Pem(&'static str),
    /// Raw DER.
    Der,
}

/// Strips whitespace and NUL bytes (a C string terminator) from both ends.
pub(crate) fn trim(input: &[u8]) -> &[u8] {
    let is_pad = |b: &u8| b.is_ascii_whitespace() || *b == 0;
    let start = input.iter().position(|b| !is_pad(b)).unwrap_or(input.len());
    let end = input
        .iter()
        .rposition(|b| !is_pad(b))
        .map_or(start, |i| i + 1);
    input.get(start..end).unwrap_or(&[])
}

/// True when the bytes look like DER (a SEQUENCE) rather than PEM text.
pub(crate) fn looks_like_der(input: &[u8]) -> bool {
    input.first() == Some(&0x30)
}

/// Splits off the first PEM block: from its `-----BEGIN ` line through its END line, skipping
/// any text before it. Returns the block and the rest; without a BEGIN line, the whole text.
fn next_block(text: &[u8]) -> (&[u8], &[u8]) {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const END: &[u8] = b"-----END ";
    let text = find(text, BEGIN)
        .and_then(|i| text.get(i..))
        .unwrap_or(text);
    let Some(end_at) = find(text, END) else {
        return (text, &[]);
    };
    let after = end_at + END.len();
    // The END line closes with "-----" after the label.
    let close = text
        .get(after..)
        .and_then(|rest| find(rest, b"-----"))
        .map_or(text.len(), |i| after + i + 5);
    match (text.get(..close), text.get(close..)) {
        (Some(block), Some(rest)) => (block, rest),
        _ => (text, &[]),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Decodes one PEM block into an exactly sized, zeroizing buffer.
fn decode_pem(block: &[u8], what: &str) -> Result<(String, Zeroizing<Vec<u8>>), Failure> {
    let mut decoder = pem_rfc7468::Decoder::new(block).map_err(|e| pem_failure(block, e, what))?;
    let label = decoder.type_label().to_string();
    let mut out = Zeroizing::new(vec![0u8; decoder.remaining_len()]);
    decoder
        .decode(&mut out)
        .map_err(|e| pem_failure(block, e, what))?;
    if !decoder.is_finished() {
        return Err((
            Problem::BadBase64,
            format!("the {what}'s base64 text has trailing data that could not be decoded"),
        ));
    }
    Ok((label, out))
}

fn pem_failure(block: &[u8], err: pem_rfc7468::Error, what: &str) -> Failure {
    use pem_rfc7468::Error as E;
    if find(block, b"Proc-Type: 4,ENCRYPTED").is_some() {
        return (
            Problem::EncryptedKeyUnsupported,
            format!(
                "the {what} is encrypted with a passphrase (OpenSSL Proc-Type header), which is \
                 not supported: decrypt it first, e.g. `openssl pkey -in key.pem -out plain.pem`"
            ),
        );
    }
    match err {
        E::Base64(_) | E::EncapsulatedText | E::CharacterEncoding => (
            Problem::BadBase64,
            format!(
                "the {what}'s text between the BEGIN and END lines is not valid base64 ({err}); \
                 the file was probably damaged when copied: copy it again"
            ),
        ),
        E::HeaderDisallowed => (
            Problem::BadPemArmor,
            format!("the {what}'s PEM has header lines (`Name: value`), which are not allowed"),
        ),
        _ => (
            Problem::BadPemArmor,
            format!(
                "the {what} is not a well-formed PEM block ({err}): it needs a \
                 `-----BEGIN ...-----` line, base64 lines, and a matching `-----END ...-----` line"
            ),
        ),
    }
}

/// Decodes a certificate given as PEM (`CERTIFICATE`) or DER, returning the DER bytes.
pub(crate) fn certificate(input: &[u8], what: &str) -> Result<(Encoding, Vec<u8>), Failure> {
    // DER is taken as is: its last bytes may well be whitespace or NUL values.
    if looks_like_der(input) {
        return Ok((Encoding::Der, input.to_vec()));
    }
    let input = trim(input);
    if input.is_empty() {
        return Err((Problem::BadPemArmor, format!("the {what} is empty")));
    }
    let (block, _rest) = next_block(input);
    let (label, mut der) = decode_pem(block, what)?;
    if label != "CERTIFICATE" {
        return Err((
            Problem::WrongPemLabel,
            format!(
                "the {what} file holds a `{label}` PEM block, not a `CERTIFICATE`: \
                 check that the files were not swapped"
            ),
        ));
    }
    // A certificate is public: move it out of the zeroizing wrapper without copying.
    Ok((Encoding::Pem("CERTIFICATE"), core::mem::take(&mut *der)))
}

/// The container format of a private key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyFormat {
    /// PKCS#1 `RSA PRIVATE KEY` (what AWS `CreateKeysAndCertificate` returns).
    Pkcs1,
    /// PKCS#8 `PRIVATE KEY`.
    Pkcs8,
    /// SEC1 `EC PRIVATE KEY`.
    Sec1,
    /// DER without a label: the format is found by trying each.
    UnlabelledDer,
}

/// Decodes a private key given as PEM or DER, returning its format and DER bytes.
pub(crate) fn private_key(input: &[u8]) -> Result<(KeyFormat, Zeroizing<Vec<u8>>), Failure> {
    let what = "private key";
    if looks_like_der(input) {
        return Ok((KeyFormat::UnlabelledDer, Zeroizing::new(input.to_vec())));
    }
    let input = trim(input);
    if input.is_empty() {
        return Err((
            Problem::BadPemArmor,
            String::from("the private key is empty"),
        ));
    }
    // `openssl ecparam -genkey` writes an `EC PARAMETERS` block before the key: skip it.
    let (mut block, mut rest) = next_block(input);
    if pem_rfc7468::decode_label(block) == Ok("EC PARAMETERS") && !trim(rest).is_empty() {
        (block, rest) = next_block(rest);
    }
    let _ = rest;
    let (label, der) = decode_pem(block, what)?;
    let format = match label.as_str() {
        "RSA PRIVATE KEY" => KeyFormat::Pkcs1,
        "PRIVATE KEY" => KeyFormat::Pkcs8,
        "EC PRIVATE KEY" => KeyFormat::Sec1,
        "ENCRYPTED PRIVATE KEY" => {
            return Err((
                Problem::EncryptedKeyUnsupported,
                String::from(
                    "the private key is an encrypted PKCS#8 key (`ENCRYPTED PRIVATE KEY`), which \
                     is not supported: decrypt it first, e.g. `openssl pkey -in key.pem -out plain.pem`",
                ),
            ))
        }
        other => {
            return Err((
                Problem::WrongPemLabel,
                format!(
                    "the private key file holds a `{other}` PEM block; expected `RSA PRIVATE KEY`, \
                     `PRIVATE KEY` or `EC PRIVATE KEY`: check that the files were not swapped"
                ),
            ))
        }
    };
    Ok((format, der))
}
