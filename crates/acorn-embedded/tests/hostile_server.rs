//! The chip's TLS client (the embedded transport's ping over loopback TCP) against a broker
//! that breaks TLS 1.3 on purpose: `acorn-tls-peer` does the key exchange honestly, then
//! sends the flight each test scripts. A server that leaves out its Certificate and
//! CertificateVerify was accepted by embedded-tls 0.19 (found by the `tls_server` fuzz
//! target; fixed in the vendored copy, its ACORN-PATCHES.md item 4): anyone answering the
//! device's TCP connection could pose as the broker. The complete flight is the control: it
//! gets through TLS, and the ping fails only at CONNACK (this server speaks no MQTT).

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use acorn_embedded::ping::PingOptions;
use acorn_embedded::{host, Diagnosis, Step, Target, TlsIdentity, TrustAnchors};
use acorn_tls_peer::messages::{
    certificate, certificate_verify, encrypted_extensions, finished, server_hello,
    SERVER_CV_CONTEXT,
};
use acorn_tls_peer::p256::ecdsa::SigningKey;
use acorn_tls_peer::p256::pkcs8::DecodePrivateKey as _;
use acorn_tls_peer::wire::plain_record;
use acorn_tls_peer::{ClientHello, HandshakeSecrets, RecordKeys};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use sha2::{Digest, Sha256};

/// Bound of every read and of each ping step.
const STEP: Duration = Duration::from_secs(5);

/// The server's flight after its ServerHello, in one encrypted record.
#[derive(Clone, Copy, Debug)]
struct Flight {
    certificate: bool,
    certificate_verify: bool,
    /// A Finished with one bit flipped.
    bad_finished: bool,
    /// An encrypted handshake_failure alert (40) instead of the Finished.
    alert: bool,
}

impl Flight {
    const COMPLETE: Flight = Flight {
        certificate: true,
        certificate_verify: true,
        bad_finished: false,
        alert: false,
    };
}

/// A PKI made here: a root, the broker's certificate for `localhost` and its key, a device.
struct Pki {
    anchors: TrustAnchors,
    server_chain: Vec<u8>,
    server_key: SigningKey,
    device: TlsIdentity,
}

fn pki() -> Pki {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, "Hostile Test Root");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let root =
        CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("root");
    let leaf = |names: Vec<String>, cn: &str| {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &root).expect("leaf");
        (cert.der().to_vec(), key.serialize_der())
    };
    let (server_chain, server_key) = leaf(vec!["localhost".into()], "localhost");
    let (device_cert, device_key) = leaf(Vec::new(), "hostile-test");
    Pki {
        anchors: TrustAnchors::from_der(root.der()).expect("anchors"),
        server_chain,
        server_key: SigningKey::from_pkcs8_der(&server_key).expect("server key"),
        device: TlsIdentity::from_der(device_cert, &device_key, "hostile-test", "localhost")
            .expect("device identity"),
    }
}

fn read_record(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut header = [0u8; 5];
    stream.read_exact(&mut header)?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes([header[3], header[4]]))];
    stream.read_exact(&mut body)?;
    Ok([&header[..], &body].concat())
}

/// Answers one connection: an honest ServerHello, then `flight` and a correct Finished; then
/// reads what the client sends until it stops (bounded), and hangs up.
fn serve(listener: TcpListener, pki: &Pki, flight: Flight) -> Result<(), String> {
    let (mut stream, _) = listener.accept().map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(STEP))
        .map_err(|e| e.to_string())?;
    let hello = ClientHello::parse(&read_record(&mut stream).map_err(|e| e.to_string())?)?;
    let client_share = hello.key_share.ok_or("no P-256 key share")?;
    let ephemeral = acorn_tls_peer::p256::SecretKey::from_slice(&[7; 32]).expect("a scalar");
    let shared = acorn_tls_peer::p256::ecdh::diffie_hellman(
        ephemeral.to_nonzero_scalar(),
        client_share.as_affine(),
    );
    let mut transcript = Sha256::new();
    transcript.update(&hello.message);
    let server_hello = server_hello(&[9; 32], &ephemeral.public_key(), &[]);
    transcript.update(&server_hello);
    let secrets = HandshakeSecrets::new(shared.raw_secret_bytes(), &transcript.clone().finalize());
    let mut messages = encrypted_extensions(None);
    transcript.update(&messages);
    if flight.certificate {
        let message = certificate(&[&pki.server_chain]);
        transcript.update(&message);
        messages.extend_from_slice(&message);
    }
    if flight.certificate_verify {
        let hash = transcript.clone().finalize();
        let message = certificate_verify(&pki.server_key, SERVER_CV_CONTEXT, &hash);
        transcript.update(&message);
        messages.extend_from_slice(&message);
    }
    let mut finished = finished(&secrets.server, &transcript.finalize());
    if flight.bad_finished {
        finished[4] ^= 1;
    }
    let mut keys = RecordKeys::new(&secrets.server);
    let mut wire = plain_record(22, &server_hello);
    if flight.alert {
        wire.extend_from_slice(&keys.seal(22, &messages, 0));
        wire.extend_from_slice(&keys.seal(21, &[2, 40], 0));
    } else {
        messages.extend_from_slice(&finished);
        wire.extend_from_slice(&keys.seal(22, &messages, 0));
    }
    stream.write_all(&wire).map_err(|e| e.to_string())?;
    // The client's flight (and, once it accepted ours, its CONNECT), until it stops; at most
    // a few records.
    for _ in 0..8 {
        if read_record(&mut stream).is_err() {
            break;
        }
    }
    Ok(())
}

/// Pings a server that sends `flight`: the step the ping failed at, and its diagnosis.
async fn ping_against(flight: Flight) -> (Step, Diagnosis) {
    let pki = pki();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let server = std::thread::scope(|scope| {
        let server = scope.spawn(|| serve(listener, &pki, flight));
        let mut options = PingOptions::new(
            Target::new("localhost", port),
            "hostile-test",
            b"{}".to_vec(),
        );
        options.step_timeout_ms = STEP.as_millis() as u64;
        let result = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(host::ping(
                &pki.device,
                &pki.anchors,
                &options,
            ))
        });
        (server.join().expect("server thread"), result)
    });
    let (served, result) = server;
    served.expect("the hostile server ran its script");
    let failure = result.expect_err("this server speaks no MQTT: the ping cannot pass");
    (failure.step, failure.diagnosis)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_complete_flight_gets_through_tls_and_fails_only_at_connack() {
    let (step, diagnosis) = ping_against(Flight::COMPLETE).await;
    assert_eq!(step, Step::Connack, "{diagnosis}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_leaves_out_its_certificate_and_signature_is_refused_at_tls() {
    let flight = Flight {
        certificate: false,
        certificate_verify: false,
        ..Flight::COMPLETE
    };
    let (step, diagnosis) = ping_against(flight).await;
    assert_eq!(
        step,
        Step::Tls,
        "accepted an unauthenticated server: {diagnosis}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_without_its_signature_is_refused_at_tls() {
    let flight = Flight {
        certificate: true,
        certificate_verify: false,
        ..Flight::COMPLETE
    };
    let (step, diagnosis) = ping_against(flight).await;
    assert_eq!(
        step,
        Step::Tls,
        "accepted a server that proved no key: {diagnosis}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_without_a_certificate_is_refused_at_tls() {
    let flight = Flight {
        certificate: false,
        certificate_verify: true,
        ..Flight::COMPLETE
    };
    let (step, diagnosis) = ping_against(flight).await;
    assert_eq!(step, Step::Tls, "{diagnosis}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_finished_is_refused_and_named_as_such() {
    let flight = Flight {
        bad_finished: true,
        ..Flight::COMPLETE
    };
    let (step, diagnosis) = ping_against(flight).await;
    assert_eq!(step, Step::Tls, "{diagnosis}");
    assert!(diagnosis.to_string().contains("Finished"), "{diagnosis}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_in_the_servers_flight_keeps_its_reason() {
    let flight = Flight {
        alert: true,
        ..Flight::COMPLETE
    };
    let (step, diagnosis) = ping_against(flight).await;
    assert_eq!(step, Step::Tls, "{diagnosis}");
    assert_eq!(diagnosis, Diagnosis::TlsVersionNotSupported, "{diagnosis}");
}
