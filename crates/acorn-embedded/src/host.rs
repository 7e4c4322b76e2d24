//! The same transport on Linux (feature `tokio`): tokio TCP through `embedded-io-adapters`, a
//! system clock, and ready-made calls for the CLI.

extern crate std;

use std::string::ToString;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use embedded_io_adapters::tokio_1::FromTokio;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::diagnosis::{Diagnosis, Step};
use crate::identity::TlsIdentity;
use crate::ping::{PingFailure, PingOptions, PingReport};
use crate::transport::{Clock, Connector};
use crate::verify::TrustAnchors;

/// DNS and TCP with tokio; the halves are adapted with `embedded-io-adapters`.
#[derive(Debug, Default, Clone)]
pub struct TokioConnector;

impl Connector for TokioConnector {
    type Reader<'c> = FromTokio<OwnedReadHalf>;
    type Writer<'c> = FromTokio<OwnedWriteHalf>;

    async fn connect<'c>(
        &'c mut self,
        host: &str,
        port: u16,
    ) -> Result<(Self::Reader<'c>, Self::Writer<'c>), (Step, Diagnosis)> {
        let addrs: std::vec::Vec<_> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| {
                (
                    Step::Dns,
                    Diagnosis::DnsFailure {
                        host: host.to_string(),
                        detail: e.to_string(),
                    },
                )
            })?
            .collect();
        let address = std::format!("{host}:{port}");
        let mut last = Diagnosis::DnsFailure {
            host: host.to_string(),
            detail: "no address".to_string(),
        };
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    let (r, w) = stream.into_split();
                    return Ok((FromTokio::new(r), FromTokio::new(w)));
                }
                Err(e) => {
                    last = match e.kind() {
                        std::io::ErrorKind::ConnectionRefused => Diagnosis::ConnectionRefused {
                            address: address.clone(),
                        },
                        _ => Diagnosis::NetworkError {
                            detail: e.to_string(),
                        },
                    }
                }
            }
        }
        Err((Step::Tcp, last))
    }
}

/// The system clock: monotonic time since creation, and the wall clock (taken as synced when
/// it reads after 2024).
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    start: Instant,
}

impl SystemClock {
    /// A clock whose monotonic time starts at 0 now.
    pub fn new() -> Self {
        SystemClock {
            start: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn unix_secs(&self) -> Option<u64> {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs())
    }

    fn unix_ms(&self) -> Option<u64> {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| u64::try_from(d.as_millis()).ok())
    }

    async fn sleep_until(&self, at_ms: u64) {
        let at = self.start + std::time::Duration::from_millis(at_ms);
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
    }
}

/// Operating-system randomness (getrandom).
pub use rand_core::OsRng;

/// Pings `options.target` over tokio TCP with the embedded transport (see [`crate::ping::ping`]).
pub async fn ping(
    identity: &TlsIdentity,
    anchors: &TrustAnchors,
    options: &PingOptions,
) -> Result<PingReport, PingFailure> {
    let clock = SystemClock::new();
    crate::ping::ping(
        &mut TokioConnector,
        &clock,
        rand_core::OsRng,
        identity,
        anchors,
        options,
    )
    .await
}
