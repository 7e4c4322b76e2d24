//! Registration on the chip, on Linux: the firmware's boot sequence (the same state machine,
//! the identity partition a real acorn-nvs partition in memory, only the radio faked) reaches
//! a device without identity, which makes its P-256 key and CSR, registers with a real
//! registration backend (acorn-backend, in process) over HTTP through the transport's
//! connector, stores the answer through the certificate store, and goes operational.

use acorn_backend::{Backend, BackendConfig, ExposeSecret};
use acorn_certs::nvs_kv::NvsCertKv;
use acorn_certs::{validate, CertStore, CheckId, Status, ValidationOptions};
use acorn_embedded::boot::{
    identity_event, read_wifi_credentials, Boot, BootAction, BootEvent, BootState,
};
use acorn_embedded::host::TokioConnector;
use acorn_embedded::register::{self, RegisterError};
use acorn_embedded::TlsIdentity;
use acorn_nvs::{MemFlash, Nvs};

const PARTITION: u32 = 0x6000;
const MAC: [u8; 6] = [0x24, 0x6f, 0x28, 0xaa, 0xbb, 0xcc];

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The firmware's boot loop with a fake radio: carries out actions until the machine waits
/// or is operational. Returns the log lines.
async fn settle(boot: &mut Boot, nvs: &mut Nvs<MemFlash>, now_ms: u64) -> Vec<String> {
    let mut log = Vec::new();
    while let Some(action) = boot.poll_action() {
        let event = match action {
            BootAction::Log(line) => {
                log.push(line);
                continue;
            }
            BootAction::ReadWifiCredentials => {
                BootEvent::WifiCredentials(read_wifi_credentials(nvs).unwrap())
            }
            BootAction::ConnectWifi(_) => BootEvent::WifiUp {
                address: "192.0.2.10".into(),
            },
            BootAction::SyncClock => BootEvent::ClockSynced {
                unix_secs: unix_now(),
            },
            BootAction::LoadIdentity { now_unix } => {
                let mut store = CertStore::new(NvsCertKv::new(nvs)).allow_custom_endpoint(true);
                identity_event(&store.load(now_unix))
            }
            BootAction::Register { now_unix } => {
                // What firmware/src/main.rs does: the config from NVS, the key from the RNG,
                // HTTP over the connector, the answer stored (checked first) by the store.
                let config = register::read_config(nvs, MAC, "1.0.0-test")
                    .unwrap()
                    .expect("registration configured");
                match register::register(&mut TokioConnector, &mut rand::rngs::OsRng, &config).await
                {
                    Ok(registered) => {
                        let mut store =
                            CertStore::new(NvsCertKv::new(nvs)).allow_custom_endpoint(true);
                        match store.store(&registered.certificates, now_unix) {
                            Ok(_) => BootEvent::Registered,
                            Err(e) => BootEvent::RegistrationFailed {
                                reason: e.to_string(),
                            },
                        }
                    }
                    Err(e) => BootEvent::RegistrationFailed {
                        reason: e.to_string(),
                    },
                }
            }
            BootAction::Claim { .. } => panic!("a device with a registration token never claims"),
            BootAction::StartOperation => continue,
        };
        boot.handle(now_ms, event);
    }
    log
}

#[tokio::test]
async fn a_device_without_identity_registers_and_goes_operational() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::start(BackendConfig::new(dir.path()))
        .await
        .unwrap();
    let token = backend.mint_token(600).await.unwrap();

    // The factory image: Wi-Fi credentials and where to register, no identity; first with a
    // token that is not the backend's.
    let mut nvs = Nvs::open(MemFlash::new(PARTITION as usize), 0, PARTITION).unwrap();
    let wifi = nvs.namespace("wifi").unwrap();
    nvs.set_str(wifi, "ssid", "acorn-lab").unwrap();
    let ns = nvs.namespace(register::NAMESPACE).unwrap();
    nvs.set_str(ns, "url", &backend.base_url()).unwrap();
    nvs.set_str(ns, "token", "not-a-token").unwrap();
    let configured = register::read_config(&mut nvs, MAC, "1.0.0-test").unwrap();
    let config = configured.expect("url and token make registration possible");
    assert_eq!(config.device_id, "acorn-246f28aabbcc");
    assert!(
        !format!("{config:?}").contains("not-a-token"),
        "the token is never printed"
    );

    let mut boot = Boot::new(true);
    let log = settle(&mut boot, &mut nvs, 0).await.join("\n");
    assert!(
        log.contains("no identity stored: registering (P-256 key and CSR made on this chip)"),
        "{log}"
    );
    assert!(
        log.contains("registration failed: the registration backend refused (HTTP 401"),
        "{log}"
    );
    assert_eq!(boot.state(), &BootState::Registering { attempt: 1 });

    // The token is fixed; the retry after the backoff registers.
    nvs.set_str(ns, "token", token.token.expose_secret())
        .unwrap();
    let at = boot.poll_timeout().expect("a retry is due");
    boot.handle(at, BootEvent::Tick);
    let log = settle(&mut boot, &mut nvs, at).await.join("\n");
    assert!(
        log.contains("registered: identity stored; loading it"),
        "{log}"
    );
    assert!(
        log.contains("identity of `acorn-246f28aabbcc` loaded and valid; connecting"),
        "{log}"
    );
    assert_eq!(boot.state(), &BootState::Operational);

    // What is stored is a P-256 identity the transport takes, for this device, issued by the
    // backend's CA; the endpoint's port went with it.
    let mut store = CertStore::new(NvsCertKv::new(&mut nvs)).allow_custom_endpoint(true);
    let loaded = store.load(unix_now()).unwrap();
    assert_eq!(loaded.certificates.iot_endpoint, "localhost");
    let identity = TlsIdentity::from_certificates(&loaded.certificates).unwrap();
    assert_eq!(identity.device_id(), "acorn-246f28aabbcc");
    let options = ValidationOptions::new(unix_now())
        .allow_custom_endpoint(true)
        .with_ca(backend.ca_certificate_pem().as_bytes());
    let report = validate(&loaded.certificates, &options);
    assert_eq!(report.check(CheckId::Chain).unwrap().status, Status::Pass);
    assert!(
        String::from_utf8_lossy(loaded.certificates.private_key.expose_secret())
            .starts_with("-----BEGIN EC PRIVATE KEY-----")
    );

    // The token is spent: registering again is refused with the backend's own reason.
    let config = register::read_config(&mut nvs, MAC, "1.0.0-test")
        .unwrap()
        .unwrap();
    let again = register::register(&mut TokioConnector, &mut rand::rngs::OsRng, &config).await;
    match again {
        Err(RegisterError::Refused { status, code, .. }) => {
            assert!(status == 401 || status == 409, "{status} {code}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_backend_is_named() {
    let mut nvs = Nvs::open(MemFlash::new(PARTITION as usize), 0, PARTITION).unwrap();
    let ns = nvs.namespace(register::NAMESPACE).unwrap();
    // A port nothing listens on (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    nvs.set_str(ns, "url", &format!("http://127.0.0.1:{port}"))
        .unwrap();
    nvs.set_str(ns, "token", "t").unwrap();
    nvs.set_str(ns, "device_id", "acorn-0009").unwrap();
    let config = register::read_config(&mut nvs, MAC, "1").unwrap().unwrap();
    assert_eq!(config.device_id, "acorn-0009");
    let err = register::register(&mut TokioConnector, &mut rand::rngs::OsRng, &config)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot reach the registration backend: "),
        "{err}"
    );
    // HTTPS is refused up front, saying why.
    let err = register::BackendUrl::parse("https://backend.example").unwrap_err();
    assert!(err.to_string().contains("plain HTTP only"), "{err}");
}
