//! HTTPS for the API: a rustls acceptor built from the data directory's server certificate,
//! and an accept loop that serves the axum router over TLS (axum's own `serve` is plain TCP).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::error::BackendError;
use crate::files;

/// Longest time a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
    let key_text = crate::secret::Secret::new(files::read_text(key)?);
    let key_der = PrivateKeyDer::from_pem_slice(key_text.expose().as_bytes())
        .map_err(|e| bad(key, format!("no PEM private key ({e})")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| BackendError::Config(format!("TLS protocol versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            bad(
                cert,
                format!("rustls refuses the certificate and key ({e})"),
            )
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts TLS connections on `listener` and serves `app` on each until `stop` fires (or its
/// sender is dropped); then stops accepting and ends the open connections.
pub(crate) async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
    mut stop: oneshot::Receiver<()>,
) -> std::io::Result<()> {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            // Reap finished connection tasks so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let app = app.clone();
                connections.spawn(async move {
                    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let service = TowerToHyperService::new(app);
                    if let Err(e) = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await
                    {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    connections.shutdown().await;
    Ok(())
}
