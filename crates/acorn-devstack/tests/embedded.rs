//! The embedded broker over real mutual TLS, with rumqttc clients (acorn-transport's session
//! settings) and certificates made at test time: routing with wildcards, the per-device
//! rules (checked by what subscribers actually receive), persistent sessions, last wills,
//! takeover, keepalive, and the bounds.

use std::time::Duration;

use acorn_devstack::embedded::{EmbeddedBroker, EmbeddedConfig, Limits};
use acorn_test_support::mqtt::{Ca, Client, Validity, WAIT};
use acorn_transport::rumqttc::{self, ConnectReturnCode, Event, Packet, QoS, SubscribeReasonCode};
use acorn_transport::{BrokerTarget, SessionOptions, TrustRoots};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

/// A device CA, a service CA, and a broker with both listeners.
struct Fixture {
    ca: Ca,
    service_ca: Ca,
    broker: EmbeddedBroker,
}

impl Fixture {
    async fn start() -> Self {
        Self::with(Limits::default()).await
    }

    async fn with(limits: Limits) -> Self {
        let ca = Ca::new("Acorn Test CA");
        let service_ca = Ca::new("Acorn Test Service CA");
        let (cert, key) = ca.leaf("broker", &["localhost"], Validity::Valid);
        let der = |pem: &str| CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let config = EmbeddedConfig {
            address: std::net::Ipv4Addr::LOCALHOST.into(),
            device_address: None,
            device_port: 0,
            service_port: 0,
            server_chain: vec![der(&cert)],
            server_key: PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            device_roots: vec![der(&ca.pem())],
            device_crls: Vec::new(),
            service_roots: Some(vec![der(&service_ca.pem())]),
            local_provisioning: None,
            claim_port: 0,
            claim_roots: None,
            device_listener: true,
            limits,
        };
        let broker = EmbeddedBroker::start(config).await.unwrap();
        Self {
            ca,
            service_ca,
            broker,
        }
    }

    fn roots(&self) -> TrustRoots {
        TrustRoots::from_pem(&self.ca.pem(), "test CA").unwrap()
    }

    /// A device `cn` (certificate from the device CA) on the device listener, clean session.
    fn device(&self, cn: &str) -> SessionOptions {
        let mut options = SessionOptions::new(
            BrokerTarget::new("localhost", self.broker.device_port()),
            self.ca.device(cn, Validity::Valid),
            self.roots(),
            cn,
            "1.0.0-test",
        );
        options.clean_session = true;
        options
    }

    /// A service identity `cn` (certificate from the service CA) on the service listener.
    fn service(&self, cn: &str) -> SessionOptions {
        let mut options = SessionOptions::new(
            BrokerTarget::new("localhost", self.broker.service_port().unwrap()),
            self.service_ca.device(cn, Validity::Valid),
            self.roots(),
            cn,
            "1.0.0-test",
        );
        options.clean_session = true;
        options
    }

    /// A connected service client subscribed to `filters`.
    async fn watcher(&self, filters: &[&str]) -> Client {
        let mut client = Client::start(&self.service("service:watcher")).await;
        for filter in filters {
            client.subscribe(filter).await;
        }
        client
    }
}

/// Subscribes and returns the SUBACK's return code.
async fn subscribe(client: &mut Client, filter: &str) -> SubscribeReasonCode {
    client
        .client
        .subscribe(filter, QoS::AtLeastOnce)
        .await
        .unwrap();
    match client.wait_for(|p| matches!(p, Packet::SubAck(_))).await {
        Packet::SubAck(ack) => ack.return_codes[0],
        _ => unreachable!(),
    }
}

/// Waits for the next PUBLISH and returns (topic, payload).
async fn next(client: &mut Client) -> (String, Vec<u8>) {
    let p = client.next_publish().await;
    (p.topic, p.payload.to_vec())
}

/// Asserts that no PUBLISH arrives within a short while.
async fn nothing_more(client: &mut Client) {
    let wait = tokio::time::timeout(Duration::from_millis(300), client.next_publish()).await;
    assert!(wait.is_err(), "unexpected message: {:?}", wait.ok());
}

/// How a connection attempt ends: its CONNACK, or the error that came first.
async fn outcome(client: &mut Client) -> Result<rumqttc::ConnAck, rumqttc::ConnectionError> {
    loop {
        let event = tokio::time::timeout(WAIT, client.events.recv())
            .await
            .expect("no CONNACK and no error in time")
            .expect("event loop ended");
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => return Ok(ack),
            Ok(_) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Waits for the CONNACK and returns it (the connection must not fail first).
async fn connack(client: &mut Client) -> rumqttc::ConnAck {
    match client.wait_for(|p| matches!(p, Packet::ConnAck(_))).await {
        Packet::ConnAck(ack) => ack,
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn routes_between_devices_and_services_with_wildcards_and_both_qos() {
    let f = Fixture::start().await;
    let mut watcher = f
        .watcher(&["acorn-pups/button-press/+", "acorn-pups/status/#"])
        .await;
    let mut dev = Client::start(&f.device("dev-1")).await;
    dev.subscribe("acorn-pups/settings/dev-1").await;

    dev.publish("acorn-pups/button-press/dev-1", b"press").await;
    assert_eq!(
        next(&mut watcher).await,
        ("acorn-pups/button-press/dev-1".into(), b"press".to_vec())
    );
    dev.client
        .publish("acorn-pups/status/dev-1", QoS::AtMostOnce, false, "q0")
        .await
        .unwrap();
    let p = watcher.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("acorn-pups/status/dev-1", &b"q0"[..])
    );
    assert_eq!(
        p.qos,
        QoS::AtMostOnce,
        "never above the QoS it was published with"
    );

    let mut cloud = Client::start(&f.service("service:cloud")).await;
    cloud.publish("acorn-pups/settings/dev-1", b"{}").await;
    let p = dev.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("acorn-pups/settings/dev-1", &b"{}"[..])
    );
    assert_eq!(p.qos, QoS::AtLeastOnce);
    // The watcher's filters do not match settings.
    nothing_more(&mut watcher).await;
}

#[tokio::test]
async fn a_device_reaches_its_own_topics_only() {
    let f = Fixture::start().await;
    let mut watcher = f.watcher(&["acorn-pups/#"]).await;
    let mut dev1 = Client::start(&f.device("dev-1")).await;
    let mut dev2 = Client::start(&f.device("dev-2")).await;
    dev1.subscribe("acorn-pups/commands/dev-1").await;
    assert_eq!(
        subscribe(&mut dev2, "acorn-pups/commands/dev-2").await,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );
    // Another device's topics, wildcards and topics a device only publishes are refused.
    for filter in [
        "acorn-pups/commands/dev-1",
        "acorn-pups/commands/+",
        "acorn-pups/#",
        "#",
        "acorn-pups/button-press/dev-2",
    ] {
        assert_eq!(
            subscribe(&mut dev2, filter).await,
            SubscribeReasonCode::Failure,
            "{filter}"
        );
    }

    // dev-2 writes to dev-1's topics: acknowledged (MQTT 3.1.1 has no refusal) and dropped.
    dev2.publish("acorn-pups/button-press/dev-1", b"forged")
        .await;
    dev2.publish("acorn-pups/status/dev-1", b"forged").await;
    dev2.publish("acorn-pups/commands/dev-1", b"forged").await;
    dev2.publish(
        "acorn-pups/settings/dev-2",
        b"own settings are not written by devices",
    )
    .await;
    dev2.publish("acorn-pups/button-press/dev-2", b"marker")
        .await;
    // The first thing anyone receives is dev-2's own press.
    assert_eq!(
        next(&mut watcher).await,
        ("acorn-pups/button-press/dev-2".into(), b"marker".to_vec())
    );
    nothing_more(&mut dev1).await;

    // A command for dev-1 reaches dev-1 only.
    let mut cloud = Client::start(&f.service("service:cloud")).await;
    cloud
        .publish("acorn-pups/commands/dev-1", b"for dev-1")
        .await;
    cloud
        .publish("acorn-pups/commands/dev-2", b"for dev-2")
        .await;
    assert_eq!(next(&mut dev1).await.1, b"for dev-1");
    assert_eq!(next(&mut dev2).await.1, b"for dev-2");
    nothing_more(&mut dev1).await;
    nothing_more(&mut dev2).await;
}

#[tokio::test]
async fn the_client_id_is_the_certificate_name() {
    let f = Fixture::start().await;
    let mut watcher = f.watcher(&["acorn-pups/button-press/+"]).await;
    // The CONNECT says "dev-2", the certificate says "dev-1": the broker goes by the
    // certificate, so this client has dev-1's rights, not dev-2's.
    let mut options = f.device("dev-1");
    options.client_id = "dev-2".into();
    let mut dev = Client::start(&options).await;
    dev.publish("acorn-pups/button-press/dev-2", b"as dev-2")
        .await;
    dev.publish("acorn-pups/button-press/dev-1", b"as dev-1")
        .await;
    assert_eq!(
        next(&mut watcher).await,
        ("acorn-pups/button-press/dev-1".into(), b"as dev-1".to_vec())
    );
}

#[tokio::test]
async fn each_listener_trusts_its_own_ca_and_names() {
    let f = Fixture::start().await;
    // A device certificate on the service listener, a service certificate on the device
    // listener, and one from a CA the broker does not know: refused in the TLS handshake.
    let stranger = Ca::new("Some Other CA");
    let mut wrong = vec![
        f.service("dev-1"),
        f.device("service:cloud"),
        f.device("dev-1"),
    ];
    wrong[0].identity = f.ca.device("dev-1", Validity::Valid);
    wrong[1].identity = f.service_ca.device("service:cloud", Validity::Valid);
    wrong[2].identity = stranger.device("dev-1", Validity::Valid);
    for options in &wrong {
        let mut client = Client::spawn(options);
        match outcome(&mut client).await {
            Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                panic!(
                    "{}: refused at CONNECT ({code:?}), not in TLS",
                    options.client_id
                )
            }
            Err(_) => {}
            Ok(ack) => panic!("{}: accepted: {ack:?}", options.client_id),
        }
    }
    // A service-CA certificate whose name is not a service identity, and a device-CA one
    // whose name is not a device id, are refused at CONNECT.
    let mut options = f.service("dev-1");
    options.client_id = "dev-1".into();
    let mut named_like_a_device = Client::spawn(&options);
    let mut bad_name = Client::spawn(&f.device("a/b"));
    for client in [&mut named_like_a_device, &mut bad_name] {
        match outcome(client).await {
            Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                assert_eq!(code, ConnectReturnCode::NotAuthorized)
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_certificate_in_an_installed_crl_is_refused_from_then_on() {
    let f = Fixture::start().await;
    let mut options = f.device("dev-1");
    options.identity = f.ca.device_with_serial("dev-1", 41);
    let mut before = Client::spawn(&options);
    assert!(
        outcome(&mut before).await.is_ok(),
        "accepted before the CRL"
    );
    let crls = CertificateRevocationListDer::pem_slice_iter(f.ca.crl(&[41]).as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    f.broker.crl_installer().install(crls).unwrap();
    let mut revoked = Client::spawn(&options);
    match outcome(&mut revoked).await {
        Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
            panic!("refused at CONNECT ({code:?}), not in TLS")
        }
        Err(_) => {}
        Ok(ack) => panic!("a revoked certificate was accepted: {ack:?}"),
    }
    // Another certificate of the same CA still connects.
    let mut other = f.device("dev-2");
    other.identity = f.ca.device_with_serial("dev-2", 42);
    assert!(outcome(&mut Client::spawn(&other)).await.is_ok());
}

#[tokio::test]
async fn an_open_connection_is_closed_when_a_crl_revokes_its_certificate() {
    let f = Fixture::start().await;
    let mut watcher = f.watcher(&["acorn-pups/status/+"]).await;
    let mut revoked_options = f.device("dev-1");
    revoked_options.identity = f.ca.device_with_serial("dev-1", 41);
    let mut revoked = Client::start(&revoked_options).await;
    let mut other_options = f.device("dev-2");
    other_options.identity = f.ca.device_with_serial("dev-2", 42);
    let mut other = Client::start(&other_options).await;

    let crls = CertificateRevocationListDer::pem_slice_iter(f.ca.crl(&[41]).as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    f.broker.crl_installer().install(crls).unwrap();
    // dev-1's connection ends at once (its last will tells the fleet), without waiting for
    // its next handshake; dev-2 goes on.
    let _ = revoked.wait_error().await;
    let (topic, payload) = next(&mut watcher).await;
    assert_eq!(topic, "acorn-pups/status/dev-1");
    assert_eq!(payload, revoked_options.will_payload);
    other
        .publish("acorn-pups/status/dev-2", b"still here")
        .await;
    assert_eq!(next(&mut watcher).await.1, b"still here");
    nothing_more(&mut watcher).await;
}

#[tokio::test]
async fn a_persistent_session_keeps_subscriptions_and_qos1_messages_across_a_reconnect() {
    let f = Fixture::start().await;
    let mut options = f.device("dev-1");
    options.clean_session = false;
    let mut dev = Client::start(&options).await;
    dev.subscribe("acorn-pups/settings/dev-1").await;
    dev.client.disconnect().await.unwrap();
    let _ = dev.wait_error().await;

    let mut cloud = Client::start(&f.service("service:cloud")).await;
    cloud.publish("acorn-pups/settings/dev-1", b"one").await;
    cloud
        .client
        .publish(
            "acorn-pups/settings/dev-1",
            QoS::AtMostOnce,
            false,
            "qos 0: not kept",
        )
        .await
        .unwrap();
    cloud.publish("acorn-pups/settings/dev-1", b"two").await;

    // Back, without subscribing again: the session is there and the QoS 1 messages arrive
    // in order.
    let mut dev = Client::spawn(&options);
    assert!(connack(&mut dev).await.session_present);
    assert_eq!(next(&mut dev).await.1, b"one");
    assert_eq!(next(&mut dev).await.1, b"two");
    nothing_more(&mut dev).await;
    // The subscription is still in place for new messages too.
    cloud.publish("acorn-pups/settings/dev-1", b"three").await;
    assert_eq!(next(&mut dev).await.1, b"three");

    // A clean session starts from nothing.
    dev.client.disconnect().await.unwrap();
    let _ = dev.wait_error().await;
    options.clean_session = true;
    let mut dev = Client::spawn(&options);
    assert!(!connack(&mut dev).await.session_present);
    cloud.publish("acorn-pups/settings/dev-1", b"four").await;
    nothing_more(&mut dev).await;
}

#[tokio::test]
async fn the_last_will_is_published_when_a_connection_drops_not_on_disconnect() {
    let f = Fixture::start().await;
    let mut watcher = f.watcher(&["acorn-pups/status/+"]).await;
    // A clean DISCONNECT: no will.
    let mut polite = Client::start(&f.device("dev-2")).await;
    polite.client.disconnect().await.unwrap();
    let _ = polite.wait_error().await;
    // The connection just ends (the event loop and its socket are dropped): the will.
    let options = f.device("dev-1");
    let dropped = Client::start(&options).await;
    dropped.task.abort();
    let (topic, payload) = next(&mut watcher).await;
    assert_eq!(topic, "acorn-pups/status/dev-1");
    assert_eq!(payload, options.will_payload);
    nothing_more(&mut watcher).await;
}

#[tokio::test]
async fn a_silent_client_is_disconnected_after_one_and_a_half_keepalives() {
    let f = Fixture::start().await;
    let mut watcher = f.watcher(&["acorn-pups/status/+"]).await;
    let mut options = f.device("dev-1");
    options.keep_alive = Duration::from_secs(1);
    let (_client, mut eventloop) = options.connect().unwrap();
    loop {
        if let Event::Incoming(Packet::ConnAck(_)) = eventloop.poll().await.unwrap() {
            break;
        }
    }
    // The event loop is no longer polled, so no PINGREQ is sent.
    let started = tokio::time::Instant::now();
    let (topic, payload) = next(&mut watcher).await;
    assert_eq!(topic, "acorn-pups/status/dev-1");
    assert_eq!(payload, options.will_payload);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1000) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
}

#[tokio::test]
async fn a_second_connection_with_the_same_name_takes_the_session_over() {
    let f = Fixture::start().await;
    let mut watcher = f
        .watcher(&["acorn-pups/status/+", "acorn-pups/button-press/+"])
        .await;
    let options = f.device("dev-1");
    let mut first = Client::start(&options).await;
    // The same certificate name, whatever the client id says.
    let mut second_options = f.device("dev-1");
    second_options.client_id = "another-id".into();
    let mut second = Client::start(&second_options).await;
    // The first is closed and its will published; the second works.
    let _ = first.wait_error().await;
    let (topic, payload) = next(&mut watcher).await;
    assert_eq!(topic, "acorn-pups/status/dev-1");
    assert_eq!(payload, options.will_payload);
    second
        .publish("acorn-pups/button-press/dev-1", b"still here")
        .await;
    assert_eq!(next(&mut watcher).await.1, b"still here");
}

#[tokio::test]
async fn packets_over_256_kb_end_the_connection() {
    let f = Fixture::start().await;
    let mut dev = Client::start(&f.device("dev-1")).await;
    dev.subscribe("acorn-pups/settings/dev-1").await;
    let options = f.service("service:cloud");
    let mut mqtt = options.mqtt_options().unwrap();
    mqtt.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(mqtt, 8);
    eventloop.set_network_options(options.network_options());
    let mut cloud = Client::run(client, eventloop);
    connack(&mut cloud).await;
    // 200 KB passes (AWS's 128 KB payload limit is the publisher's business).
    cloud
        .publish("acorn-pups/settings/dev-1", &vec![b'a'; 200 * 1024])
        .await;
    assert_eq!(next(&mut dev).await.1.len(), 200 * 1024);
    cloud
        .client
        .publish(
            "acorn-pups/settings/dev-1",
            QoS::AtLeastOnce,
            false,
            vec![b'b'; 300 * 1024],
        )
        .await
        .unwrap();
    let _ = cloud.wait_error().await;
    nothing_more(&mut dev).await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed() {
    let f = Fixture::with(Limits {
        max_connections: 2,
        ..Limits::default()
    })
    .await;
    let one = Client::start(&f.device("dev-1")).await;
    let _two = Client::start(&f.device("dev-2")).await;
    let mut three = Client::spawn(&f.device("dev-3"));
    assert!(outcome(&mut three).await.is_err());
    // A place frees up when a connection ends.
    one.task.abort();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut again = Client::spawn(&f.device("dev-3"));
        match outcome(&mut again).await {
            Ok(_) => break,
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "{e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
