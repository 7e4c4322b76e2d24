//! TLS 1.3 with embedded-tls: our crypto provider (hardware or OS randomness, the device's
//! P-256 key and certificate, [`ServerVerifier`]), the handshake, and the diagnosis of its
//! failures.
//!
//! Fixed sizes: the record read buffer is [`TLS_READ_BUFFER`] bytes (one full TLS record:
//! 16 KiB of plaintext plus 256 bytes of overhead; servers that ignore max_fragment_length,
//! such as AWS IoT Core, send records that large), the record write buffer
//! [`TLS_WRITE_BUFFER`] bytes (holds the client's handshake flight: Certificate +
//! CertificateVerify + Finished, ~1.2 KB with a P-256 device certificate; longer writes are
//! split into records).

use embedded_io_async::{Read, Write};
use embedded_tls::{
    Aes128GcmSha256, Certificate, CryptoProvider, SignatureScheme, TlsConfig, TlsConnection,
    TlsContext, TlsError,
};
use rand_core::{CryptoRng, RngCore};

use crate::diagnosis::{DiagnoseEmbedded, Diagnosis, Step};
use crate::identity::TlsIdentity;
use crate::verify::{ServerVerifier, TrustAnchors};

/// Bytes of the TLS record read buffer.
pub const TLS_READ_BUFFER: usize = 16_640;
/// Bytes of the TLS record write buffer.
pub const TLS_WRITE_BUFFER: usize = 4_096;

/// ALPN protocol AWS IoT Core wants for MQTT on port 443.
pub const AWS_ALPN: &[u8] = b"x-amzn-mqtt-ca";

/// The one cipher suite offered (mandatory in TLS 1.3; AWS IoT Core and OpenSSL accept it).
pub type CipherSuite = Aes128GcmSha256;

/// The crypto provider handed to embedded-tls for one handshake.
pub struct Provider<'a, R> {
    rng: R,
    identity: &'a TlsIdentity,
    verifier: ServerVerifier<'a>,
    sent_certificate: bool,
}

impl<'a, R: RngCore + CryptoRng> Provider<'a, R> {
    /// A provider for one handshake with `host` at `now_unix` (synced clock).
    pub fn new(
        rng: R,
        identity: &'a TlsIdentity,
        anchors: &'a TrustAnchors,
        host: &str,
        now_unix: u64,
    ) -> Self {
        Provider {
            rng,
            identity,
            verifier: ServerVerifier::new(anchors, now_unix, host),
            sent_certificate: false,
        }
    }

    /// The verifier (to read its failure after a refused handshake).
    pub fn verifier_state(&self) -> &ServerVerifier<'a> {
        &self.verifier
    }
}

impl<'a, R: RngCore + CryptoRng> CryptoProvider for Provider<'a, R> {
    type CipherSuite = CipherSuite;
    type Signature = p256::ecdsa::DerSignature;

    fn rng(&mut self) -> impl embedded_tls::CryptoRngCore {
        &mut self.rng
    }

    fn verifier(
        &mut self,
    ) -> Result<&mut impl embedded_tls::TlsVerifier<Self::CipherSuite>, TlsError> {
        Ok(&mut self.verifier)
    }

    fn signer(
        &mut self,
    ) -> Result<(impl signature::SignerMut<Self::Signature>, SignatureScheme), TlsError> {
        Ok((
            self.identity.signing_key(),
            SignatureScheme::EcdsaSecp256r1Sha256,
        ))
    }

    fn client_cert(&mut self) -> Option<Certificate<impl AsRef<[u8]>>> {
        self.sent_certificate = true;
        Some(Certificate::X509(self.identity.certificate_der()))
    }
}

/// The TLS settings of a connection.
pub fn tls_config<'a>(server_name: &'a str, alpn: Option<&'a [&'a [u8]]>) -> TlsConfig<'a> {
    let config = TlsConfig::new().with_server_name(server_name);
    #[cfg(feature = "rsa")]
    let config = config.enable_rsa_signatures();
    match alpn {
        Some(protocols) => config.with_alpn(protocols),
        None => config,
    }
}

/// Runs the TLS handshake on `tls`. On failure, the diagnosis names our verdict on the
/// broker's certificate (from our verifier) or the broker's verdict on ours (its alert).
pub async fn handshake<'b, S, R>(
    tls: &mut TlsConnection<'b, S, CipherSuite>,
    config: &TlsConfig<'_>,
    provider: &mut Provider<'_, R>,
) -> Result<(), Diagnosis>
where
    S: Read + Write + 'b,
    R: RngCore + CryptoRng,
{
    match tls.open(TlsContext::new(config, &mut *provider)).await {
        Ok(()) => Ok(()),
        Err(err) => Err(match provider.verifier_state().failure() {
            Some(failure) => failure.diagnosis(),
            // Our verifier accepted the CertificateVerify, so a bad signature now is
            // embedded-tls's verdict on the server's Finished (a CertificateVerify it could
            // not even parse stays a bad handshake signature).
            None if matches!(err, TlsError::InvalidSignature)
                && provider.verifier_state().signature_verified() =>
            {
                Diagnosis::TlsFailure(
                    "the broker's Finished does not match the handshake: its TLS is broken or \
                     someone altered the connection"
                        .into(),
                )
            }
            None => match Diagnosis::from_tls(&err, Step::Tls) {
                // The broker hung up while our certificate flight was on its way: it refused
                // the certificate (its alert is lost with the connection).
                Diagnosis::ClosedByBroker { .. } | Diagnosis::NetworkError { .. }
                    if provider.sent_certificate =>
                {
                    Diagnosis::ClientCertificateRejected(
                        crate::diagnosis::ClientCertRejection::Unspecified,
                    )
                }
                other => other,
            },
        }),
    }
}
