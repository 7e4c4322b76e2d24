//! The mosquitto launcher itself: reload keeps serving, stop frees the port, bad files fail
//! start-up with mosquitto's own message.

use acorn_test_support::mqtt as common;

use std::time::Duration;

use acorn_devstack::broker::{Broker, BrokerConfig, BrokerError};
use acorn_transport::{ping, PingOptions};
use common::{Env, Validity};

#[tokio::test]
async fn reload_keeps_serving_and_stop_frees_the_port() {
    let env = Env::start();
    assert!(env.broker.is_running());
    let conf = std::fs::read_to_string(env.broker.conf_path()).unwrap();
    assert!(conf.contains("require_certificate true"));
    env.broker.reload().unwrap();
    // Bounded wait for mosquitto to log the reload.
    let deadline = std::time::Instant::now() + common::WAIT;
    while !env.broker.log().contains("Reloading config") {
        assert!(std::time::Instant::now() < deadline, "{}", env.broker.log());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let options = PingOptions::new(
        env.target(),
        env.ca.device("device-a", Validity::Valid),
        env.roots(),
        "device-a",
        "1",
    );
    ping(&options).await.unwrap_or_else(|f| panic!("{f}"));
    let port = env.broker.port();
    let Env { dir, broker, .. } = env;
    broker.stop().unwrap();
    drop(dir);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn a_missing_key_file_fails_start_up_with_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let ca = common::Ca::new("CA");
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    let (cert, _) = ca.leaf("broker", &["localhost"], Validity::Valid);
    std::fs::write(dir.path().join("server.pem"), cert).unwrap();
    let config = BrokerConfig::new(
        dir.path(),
        dir.path().join("ca.pem"),
        dir.path().join("server.pem"),
        dir.path().join("missing.key"),
    );
    match Broker::start(config) {
        Err(BrokerError::Exited { log_tail, .. }) => {
            assert!(log_tail.contains("Error"), "{log_tail}")
        }
        other => panic!("expected Exited, got {other:?}"),
    }
}
