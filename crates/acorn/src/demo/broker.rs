//! The demo's embedded MQTT broker: rumqttd on 127.0.0.1 with TLS that requires a client
//! certificate (rumqttd's `verify-client-cert`), with two listeners as in `acorn dev up`: the
//! device listener trusts the device CA, the service listener only the service CA.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The two listeners: each a port and the one CA its clients' certificates must chain to.
pub struct Listeners<'a> {
    /// Device listener port.
    pub device_port: u16,
    /// The device CA.
    pub device_ca: &'a Path,
    /// Service listener port.
    pub service_port: u16,
    /// The service CA.
    pub service_ca: &'a Path,
}

/// Starts rumqttd on 127.0.0.1 in its own thread, with the server certificate and key and
/// the two listeners; returns once both ports accept TCP connections (bounded by `timeout`).
/// The broker runs until the process exits.
pub fn start(listeners: &Listeners<'_>, cert: &Path, key: &Path, timeout: Duration) -> Result<()> {
    let text = |p: &Path| -> Result<String> {
        p.to_str()
            .map(str::to_owned)
            .with_context(|| format!("path {} is not UTF-8", p.display()))
    };
    let listener = |name: &str, port: u16, ca: &Path| -> Result<serde_json::Value> {
        Ok(serde_json::json!({
            "name": name,
            "listen": format!("127.0.0.1:{port}"),
            "next_connection_delay_ms": 1,
            "tls": { "capath": text(ca)?, "certpath": text(cert)?, "keypath": text(key)? },
            "connections": {
                "connection_timeout_ms": 10_000,
                "max_payload_size": 131_072,
                "max_inflight_count": 100,
                "dynamic_filters": true,
            },
        }))
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
            "1": listener("acorn-demo-devices", listeners.device_port, listeners.device_ca)?,
            "2": listener("acorn-demo-services", listeners.service_port, listeners.service_ca)?,
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
    let deadline = Instant::now() + timeout;
    for port in [listeners.device_port, listeners.service_port] {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() >= deadline {
                bail!("the embedded MQTT broker did not listen on {addr} within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}
