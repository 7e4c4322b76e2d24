//! Registration on the chip (feature `register`): a device without identity makes a P-256 key
//! with its hardware RNG, a PKCS#10 request for its device id, and asks the registration
//! backend (`POST /v1/devices/register`, the wire types of `acorn-api`) for a certificate, over
//! plain HTTP/1.1 on the same [`Connector`] the MQTT transport uses. The key never leaves the
//! chip. The caller stores the answer with `acorn_certs::CertStore::store`, which checks it
//! first (key matches certificate, dates, endpoint) and writes it power-cut safely.
//!
//! Where to register comes from NVS namespace [`NAMESPACE`] in the identity partition
//! ([`read_config`]): `url` (`http://host[:port][/prefix]`), `token` (a one-time registration
//! token; a secret) and optionally `device_id` (else `acorn-` and the MAC address).
//!
//! Plain HTTP only: the token and the certificate travel unencrypted (the key does not), so
//! register on a network you trust, such as the factory's or the dev stack's; a token is
//! single-use and short-lived. The answer's CA is not trusted for MQTT: the chip keeps its
//! pinned roots.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use acorn_api::{ErrorBody, RegisterRequest, RegisterResponse, REGISTER_PATH};
use acorn_certs::DeviceCertificates;
use embedded_io_async::{Read, Write};
use rand_core::{CryptoRng, RngCore};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

pub use crate::boot::mac_names;
pub use crate::csr::key_and_csr;
use crate::csr::{sec1_pem, CsrError};
use crate::diagnosis::Diagnosis;
use crate::transport::Connector;

/// NVS namespace of the registration settings (in the identity partition).
pub const NAMESPACE: &str = "register";
/// Largest answer read, bytes (a certificate and a CA certificate in JSON are ~3 KB).
pub const MAX_RESPONSE: usize = 16 * 1024;

/// Why registration failed; every message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The configured URL is not `http://host[:port][/prefix]`.
    #[error("registration URL `{url}` {why}: store `http://host[:port]` in NVS namespace `register`, key `url`")]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The device id is not `[A-Za-z0-9_-]{1,128}`.
    #[error("device id `{0}` must be 1 to 128 letters, digits, `_` or `-` (NVS namespace `register`, key `device_id`)")]
    BadDeviceId(String),
    /// The key or request could not be made (should not happen).
    #[error("the certificate request could not be made: {0}")]
    Csr(String),
    /// DNS or TCP to the backend failed.
    #[error("cannot reach the registration backend: {0}")]
    Connect(Diagnosis),
    /// Reading or writing the HTTP exchange failed.
    #[error("the registration backend's connection failed: {0}")]
    Io(String),
    /// The answer is not HTTP, too large, or not the expected JSON.
    #[error("the registration backend's answer is not usable: {0}")]
    BadAnswer(String),
    /// The backend refused, with its reason.
    #[error("the registration backend refused (HTTP {status}, {code}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The backend's error code (`token_used`, `token_expired`, ...).
        code: String,
        /// The backend's explanation.
        message: String,
    },
    /// The certificate is for another device.
    #[error("the backend answered for device `{got}`, not `{expected}`")]
    WrongDevice {
        /// Our device id.
        expected: String,
        /// The answer's.
        got: String,
    },
}

impl From<CsrError> for RegisterError {
    fn from(e: CsrError) -> Self {
        match e {
            CsrError::BadDeviceId(id) => RegisterError::BadDeviceId(id),
            other => RegisterError::Csr(other.to_string()),
        }
    }
}

/// A registration backend's address: plain HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendUrl {
    /// Host name or IPv4 address.
    pub host: String,
    /// TCP port (80 by default).
    pub port: u16,
    /// Path before `/v1/...`, without a trailing `/` (usually empty).
    pub prefix: String,
}

impl BackendUrl {
    /// Parses `http://host[:port][/prefix]`.
    pub fn parse(url: &str) -> Result<Self, RegisterError> {
        let bad = |why| RegisterError::BadUrl {
            url: url.to_string(),
            why,
        };
        if url.starts_with("https://") {
            return Err(bad("uses HTTPS, which the firmware does not speak (plain HTTP only: register on a trusted network)"));
        }
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("does not start with `http://`"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().map_err(|_| bad("has a bad port"))?),
            None => (authority, 80),
        };
        if host.is_empty() || port == 0 {
            return Err(bad("has no host"));
        }
        Ok(BackendUrl {
            host: host.to_string(),
            port,
            prefix: path.to_string(),
        })
    }
}

impl fmt::Display for BackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}:{}{}", self.host, self.port, self.prefix)
    }
}

/// What a registration needs.
#[derive(Clone, Debug)]
pub struct RegisterConfig {
    /// The backend.
    pub backend: BackendUrl,
    /// The one-time registration token (a secret: wiped on drop, `[REDACTED]` in Debug).
    pub token: SecretString,
    /// The device id to register (certificate CN, MQTT client id).
    pub device_id: String,
    /// The hardware serial number.
    pub serial_number: String,
    /// The MAC address, `AA:BB:CC:DD:EE:FF`.
    pub mac_address: String,
    /// The firmware version.
    pub firmware_version: String,
}

/// Reads namespace [`NAMESPACE`]: `url` and `token` (strings) and optionally `device_id`;
/// `None` when `url` or `token` is missing (registration not configured). The serial number
/// is the MAC address without colons.
pub fn read_config<F: embedded_storage::nor_flash::NorFlash>(
    nvs: &mut acorn_nvs::Nvs<F>,
    mac: [u8; 6],
    firmware_version: &str,
) -> Result<Option<RegisterConfig>, RegisterError> {
    let Some(ns) = nvs.find_namespace(NAMESPACE) else {
        return Ok(None);
    };
    let read = |nvs: &mut acorn_nvs::Nvs<F>, key| {
        nvs.get_string(ns, key)
            .map_err(|e| RegisterError::BadAnswer(format!("NVS `register/{key}`: {e}")))
    };
    let (Some(url), Some(token)) = (read(nvs, "url")?, read(nvs, "token")?) else {
        return Ok(None);
    };
    let token = SecretString::from(token);
    let (mac_address, default_id) = mac_names(mac);
    let device_id = read(nvs, "device_id")?.unwrap_or(default_id);
    Ok(Some(RegisterConfig {
        backend: BackendUrl::parse(&url)?,
        token,
        serial_number: mac_address.replace(':', ""),
        mac_address,
        device_id,
        firmware_version: firmware_version.to_string(),
    }))
}

/// A registered identity, ready for `CertStore::store`.
#[derive(Debug)]
pub struct Registered {
    /// Certificate (PEM), key (SEC1 PEM, made here), endpoint host and device id.
    pub certificates: DeviceCertificates,
    /// The port the answer named with the endpoint, if any (`host:port`).
    pub endpoint_port: Option<u16>,
    /// The certificate's id at the backend (SHA-256 of its DER, hex).
    pub certificate_id: String,
}

/// Registers: key and request made here, `POST /v1/devices/register` with the token, the
/// answer checked (this device, a certificate) and turned into a certificate set. Bounded by
/// the caller (a timeout around it).
pub async fn register<C: Connector, R: RngCore + CryptoRng>(
    connector: &mut C,
    rng: &mut R,
    config: &RegisterConfig,
) -> Result<Registered, RegisterError> {
    let (key, csr) = key_and_csr(rng, &config.device_id)?;
    let request = RegisterRequest {
        device_id: config.device_id.clone(),
        serial_number: config.serial_number.clone(),
        mac_address: config.mac_address.clone(),
        firmware_version: config.firmware_version.clone(),
        csr: Some(csr),
        key_type: None,
    };
    let body = serde_json::to_vec(&request).map_err(|e| RegisterError::Csr(e.to_string()))?;
    let (status, answer) = post(connector, config, &body).await?;
    if status != 201 {
        return Err(match serde_json::from_slice::<ErrorBody>(&answer) {
            Ok(e) => RegisterError::Refused {
                status,
                code: e.error.code,
                message: e.error.message,
            },
            Err(_) => RegisterError::Refused {
                status,
                code: "http".into(),
                message: String::from_utf8_lossy(&answer[..answer.len().min(200)]).into(),
            },
        });
    }
    let answer: RegisterResponse = serde_json::from_slice(&answer)
        .map_err(|e| RegisterError::BadAnswer(format!("not a registration answer ({e})")))?;
    if answer.device_id != config.device_id {
        return Err(RegisterError::WrongDevice {
            expected: config.device_id.clone(),
            got: answer.device_id,
        });
    }
    // SEC1 (`EC PRIVATE KEY`): what the store reads back, and smaller to make than PKCS#8.
    let private_key = sec1_pem(&key)?;
    let (host, endpoint_port) =
        crate::boot::split_endpoint(&answer.iot_endpoint).map_err(RegisterError::BadAnswer)?;
    Ok(Registered {
        certificates: DeviceCertificates {
            device_certificate: answer.certificate_pem.into_bytes(),
            private_key,
            iot_endpoint: host,
            device_id: answer.device_id,
        },
        endpoint_port,
        certificate_id: answer.certificate_id,
    })
}

/// One HTTP/1.1 POST of `body` (JSON) with the bearer token; the status and the body.
async fn post<C: Connector>(
    connector: &mut C,
    config: &RegisterConfig,
    body: &[u8],
) -> Result<(u16, Vec<u8>), RegisterError> {
    let url = &config.backend;
    let (mut reader, mut writer) = connector
        .connect(&url.host, url.port)
        .await
        .map_err(|(_, d)| RegisterError::Connect(d))?;
    let head = Zeroizing::new(format!(
        "POST {}{REGISTER_PATH} HTTP/1.1\r\nHost: {}:{}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        url.prefix,
        url.host,
        url.port,
        config.token.expose_secret(),
        body.len()
    ));
    let io = |e: &dyn fmt::Debug| RegisterError::Io(format!("{e:?}"));
    writer
        .write_all(head.as_bytes())
        .await
        .map_err(|e| io(&e))?;
    writer.write_all(body).await.map_err(|e| io(&e))?;
    writer.flush().await.map_err(|e| io(&e))?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let n = reader.read(&mut chunk).await.map_err(|e| io(&e))?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..n]);
        if answer.len() > MAX_RESPONSE {
            return Err(RegisterError::BadAnswer(format!(
                "more than {MAX_RESPONSE} bytes"
            )));
        }
        if let Some(done) = parse_response(&answer, false)? {
            return Ok(done);
        }
    }
    parse_response(&answer, true)?
        .ok_or_else(|| RegisterError::BadAnswer("the connection closed mid-answer".into()))
}

/// Parses an HTTP/1.1 response once it is complete: `Ok(None)` while more is needed. The
/// request asked for `Connection: close`, so with `closed` (the server closed the connection)
/// a body without a length is whatever came. Public for the fuzz target `register_answer`:
/// these bytes come from whoever is on the plain-HTTP path.
pub fn parse_response(bytes: &[u8], closed: bool) -> Result<Option<(u16, Vec<u8>)>, RegisterError> {
    let bad = |why: &str| RegisterError::BadAnswer(why.to_string());
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = core::str::from_utf8(&bytes[..end]).map_err(|_| bad("the header is not text"))?;
    // Lines end with CRLF only: a lone CR or LF is refused, not read two ways.
    if head.split("\r\n").any(|line| line.contains(['\r', '\n'])) {
        return Err(bad("a header line ends without CRLF"));
    }
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split(' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(bad("no HTTP status line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(bad(
            "not an HTTP/1.x answer (is the URL the registration backend's?)",
        ));
    }
    let status: u16 = code.parse().map_err(|_| bad("a bad HTTP status"))?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let this = value
                .parse::<usize>()
                .map_err(|_| bad("a bad Content-Length"))?;
            // Two lengths that differ leave the body's end unknown (RFC 9112 §6.3).
            if length.is_some_and(|earlier| earlier != this) {
                return Err(bad("two different Content-Length headers"));
            }
            length = Some(this);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    let body = &bytes[end + 4..];
    if chunked {
        return Ok(dechunk(body)?.map(|b| (status, b)));
    }
    match length {
        Some(n) if body.len() >= n => Ok(Some((status, body[..n].to_vec()))),
        Some(_) => Ok(None),
        // No length: the body runs to the end of the connection.
        None => Ok(closed.then(|| (status, body.to_vec()))),
    }
}

/// Decodes a chunked body once its last chunk is in; `Ok(None)` while it is not.
fn dechunk(mut body: &[u8]) -> Result<Option<Vec<u8>>, RegisterError> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = body.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_text = core::str::from_utf8(&body[..eol])
            .ok()
            .and_then(|t| t.split(';').next())
            .map(str::trim)
            .unwrap_or_default();
        let size = usize::from_str_radix(size_text, 16)
            .ok()
            // No chunk may be larger than a whole answer may be: the sums below cannot wrap.
            .filter(|&size| size <= MAX_RESPONSE)
            .ok_or_else(|| RegisterError::BadAnswer("a bad chunk size".into()))?;
        let data = eol + 2;
        if size == 0 {
            return Ok(Some(out));
        }
        let end = data + size;
        let Some(crlf) = body.get(end..end + 2) else {
            return Ok(None);
        };
        if crlf != b"\r\n" {
            return Err(RegisterError::BadAnswer(
                "a chunk does not end where its size says".into(),
            ));
        }
        out.extend_from_slice(&body[data..end]);
        body = &body[end + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let url = BackendUrl::parse("http://192.0.2.7:8080/acorn/").unwrap();
        assert_eq!(
            url,
            BackendUrl {
                host: "192.0.2.7".into(),
                port: 8080,
                prefix: "/acorn".into()
            }
        );
        assert_eq!(BackendUrl::parse("http://backend").unwrap().port, 80);
        for bad in [
            "https://b",
            "ftp://b",
            "http://",
            "http://b:x",
            "http://b:0",
        ] {
            assert!(BackendUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn responses_by_length_and_by_chunks() {
        let plain = b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(
            parse_response(plain, false).unwrap(),
            Some((201, b"{}".to_vec()))
        );
        assert_eq!(
            parse_response(&plain[..plain.len() - 1], false).unwrap(),
            None
        );
        let chunked =
            b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(chunked, false).unwrap(),
            Some((403, b"{}".to_vec()))
        );
        assert!(parse_response(b"SSH-2.0-x\r\n\r\n", false).is_err());
    }

    #[test]
    fn without_a_length_the_body_runs_to_the_close() {
        let answer = b"HTTP/1.1 201 Created\r\n\r\n{\"a\":1}";
        assert_eq!(parse_response(answer, false).unwrap(), None);
        assert_eq!(
            parse_response(answer, true).unwrap(),
            Some((201, b"{\"a\":1}".to_vec()))
        );
        let bad = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}xx0\r\n\r\n";
        assert!(parse_response(bad, false).is_err());
    }

    #[test]
    fn a_header_read_two_ways_is_refused() {
        // A lone LF (another parser reads the length, this one would not) and two lengths.
        for answer in [
            &b"HTTP/1.1 201 Cre\ncontent-length: 4\r\n\r\n{}{}"[..],
            b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}x",
        ] {
            assert!(parse_response(answer, true).is_err());
        }
    }

    #[test]
    fn a_huge_chunk_size_is_refused_not_a_panic() {
        // Plain HTTP: whoever is on the path writes these bytes.
        for size in ["ffffffffffffffff", "fffffffe", "7fffffffffffffff"] {
            let answer = alloc::format!(
                "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nab"
            );
            assert!(parse_response(answer.as_bytes(), false).is_err(), "{size}");
        }
    }

    #[test]
    fn the_request_is_for_the_device_and_its_key() {
        use der::{Decode, Encode};
        use x509_cert::request::CertReq;
        let mut rng = rand::rngs::OsRng;
        let (key, pem) = key_and_csr(&mut rng, "acorn-0042").unwrap();
        let (label, der) = der::pem::decode_vec(pem.as_bytes()).unwrap();
        assert_eq!(label, "CERTIFICATE REQUEST");
        let csr = CertReq::from_der(&der).unwrap();
        let point = key.public_key().to_sec1_bytes();
        assert_eq!(
            csr.info.public_key.subject_public_key.raw_bytes(),
            &point[..]
        );
        // The signature verifies with the key over the request info.
        let sig = p256::ecdsa::Signature::from_der(csr.signature.raw_bytes()).unwrap();
        let info = csr.info.to_der().unwrap();
        signature::Verifier::verify(
            &p256::ecdsa::VerifyingKey::from(key.public_key()),
            &info,
            &sig,
        )
        .unwrap();
        assert!(key_and_csr(&mut rng, "bad/id").is_err());
    }

    #[test]
    fn mac_names_are_stable() {
        assert_eq!(
            mac_names([0x24, 0x6f, 0x28, 0xaa, 0xbb, 0xcc]),
            ("24:6F:28:AA:BB:CC".into(), "acorn-246f28aabbcc".into())
        );
    }
}
