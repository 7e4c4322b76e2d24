//! Our verifier of the broker's certificate chain, plugged into embedded-tls.
//!
//! embedded-tls 0.19's own `pki::CertVerifier` holds one trust anchor, reports every failure
//! as one `InvalidCertificate`, caps host names at 64 bytes and unwraps an RSA key parse in a
//! path a hostile server reaches. This one:
//!
//! - builds the path from the leaf through the intermediates the server sent (AWS sends one)
//!   to **any** of several anchors (Amazon Root CA 1 and 3, or a given CA); every issuer on
//!   the path must be a CA (basicConstraints cA) and every signature must verify; every
//!   path through what the server sent is tried (at most [`MAX_CHAIN_CERTS`], each
//!   signature checked once), those within their dates first, so a damaged or expired copy
//!   of an intermediate beside the good one does not fail the chain;
//! - checks every certificate's dates against the synced clock (never an unsynced one: the
//!   transport refuses to connect before the clock is set);
//! - checks the host name against the leaf's subjectAltName DNS names (wildcards only as the
//!   whole leftmost label) or IP addresses;
//! - verifies the TLS 1.3 CertificateVerify signature with the leaf's key;
//! - never panics on any input: every parse is fallible, sizes are bounded, and the
//!   precise failure is kept in [`ServerVerifier::failure`] for the [`Diagnosis`].

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use const_oid::ObjectIdentifier;
use der::{Decode, Reader, SliceReader};
use embedded_tls::{Aes128GcmSha256, CertificateEntryRef, CertificateRef, CertificateVerifyRef};
use embedded_tls::{SignatureScheme, TlsError, TlsVerifier};
use sha2::Digest;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, SubjectAltName};
use x509_cert::name::Name;
use x509_cert::Certificate;

use crate::diagnosis::Diagnosis;
use crate::error::RootsError;

const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP_256_R_1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
#[cfg(feature = "p384")]
const SECP_384_R_1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
#[cfg(feature = "rsa")]
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const SHA384_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const SHA512_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const SUBJECT_ALT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");

/// Amazon Root CA 1 (RSA 2048), DER, pinned.
pub const AMAZON_ROOT_CA_1: &[u8] = include_bytes!("../roots/AmazonRootCA1.der");
/// Amazon Root CA 3 (EC P-256), DER, pinned.
pub const AMAZON_ROOT_CA_3: &[u8] = include_bytes!("../roots/AmazonRootCA3.der");

/// Most certificates the server may send (leaf + intermediates) that are looked at.
pub const MAX_CHAIN_CERTS: usize = 6;
/// Largest certificate accepted from the server, bytes.
pub const MAX_CERT_BYTES: usize = 8 * 1024;

/// A public key that can verify signatures.
#[derive(Clone, Debug)]
enum VerifyKey {
    P256(p256::ecdsa::VerifyingKey),
    #[cfg(feature = "p384")]
    P384(p384::ecdsa::VerifyingKey),
    #[cfg(feature = "rsa")]
    Rsa(rsa::RsaPublicKey),
    /// A key type this build cannot verify with (named for the diagnosis).
    Unsupported(&'static str),
}

fn verify_key(cert: &Certificate) -> VerifyKey {
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let bits = spki.subject_public_key.raw_bytes();
    let oid = spki.algorithm.oid;
    if oid == ID_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        if curve == Some(SECP_256_R_1) {
            return p256::ecdsa::VerifyingKey::from_sec1_bytes(bits)
                .map(VerifyKey::P256)
                .unwrap_or(VerifyKey::Unsupported("a malformed P-256 key"));
        }
        #[cfg(feature = "p384")]
        if curve == Some(SECP_384_R_1) {
            return p384::ecdsa::VerifyingKey::from_sec1_bytes(bits)
                .map(VerifyKey::P384)
                .unwrap_or(VerifyKey::Unsupported("a malformed P-384 key"));
        }
        return VerifyKey::Unsupported(
            "an EC curve this build cannot verify (P-384 needs the `p384` feature)",
        );
    }
    #[cfg(feature = "rsa")]
    if oid == RSA_ENCRYPTION {
        use rsa::pkcs1::DecodeRsaPublicKey;
        return rsa::RsaPublicKey::from_pkcs1_der(bits)
            .map(VerifyKey::Rsa)
            .unwrap_or(VerifyKey::Unsupported("a malformed or oversized RSA key"));
    }
    VerifyKey::Unsupported(
        "RSA or another key type this build cannot verify (RSA needs the `rsa` feature)",
    )
}

/// Checks an X.509 signature (`alg` over `tbs`) with `key`.
fn verify_cert_signature(key: &VerifyKey, alg: ObjectIdentifier, tbs: &[u8], sig: &[u8]) -> bool {
    let digest: Vec<u8> = if alg == ECDSA_WITH_SHA256 || alg == SHA256_WITH_RSA {
        sha2::Sha256::digest(tbs).to_vec()
    } else if alg == ECDSA_WITH_SHA384 || alg == SHA384_WITH_RSA {
        sha2::Sha384::digest(tbs).to_vec()
    } else if alg == SHA512_WITH_RSA {
        sha2::Sha512::digest(tbs).to_vec()
    } else {
        return false;
    };
    let ecdsa = alg == ECDSA_WITH_SHA256 || alg == ECDSA_WITH_SHA384;
    match key {
        VerifyKey::P256(k) if ecdsa => {
            use signature::hazmat::PrehashVerifier;
            p256::ecdsa::Signature::from_der(sig)
                .ok()
                .is_some_and(|s| k.verify_prehash(&digest, &s).is_ok())
        }
        #[cfg(feature = "p384")]
        VerifyKey::P384(k) if ecdsa => {
            use signature::hazmat::PrehashVerifier;
            p384::ecdsa::Signature::from_der(sig)
                .ok()
                .is_some_and(|s| k.verify_prehash(&digest, &s).is_ok())
        }
        #[cfg(feature = "rsa")]
        VerifyKey::Rsa(k) if !ecdsa => {
            let scheme = if alg == SHA256_WITH_RSA {
                rsa::Pkcs1v15Sign::new::<sha2::Sha256>()
            } else if alg == SHA384_WITH_RSA {
                rsa::Pkcs1v15Sign::new::<sha2::Sha384>()
            } else {
                rsa::Pkcs1v15Sign::new::<sha2::Sha512>()
            };
            k.verify(scheme, &digest, sig).is_ok()
        }
        _ => false,
    }
}

/// A trust anchor: a root CA's name and key.
#[derive(Clone, Debug)]
struct Anchor {
    subject: Name,
    key: VerifyKey,
}

/// The roots a broker's certificate must chain to.
#[derive(Clone, Debug)]
pub struct TrustAnchors {
    anchors: Vec<Anchor>,
    label: String,
}

impl TrustAnchors {
    /// Amazon Root CA 1 (RSA; usable with the `rsa` feature) and Amazon Root CA 3 (EC P-256),
    /// pinned: what AWS IoT Core ATS endpoints chain to.
    pub fn amazon() -> Self {
        let mut anchors = Vec::with_capacity(2);
        for der in [AMAZON_ROOT_CA_1, AMAZON_ROOT_CA_3] {
            if let Ok(cert) = Certificate::from_der(der) {
                anchors.push(Anchor {
                    subject: cert.tbs_certificate.subject.clone(),
                    key: verify_key(&cert),
                });
            }
        }
        TrustAnchors {
            anchors,
            label: "Amazon Root CA 1 and 3".to_string(),
        }
    }

    /// The CA certificates in `pem` (one or more `CERTIFICATE` blocks), e.g. a local broker's.
    pub fn from_pem(pem: &[u8]) -> Result<Self, RootsError> {
        let certs = Certificate::load_pem_chain(pem).map_err(|e| RootsError::Unreadable {
            detail: e.to_string(),
        })?;
        Self::from_certificates(certs, "the given CA")
    }

    /// One CA certificate, DER.
    pub fn from_der(der: &[u8]) -> Result<Self, RootsError> {
        let cert = Certificate::from_der(der).map_err(|e| RootsError::Unreadable {
            detail: e.to_string(),
        })?;
        Self::from_certificates(alloc::vec![cert], "the given CA")
    }

    fn from_certificates(certs: Vec<Certificate>, label: &str) -> Result<Self, RootsError> {
        if certs.is_empty() {
            return Err(RootsError::Empty);
        }
        Ok(TrustAnchors {
            anchors: certs
                .iter()
                .map(|c| Anchor {
                    subject: c.tbs_certificate.subject.clone(),
                    key: verify_key(c),
                })
                .collect(),
            label: label.to_string(),
        })
    }

    /// What the roots are, for messages.
    pub fn label(&self) -> &str {
        &self.label
    }
}

/// Why the broker's certificate was refused (kept by the verifier for the diagnosis).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerCertFailure {
    /// No path to a trusted root.
    UnknownCa,
    /// A certificate on the path has expired.
    Expired,
    /// A certificate on the path is not valid yet.
    NotYetValid,
    /// The leaf is not for the host name.
    HostnameMismatch {
        /// The name expected.
        expected: String,
        /// The names in the certificate.
        presented: Vec<String>,
    },
    /// Anything else (malformed, unsupported algorithm, bad handshake signature).
    Invalid(String),
}

impl ServerCertFailure {
    /// The plain-language diagnosis.
    pub fn diagnosis(&self) -> Diagnosis {
        match self {
            Self::UnknownCa => Diagnosis::UnknownServerCa,
            Self::Expired => Diagnosis::ServerCertificateExpired,
            Self::NotYetValid => Diagnosis::ServerCertificateNotYetValid,
            Self::HostnameMismatch {
                expected,
                presented,
            } => Diagnosis::HostnameMismatch {
                expected: expected.clone(),
                presented: presented.clone(),
            },
            Self::Invalid(detail) => Diagnosis::ServerCertificateInvalid(detail.clone()),
        }
    }
}

/// The raw `tbsCertificate` bytes of a DER certificate (what its signature covers).
fn tbs_bytes(der: &[u8]) -> Option<&[u8]> {
    let mut reader = SliceReader::new(der).ok()?;
    let header = der::Header::decode(&mut reader).ok()?;
    header.tag.assert_eq(der::Tag::Sequence).ok()?;
    reader.tlv_bytes().ok()
}

struct Parsed<'a> {
    der: &'a [u8],
    cert: Certificate,
}

fn is_ca(cert: &Certificate) -> bool {
    cert.tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == BASIC_CONSTRAINTS)
        .and_then(|e| BasicConstraints::from_der(e.extn_value.as_bytes()).ok())
        .is_some_and(|bc| bc.ca)
}

fn dates(cert: &Certificate, now: u64) -> Result<(), ServerCertFailure> {
    let v = &cert.tbs_certificate.validity;
    if now < v.not_before.to_unix_duration().as_secs() {
        return Err(ServerCertFailure::NotYetValid);
    }
    if now > v.not_after.to_unix_duration().as_secs() {
        return Err(ServerCertFailure::Expired);
    }
    Ok(())
}

fn signed_by(child: &Parsed<'_>, key: &VerifyKey) -> bool {
    let Some(tbs) = tbs_bytes(child.der) else {
        return false;
    };
    let Some(sig) = child.cert.signature.as_bytes() else {
        return false;
    };
    verify_cert_signature(key, child.cert.signature_algorithm.oid, tbs, sig)
}

/// The names a leaf certificate is valid for: SAN DNS names and IP addresses (as text).
fn presented_names(cert: &Certificate) -> (Vec<String>, Vec<Vec<u8>>) {
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    let san = cert
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == SUBJECT_ALT_NAME)
        .and_then(|e| SubjectAltName::from_der(e.extn_value.as_bytes()).ok());
    for name in san.iter().flat_map(|s| s.0.iter()) {
        match name {
            GeneralName::DnsName(n) => dns.push(n.to_string()),
            GeneralName::IpAddress(ip) => ips.push(ip.as_bytes().to_vec()),
            _ => {}
        }
    }
    (dns, ips)
}

fn dns_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim_end_matches('.');
    let host = host.trim_end_matches('.');
    if let Some(rest) = pattern.strip_prefix("*.") {
        // The wildcard stands for exactly one whole, non-empty leftmost label.
        match host.split_once('.') {
            Some((label, tail)) => !label.is_empty() && tail.eq_ignore_ascii_case(rest),
            None => false,
        }
    } else {
        pattern.eq_ignore_ascii_case(host)
    }
}

/// The host as an IPv4 address in dotted-decimal form (core's strict parser: no sign, no
/// leading zeros, so `127.0.0.01` is a name, not an address).
fn parse_ipv4(host: &str) -> Option<[u8; 4]> {
    host.parse::<core::net::Ipv4Addr>().ok().map(|a| a.octets())
}

fn hostname_ok(cert: &Certificate, host: &str) -> Result<(), ServerCertFailure> {
    let (dns, ips) = presented_names(cert);
    let ok = match parse_ipv4(host) {
        Some(ip) => ips.iter().any(|p| p.as_slice() == ip),
        None => dns.iter().any(|d| dns_matches(d, host)),
    };
    if ok {
        return Ok(());
    }
    let mut presented: Vec<String> = dns;
    presented.extend(
        ips.iter()
            .filter(|ip| ip.len() == 4)
            .map(|ip| alloc::format!("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3])),
    );
    Err(ServerCertFailure::HostnameMismatch {
        expected: host.to_string(),
        presented,
    })
}

/// Who signed whom among the certificates a server sent, each signature checked at most once
/// (the costly part on the chip), and the search of a path through them.
struct Links<'p, 'a> {
    parsed: &'p [Parsed<'a>],
    anchors: &'p TrustAnchors,
    /// `by_cert[child * n + issuer]`: whether `issuer`, a CA certificate under the name
    /// `child` names as its issuer, signed `child`; `None` until asked.
    by_cert: Vec<Option<bool>>,
    /// `by_anchor[child]`: whether an anchor under that name signed `child`.
    by_anchor: Vec<Option<bool>>,
}

impl<'p, 'a> Links<'p, 'a> {
    fn new(parsed: &'p [Parsed<'a>], anchors: &'p TrustAnchors) -> Self {
        let n = parsed.len();
        Links {
            parsed,
            anchors,
            by_cert: alloc::vec![None; n * n],
            by_anchor: alloc::vec![None; n],
        }
    }

    fn issued_by_anchor(&mut self, child: usize) -> bool {
        let (parsed, anchors) = (self.parsed, self.anchors);
        *self.by_anchor[child].get_or_insert_with(|| {
            let issuer = &parsed[child].cert.tbs_certificate.issuer;
            anchors
                .anchors
                .iter()
                .any(|a| &a.subject == issuer && signed_by(&parsed[child], &a.key))
        })
    }

    fn issued_by(&mut self, child: usize, issuer: usize) -> bool {
        let parsed = self.parsed;
        *self.by_cert[child * parsed.len() + issuer].get_or_insert_with(|| {
            let candidate = &parsed[issuer].cert;
            candidate.tbs_certificate.subject == parsed[child].cert.tbs_certificate.issuer
                && is_ca(candidate)
                && signed_by(&parsed[child], &verify_key(candidate))
        })
    }

    /// A path from the leaf (index 0) up through CA certificates the server sent, each used
    /// once, to an anchor: the indices, leaf first. With `now`, every certificate on it is
    /// within its dates. Every path is tried (a server may send a damaged or expired copy of
    /// an intermediate beside the good one); at most `MAX_CHAIN_CERTS` certificates, so the
    /// search is small and each signature is checked once.
    fn path(&mut self, now: Option<u64>) -> Option<Vec<usize>> {
        let mut path = alloc::vec![0];
        let mut used = alloc::vec![false; self.parsed.len()];
        used[0] = true;
        self.extend(&mut path, &mut used, now).then_some(path)
    }

    fn extend(&mut self, path: &mut Vec<usize>, used: &mut [bool], now: Option<u64>) -> bool {
        let Some(&current) = path.last() else {
            return false;
        };
        if now.is_some_and(|now| dates(&self.parsed[current].cert, now).is_err()) {
            return false;
        }
        if self.issued_by_anchor(current) {
            return true;
        }
        for next in 0..self.parsed.len() {
            if used[next] || !self.issued_by(current, next) {
                continue;
            }
            used[next] = true;
            path.push(next);
            if self.extend(path, used, now) {
                return true;
            }
            path.pop();
            used[next] = false;
        }
        false
    }
}

/// Verifies a server chain (leaf first) at `now` for `host` against `anchors`. Returns the
/// leaf's key for the CertificateVerify check.
fn verify_chain(
    entries: &[&[u8]],
    anchors: &TrustAnchors,
    host: &str,
    now: u64,
) -> Result<VerifyKey, ServerCertFailure> {
    if entries.is_empty() {
        return Err(ServerCertFailure::Invalid(
            "the broker presented no certificate".to_string(),
        ));
    }
    let mut parsed: Vec<Parsed<'_>> = Vec::with_capacity(entries.len().min(MAX_CHAIN_CERTS));
    for (i, der) in entries.iter().take(MAX_CHAIN_CERTS).enumerate() {
        if der.len() > MAX_CERT_BYTES {
            return Err(ServerCertFailure::Invalid(alloc::format!(
                "certificate {i} of its chain is {} bytes (more than {MAX_CERT_BYTES})",
                der.len()
            )));
        }
        match Certificate::from_der(der) {
            Ok(cert) => parsed.push(Parsed { der, cert }),
            Err(e) if i == 0 => {
                return Err(ServerCertFailure::Invalid(alloc::format!(
                    "it is not a valid X.509 certificate ({e})"
                )))
            }
            // A malformed extra certificate is ignored: it cannot be on a valid path.
            Err(_) => {}
        }
    }
    let leaf_key = verify_key(&parsed[0].cert);
    if let VerifyKey::Unsupported(what) = leaf_key {
        return Err(ServerCertFailure::Invalid(alloc::format!(
            "its key is {what}"
        )));
    }
    // A path within its dates; without one, any path, for the "expired" or "not yet valid"
    // of its first out-of-date certificate; without any, an unknown CA.
    let mut links = Links::new(&parsed, anchors);
    let path = links
        .path(Some(now))
        .or_else(|| links.path(None))
        .ok_or(ServerCertFailure::UnknownCa)?;
    for &i in &path {
        dates(&parsed[i].cert, now)?;
    }
    hostname_ok(&parsed[0].cert, host)?;
    Ok(leaf_key)
}

/// Verifies the TLS 1.3 server CertificateVerify signature over `message`.
fn verify_handshake_signature(
    key: &VerifyKey,
    scheme: SignatureScheme,
    message: &[u8],
    sig: &[u8],
) -> Result<(), ServerCertFailure> {
    let bad = || {
        ServerCertFailure::Invalid(
            "its handshake signature does not verify with the certificate's key (the server \
             does not hold the certificate's private key)"
                .to_string(),
        )
    };
    match (scheme, key) {
        (SignatureScheme::EcdsaSecp256r1Sha256, VerifyKey::P256(k)) => {
            use signature::Verifier;
            let sig = p256::ecdsa::Signature::from_der(sig).map_err(|_| bad())?;
            k.verify(message, &sig).map_err(|_| bad())
        }
        #[cfg(feature = "p384")]
        (SignatureScheme::EcdsaSecp384r1Sha384, VerifyKey::P384(k)) => {
            use signature::Verifier;
            let sig = p384::ecdsa::Signature::from_der(sig).map_err(|_| bad())?;
            k.verify(message, &sig).map_err(|_| bad())
        }
        #[cfg(feature = "rsa")]
        (
            SignatureScheme::RsaPssRsaeSha256
            | SignatureScheme::RsaPssRsaeSha384
            | SignatureScheme::RsaPssRsaeSha512,
            VerifyKey::Rsa(k),
        ) => {
            let (digest, pss) = match scheme {
                SignatureScheme::RsaPssRsaeSha256 => (
                    sha2::Sha256::digest(message).to_vec(),
                    rsa::Pss::new::<sha2::Sha256>(),
                ),
                SignatureScheme::RsaPssRsaeSha384 => (
                    sha2::Sha384::digest(message).to_vec(),
                    rsa::Pss::new::<sha2::Sha384>(),
                ),
                _ => (
                    sha2::Sha512::digest(message).to_vec(),
                    rsa::Pss::new::<sha2::Sha512>(),
                ),
            };
            k.verify(pss, &digest, sig).map_err(|_| bad())
        }
        (other, _) => Err(ServerCertFailure::Invalid(alloc::format!(
            "it signed the handshake with {other:?}, which does not fit its key or which this \
             build cannot verify"
        ))),
    }
}

/// The embedded-tls verifier: chain, dates, host name, and the handshake signature.
#[derive(Debug)]
pub struct ServerVerifier<'a> {
    anchors: &'a TrustAnchors,
    now_unix: u64,
    host: String,
    leaf_key: Option<VerifyKey>,
    transcript: Option<Vec<u8>>,
    failure: Option<ServerCertFailure>,
    signature_verified: bool,
}

impl<'a> ServerVerifier<'a> {
    /// A verifier for one handshake at time `now_unix` (a synced clock), for `host`.
    pub fn new(anchors: &'a TrustAnchors, now_unix: u64, host: &str) -> Self {
        ServerVerifier {
            anchors,
            now_unix,
            host: host.to_string(),
            leaf_key: None,
            transcript: None,
            failure: None,
            signature_verified: false,
        }
    }

    /// Why the broker's certificate was refused, if it was.
    pub fn failure(&self) -> Option<&ServerCertFailure> {
        self.failure.as_ref()
    }

    /// Whether the server's CertificateVerify verified: a later refusal of the handshake is
    /// then about its Finished.
    pub fn signature_verified(&self) -> bool {
        self.signature_verified
    }

    /// Checks a chain (leaf first, DER) outside a handshake: what the verifier does with the
    /// server's Certificate message. Exposed for tests and fuzzing.
    pub fn check_chain(&mut self, entries: &[&[u8]]) -> Result<(), ServerCertFailure> {
        let result = verify_chain(entries, self.anchors, &self.host, self.now_unix);
        match result {
            Ok(key) => {
                self.leaf_key = Some(key);
                Ok(())
            }
            Err(f) => {
                self.failure = Some(f.clone());
                Err(f)
            }
        }
    }
}

impl TlsVerifier<Aes128GcmSha256> for ServerVerifier<'_> {
    fn set_hostname_verification(&mut self, hostname: &str) -> Result<(), TlsError> {
        self.host = hostname.to_string();
        Ok(())
    }

    fn verify_certificate(
        &mut self,
        transcript: &sha2::Sha256,
        cert: CertificateRef,
    ) -> Result<(), TlsError> {
        let mut entries: Vec<&[u8]> = Vec::with_capacity(cert.entries.len());
        for entry in cert.entries.iter() {
            match entry {
                CertificateEntryRef::X509(der) => entries.push(der),
                CertificateEntryRef::RawPublicKey(_) => {
                    self.failure = Some(ServerCertFailure::Invalid(
                        "the broker sent a raw public key instead of a certificate".to_string(),
                    ));
                    return Err(TlsError::InvalidCertificate);
                }
            }
        }
        self.check_chain(&entries)
            .map_err(|_| TlsError::InvalidCertificate)?;
        self.transcript = Some(transcript.clone().finalize().to_vec());
        Ok(())
    }

    fn verify_signature(&mut self, verify: CertificateVerifyRef) -> Result<(), TlsError> {
        let (Some(key), Some(hash)) = (self.leaf_key.as_ref(), self.transcript.take()) else {
            self.failure = Some(ServerCertFailure::Invalid(
                "the broker signed the handshake before sending its certificate".to_string(),
            ));
            return Err(TlsError::InvalidSignature);
        };
        let mut message = Vec::with_capacity(64 + 34 + hash.len());
        message.resize(64, 0x20);
        message.extend_from_slice(b"TLS 1.3, server CertificateVerify\x00");
        message.extend_from_slice(&hash);
        verify_handshake_signature(key, verify.signature_scheme, &message, verify.signature)
            .map_err(|f| {
                self.failure = Some(f);
                TlsError::InvalidSignature
            })?;
        self.signature_verified = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(dns_matches(
            "*.iot.eu-west-1.amazonaws.com",
            "a1-ats.iot.eu-west-1.amazonaws.com"
        ));
        assert!(!dns_matches("*.amazonaws.com", "a.b.amazonaws.com"));
        assert!(!dns_matches("*.example.com", "example.com"));
        assert!(dns_matches("LocalHost", "localhost"));
    }

    #[test]
    fn only_strict_dotted_decimal_is_an_address() {
        assert_eq!(parse_ipv4("127.0.0.1"), Some([127, 0, 0, 1]));
        for name in [
            "127.0.0.01",
            "127.0.0.+1",
            "127.0.0",
            "127.0.0.1.",
            "1.2.3.256",
        ] {
            assert_eq!(parse_ipv4(name), None, "{name}");
        }
    }

    #[test]
    fn amazon_roots_parse() {
        let roots = TrustAnchors::amazon();
        assert_eq!(roots.anchors.len(), 2);
        assert!(matches!(roots.anchors[1].key, VerifyKey::P256(_)));
    }

    #[test]
    fn garbage_chains_are_refused_without_panic() {
        let roots = TrustAnchors::amazon();
        let mut v = ServerVerifier::new(&roots, 1_800_000_000, "h");
        for input in [&b""[..], b"\x30", b"\x30\x03\x02\x01\x00", &[0xff; 40]] {
            assert!(v.check_chain(&[input]).is_err());
        }
        assert!(v.check_chain(&[]).is_err());
    }
}
