//! Answers of AWS IoT's provisioning MQTT API, as a broker (or anyone who can publish on the
//! answer topics) may send them, to both devices that read them: the chip's claim client
//! (`acorn_embedded::claim::ClaimDriver`, over `acorn_mqtt::provisioning::ProvisioningTopics`)
//! and the device core's certificate rotation (`acorn_device`, feature `rotation`).
//!
//! Input: a sequence of steps until the input is used up (at most 24). Each step is an op
//! byte: 0 a message on `CreateCertificateFromCsr`'s `/accepted`, 1 on its `/rejected`, 2 on
//! `RegisterThing`'s `/accepted`, 3 on its `/rejected`, 4 on a topic named by a field; each
//! followed by its payload field. 5 lets time pass (a 16-bit count of 100 ms steps); 6 drops
//! the connection. Both devices get every step.
//!
//! Properties:
//! - never a panic, and every loop ends;
//! - the claim client sends at most one `CreateCertificateFromCsr` and one `RegisterThing`,
//!   each a JSON object, `RegisterThing` only with the ownership token of an accepted answer;
//!   it ends with an identity only after a `RegisterThing` answer naming this device, with the
//!   certificate PEM of an accepted answer, for this device; once it ends it asks for nothing
//!   more but the DISCONNECT;
//! - the rotating device stages only a certificate PEM some accepted answer carried, tries it
//!   (`UseCandidate`) only after a `RegisterThing` answer naming this device, and every
//!   request it publishes is a JSON object.
#![no_main]

use acorn_device::acorn_mqtt::provisioning::ProvisioningTopics;
use acorn_device::rotation::{RotationConfig, RotationInput, RotationRequest};
use acorn_device::{Action, Device, DeviceConfig, MemorySettings, Now, TransportEvent};
use acorn_embedded::claim::{ClaimDriver, ThingParameters};
use acorn_embedded::{ConnectOrder, Driver, LinkEvent, Order, Time};
use acorn_fuzz::Fields;
use libfuzzer_sys::fuzz_target;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;

const DEVICE: &str = "acorn-0001";
const ENDPOINT: &str = "a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com";
const TEMPLATE: &str = "acorn-pups";
const UNIX0: u64 = 1_796_256_000_000;

/// What the answers fed so far allow.
#[derive(Default)]
struct Fed {
    /// `certificatePem` of every answer on `/accepted` of `CreateCertificateFromCsr`.
    certificates: Vec<String>,
    /// `certificateOwnershipToken` of those answers.
    tokens: Vec<String>,
    /// A `RegisterThing` answer named this device.
    registered: bool,
}

/// A string field of a JSON answer, read with serde_json's `Value` alone. Invalid UTF-8 is
/// replaced first: the typed parse under test skips the fields it does not know without
/// checking their bytes, and a field it reads must be valid UTF-8 anyway.
fn field_of(payload: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(payload);
    let value: Value = serde_json::from_str(&text).ok()?;
    value.get(name)?.as_str().map(str::to_owned)
}

/// The claim client and what it did.
struct Claim {
    driver: ClaimDriver<StdRng>,
    mono: u64,
    connected: bool,
    csr_requests: usize,
    register_requests: usize,
    ended: bool,
    topics: ProvisioningTopics,
}

impl Claim {
    fn time(&self) -> Time {
        Time {
            mono_ms: self.mono,
            unix_ms: UNIX0 + self.mono,
        }
    }

    /// Carries out the driver's orders as a transport would, answering each at once.
    fn pump(&mut self, fed: &Fed) {
        for _ in 0..100 {
            let now = self.time();
            let Some(order) = self.driver.poll_order(now) else {
                return;
            };
            assert!(
                !self.ended || matches!(order, Order::Disconnect),
                "an order after the end: {order:?}"
            );
            match order {
                Order::Connect(ConnectOrder { .. }) => {
                    self.connected = true;
                    self.driver.event(
                        now,
                        LinkEvent::ConnAck {
                            session_present: false,
                        },
                    );
                }
                Order::Subscribe(_) => self.driver.event(now, LinkEvent::SubAck { granted: true }),
                Order::Publish(p) => {
                    let value: Value =
                        serde_json::from_slice(&p.payload).expect("a request is JSON");
                    assert!(value.is_object());
                    if p.topic == self.topics.create_from_csr[0] {
                        self.csr_requests += 1;
                    } else if p.topic == self.topics.register[0] {
                        self.register_requests += 1;
                        let token = value["certificateOwnershipToken"].as_str().unwrap_or("");
                        assert!(
                            fed.tokens.iter().any(|t| t == token),
                            "RegisterThing with a token no answer gave"
                        );
                        assert_eq!(value["parameters"]["DeviceId"], DEVICE);
                    } else {
                        panic!("a publish on {}", p.topic);
                    }
                    assert!(self.csr_requests <= 1 && self.register_requests <= 1);
                    if self.connected {
                        self.driver.event(now, LinkEvent::PubAck(()));
                    }
                }
                Order::Disconnect => self.connected = false,
            }
        }
        panic!("the claim client keeps giving orders");
    }

    fn check_outcome(&mut self, fed: &Fed) {
        if let Some(outcome) = self.driver.outcome() {
            assert!(!self.ended, "two outcomes");
            self.ended = true;
            if let Ok(claimed) = outcome {
                assert!(
                    fed.registered,
                    "an identity without RegisterThing naming the device"
                );
                assert_eq!(claimed.certificates.device_id, DEVICE);
                let pem = String::from_utf8(claimed.certificates.device_certificate.clone())
                    .expect("a PEM an answer gave");
                assert!(
                    fed.certificates.contains(&pem),
                    "a certificate no answer gave"
                );
            }
        }
    }
}

/// The rotating device core and what it did.
struct Rotating {
    device: Device<StdRng, MemorySettings>,
    mono: u64,
    staged: Vec<String>,
}

impl Rotating {
    fn now(&self) -> Now {
        Now::new(self.mono, UNIX0 + self.mono)
    }

    fn pump(&mut self, fed: &Fed) {
        for _ in 0..1000 {
            let Some(action) = self.device.poll_action() else {
                return;
            };
            let now = self.now();
            match action {
                Action::Connect(_) => self.device.transport(
                    now,
                    TransportEvent::ConnAck {
                        session_present: false,
                    },
                ),
                Action::Subscribe(_) => self
                    .device
                    .transport(now, TransportEvent::SubAck { granted: true }),
                Action::Publish(p) => {
                    let value: Value =
                        serde_json::from_slice(&p.payload).expect("a PUBLISH is JSON");
                    assert!(value.is_object());
                    self.device.transport(now, TransportEvent::PubAck(p.tag));
                }
                Action::Rotation(request) => {
                    let answer = match request {
                        RotationRequest::MakeKey => Some(RotationInput::Csr {
                            pem: "-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n".into(),
                        }),
                        RotationRequest::StageCandidate {
                            certificate_pem, ..
                        } => {
                            assert!(
                                fed.certificates.contains(&certificate_pem),
                                "staging a certificate no answer gave"
                            );
                            self.staged.push(certificate_pem);
                            Some(RotationInput::Staged)
                        }
                        RotationRequest::UseCandidate => {
                            assert!(fed.registered, "a trial before RegisterThing named the device");
                            None
                        }
                        RotationRequest::Commit => Some(RotationInput::Committed {
                            certificate: acorn_device::CertificateFacts::default(),
                        }),
                        RotationRequest::Discard { .. } => Some(RotationInput::Discarded),
                        _ => None,
                    };
                    if let Some(answer) = answer {
                        self.device.rotation(now, answer);
                    }
                }
                _ => {}
            }
        }
        panic!("the device keeps asking for actions");
    }

    fn advance(&mut self, ms: u64, fed: &Fed) {
        let end = self.mono + ms;
        for _ in 0..10_000 {
            match self.device.poll_timeout().filter(|&t| t <= end) {
                Some(due) => {
                    self.mono = self.mono.max(due);
                    self.device.tick(self.now());
                    self.pump(fed);
                }
                None => break,
            }
        }
        self.mono = end;
        self.device.tick(self.now());
        self.pump(fed);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut f = Fields::new(data);
    let topics = ProvisioningTopics::new("", TEMPLATE).expect("AWS's topics");
    let mut fed = Fed::default();

    let parameters = ThingParameters {
        serial_number: "246F28AABBCC".into(),
        mac_address: "24:6F:28:AA:BB:CC".into(),
        firmware_version: "1.0.0".into(),
    };
    let driver = ClaimDriver::for_device(DEVICE, ENDPOINT, parameters, StdRng::seed_from_u64(1))
        .expect("a claim client");
    let mut claim = Claim {
        driver,
        mono: 0,
        connected: false,
        csr_requests: 0,
        register_requests: 0,
        ended: false,
        topics: topics.clone(),
    };
    let now = claim.time();
    claim.driver.start(now);
    claim.pump(&fed);

    let mut config = DeviceConfig::new(DEVICE, "1.0.0").expect("a device");
    config.rotation = Some(RotationConfig::new(TEMPLATE).expect("a template"));
    let device =
        Device::new(config, MemorySettings::default(), StdRng::seed_from_u64(7)).expect("a device");
    let commands = device.topics().commands().to_string();
    let mut rotating = Rotating {
        device,
        mono: 0,
        staged: Vec::new(),
    };
    rotating.device.start(rotating.now());
    rotating.pump(&fed);
    let now = rotating.now();
    rotating.device.transport(
        now,
        TransportEvent::Message {
            topic: &commands,
            payload: br#"{"requestId":"rot-1","command":"rotate-certificate"}"#,
        },
    );
    rotating.pump(&fed);

    for _ in 0..24 {
        if f.is_empty() {
            break;
        }
        let op = f.byte() % 7;
        let topic = match op {
            0 => topics.create_from_csr[1].clone(),
            1 => topics.create_from_csr[2].clone(),
            2 => topics.register[1].clone(),
            3 => topics.register[2].clone(),
            4 => f.text(),
            5 => {
                let ms = u64::from(u16::from_le_bytes([f.byte(), f.byte()])) * 100;
                claim.mono += ms;
                let now = claim.time();
                claim.driver.tick(now);
                claim.pump(&fed);
                claim.check_outcome(&fed);
                rotating.advance(ms, &fed);
                continue;
            }
            _ => {
                let diagnosis = acorn_embedded::Diagnosis::ClosedByBroker {
                    step: acorn_embedded::Step::Connack,
                };
                if claim.connected {
                    claim.connected = false;
                    let now = claim.time();
                    claim.driver.event(
                        now,
                        LinkEvent::Disconnected {
                            cause: acorn_device::acorn_mqtt::DisconnectCause::Broker,
                            diagnosis: &diagnosis,
                        },
                    );
                    claim.pump(&fed);
                    claim.check_outcome(&fed);
                }
                let now = rotating.now();
                rotating.device.transport(
                    now,
                    TransportEvent::Disconnected {
                        cause: acorn_device::acorn_mqtt::DisconnectCause::Broker,
                        diagnosis: "closed by the broker".into(),
                    },
                );
                rotating.pump(&fed);
                rotating.advance(5_000, &fed);
                continue;
            }
        };
        let payload = f.field();
        // What this answer allows, read apart from the code under test.
        if topic == topics.create_from_csr[1] {
            if let (Some(pem), Some(token)) = (
                field_of(payload, "certificatePem"),
                field_of(payload, "certificateOwnershipToken"),
            ) {
                fed.certificates.push(pem);
                fed.tokens.push(token);
            }
        } else if topic == topics.register[1] {
            fed.registered |= field_of(payload, "thingName").as_deref() == Some(DEVICE);
        }
        if claim.connected {
            let now = claim.time();
            claim.driver.event(
                now,
                LinkEvent::Message {
                    topic: &topic,
                    payload,
                },
            );
            claim.pump(&fed);
            claim.check_outcome(&fed);
        }
        let now = rotating.now();
        rotating.device.transport(
            now,
            TransportEvent::Message {
                topic: &topic,
                payload,
            },
        );
        rotating.pump(&fed);
    }
    // The claim client always ends: by an outcome, or by its step timeout.
    for _ in 0..4 {
        claim.mono += acorn_embedded::claim::STEP_TIMEOUT_MS;
        let now = claim.time();
        claim.driver.tick(now);
        claim.pump(&fed);
        claim.check_outcome(&fed);
    }
    assert!(claim.ended, "the claim client never ended");
    assert!(claim.driver.is_finished());
});
