//! The HTTP(S) accept loop with bounded clients: a cap on open connections, a deadline for
//! the TLS handshake and for each request's headers, an idle timeout between requests, and
//! a timeout on each request (body read and handler together). axum's own `serve` has none
//! of these, so a slow-loris client could hold the service.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// Limits on what one client may hold. The defaults drop a client that sends no complete
/// request header within 5 s, takes over 30 s for one request, or stays silent for 60 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// Most connections open at once; further clients wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Longest time for the TLS handshake and for a request's header, from the moment the
    /// server waits for it.
    pub header_read_timeout: Duration,
    /// Longest time for one request: reading its body and answering it.
    pub request_timeout: Duration,
    /// A connection with no byte read or written for this long is closed (keep it above
    /// `request_timeout`, so a slow request gets its 408 answer first).
    pub idle_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            header_read_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

impl ServeLimits {
    /// Checks that every limit is usable (non-zero).
    pub fn check(&self) -> Result<(), String> {
        if self.max_connections == 0 {
            return Err("max_connections must be at least 1".into());
        }
        for (name, value) in [
            ("header_read_timeout", self.header_read_timeout),
            ("request_timeout", self.request_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if value.is_zero() {
                return Err(format!("{name} must be longer than zero"));
            }
        }
        Ok(())
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is set) within `limits` until `stop`
/// turns true; then stops accepting, lets requests in flight finish, and returns.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: ServeLimits,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = app.layer(axum::middleware::from_fn_with_state(
        limits.request_timeout,
        crate::api::request_deadline,
    ));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: wait a little, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (app, tls, stop) = (app.clone(), tls.clone(), stop.clone());
        connections.spawn(async move {
            let _permit = permit;
            if let Err(reason) = serve_connection(tcp, tls, app, limits, stop).await {
                tracing::debug!(%peer, %reason, "connection closed");
            }
        });
    }
    // Requests in flight get a moment to finish; BackendHandle::shutdown bounds the wait.
    while connections.join_next().await.is_some() {}
    Ok(())
}

async fn serve_connection(
    tcp: TcpStream,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: ServeLimits,
    stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let _ = tcp.set_nodelay(true);
    match tls {
        None => serve_io(tcp, app, limits, stop).await,
        Some(acceptor) => {
            let tls = tokio::time::timeout(limits.header_read_timeout, acceptor.accept(tcp))
                .await
                .map_err(|_| "TLS handshake timed out".to_owned())?
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
            serve_io(tls, app, limits, stop).await
        }
    }
}

/// Serves HTTP/1.1 on one connection, closing it when idle too long or at shutdown.
async fn serve_io<T>(
    io: T,
    app: Router,
    limits: ServeLimits,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (io, activity) = Watched::new(io);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        let idle_for = activity.idle_for();
        let idle_left = limits.idle_timeout.saturating_sub(idle_for);
        tokio::select! {
            done = conn.as_mut() => return done.map_err(|e| e.to_string()),
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep(idle_left) => {
                if activity.idle_for() >= limits.idle_timeout {
                    return Err(format!("idle for {:?}", limits.idle_timeout));
                }
            }
        }
    }
}

/// When an I/O stream last moved a byte.
#[derive(Clone)]
struct Activity(Arc<std::sync::Mutex<Instant>>);

impl Activity {
    fn touch(&self) {
        if let Ok(mut last) = self.0.lock() {
            *last = Instant::now();
        }
    }

    fn idle_for(&self) -> Duration {
        self.0.lock().map(|last| last.elapsed()).unwrap_or_default()
    }
}

/// An I/O stream that records its last read or write in an [`Activity`].
struct Watched<T> {
    inner: T,
    activity: Activity,
}

impl<T> Watched<T> {
    fn new(inner: T) -> (Self, Activity) {
        let activity = Activity(Arc::new(std::sync::Mutex::new(Instant::now())));
        (
            Self {
                inner,
                activity: activity.clone(),
            },
            activity,
        )
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
