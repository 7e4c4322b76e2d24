//! The firmware's boot sequence on Linux with only the radio faked: the NVS partition is a
//! real acorn-nvs partition in memory, the identity is loaded through the real certificate
//! store, and the state machine is the one the firmware runs.

use acorn_certs::{CertStore, DeviceCertificates, MemoryKv, PrivateKey};
use acorn_embedded::boot::{
    identity_event, read_wifi_credentials, Boot, BootAction, BootEvent, BootState, Provisioning,
    WifiCredentials, CLOCK_RETRY_MS,
};
use acorn_nvs::{MemFlash, Nvs};

const NOW: u64 = 1_790_000_000; // 2026-09

/// The fake radio: what joining and SNTP answer.
struct Radio {
    wifi_ok: bool,
    sntp: Option<u64>,
}

/// Everything the device would do, with a fake radio and real flash and store.
struct Device {
    boot: Boot,
    radio: Radio,
    nvs: Nvs<MemFlash>,
    store: CertStore<MemoryKv>,
    /// What registration stores (None: registration fails).
    register_with: Option<DeviceCertificates>,
    log: Vec<String>,
    actions: Vec<BootAction>,
    now_ms: u64,
}

impl Device {
    fn new(radio: Radio, registration: bool) -> Self {
        Self::with(radio, Boot::new(registration))
    }

    fn with(radio: Radio, boot: Boot) -> Self {
        Device {
            boot,
            radio,
            nvs: Nvs::open(MemFlash::new(0x6000), 0, 0x6000).unwrap(),
            store: CertStore::new(MemoryKv::new()).allow_custom_endpoint(true),
            register_with: None,
            log: Vec::new(),
            actions: Vec::new(),
            now_ms: 0,
        }
    }

    fn set_wifi(&mut self, ssid: &str, password: &str) {
        let ns = self.nvs.namespace("wifi").unwrap();
        self.nvs.set_str(ns, "ssid", ssid).unwrap();
        self.nvs.set_str(ns, "password", password).unwrap();
    }

    /// Carries out actions until the machine waits; returns whether it reached Operational.
    fn settle(&mut self) {
        while let Some(action) = self.boot.poll_action() {
            self.actions.push(action.clone());
            let event = match action {
                BootAction::Log(line) => {
                    self.log.push(line);
                    continue;
                }
                BootAction::ReadWifiCredentials => {
                    BootEvent::WifiCredentials(read_wifi_credentials(&mut self.nvs).unwrap())
                }
                BootAction::ConnectWifi(_) if self.radio.wifi_ok => BootEvent::WifiUp {
                    address: "192.0.2.10".into(),
                },
                BootAction::ConnectWifi(_) => BootEvent::WifiFailed {
                    reason: "no access point answered".into(),
                },
                BootAction::SyncClock => match self.radio.sntp {
                    Some(unix_secs) => BootEvent::ClockSynced { unix_secs },
                    None => BootEvent::ClockFailed {
                        reason: "no SNTP answer".into(),
                    },
                },
                BootAction::LoadIdentity { now_unix } => identity_event(&self.store.load(now_unix)),
                BootAction::Register { now_unix } | BootAction::Claim { now_unix } => {
                    match self.register_with.clone() {
                        Some(certs) => {
                            self.store.store(&certs, now_unix).unwrap();
                            BootEvent::Registered
                        }
                        None => BootEvent::RegistrationFailed {
                            reason: "backend unreachable".into(),
                        },
                    }
                }
                BootAction::StartOperation => continue,
            };
            self.boot.handle(self.now_ms, event);
        }
    }

    /// Lets time pass to the next timer and settles again.
    fn tick(&mut self) {
        if let Some(t) = self.boot.poll_timeout() {
            self.now_ms = self.now_ms.max(t);
        }
        self.boot.handle(self.now_ms, BootEvent::Tick);
        self.settle();
    }

    fn said(&self, words: &str) -> bool {
        self.log.iter().any(|l| l.contains(words))
    }

    fn did(&self, pred: impl Fn(&BootAction) -> bool) -> bool {
        self.actions.iter().any(pred)
    }
}

/// A P-256 identity valid from 2025-01-01 to 1 January of `not_after_year` (rcgen, made at test time).
fn identity(device_id: &str, not_after_year: i32) -> DeviceCertificates {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, device_id);
    params.not_before = time::macros::datetime!(2025-01-01 0:00 UTC);
    params.not_after = time::Date::from_calendar_date(not_after_year, time::Month::January, 1)
        .unwrap()
        .midnight()
        .assume_utc();
    let cert = params.self_signed(&key).unwrap();
    DeviceCertificates {
        device_certificate: cert.pem().into_bytes(),
        private_key: PrivateKey::new(key.serialize_pem().into_bytes()),
        iot_endpoint: "broker.local".into(),
        device_id: device_id.into(),
    }
}

fn online_radio() -> Radio {
    Radio {
        wifi_ok: true,
        sntp: Some(NOW),
    }
}

#[test]
fn without_wifi_credentials_it_says_so_and_waits() {
    let mut dev = Device::new(online_radio(), false);
    dev.settle();
    assert_eq!(dev.boot.state(), &BootState::NoWifiCredentials);
    assert!(dev.said("no Wi-Fi credentials"), "{:?}", dev.log);
    assert!(!dev.did(|a| matches!(a, BootAction::ConnectWifi(_))));
    // Still nothing after a wait: it re-reads, says nothing new, keeps waiting.
    dev.tick();
    assert_eq!(dev.boot.state(), &BootState::NoWifiCredentials);
    assert_eq!(dev.log.len(), 1, "{:?}", dev.log);
    // Provisioned meanwhile: the next re-read joins the network.
    dev.set_wifi("acorn-lab", "hunter22");
    dev.tick();
    assert!(dev.did(|a| matches!(a, BootAction::ConnectWifi(WifiCredentials { ssid, .. }) if ssid == "acorn-lab")));
    assert!(
        !format!("{:?}", dev.actions).contains("hunter22"),
        "the password is never printed"
    );
}

#[test]
fn an_unsynced_clock_holds_everything_back_until_sntp_answers() {
    let mut dev = Device::new(
        Radio {
            wifi_ok: true,
            sntp: None,
        },
        false,
    );
    dev.set_wifi("acorn-lab", "pw");
    dev.store.store(&identity("acorn-0001", 2027), NOW).unwrap();
    dev.settle();
    assert!(matches!(dev.boot.state(), BootState::SyncingClock { .. }));
    assert!(dev.said("clock not synced"), "{:?}", dev.log);
    assert_eq!(dev.boot.poll_timeout(), Some(CLOCK_RETRY_MS));
    for _ in 0..3 {
        dev.tick();
    }
    assert!(!dev.did(|a| matches!(a, BootAction::LoadIdentity { .. })));
    assert!(matches!(
        dev.boot.state(),
        BootState::SyncingClock { attempt: 4 }
    ));
    // An implausible answer (1970) is not a sync either.
    dev.radio.sntp = Some(86_400);
    dev.tick();
    assert!(!dev.did(|a| matches!(a, BootAction::LoadIdentity { .. })));
    dev.radio.sntp = Some(NOW);
    dev.tick();
    assert_eq!(dev.boot.state(), &BootState::Operational);
    assert!(dev.did(|a| *a == BootAction::LoadIdentity { now_unix: NOW }));
}

#[test]
fn without_an_identity_it_registers_then_operates() {
    let mut dev = Device::new(online_radio(), true);
    dev.set_wifi("acorn-lab", "pw");
    dev.settle();
    assert!(matches!(
        dev.boot.state(),
        BootState::Registering { attempt: 1 }
    ));
    assert!(dev.said("registering"), "{:?}", dev.log);
    // The backend is down: retries with backoff.
    dev.tick();
    assert!(matches!(
        dev.boot.state(),
        BootState::Registering { attempt: 2 }
    ));
    assert!(dev.said("registration failed: backend unreachable"));
    dev.register_with = Some(identity("acorn-0002", 2027));
    dev.tick();
    assert_eq!(dev.boot.state(), &BootState::Operational);
    assert!(dev.said("identity of `acorn-0002` loaded"), "{:?}", dev.log);
}

#[test]
fn without_an_identity_but_with_a_claim_certificate_it_provisions_by_claim() {
    let mut dev = Device::with(online_radio(), Boot::with_provisioning(Provisioning::Claim));
    dev.set_wifi("acorn-lab", "pw");
    dev.settle();
    assert!(dev.said("provisioning by claim"), "{:?}", dev.log);
    assert!(dev.did(|a| *a == BootAction::Claim { now_unix: NOW }));
    assert!(!dev.did(|a| matches!(a, BootAction::Register { .. })));
    // The claim endpoint does not answer: retried with backoff, by claim again.
    dev.tick();
    assert!(matches!(
        dev.boot.state(),
        BootState::Registering { attempt: 2 }
    ));
    dev.register_with = Some(identity("acorn-0009", 2027));
    dev.tick();
    assert_eq!(dev.boot.state(), &BootState::Operational);
    assert!(dev.said("identity of `acorn-0009` loaded"), "{:?}", dev.log);
}

#[test]
fn without_an_identity_and_no_backend_it_says_so() {
    let mut dev = Device::new(online_radio(), false);
    dev.set_wifi("acorn-lab", "pw");
    dev.settle();
    assert!(dev.said("no identity stored"), "{:?}", dev.log);
    assert!(!dev.did(|a| matches!(a, BootAction::Register { .. })));
}

#[test]
fn an_invalid_identity_names_the_failed_check() {
    let mut dev = Device::new(online_radio(), true);
    dev.set_wifi("acorn-lab", "pw");
    // Stored while valid; the device boots after it expired.
    dev.store
        .store(&identity("acorn-0003", 2026), 1_750_000_000)
        .unwrap();
    dev.settle();
    assert_eq!(
        dev.boot.state(),
        &BootState::IdentityInvalid {
            check: "validity".into()
        }
    );
    assert!(dev.said("failed the `validity` check"), "{:?}", dev.log);
    assert!(!dev.did(|a| matches!(a, BootAction::StartOperation)));
    assert!(
        !dev.did(|a| matches!(a, BootAction::Register { .. })),
        "an invalid identity is not overwritten"
    );
}

#[test]
fn wifi_failures_back_off_and_recover() {
    let mut dev = Device::new(
        Radio {
            wifi_ok: false,
            sntp: Some(NOW),
        },
        false,
    );
    dev.set_wifi("acorn-lab", "pw");
    dev.store.store(&identity("acorn-0004", 2027), NOW).unwrap();
    dev.settle();
    dev.tick();
    assert!(matches!(
        dev.boot.state(),
        BootState::ConnectingWifi { attempt: 2 }
    ));
    dev.radio.wifi_ok = true;
    dev.tick();
    assert_eq!(dev.boot.state(), &BootState::Operational);
    dev.boot.handle(dev.now_ms, BootEvent::WifiLost);
    dev.settle();
    assert!(dev.said("Wi-Fi lost"));
}
