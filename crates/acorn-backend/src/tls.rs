//! HTTPS for the API: a rustls acceptor built from the data directory's server certificate
//! (the accept loop is [`crate::serve`]).

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::ExposeSecret;
use tokio_rustls::TlsAcceptor;

use crate::error::BackendError;
use crate::files;

/// A TLS acceptor (TLS 1.2/1.3, ring) with the certificate chain `cert` (the server
/// certificate, then the CA) and the key at `key`.
pub(crate) fn acceptor(cert: &Path, ca: &Path, key: &Path) -> Result<TlsAcceptor, BackendError> {
    let bad = |path: &Path, detail: String| BackendError::CaFile {
        path: path.to_path_buf(),
        detail,
    };
    let mut chain = Vec::new();
    for path in [cert, ca] {
        let text = files::read_text(path)?;
        let der = CertificateDer::from_pem_slice(text.as_bytes())
            .map_err(|e| bad(path, format!("no PEM certificate ({e})")))?;
        chain.push(der);
    }
    let key_text = secrecy::SecretString::from(files::read_text(key)?);
    // Both copies of the key (PEM text, DER) are wiped on drop; rustls keeps ring's key.
    let key_der = zeroize::Zeroizing::new(
        PrivateKeyDer::from_pem_slice(key_text.expose_secret().as_bytes())
            .map_err(|e| bad(key, format!("no PEM private key ({e})")))?,
    );
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| bad(key, format!("rustls cannot use this key ({e})")))?;
    let certified = rustls::sign::CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|e| {
        bad(
            key,
            format!("the key does not belong to {} ({e})", cert.display()),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| BackendError::Config(format!("TLS protocol versions: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    Ok(TlsAcceptor::from(Arc::new(config)))
}
