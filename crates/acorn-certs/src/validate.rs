//! Validation of a certificate set: runs every check and builds a [`ValidationReport`].

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::time::Duration;
use secrecy::ExposeSecret;

use const_oid::db::rfc5912::ID_CE_BASIC_CONSTRAINTS;
use der::Decode;
use x509_cert::ext::pkix::BasicConstraints;
use x509_cert::Certificate;

use crate::decode::{self, Encoding, KeyFormat};
use crate::keys::{self, PublicKey};
use crate::report::{CheckId, Problem, ValidationReport};
use crate::{chain, endpoint, fingerprint, names, CertificateInfo, DeviceCertificates, PrivateKey};
use crate::{EXPIRY_WARNING_DAYS, MAX_ITEM_SIZE};

/// 2024-01-01T00:00:00Z: a clock reading earlier than this is taken as "not synced".
pub const CLOCK_SYNCED_AFTER: u64 = 1_704_067_200;

const DAY: u64 = 86_400;

/// What to validate against.
#[derive(Clone, Copy, Debug)]
pub struct ValidationOptions<'a> {
    /// The current time, Unix seconds (injected: the caller owns the clock).
    pub now: u64,
    /// A CA certificate (PEM or DER) the device certificate must chain to, if any.
    pub ca_certificate: Option<&'a [u8]>,
    /// Accept any DNS host name as endpoint (local brokers), not only AWS IoT ones.
    pub allow_custom_endpoint: bool,
    /// The fingerprint recorded when the set was stored (lowercase hex SHA-256), if any.
    pub expected_fingerprint: Option<&'a str>,
}

impl<'a> ValidationOptions<'a> {
    /// Options for the time `now` (Unix seconds): no CA, AWS endpoints only, no fingerprint.
    pub fn new(now: u64) -> Self {
        Self {
            now,
            ca_certificate: None,
            allow_custom_endpoint: false,
            expected_fingerprint: None,
        }
    }

    /// Requires the certificate to be signed by this CA certificate (PEM or DER).
    pub fn with_ca(mut self, ca_certificate: &'a [u8]) -> Self {
        self.ca_certificate = Some(ca_certificate);
        self
    }

    /// Accepts any DNS host name as endpoint when `allow` is true.
    pub fn allow_custom_endpoint(mut self, allow: bool) -> Self {
        self.allow_custom_endpoint = allow;
        self
    }

    /// Requires the certificate's fingerprint to equal this one.
    pub fn expect_fingerprint(mut self, fingerprint: &'a str) -> Self {
        self.expected_fingerprint = Some(fingerprint);
        self
    }
}

/// Validates a whole set, including its device id.
pub fn validate(certs: &DeviceCertificates, options: &ValidationOptions<'_>) -> ValidationReport {
    run(
        &certs.device_certificate,
        &certs.private_key,
        &certs.iot_endpoint,
        Some(&certs.device_id),
        options,
    )
}

/// Validates a certificate, key and endpoint without a device id (what `acorn certs check` does).
pub fn validate_material(
    certificate: &[u8],
    private_key: &PrivateKey,
    endpoint: &str,
    options: &ValidationOptions<'_>,
) -> ValidationReport {
    run(certificate, private_key, endpoint, None, options)
}

/// True for a device id matching `[A-Za-z0-9_-]{1,128}`.
pub fn is_valid_device_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn run(
    cert_bytes: &[u8],
    key: &PrivateKey,
    endpoint_name: &str,
    device_id: Option<&str>,
    options: &ValidationOptions<'_>,
) -> ValidationReport {
    let mut report = ValidationReport::default();

    // Size: items over the limit are not parsed at all.
    let sizes = [
        ("certificate", cert_bytes.len()),
        ("private key", key.len()),
        ("endpoint", endpoint_name.len()),
    ];
    let over: Vec<String> = sizes
        .iter()
        .filter(|(_, len)| *len > MAX_ITEM_SIZE)
        .map(|(what, len)| format!("the {what} is {len} bytes"))
        .collect();
    let cert_small = cert_bytes.len() <= MAX_ITEM_SIZE;
    let key_small = key.len() <= MAX_ITEM_SIZE;
    if over.is_empty() {
        report.pass(
            CheckId::Size,
            format!(
                "certificate {} bytes, private key {} bytes, endpoint {} bytes: each within {} bytes",
                cert_bytes.len(),
                key.len(),
                endpoint_name.len(),
                MAX_ITEM_SIZE
            ),
        );
    } else {
        report.fail(
            CheckId::Size,
            Problem::Oversize,
            format!(
                "{}; each item may be at most {MAX_ITEM_SIZE} bytes: this is not a single device \
                 certificate or key (a bundle or the wrong file?)",
                over.join(", ")
            ),
        );
    }

    if let Some(id) = device_id {
        if is_valid_device_id(id) {
            report.pass(
                CheckId::DeviceId,
                format!("device id `{id}` is well formed"),
            );
        } else {
            report.fail(
                CheckId::DeviceId,
                Problem::BadDeviceId,
                format!(
                    "device id `{}` must be 1 to 128 characters of letters, digits, `_` and `-`",
                    id.escape_debug()
                ),
            );
        }
    }

    // Certificate encoding and structure.
    let cert_der = if !cert_small {
        report.skip(CheckId::CertificateEncoding, too_large("certificate"));
        None
    } else {
        match decode::certificate(cert_bytes, "certificate") {
            Ok((encoding, der)) => {
                let how = match encoding {
                    Encoding::Pem(label) => format!("a PEM `{label}` block"),
                    Encoding::Der => String::from("DER"),
                };
                report.pass(
                    CheckId::CertificateEncoding,
                    format!("the certificate is {how} ({} bytes of DER)", der.len()),
                );
                report.fingerprint = Some(fingerprint(&der));
                Some(der)
            }
            Err((problem, why)) => {
                report.fail(CheckId::CertificateEncoding, problem, why);
                None
            }
        }
    };
    let cert = match &cert_der {
        None => {
            report.skip(CheckId::CertificateStructure, not_readable("certificate"));
            None
        }
        Some(der) => match Certificate::from_der(der) {
            Ok(cert) => {
                let tbs = &cert.tbs_certificate;
                report.pass(
                    CheckId::CertificateStructure,
                    format!(
                        "an X.509 certificate for `{}`, issued by `{}`",
                        names::display(&tbs.subject),
                        names::display(&tbs.issuer)
                    ),
                );
                Some(cert)
            }
            Err(e) => {
                report.fail(
                    CheckId::CertificateStructure,
                    Problem::BadDer,
                    format!(
                        "the certificate's DER is not a valid X.509 certificate ({e}): the file \
                         is truncated or corrupted; download it again"
                    ),
                );
                None
            }
        },
    };
    // The parsed certificate owns its data: free the DER before the key is decoded.
    drop(cert_der);
    report.certificate = cert
        .as_ref()
        .zip(report.fingerprint.clone())
        .map(|(c, fp)| CertificateInfo::new(c, fp, options.now));

    // Private key encoding and structure.
    let key_der = if !key_small {
        report.skip(CheckId::PrivateKeyEncoding, too_large("private key"));
        None
    } else {
        match decode::private_key(key.expose_secret()) {
            Ok((format, der)) => {
                report.pass(
                    CheckId::PrivateKeyEncoding,
                    String::from(match format {
                        KeyFormat::Pkcs1 => "a PEM `RSA PRIVATE KEY` block (PKCS#1)",
                        KeyFormat::Pkcs8 => "a PEM `PRIVATE KEY` block (PKCS#8)",
                        KeyFormat::Sec1 => "a PEM `EC PRIVATE KEY` block (SEC1)",
                        KeyFormat::UnlabelledDer => "DER",
                    }),
                );
                Some((format, der))
            }
            Err((problem, why)) => {
                report.fail(CheckId::PrivateKeyEncoding, problem, why);
                None
            }
        }
    };
    let key_public = match &key_der {
        None => {
            report.skip(CheckId::PrivateKeyStructure, not_readable("private key"));
            None
        }
        Some((format, der)) => match keys::private_key_public(*format, der) {
            Ok(public) => {
                report.pass(
                    CheckId::PrivateKeyStructure,
                    format!("a well-formed {} private key", public.kind()),
                );
                Some(public)
            }
            Err((problem, why)) => {
                report.fail(CheckId::PrivateKeyStructure, problem, why);
                None
            }
        },
    };
    drop(key_der);

    end_entity(&mut report, cert.as_ref());
    let cert_public = key_types(&mut report, cert.as_ref(), key_public.as_ref());
    key_match(&mut report, cert_public.as_ref(), key_public.as_ref());

    match endpoint::check(endpoint_name, options.allow_custom_endpoint) {
        Ok(why) => report.pass(CheckId::Endpoint, why),
        Err((problem, why)) => report.fail(CheckId::Endpoint, problem, why),
    }

    validity(&mut report, cert.as_ref(), options.now);
    chain_check(&mut report, cert.as_ref(), options.ca_certificate);
    integrity(&mut report, options.expected_fingerprint);
    report
}

fn too_large(what: &str) -> String {
    format!("the {what} is too large to read (see the size check)")
}

fn not_readable(what: &str) -> String {
    format!("the {what} could not be decoded (see above)")
}

fn end_entity(report: &mut ValidationReport, cert: Option<&Certificate>) {
    let Some(cert) = cert else {
        report.skip(CheckId::EndEntity, not_readable("certificate"));
        return;
    };
    let ext = cert
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == ID_CE_BASIC_CONSTRAINTS);
    let Some(ext) = ext else {
        report.pass(
            CheckId::EndEntity,
            String::from("no basicConstraints extension: an end-entity (device) certificate"),
        );
        return;
    };
    match BasicConstraints::from_der(ext.extn_value.as_bytes()) {
        Ok(bc) if bc.ca => report.fail(
            CheckId::EndEntity,
            Problem::CaCertificate,
            String::from(
                "this is a CA certificate (basicConstraints cA = true), not a device certificate: \
                 use the certificate issued to the device (AWS `certificatePem`), not the CA",
            ),
        ),
        Ok(_) => report.pass(
            CheckId::EndEntity,
            String::from("basicConstraints cA = false: an end-entity (device) certificate"),
        ),
        Err(e) => report.fail(
            CheckId::EndEntity,
            Problem::BadDer,
            format!("the certificate's basicConstraints extension is malformed ({e})"),
        ),
    }
}

/// Checks the key types and sizes; returns the certificate's public key when readable.
fn key_types(
    report: &mut ValidationReport,
    cert: Option<&Certificate>,
    key_public: Option<&PublicKey>,
) -> Option<PublicKey> {
    let cert_public = match cert.map(|c| {
        keys::spki_public(
            &c.tbs_certificate.subject_public_key_info,
            "certificate's public key",
        )
    }) {
        Some(Err((problem, why))) => {
            report.fail(CheckId::KeyType, problem, why);
            return None;
        }
        Some(Ok(public)) => Some(public),
        None => None,
    };
    let kinds: Vec<(&str, keys::KeyKind)> = [
        cert_public.as_ref().map(|k| ("certificate", k.kind())),
        key_public.map(|k| ("private key", k.kind())),
    ]
    .into_iter()
    .flatten()
    .collect();
    if kinds.is_empty() {
        report.skip(CheckId::KeyType, String::from("no key could be read"));
    } else if let Some((what, kind)) = kinds.iter().find(|(_, k)| !k.is_allowed()) {
        // An RSA key of an allowed size is refused only by a build without the `rsa` feature.
        let problem = match kind {
            keys::KeyKind::Rsa { bits } if !keys::RSA_BITS.contains(bits) => {
                Problem::KeySizeNotAllowed
            }
            _ => Problem::UnsupportedKeyType,
        };
        report.fail(
            CheckId::KeyType,
            problem,
            format!("the {what} uses {kind}; allowed are {}", keys::ALLOWED_KEYS),
        );
    } else {
        let listed: Vec<String> = kinds.iter().map(|(w, k)| format!("{w}: {k}")).collect();
        report.pass(CheckId::KeyType, format!("{} (allowed)", listed.join(", ")));
    }
    cert_public
}

fn key_match(report: &mut ValidationReport, cert: Option<&PublicKey>, key: Option<&PublicKey>) {
    let (Some(cert), Some(key)) = (cert, key) else {
        report.skip(
            CheckId::KeyMatch,
            String::from("needs both a readable certificate and a readable private key"),
        );
        return;
    };
    if cert == key {
        let how = match cert {
            PublicKey::Rsa { .. } => "the RSA modulus and exponent match",
            _ => "the public point derived from the private key equals the certificate's",
        };
        report.pass(
            CheckId::KeyMatch,
            format!("the private key belongs to the certificate ({how})"),
        );
    } else {
        let detail = if cert.kind() == key.kind() {
            format!("both are {}, but they are different keys", cert.kind())
        } else {
            format!(
                "the certificate has a {} key, the key file a {} key",
                cert.kind(),
                key.kind()
            )
        };
        report.fail(
            CheckId::KeyMatch,
            Problem::KeyMismatch,
            format!(
                "the private key does not belong to this certificate ({detail}): TLS would fail; \
                 use the key file created together with this certificate"
            ),
        );
    }
}

/// Formats Unix seconds as an RFC 3339 UTC time.
pub(crate) fn format_time(secs: u64) -> String {
    der::DateTime::from_unix_duration(Duration::from_secs(secs))
        .map(|t| t.to_string())
        .unwrap_or_else(|_| format!("{secs} (Unix seconds)"))
}

fn validity(report: &mut ValidationReport, cert: Option<&Certificate>, now: u64) {
    let Some(cert) = cert else {
        report.skip(CheckId::Validity, not_readable("certificate"));
        return;
    };
    let v = &cert.tbs_certificate.validity;
    let not_before = v.not_before.to_unix_duration().as_secs();
    let not_after = v.not_after.to_unix_duration().as_secs();
    let window = format!("valid from {} to {}", v.not_before, v.not_after);
    if now < CLOCK_SYNCED_AFTER {
        report.warn(
            CheckId::Validity,
            Problem::ClockNotSynced,
            format!(
                "the clock reads {}, before 2024-01-01, so it is not synced (SNTP?): the validity \
                 period could not be checked ({window})",
                format_time(now)
            ),
        );
    } else if now < not_before {
        report.fail(
            CheckId::Validity,
            Problem::NotYetValid,
            format!(
                "the certificate is not valid yet ({window}; now {}): check the clock, or wait",
                format_time(now)
            ),
        );
    } else if now > not_after {
        report.fail(
            CheckId::Validity,
            Problem::Expired,
            format!(
                "the certificate expired {} days ago ({window}): issue a new certificate",
                (now - not_after) / DAY
            ),
        );
    } else if not_after - now < EXPIRY_WARNING_DAYS * DAY {
        report.warn(
            CheckId::Validity,
            Problem::ExpiringSoon,
            format!(
                "the certificate expires in {} days ({window}): rotate it soon",
                (not_after - now) / DAY
            ),
        );
    } else {
        report.pass(
            CheckId::Validity,
            format!("{window}; {} days left", (not_after - now) / DAY),
        );
    }
}

fn chain_check(report: &mut ValidationReport, cert: Option<&Certificate>, ca: Option<&[u8]>) {
    let Some(ca_bytes) = ca else {
        report.skip(
            CheckId::Chain,
            String::from("no CA certificate given: the issuer was not checked"),
        );
        return;
    };
    let Some(cert) = cert else {
        report.skip(CheckId::Chain, not_readable("certificate"));
        return;
    };
    let ca_cert = if ca_bytes.len() > MAX_ITEM_SIZE {
        Err((Problem::UnreadableCa, too_large("CA certificate")))
    } else {
        decode::certificate(ca_bytes, "CA certificate")
            .map_err(|(_, why)| (Problem::UnreadableCa, why))
            .and_then(|(_, der)| {
                Certificate::from_der(&der).map_err(|e| {
                    (
                        Problem::UnreadableCa,
                        format!("the CA certificate is not a valid X.509 certificate ({e})"),
                    )
                })
            })
    };
    match ca_cert.and_then(|ca| chain::verify(cert, &ca).map(|()| ca)) {
        Ok(ca) => report.pass(
            CheckId::Chain,
            format!(
                "the certificate's signature verifies with the key of `{}`",
                names::display(&ca.tbs_certificate.subject)
            ),
        ),
        Err((problem, why)) => report.fail(CheckId::Chain, problem, why),
    }
}

fn integrity(report: &mut ValidationReport, expected: Option<&str>) {
    let Some(expected) = expected else {
        report.skip(
            CheckId::Integrity,
            String::from("no stored fingerprint to compare with"),
        );
        return;
    };
    match report.fingerprint.clone() {
        Some(actual) if actual.eq_ignore_ascii_case(expected) => report.pass(
            CheckId::Integrity,
            format!("SHA-256 fingerprint {actual} matches the stored metadata"),
        ),
        Some(actual) => report.fail(
            CheckId::Integrity,
            Problem::FingerprintMismatch,
            format!(
                "the certificate's SHA-256 fingerprint is {actual}, but {expected} was recorded \
                 when it was stored: the stored data is corrupted or was changed; provision again"
            ),
        ),
        None => report.fail(
            CheckId::Integrity,
            Problem::FingerprintMismatch,
            format!(
                "the stored certificate cannot be decoded, so it no longer matches the \
                 fingerprint {expected} recorded when it was stored: the stored data is corrupted"
            ),
        ),
    }
}
