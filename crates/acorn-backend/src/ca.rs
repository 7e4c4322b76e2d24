//! The local certificate authority: creates or loads a CA kept as PEM files in a directory,
//! issues device certificates (from a CSR or with a key made here), a server certificate for
//! the loopback broker, and certificate revocation lists.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams,
    CertificateSigningRequestParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, RevokedCertParams, SerialNumber,
};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use crate::error::{BackendError, CsrError};
use crate::files;
use secrecy::{ExposeSecret, SecretString};

/// File name of the CA certificate (PEM) inside the CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key (PKCS#8 PEM, mode 0600) inside the CA directory.
pub const CA_KEY_FILE: &str = "ca.key";

/// How long a device certificate is valid.
const DEVICE_VALIDITY: Duration = Duration::days(365);
/// How long the CA certificate is valid.
const CA_VALIDITY: Duration = Duration::days(3650);
/// Backdating of `notBefore`, so a device whose clock is a little behind accepts the certificate.
const CLOCK_SKEW: Duration = Duration::minutes(5);

pub use acorn_api::KeyType;

/// A certificate issued by the local CA.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    /// The certificate, PEM.
    pub pem: String,
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// SHA-256 of the DER, lowercase hex (what AWS IoT calls the certificate id).
    pub certificate_id: String,
    /// The serial number, lowercase hex of its big-endian bytes.
    pub serial_hex: String,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

/// A certificate together with the private key generated for it.
#[derive(Debug, Clone)]
pub struct IssuedKeyPair {
    /// The certificate.
    pub certificate: IssuedCertificate,
    /// The private key, PEM (PKCS#8 for P-256, PKCS#1 for RSA).
    pub private_key_pem: SecretString,
}

/// A CSR that parsed, whose signature verified and whose subject CN is the device id.
pub struct CheckedCsr {
    device_id: String,
    /// The CSR's public key, exactly as its SubjectPublicKeyInfo states it.
    public_key: rcgen::SubjectPublicKeyInfo,
}

impl core::fmt::Debug for CheckedCsr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CheckedCsr")
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

/// One revoked certificate to list in a CRL.
#[derive(Debug, Clone)]
pub struct RevokedSerial {
    /// The serial number, hex (as in [`IssuedCertificate::serial_hex`]).
    pub serial_hex: String,
    /// When it was revoked.
    pub revoked_at: OffsetDateTime,
}

/// Which names a [`LocalCa`] may put in the certificates it issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaRole {
    /// The device CA: device certificates, only for valid device ids
    /// ([`acorn_mqtt::check_device_id`]), and the broker's server certificate.
    Device,
    /// The service CA: certificates of service identities (`service:<name>`, trusted only on
    /// the broker's service listener, which grants them every device topic) and takeover
    /// certificates named like a device (no rights; used to close a revoked device's session).
    Service,
    /// The claim CA: shared claim certificates (`claim:<name>`) for fleet provisioning by
    /// claim, trusted only by the local stack's claim endpoint, which grants them the
    /// provisioning API and nothing else.
    Claim,
}

impl CaRole {
    fn common_name(self) -> &'static str {
        match self {
            Self::Device => "Acorn Local Dev CA",
            Self::Service => "Acorn Local Service CA",
            Self::Claim => "Acorn Local Claim CA",
        }
    }

    /// Whether this CA may issue a client certificate with the common name `cn`.
    fn admits(self, cn: &str) -> bool {
        let device = acorn_mqtt::check_device_id(cn).is_ok();
        match self {
            Self::Device => device,
            // Claim certificate names follow the service-name rule.
            Self::Claim => cn
                .strip_prefix(acorn_mqtt::topics::CLAIM_CLIENT_PREFIX)
                .is_some_and(|name| acorn_mqtt::service_client_id(name).is_ok()),
            Self::Service => {
                device
                    || cn
                        .strip_prefix(acorn_mqtt::SERVICE_CLIENT_PREFIX)
                        .is_some_and(|name| acorn_mqtt::service_client_id(name).is_ok())
            }
        }
    }
}

/// The local certificate authority.
pub struct LocalCa {
    dir: PathBuf,
    role: CaRole,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl core::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LocalCa")
            .field("dir", &self.dir)
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl LocalCa {
    /// Loads the CA from `dir`, or creates one there (P-256, 10 years) when neither
    /// [`CA_CERT_FILE`] nor [`CA_KEY_FILE`] exists. One file without the other is an error.
    pub fn load_or_create(dir: &Path) -> Result<Self, BackendError> {
        Self::load_or_create_as(dir, CaRole::Device)
    }

    /// [`LocalCa::load_or_create`] for a CA of the given role.
    pub fn load_or_create_as(dir: &Path, role: CaRole) -> Result<Self, BackendError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => Self::load_as(dir, role),
            (false, false) => Self::create_as(dir, role),
            (true, false) => Err(BackendError::CaFile {
                path: key_path,
                detail: format!("it is missing but {} exists", cert_path.display()),
            }),
            (false, true) => Err(BackendError::CaFile {
                path: cert_path,
                detail: format!("it is missing but {} exists", key_path.display()),
            }),
        }
    }

    /// Creates a new CA in `dir` (made if missing), overwriting nothing: fails if files exist.
    pub fn create(dir: &Path) -> Result<Self, BackendError> {
        Self::create_as(dir, CaRole::Device)
    }

    /// [`LocalCa::create`] for a CA of the given role.
    pub fn create_as(dir: &Path, role: CaRole) -> Result<Self, BackendError> {
        files::create_dir(dir)?;
        for name in [CA_CERT_FILE, CA_KEY_FILE] {
            let path = dir.join(name);
            if path.exists() {
                return Err(BackendError::CaFile {
                    path,
                    detail: "it already exists; load the CA instead of creating one".into(),
                });
            }
        }
        let key = KeyPair::generate().map_err(|source| BackendError::Certificate {
            what: "generate the CA key",
            source,
        })?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Acorn Pups (local development)");
        dn.push(DnType::CommonName, role.common_name());
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + CA_VALIDITY;
        params.serial_number = Some(random_serial());
        let cert = params
            .self_signed(&key)
            .map_err(|source| BackendError::Certificate {
                what: "self-sign the CA certificate",
                source,
            })?;
        let key_pem = SecretString::from(key.serialize_pem());
        files::write_atomic(
            &dir.join(CA_KEY_FILE),
            key_pem.expose_secret().as_bytes(),
            true,
        )?;
        files::write_atomic(&dir.join(CA_CERT_FILE), cert.pem().as_bytes(), false)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            role,
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads an existing CA from `dir`, checking that the key belongs to the certificate.
    pub fn load(dir: &Path) -> Result<Self, BackendError> {
        Self::load_as(dir, CaRole::Device)
    }

    /// [`LocalCa::load`] for a CA of the given role.
    pub fn load_as(dir: &Path, role: CaRole) -> Result<Self, BackendError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_pem = files::read_text(&cert_path)?;
        // Whoever can read the CA key can mint device certificates; whoever can write it can
        // swap the CA: refuse a key others can touch before reading it.
        files::check_private(&key_path, "CA key")?;
        let key_pem = SecretString::from(files::read_text(&key_path)?);
        let key = KeyPair::from_pem(key_pem.expose_secret()).map_err(|e| BackendError::CaFile {
            path: key_path.clone(),
            detail: format!("not a PEM private key rcgen can use ({e})"),
        })?;
        let cert_der =
            pem_to_der(&cert_pem, "CERTIFICATE").ok_or_else(|| BackendError::CaFile {
                path: cert_path.clone(),
                detail: "no PEM CERTIFICATE block".into(),
            })?;
        let spki = certificate_spki(&cert_der).ok_or_else(|| BackendError::CaFile {
            path: cert_path.clone(),
            detail: "the certificate does not parse as X.509".into(),
        })?;
        if spki != key.subject_public_key_info() {
            return Err(BackendError::CaFile {
                path: key_path,
                detail: format!("this key does not belong to {}", cert_path.display()),
            });
        }
        let issuer =
            Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| BackendError::CaFile {
                path: cert_path.clone(),
                detail: format!("cannot be used as an issuer ({e})"),
            })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            role,
            cert_pem,
            issuer,
        })
    }

    /// Parameters of a client certificate for `cn`, if this CA's role admits the name.
    fn client_params(&self, cn: &str) -> Result<(CertificateParams, OffsetDateTime), BackendError> {
        if !self.role.admits(cn) {
            return Err(BackendError::NameNotAllowed {
                name: cn.chars().take(140).collect(),
                role: self.role,
            });
        }
        Ok(device_params(cn))
    }

    /// What names this CA issues certificates for.
    pub fn role(&self) -> CaRole {
        self.role
    }

    /// The directory holding the CA files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the CA certificate PEM file.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(CA_CERT_FILE)
    }

    /// The CA certificate, PEM.
    pub fn certificate_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Parses `csr_pem`, verifies its self-signature and checks that its subject CN equals
    /// `device_id`.
    pub fn check_csr(device_id: &str, csr_pem: &str) -> Result<CheckedCsr, CsrError> {
        let der = pem_to_der(csr_pem, "CERTIFICATE REQUEST")
            .or_else(|| pem_to_der(csr_pem, "NEW CERTIFICATE REQUEST"))
            .ok_or_else(|| CsrError::Malformed("no PEM CERTIFICATE REQUEST block".into()))?;
        use x509_parser::prelude::FromDer;
        let (_, parsed) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&der)
                .map_err(|e| CsrError::Malformed(format!("DER does not parse: {e}")))?;
        let cn = parsed
            .certification_request_info
            .subject
            .iter_common_name()
            .next()
            .ok_or(CsrError::MissingCommonName)?;
        let cn = cn
            .as_str()
            .map_err(|_| CsrError::Malformed("the subject CN is not a text string".into()))?;
        if cn != device_id {
            return Err(CsrError::CommonNameMismatch {
                expected: device_id.to_owned(),
                found: cn.chars().take(140).collect(),
            });
        }
        // Before the signature check: rcgen reports keys it cannot verify (RSA-1024, P-521)
        // as a bad signature, which would send the user looking in the wrong place.
        check_csr_key(&parsed.certification_request_info.subject_pki)?;
        // Verifies the self-signature and refuses extensions this CA does not handle.
        CertificateSigningRequestParams::from_der(&der.as_slice().into()).map_err(|e| match e {
            rcgen::Error::InvalidCertificationRequestSignature => CsrError::BadSignature,
            rcgen::Error::UnsupportedExtension => CsrError::UnsupportedExtension,
            rcgen::Error::UnsupportedSignatureAlgorithm => {
                CsrError::UnsupportedAlgorithm("not recognised".into())
            }
            other => CsrError::Malformed(other.to_string()),
        })?;
        // The key as the CSR's SubjectPublicKeyInfo states it. rcgen's request takes the key's
        // algorithm, and so an EC key's curve, from the CSR's *signature* algorithm: a P-384
        // key signed with ECDSA-SHA256 (openssl's default) would get a certificate declaring
        // a P-256 key.
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(
            parsed.certification_request_info.subject_pki.raw,
        )
        .map_err(|_| {
            CsrError::UnsupportedAlgorithm("its key algorithm is not recognised".into())
        })?;
        if public_key.algorithm() == &rcgen::PKCS_ED25519 {
            return Err(CsrError::UnsupportedAlgorithm(
                "Ed25519, which AWS IoT Core does not accept".into(),
            ));
        }
        Ok(CheckedCsr {
            device_id: device_id.to_owned(),
            public_key,
        })
    }

    /// Issues a device certificate for the public key of a checked CSR.
    pub fn issue_for_csr(&self, csr: &CheckedCsr) -> Result<IssuedCertificate, BackendError> {
        let (params, not_after) = self.client_params(&csr.device_id)?;
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|source| BackendError::Certificate {
                what: "sign the device certificate",
                source,
            })?;
        Ok(issued(cert, &params, not_after))
    }

    /// Generates a key pair of `key_type` and issues a device certificate for it.
    pub fn issue_with_new_key(
        &self,
        device_id: &str,
        key_type: KeyType,
    ) -> Result<IssuedKeyPair, BackendError> {
        let (params, not_after) = self.client_params(device_id)?;
        let (cert, private_key_pem) = match key_type {
            KeyType::P256 => {
                let (public, private_pem) = crate::keygen::generate_p256()?;
                (params.signed_by(&public, &self.issuer), private_pem)
            }
            KeyType::Rsa2048 => {
                let (public, private_pem) = crate::keygen::generate_rsa_2048()?;
                (params.signed_by(&public, &self.issuer), private_pem)
            }
        };
        let cert = cert.map_err(|source| BackendError::Certificate {
            what: "sign the device certificate",
            source,
        })?;
        Ok(IssuedKeyPair {
            certificate: issued(cert, &params, not_after),
            private_key_pem,
        })
    }

    /// Issues a TLS server certificate (P-256) for `localhost`, `127.0.0.1` and `::1` plus
    /// any extra DNS names or IP addresses in `extra_names`.
    pub fn issue_server_certificate(
        &self,
        extra_names: &[&str],
    ) -> Result<IssuedKeyPair, BackendError> {
        let cert_err = |source| BackendError::Certificate {
            what: "issue the server certificate",
            source,
        };
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".into(), "::1".into()];
        names.extend(extra_names.iter().map(|s| (*s).to_owned()));
        let mut params = CertificateParams::new(names).map_err(cert_err)?;
        let now = OffsetDateTime::now_utc();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "localhost");
        params.distinguished_name = dn;
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + DEVICE_VALIDITY;
        params.serial_number = Some(random_serial());
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let (public, private_key_pem) = crate::keygen::generate_p256()?;
        let cert = params.signed_by(&public, &self.issuer).map_err(cert_err)?;
        let not_after = params.not_after;
        Ok(IssuedKeyPair {
            certificate: issued(cert, &params, not_after),
            private_key_pem,
        })
    }

    /// Whether `cert_pem` is a certificate signed by this CA that stays valid for at least
    /// `min_remaining` more (used to decide whether a stored server certificate can be reused).
    pub fn still_vouches_for(&self, cert_pem: &str, min_remaining: Duration) -> bool {
        let (Some(cert_der), Some(ca_der)) = (
            pem_to_der(cert_pem, "CERTIFICATE"),
            pem_to_der(&self.cert_pem, "CERTIFICATE"),
        ) else {
            return false;
        };
        let (Ok((_, cert)), Ok((_, ca))) = (
            x509_parser::parse_x509_certificate(&cert_der),
            x509_parser::parse_x509_certificate(&ca_der),
        ) else {
            return false;
        };
        let deadline = OffsetDateTime::now_utc() + min_remaining;
        cert.verify_signature(Some(ca.public_key())).is_ok()
            && cert.validity().not_after.timestamp() > deadline.unix_timestamp()
    }

    /// The issue time (thisUpdate) of the next CRL: backdated by the allowed clock skew, and
    /// at least one second after `previous`, so that a broker holding several CRLs of this
    /// CA (mosquitto keeps each one it loaded) always takes the newest.
    pub fn crl_issue_time(previous: Option<OffsetDateTime>) -> OffsetDateTime {
        let backdated = OffsetDateTime::now_utc() - CLOCK_SKEW;
        match previous {
            Some(previous) if previous + Duration::seconds(1) > backdated => {
                previous + Duration::seconds(1)
            }
            _ => backdated,
        }
        .replace_nanosecond(0)
        .unwrap_or(backdated)
    }

    /// Makes a CRL (PEM) listing `revoked`, numbered `crl_number`, issued at `this_update`
    /// (see [`LocalCa::crl_issue_time`]) and valid until `validity` from now.
    pub fn crl_pem(
        &self,
        revoked: &[RevokedSerial],
        crl_number: u64,
        this_update: OffsetDateTime,
        validity: Duration,
    ) -> Result<String, BackendError> {
        let now = OffsetDateTime::now_utc();
        let mut revoked_certs = Vec::with_capacity(revoked.len());
        for r in revoked {
            let bytes = hex::decode(&r.serial_hex).map_err(|_| BackendError::Config(format!(
                "the registry holds a serial number that is not hex ('{}'); the database is damaged",
                r.serial_hex
            )))?;
            revoked_certs.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&bytes),
                revocation_time: r.revoked_at,
                reason_code: None,
                invalidity_date: None,
            });
        }
        let params = CertificateRevocationListParams {
            this_update,
            next_update: now + validity,
            crl_number: SerialNumber::from(crl_number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let crl = params
            .signed_by(&self.issuer)
            .map_err(|source| BackendError::Certificate {
                what: "sign the certificate revocation list",
                source,
            })?;
        crl.pem().map_err(|source| BackendError::Certificate {
            what: "encode the certificate revocation list as PEM",
            source,
        })
    }
}

/// Parameters of a device certificate: CN = device id, end entity, clientAuth, one year.
fn device_params(device_id: &str) -> (CertificateParams, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, device_id);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + DEVICE_VALIDITY;
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    let not_after = params.not_after;
    (params, not_after)
}

fn issued(
    cert: rcgen::Certificate,
    params: &CertificateParams,
    not_after: OffsetDateTime,
) -> IssuedCertificate {
    let der = cert.der().to_vec();
    let serial_hex = params
        .serial_number
        .as_ref()
        .map(|s| hex::encode(s.as_ref()))
        .unwrap_or_default();
    IssuedCertificate {
        pem: cert.pem(),
        certificate_id: certificate_id(&der),
        der,
        serial_hex,
        not_after,
    }
}

/// Refuses key sizes and curves AWS IoT Core does not accept: RSA outside 2048..=4096 bits,
/// elliptic curves other than P-256 and P-384.
fn check_csr_key(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Result<(), CsrError> {
    use x509_parser::oid_registry::{OID_EC_P256, OID_NIST_EC_P384};
    use x509_parser::public_key::PublicKey;
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            let bits = rsa.key_size();
            if !(2048..=4096).contains(&bits) {
                return Err(CsrError::UnsupportedKey(format!("RSA with {bits} bits")));
            }
            Ok(())
        }
        Ok(PublicKey::EC(_)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            match curve {
                Some(oid) if oid == OID_EC_P256 || oid == OID_NIST_EC_P384 => Ok(()),
                Some(oid) => Err(CsrError::UnsupportedKey(format!(
                    "on the elliptic curve {oid}"
                ))),
                None => Err(CsrError::UnsupportedKey(
                    "on an unnamed elliptic curve".into(),
                )),
            }
        }
        // Other algorithms (Ed25519, ...) are judged after the signature check.
        _ => Ok(()),
    }
}

/// SHA-256 of a certificate's DER, lowercase hex: the AWS IoT certificate id.
pub fn certificate_id(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// A random positive 128-bit serial number whose first byte is never zero, so its DER
/// encoding is always 16 bytes.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

/// The DER content of the first PEM block labelled `label` in `text`.
pub(crate) fn pem_to_der(text: &str, label: &str) -> Option<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(text.as_bytes())
        .map_while(Result::ok)
        .find(|pem| pem.label == label)
        .map(|pem| pem.contents)
}

/// Whether the certificate in `cert_pem` names every one of `names` in its subjectAltName
/// (DNS names compared without case, IP addresses by value).
pub(crate) fn names_all(cert_pem: &str, names: &[&str]) -> bool {
    use x509_parser::extensions::GeneralName;
    let Some(der) = pem_to_der(cert_pem, "CERTIFICATE") else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
        return false;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return names.is_empty();
    };
    let listed = &san.value.general_names;
    names
        .iter()
        .all(|name| match name.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(ip)) => listed
                .iter()
                .any(|g| matches!(g, GeneralName::IPAddress(b) if *b == ip.octets().as_slice())),
            Ok(std::net::IpAddr::V6(ip)) => listed
                .iter()
                .any(|g| matches!(g, GeneralName::IPAddress(b) if *b == ip.octets().as_slice())),
            Err(_) => listed
                .iter()
                .any(|g| matches!(g, GeneralName::DNSName(d) if d.eq_ignore_ascii_case(name))),
        })
}

/// The SubjectPublicKeyInfo DER of a certificate.
fn certificate_spki(der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.tbs_certificate.subject_pki.raw.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crl_issue_times_only_grow_and_are_backdated() {
        let first = LocalCa::crl_issue_time(None);
        assert!(first < OffsetDateTime::now_utc() - Duration::minutes(4));
        let mut previous = first;
        for _ in 0..5 {
            let next = LocalCa::crl_issue_time(Some(previous));
            assert!(
                next >= previous + Duration::seconds(1),
                "{next} after {previous}"
            );
            previous = next;
        }
    }

    #[test]
    fn the_server_certificate_names_the_extra_addresses_and_names_all_sees_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = LocalCa::load_or_create(dir.path()).expect("CA");
        let plain = ca.issue_server_certificate(&[]).expect("server");
        let lan = ca
            .issue_server_certificate(&["192.168.1.10", "pc.lan"])
            .expect("server");
        let (plain, lan) = (&plain.certificate.pem, &lan.certificate.pem);
        assert!(names_all(plain, &["localhost", "127.0.0.1", "::1"]));
        assert!(!names_all(plain, &["192.168.1.10"]));
        assert!(names_all(lan, &["192.168.1.10", "PC.lan", "localhost"]));
        assert!(!names_all(lan, &["192.168.1.11"]));
        assert!(!names_all("not a certificate", &[]));
    }

    #[test]
    fn serials_are_positive_16_bytes() {
        for _ in 0..100 {
            let s = random_serial();
            assert_eq!(s.len(), 16);
            assert!(s.as_ref()[0] & 0x80 == 0 && s.as_ref()[0] != 0);
        }
    }
}
