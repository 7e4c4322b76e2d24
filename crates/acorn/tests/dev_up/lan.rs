//! `acorn dev up --lan-address`: the device listener and the claim endpoint move to the given
//! address (here 127.0.0.2, a second loopback address standing for a LAN address, so traffic
//! stays on this machine), the server certificate names it, devices get it as their endpoint,
//! and everything else stays on 127.0.0.1.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use super::attack::Stack;
use super::devstack::{acorn, run_bounded, text};

const LAN: &str = "127.0.0.2";

fn listens(ip: &str, port: u16) -> bool {
    let ip: Ipv4Addr = ip.parse().expect("ip");
    TcpStream::connect_timeout(&SocketAddr::from((ip, port)), Duration::from_secs(2)).is_ok()
}

/// `acorn device ping` of `image` at `LAN:port` through `transport`: its output, on success.
fn ping(stack: &Stack, image: &Path, transport: &str) -> String {
    let mut cmd = acorn();
    cmd.args(["device", "ping", "--transport", transport, "--image"])
        .arg(image)
        .arg("--broker")
        .arg(format!("{LAN}:{}", stack.device_port))
        .arg("--ca")
        .arg(&stack.ca);
    let out = run_bounded(cmd);
    assert!(out.status.success(), "ping ({transport}): {}", text(&out));
    text(&out)
}

#[test]
fn a_lan_address_moves_the_device_and_claim_listeners_and_nothing_else() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // A first run without it: its server certificate does not name the LAN address, so the
    // second run must issue a new one.
    drop(Stack::start(tmp.path(), &[], &[]));
    let mut stack = Stack::start(tmp.path(), &["--lan-address", LAN], &[]);
    let broker = stack.up.line_starting("broker:");
    assert!(broker.contains(&format!("mqtts://{LAN}:")), "{broker}");
    let claim = stack.up.line_starting("claim:");
    assert!(claim.contains(&format!("mqtts://{LAN}:")), "{claim}");
    let claim_port = stack.up.port("claim:");
    // The firmware is built in its own directory: the CA's path in the hint is absolute.
    let hint = stack.up.line_starting("ACORN_DEV_CA=");
    let ca_path = hint
        .trim_start()
        .strip_prefix("ACORN_DEV_CA=")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no CA path in {hint}"));
    assert!(Path::new(ca_path).is_absolute(), "{hint}");
    assert!(Path::new(ca_path).is_file(), "{hint}");

    // Devices and claims on the LAN address only; the API and services on 127.0.0.1 only.
    assert!(listens(LAN, stack.device_port));
    assert!(
        !listens("127.0.0.1", stack.device_port),
        "device listener on 127.0.0.1"
    );
    assert!(listens(LAN, claim_port));
    assert!(
        !listens("127.0.0.1", claim_port),
        "claim listener on 127.0.0.1"
    );
    assert!(listens("127.0.0.1", stack.service_port));
    assert!(
        !listens(LAN, stack.service_port),
        "service listener on the LAN"
    );
    assert!(
        stack.backend.starts_with("http://127.0.0.1:"),
        "{}",
        stack.backend
    );
    let backend_port: u16 = stack.backend.rsplit(':').next().unwrap().parse().unwrap();
    assert!(!listens(LAN, backend_port), "registration API on the LAN");

    // A device registered now is handed the LAN address, and both transports (the chip's
    // verifier and rustls) accept the broker's certificate for it.
    let image = stack.register("lan-1", &[]);
    let endpoint = stack.work.join("lan-1.endpoint");
    let mut get = acorn();
    get.args([
        "nvs",
        "get",
        "--namespace",
        "mqtt_certs",
        "--key",
        "iot_endpoint",
    ])
    .arg(&image)
    .arg("--out")
    .arg(&endpoint);
    let out = run_bounded(get);
    assert!(out.status.success(), "{}", text(&out));
    let stored = std::fs::read_to_string(&endpoint).expect("endpoint");
    assert_eq!(stored.trim_end_matches('\0'), LAN);
    let embedded = ping(&stack, &image, "embedded");
    assert!(embedded.contains("TLSv1_3"), "{embedded}");
    ping(&stack, &image, "rustls");
}

#[test]
fn dev_up_refuses_every_interface_and_non_addresses() {
    for (value, words) in [
        ("0.0.0.0", "every interface"),
        ("224.0.0.1", "multicast"),
        ("pc.lan", "not an IPv4 address"),
    ] {
        let mut cmd = acorn();
        cmd.args(["dev", "up", "--lan-address", value]);
        let out = run_bounded(cmd);
        assert_eq!(out.status.code(), Some(2), "{value}: {}", text(&out));
        assert!(text(&out).contains(words), "{value}: {}", text(&out));
    }
}
