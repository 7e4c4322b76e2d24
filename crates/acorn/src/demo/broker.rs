//! The demo's embedded MQTT broker: rumqttd on 127.0.0.1 with TLS that requires a client
//! certificate and verifies it against the local CA (rumqttd's `verify-client-cert`).

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Starts rumqttd on `127.0.0.1:port` in its own thread, with the server certificate and key
/// and `ca` as the only root for client certificates; returns once the port accepts TCP
/// connections (bounded by `timeout`). The broker runs until the process exits.
pub fn start(port: u16, ca: &Path, cert: &Path, key: &Path, timeout: Duration) -> Result<()> {
    let text = |p: &Path| -> Result<String> {
        p.to_str()
            .map(str::to_owned)
            .with_context(|| format!("path {} is not UTF-8", p.display()))
    };
    let config = serde_json::json!({
        "id": 0,
        "router": {
            "max_connections": 1000,
            "max_outgoing_packet_count": 200,
            "max_segment_size": 10_485_760,
            "max_segment_count": 10,
        },
        "v4": {
            "1": {
                "name": "acorn-demo-mtls",
                "listen": format!("127.0.0.1:{port}"),
                "next_connection_delay_ms": 1,
                "tls": { "capath": text(ca)?, "certpath": text(cert)?, "keypath": text(key)? },
                "connections": {
                    "connection_timeout_ms": 10_000,
                    "max_payload_size": 131_072,
                    "max_inflight_count": 100,
                    "dynamic_filters": true,
                },
            },
        },
    });
    let config: rumqttd::Config =
        serde_json::from_value(config).context("rumqttd configuration")?;
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                eprintln!("error: the embedded MQTT broker stopped: {e}");
            }
        })
        .context("cannot start the broker thread")?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("the embedded MQTT broker did not listen on {addr} within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
