//! Heap high-water of the firmware's code from boot to connect to publish, on Linux, with a
//! counting allocator: the same boot steps (Wi-Fi credentials and identity read from an NVS
//! partition, the identity validated by the certificate store), the same device core
//! (`acorn_device::Device` with its settings in NVS) and the same transport (embedded-tls +
//! mqttrs) as the ESP32-C3 firmware, against a real mosquitto over tokio TCP.
//!
//! ```sh
//! cargo run --release -p acorn-embedded --example heap --features tokio,device,rotation,claim
//! ```
//!
//! A last run rotates the certificate as the chip does (`acorn_embedded::rotation`, the
//! identity's slots in their own NVS partition): key and CSR, `CreateCertificateFromCsr` and
//! `RegisterThing` answered by a stand-in for AWS on the broker's service listener, the
//! candidate stored, the trial connection with it, the commit.
//!
//! Only allocations made while the device's own code runs are counted (a thread-local flag set
//! around each poll of its future); what tokio's TCP registration costs on Linux (on the chip
//! the embassy-net socket is allocated once by the firmware: 12,288 B) is measured apart and
//! taken off. The program exits non-zero if the total is over the 96 KB budget.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use acorn_certs::nvs_kv::NvsCertKv;
use acorn_certs::{CertStore, CertificateValidation, DeviceCertificates, PrivateKey};
use acorn_device::{CertificateFacts, Device, DeviceConfig, Notice};
use acorn_devstack::broker::{Broker, BrokerConfig};
use acorn_embedded::boot::read_wifi_credentials;
use acorn_embedded::device::{DeviceDriver, DeviceIo, Input, Report};
use acorn_embedded::host::{OsRng, SystemClock, TokioConnector};
use acorn_embedded::rotation::Rotation;
use acorn_embedded::transport::Connector;
use acorn_embedded::{
    Buffers, Target, Time, TlsIdentity, Transport, TransportConfig, TrustAnchors,
};
use acorn_mqtt::ConnectionStatus;
use acorn_nvs::{MemFlash, Nvs};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::sync::mpsc;

// ----- the counting allocator -------------------------------------------------------------

/// Counts the blocks allocated while the calling thread's `COUNTING` flag is set, and their
/// frees wherever they happen: each block carries a one-byte mark in a prefix.
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Count this thread's allocations (set while the device's code runs).
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn counting() -> bool {
    COUNTING.try_with(Cell::get).unwrap_or(false)
}

/// The prefix holding the mark, and the layout of the whole block.
fn with_prefix(layout: Layout) -> (usize, Layout) {
    let prefix = layout.align().max(16);
    let full = Layout::from_size_align(layout.size() + prefix, layout.align())
        .expect("a layout that fits with its prefix");
    (prefix, full)
}

// SAFETY: every block is the system allocator's, `prefix` bytes larger than asked for; the
// caller gets the part after the prefix, and dealloc hands the whole block back.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let (prefix, full) = with_prefix(layout);
        let base = unsafe { System.alloc(full) };
        if base.is_null() {
            return base;
        }
        let counted = counting();
        unsafe { base.add(prefix - 1).write(u8::from(counted)) };
        if counted {
            let now = CURRENT.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        unsafe { base.add(prefix) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let (prefix, full) = with_prefix(layout);
        let base = unsafe { ptr.sub(prefix) };
        if unsafe { base.add(prefix - 1).read() } == 1 {
            CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
        }
        unsafe { System.dealloc(base, full) };
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` with counting on.
fn counted<T>(f: impl FnOnce() -> T) -> T {
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    out
}

/// A future whose polls are counted (the device's code runs inside them; tokio's reactor and
/// the test's other tasks run outside).
struct Counted<F>(Pin<Box<F>>);

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        counted(|| self.0.as_mut().poll(cx))
    }
}

fn now_bytes() -> usize {
    CURRENT.load(Ordering::SeqCst)
}

fn peak_bytes() -> usize {
    PEAK.load(Ordering::SeqCst)
}

/// Resets the peak to the current level.
fn reset_peak() {
    PEAK.store(now_bytes(), Ordering::SeqCst);
}

// ----- a PKI and brokers, as AWS shapes them ---------------------------------------------

const NOW_UNIX: u64 = 1_800_000_000;
const IDENTITY_PARTITION: u32 = 0x6000;
const SETTINGS_PARTITION: u32 = 0x5000;
/// The `presses` partition of firmware/partitions.csv.
const PRESSES_PARTITION: u32 = 0x6000;

/// A key pair: P-256, or RSA-2048 (Amazon Root CA 1's chains are RSA-2048 throughout).
fn key_pair(rsa: bool) -> KeyPair {
    if !rsa {
        return KeyPair::generate().unwrap();
    }
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
    KeyPair::from_pkcs8_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).unwrap()
}

fn ca(
    name: &str,
    parent: Option<&CertifiedIssuer<'static, KeyPair>>,
    rsa: bool,
) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    match parent {
        None => CertifiedIssuer::self_signed(params, key_pair(rsa)).unwrap(),
        Some(parent) => CertifiedIssuer::signed_by(params, key_pair(rsa), parent).unwrap(),
    }
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    cn: &str,
    sans: &[&str],
    rsa: bool,
) -> (String, String) {
    let key = key_pair(rsa);
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    (
        params.signed_by(&key, issuer).unwrap().pem(),
        key.serialize_pem(),
    )
}

/// A broker whose server chain (leaf + intermediate) is RSA or ECC, trusting `device_ca` for
/// client certificates; and the root devices must trust for it.
fn broker(device_ca: &str, rsa: bool) -> (Broker, String, tempfile::TempDir) {
    broker_with(device_ca, rsa, None, &[])
}

/// As [`broker`]; with `service_ca`, a service listener where `service:backend` answers the
/// provisioning API under each device's `acorn-local/<id>/` (as in `acorn dev up`).
fn broker_with(
    device_ca: &str,
    rsa: bool,
    service_ca: Option<&str>,
    extra_acl: &[String],
) -> (Broker, String, tempfile::TempDir) {
    let root = ca("Acorn Heap Server Root", None, rsa);
    let intermediate = ca("Acorn Heap Server CA 1", Some(&root), rsa);
    let (server_cert, server_key) = leaf(&intermediate, "broker", &["localhost"], rsa);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), device_ca).unwrap();
    let chain = format!("{server_cert}{}", intermediate.pem());
    std::fs::write(dir.path().join("server.pem"), chain).unwrap();
    std::fs::write(dir.path().join("server.key"), server_key).unwrap();
    let mut config = BrokerConfig::new(
        dir.path(),
        dir.path().join("ca.pem"),
        dir.path().join("server.pem"),
        dir.path().join("server.key"),
    );
    config.tls_version = Some("tlsv1.3".into());
    config.extra_acl_lines = extra_acl.to_vec();
    if let Some(service_ca) = service_ca {
        std::fs::write(dir.path().join("service-ca.pem"), service_ca).unwrap();
        config.service_ca_file = Some(dir.path().join("service-ca.pem"));
        config.service_identities = vec![RESPONDER.into()];
        config.local_provisioning = Some(acorn_devstack::broker::LocalProvisioning {
            template: "acorn-pups".into(),
            responder: RESPONDER.into(),
        });
    }
    let broker = Broker::start(config).expect("mosquitto must start (apt-get install mosquitto)");
    (broker, root.pem(), dir)
}

// ----- the device's platform side ---------------------------------------------------------

/// One press once connected, shutdown once it is delivered.
struct Io {
    inputs: mpsc::UnboundedReceiver<Input>,
    send: mpsc::UnboundedSender<Input>,
    pressed: bool,
    /// Heap in use when the CONNACK arrived (before `online` and the press).
    at_connack: Option<usize>,
}

impl DeviceIo for Io {
    async fn next_input(&mut self) -> Input {
        self.inputs.recv().await.unwrap_or(Input::Shutdown)
    }

    fn report(&mut self, _now: Time, report: Report<'_>) {
        match report {
            Report::Notice(Notice::Status(ConnectionStatus::Connected)) if !self.pressed => {
                self.pressed = true;
                self.at_connack = Some(now_bytes());
                let _ = self.send.send(Input::Press {
                    button: "rf-5a3c".into(),
                    battery: Some(87),
                });
            }
            Report::Notice(Notice::PressDelivered { .. }) => {
                let _ = self.send.send(Input::Shutdown);
            }
            Report::Notice(notice @ Notice::Status(ConnectionStatus::Error(_))) => {
                eprintln!("{notice}");
            }
            _ => {}
        }
    }
}

/// The device core as the firmware makes it: settings in an NVS partition, presses in
/// another (the `presses` partition), 32 cooldown entries.
type ChipDevice = Device<rand::rngs::OsRng, Nvs<MemFlash>, Nvs<MemFlash>>;

fn device(device_id: &str, facts: CertificateFacts) -> ChipDevice {
    device_with(device_id, facts, None)
}

/// As [`device`], with certificate rotation configured when `rotation` is given.
fn device_with(
    device_id: &str,
    facts: CertificateFacts,
    rotation: Option<acorn_device::rotation::RotationConfig>,
) -> ChipDevice {
    // The partitions' bytes stand in for the flash chip: not heap on the device.
    let flash = uncounted(|| MemFlash::new(SETTINGS_PARTITION as usize));
    let settings = Nvs::open(flash, 0, SETTINGS_PARTITION).unwrap();
    let flash = uncounted(|| MemFlash::new(PRESSES_PARTITION as usize));
    let presses = Nvs::open(flash, 0, PRESSES_PARTITION).unwrap();
    let mut config = DeviceConfig::new(device_id, "0.1.0").unwrap();
    config.certificate = facts;
    config.cooldown_entries = 32;
    config.rotation = rotation;
    Device::with_press_store(config, settings, presses, rand::rngs::OsRng).unwrap()
}

/// One operational run: connect (TLS 1.3 over `broker`'s chain), CONNACK, SUBACK, `online`,
/// a press, its PUBACK, `offline`. Returns (peak above `base`, in use at CONNACK above
/// `base`).
fn run(
    runtime: &tokio::runtime::Runtime,
    port: u16,
    identity: &TlsIdentity,
    anchors: &TrustAnchors,
    buffers: &mut Buffers,
    device: ChipDevice,
    base: usize,
) -> (usize, usize) {
    let (send, inputs) = mpsc::unbounded_channel();
    let io = Io {
        inputs,
        send,
        pressed: false,
        at_connack: None,
    };
    let mut driver = DeviceDriver::new(device, io);
    drive_counted(runtime, port, identity, anchors, buffers, &mut driver, 30);
    let peak = peak_bytes() - base;
    let (device, io) = counted(|| driver.into_parts());
    assert_eq!(device.stats().delivered, 1, "the press was delivered");
    counted(|| drop(device));
    (peak, io.at_connack.expect("connected") - base)
}

/// Drives `driver` over the embedded transport to `port` (the peak reset first, every poll
/// counted) until it is finished, at most `secs` seconds.
fn drive_counted<D: acorn_embedded::Driver>(
    runtime: &tokio::runtime::Runtime,
    port: u16,
    identity: &TlsIdentity,
    anchors: &TrustAnchors,
    buffers: &mut Buffers,
    driver: &mut D,
    secs: u64,
) {
    let mut target = Target::new("127.0.0.1", port);
    target.server_name = Some("localhost".into());
    reset_peak();
    let mut transport = Transport::new(
        TokioConnector,
        SystemClock::new(),
        OsRng,
        identity,
        anchors,
        TransportConfig::new(target),
        buffers,
    );
    runtime.block_on(Counted(Box::pin(async {
        tokio::time::timeout(
            std::time::Duration::from_secs(secs),
            transport.drive(driver),
        )
        .await
        .expect("the run ends in time");
    })));
}

fn uncounted<T>(f: impl FnOnce() -> T) -> T {
    let was = counting();
    COUNTING.with(|c| c.set(false));
    let out = f();
    COUNTING.with(|c| c.set(was));
    out
}

fn main() {
    // Factory side (not counted): a device CA and a P-256 device identity stored in an NVS
    // partition with the Wi-Fi credentials; two brokers, one with an ECC server chain (as to
    // Amazon Root CA 3) and one with an RSA-2048 chain (as to Amazon Root CA 1), each a leaf
    // and an intermediate, as AWS sends them.
    let device_ca = ca("Acorn Heap Device CA", None, false);
    let (device_cert, device_key) = leaf(&device_ca, "acorn-0001", &[], false);
    let (identity_pem, identity_key) = (device_cert.clone(), device_key.clone());
    let (ecc_broker, ecc_root, _ecc_dir) = broker(&device_ca.pem(), false);
    let (rsa_broker, rsa_root, _rsa_dir) = broker(&device_ca.pem(), true);

    let mut identity_nvs = Nvs::open(
        MemFlash::new(IDENTITY_PARTITION as usize),
        0,
        IDENTITY_PARTITION,
    )
    .unwrap();
    {
        let ns = identity_nvs.namespace("wifi").unwrap();
        identity_nvs.set_str(ns, "ssid", "acorn-lab").unwrap();
        identity_nvs
            .set_str(ns, "password", "correct horse")
            .unwrap();
        let certs = DeviceCertificates {
            device_certificate: device_cert.into_bytes(),
            private_key: PrivateKey::new(device_key.into_bytes()),
            iot_endpoint: "localhost".into(),
            device_id: "acorn-0001".into(),
        };
        let mut store =
            CertStore::new(NvsCertKv::new(&mut identity_nvs)).allow_custom_endpoint(true);
        store.store(&certs, NOW_UNIX).unwrap();
    }
    let identity_flash = identity_nvs.release();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Warm-up (not counted): tokio's first socket registration allocates its slab.
    runtime.block_on(async {
        drop(TokioConnector.connect("127.0.0.1", ecc_broker.port()).await);
    });
    // What one tokio TCP connect holds on Linux (taken off below: on the chip the socket and
    // its buffers are the firmware's, allocated once).
    let before = now_bytes();
    let tokio_connect = runtime.block_on(Counted(Box::pin(async {
        let halves = TokioConnector.connect("127.0.0.1", ecc_broker.port()).await;
        let held = now_bytes() - before;
        drop(halves);
        held
    })));

    let start = now_bytes();
    reset_peak();

    // ----- boot: Wi-Fi credentials and the identity, as firmware/src/storage.rs reads them.
    let (wifi, identity, facts, issuer) = counted(|| {
        let mut nvs = Nvs::open(identity_flash, 0, IDENTITY_PARTITION).unwrap();
        let wifi = read_wifi_credentials(&mut nvs).unwrap().unwrap();
        let loaded = {
            let mut store = CertStore::new(NvsCertKv::new(&mut nvs)).allow_custom_endpoint(true);
            store.load(NOW_UNIX).unwrap()
        };
        assert_eq!(loaded.report.verdict(), CertificateValidation::Valid);
        let info = loaded.report.certificate.clone().unwrap();
        let mut facts = CertificateFacts::new(info.not_before, info.not_after);
        facts.fingerprint = Some(info.fingerprint);
        let identity = TlsIdentity::from_certificates(&loaded.certificates).unwrap();
        (wifi, identity, facts, info.issuer)
    });
    let boot_peak = peak_bytes() - start;
    let identity_held = now_bytes() - start;

    // ----- what the operational phase allocates once.
    let mark = now_bytes();
    let amazon = counted(TrustAnchors::amazon);
    let anchors_amazon = now_bytes() - mark;
    let mark = now_bytes();
    let ecc_anchors = counted(|| TrustAnchors::from_pem(ecc_root.as_bytes()).unwrap());
    let rsa_anchors = counted(|| TrustAnchors::from_pem(rsa_root.as_bytes()).unwrap());
    let anchors_test = now_bytes() - mark;
    counted(|| drop(amazon));
    let mut buffers = counted(Buffers::new);
    let mark = now_bytes();
    let ecc_device = counted(|| device(identity.device_id(), facts.clone()));
    let device_held = now_bytes() - mark;
    let held = now_bytes() - start;

    // ----- connect → publish, over each chain.
    let (ecc_peak, at_connack) = run(
        &runtime,
        ecc_broker.port(),
        &identity,
        &ecc_anchors,
        &mut buffers,
        ecc_device,
        start,
    );
    let rsa_device = counted(|| device(identity.device_id(), facts.clone()));
    let (rsa_peak, _) = run(
        &runtime,
        rsa_broker.port(),
        &identity,
        &rsa_anchors,
        &mut buffers,
        rsa_device,
        start,
    );
    // The runs hold the test roots (both) where the chip holds Amazon's: count Amazon's.
    let adjust = |peak: usize| peak - anchors_test - tokio_connect + anchors_amazon;
    let (ecc_peak, rsa_peak) = (adjust(ecc_peak), adjust(rsa_peak));
    let held_operational = held - anchors_test + anchors_amazon;
    let ecc_connection = ecc_peak - held_operational;
    let rsa_connection = rsa_peak - held_operational;

    // ----- the offline queue: presses of distinct buttons while not connected, up to the
    // durable queue's bound (256); the session holds the first 8 of them (its window).
    let mut queue_device = counted(|| device("acorn-0001", CertificateFacts::default()));
    let queued: u64 = acorn_device::presses::PRESS_QUEUE_CAPACITY as u64;
    counted(|| {
        queue_device.start(acorn_device::Now::new(0, 1_800_000_000_000));
        queue_device.drain_actions().for_each(drop);
    });
    let mark = now_bytes();
    counted(|| {
        for i in 0..queued {
            let now = acorn_device::Now::new(i, 1_800_000_000_000 + i);
            queue_device
                .press(now, &format!("rf-{i:04x}"), Some(87))
                .unwrap();
            // The notices are the driver's to take.
            queue_device.drain_actions().for_each(drop);
        }
    });
    let queue_held = now_bytes() - mark;
    assert_eq!(queue_device.queued_presses().count(), queued as usize);
    assert_eq!(queue_device.stats().queued, 8);

    counted(|| drop(queue_device));

    // ----- a certificate rotation by command (ECC chain), the identity's slots in their own
    // partition as on the chip.
    let service_ca = ca("Acorn Heap Service CA", None, false);
    let (rotation_broker, rotation_root, _rotation_dir) =
        broker_with(&device_ca.pem(), false, Some(&service_ca.pem()), &[]);
    let slots = {
        let mut nvs = Nvs::open(
            MemFlash::new(IDENTITY_PARTITION as usize),
            0,
            IDENTITY_PARTITION,
        )
        .unwrap();
        let certs = DeviceCertificates {
            device_certificate: identity_pem.clone().into_bytes(),
            private_key: PrivateKey::new(identity_key.clone().into_bytes()),
            iot_endpoint: "localhost".into(),
            device_id: "acorn-0001".into(),
        };
        CertStore::new(NvsCertKv::new(&mut nvs))
            .allow_custom_endpoint(true)
            .store(&certs, NOW_UNIX)
            .unwrap();
        // The index is built again inside the counted run (as at boot on the chip).
        Nvs::open(nvs.release(), 0, IDENTITY_PARTITION).unwrap()
    };
    let rotation_anchors = TrustAnchors::from_pem(rotation_root.as_bytes()).unwrap();
    let stand_in = responder(
        StandIn {
            port: rotation_broker.service_port().unwrap(),
            issuer: &service_ca,
            name: RESPONDER,
            device_id: "acorn-0001",
            prefix: acorn_mqtt::provisioning::local_prefix("acorn-0001"),
            ask_rotation: true,
        },
        &rotation_root,
        device_ca,
    );
    let rotation_peak = rotation_run(
        &runtime,
        rotation_broker.port(),
        &identity,
        &issuer,
        slots,
        &rotation_anchors,
        &mut buffers,
        facts.clone(),
        start,
    );
    stand_in.join().unwrap();
    let rotation_peak = adjust(rotation_peak);
    let rotation_transient = rotation_peak.saturating_sub(held_operational);

    // ----- provisioning by claim at a first boot (ECC chain), with AWS's own topics: the
    // broker lets every client use the API here, and a stand-in on the device listener
    // answers.
    let api = [
        acorn_mqtt::provisioning::CREATE_FROM_CSR.to_string(),
        "$aws/provisioning-templates/acorn-pups/provision/json".to_string(),
    ];
    let acl: Vec<String> = api
        .iter()
        .flat_map(|t| {
            [
                format!("pattern readwrite {t}"),
                format!("pattern readwrite {t}/+"),
            ]
        })
        .collect();
    let claim_ca = ca("Acorn Heap Claim CA", None, false);
    let (claim_broker, claim_root, _claim_dir) = broker_with(&claim_ca.pem(), false, None, &acl);
    let (claim_cert, claim_key) = leaf(&claim_ca, "claim:acorn-0002", &[], false);
    let claim_anchors = TrustAnchors::from_pem(claim_root.as_bytes()).unwrap();
    let stand_in = responder(
        StandIn {
            port: claim_broker.port(),
            issuer: &claim_ca,
            name: "aws-api-stand-in",
            device_id: "acorn-0002",
            prefix: String::new(),
            ask_rotation: false,
        },
        &claim_root,
        ca("Acorn Heap Issuing CA", None, false),
    );
    let claim_base = now_bytes();
    reset_peak();
    let claim_identity = counted(|| {
        TlsIdentity::from_certificates(&DeviceCertificates {
            device_certificate: claim_cert.into_bytes(),
            private_key: PrivateKey::new(claim_key.into_bytes()),
            iot_endpoint: "localhost".into(),
            device_id: "acorn-0002".into(),
        })
        .unwrap()
    });
    let parameters = acorn_embedded::claim::ThingParameters::for_mac(
        [0x24, 0x6f, 0x28, 0xaa, 0xbb, 0xcc],
        "0.1.0",
    );
    // AWS's topic names (no local prefix): the stand-in answers them on this broker.
    let mut claim = counted(|| {
        acorn_embedded::claim::ClaimDriver::for_device(
            "acorn-0002",
            "a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com",
            parameters,
            OsRng,
        )
        .unwrap()
    });
    let identity_peak = peak_bytes() - claim_base;
    drive_counted(
        &runtime,
        claim_broker.port(),
        &claim_identity,
        &claim_anchors,
        &mut buffers,
        &mut claim,
        60,
    );
    let claim_transient = (peak_bytes() - claim_base).max(identity_peak) - tokio_connect;
    let claimed = counted(|| claim.outcome())
        .expect("an outcome")
        .expect("claimed");
    assert_eq!(claimed.certificates.device_id, "acorn-0002");
    stand_in.join().unwrap();
    counted(|| drop((claimed, claim, claim_identity)));
    // At a first boot only the transport's buffers and Amazon's roots are held besides.
    let claim_peak = claim_transient + 24_832 + anchors_amazon;

    let high_water = ecc_peak.max(rsa_peak).max(boot_peak).max(rotation_peak);
    let row = |part: &str, bytes: usize, note: &str| println!("| {part} | {bytes} | {note} |");
    println!("heap, firmware code on Linux (crates/acorn-embedded/examples/heap.rs)\n");
    println!("| part | bytes | |\n|---|---:|---|");
    row(
        "identity (held)",
        identity_held,
        &format!(
            "TlsIdentity ({} B certificate DER, P-256 key), certificate facts, Wi-Fi credentials",
            identity.certificate_der().len()
        ),
    );
    row(
        "identity load (peak, freed)",
        boot_peak,
        "NVS index of the identity partition, CertStore::load with every check, TlsIdentity",
    );
    row(
        "trust anchors (held)",
        anchors_amazon,
        "Amazon Root CA 1 (RSA-2048) and 3 (P-256), parsed",
    );
    row(
        "TLS buffers (held)",
        16_640 + 4_096,
        "record read 16,640 + write 4,096",
    );
    row(
        "MQTT buffers (held)",
        4_096,
        "receive; outbound packets are sized exactly, transient",
    );
    row(
        "device core (held)",
        device_held,
        "Device (session, topics, settings, cooldown table) and the settings partition's NVS index",
    );
    row(
        "connection, ECC chain (transient)",
        ecc_connection,
        "TCP, TLS 1.3 handshake (leaf + intermediate parsed and verified), CONNACK, SUBACK, online, press, PUBACK",
    );
    row(
        "connection, RSA-2048 chain (transient)",
        rsa_connection,
        "the same with Amazon Root CA 1's kind of chain (RSA signatures, RSA-PSS CertificateVerify)",
    );
    row(
        &format!("queue ({queued} presses held while offline)"),
        queue_held,
        &format!(
            "{} B a press: its record in RAM (id, time, button, battery), the session's 8 messages (JSON, topic), the 32-entry cooldown table, the presses partition's NVS index",
            queue_held as u64 / queued
        ),
    );
    row(
        "certificate rotation, ECC chain (transient)",
        rotation_transient,
        "the new key and CSR, the provisioning API's JSON, the candidate checked and stored (NVS index of the identity partition), the trial connection's handshake with a clone of the candidate identity, the commit",
    );
    row(
        "provisioning by claim, ECC chain (transient)",
        claim_transient,
        "the claim identity, the new key and CSR, the API's JSON, the handshake with the claim certificate, the answers (a certificate and a token)",
    );
    println!(
        "\nheld once operational: {held_operational} B (in use at CONNACK: {} B)",
        at_connack - anchors_test - tokio_connect + anchors_amazon
    );
    println!(
        "high-water boot → connect → publish: {high_water} B (ECC chain {ecc_peak} B, RSA chain \
         {rsa_peak} B, a certificate rotation {rotation_peak} B); with a full offline queue: {} B; budget 98,304 B",
        high_water + queue_held
    );
    println!(
        "(not counted: tokio's TCP registration on Linux, {tokio_connect} B; the flash contents; \
         on the chip the TCP socket buffers, 12,288 B, allocated once by firmware/src/net.rs)"
    );
    println!(
        "provisioning by claim at a first boot: {claim_peak} B (with the transport's buffers and \
         Amazon's roots)"
    );
    drop((wifi, ecc_broker, rsa_broker, rotation_broker, claim_broker));
    if high_water + queue_held > 96 * 1024 {
        eprintln!("over the 96 KB budget");
        std::process::exit(1);
    }
}

// ----- a certificate rotation, as the chip runs it -----------------------------------------

/// The stand-in for AWS IoT's provisioning API on the service listener.
const RESPONDER: &str = "service:backend";

/// Ends the rotation run once the rotation is over.
struct RotationIo {
    inputs: mpsc::UnboundedReceiver<Input>,
    send: mpsc::UnboundedSender<Input>,
    committed: bool,
}

impl DeviceIo for RotationIo {
    async fn next_input(&mut self) -> Input {
        self.inputs.recv().await.unwrap_or(Input::Shutdown)
    }

    fn report(&mut self, _now: Time, report: Report<'_>) {
        match report {
            Report::Notice(Notice::RotationCommitted { .. }) => {
                self.committed = true;
                let _ = self.send.send(Input::Shutdown);
            }
            Report::Notice(
                notice @ (Notice::RotationFailed { .. } | Notice::RotationRolledBack { .. }),
            ) => {
                eprintln!("{notice}");
                let _ = self.send.send(Input::Shutdown);
            }
            _ => {}
        }
    }
}

/// Where the stand-in connects and what it answers.
struct StandIn<'a> {
    /// The broker's port (its service listener for a rotation, its device listener for a
    /// claim).
    port: u16,
    /// The CA that issues the stand-in's own certificate, and its name (CN, client id).
    issuer: &'a CertifiedIssuer<'static, KeyPair>,
    name: &'static str,
    /// The device, and the prefix of its API topics.
    device_id: &'static str,
    prefix: String,
    /// Ask the device to rotate once it is online (else only answer).
    ask_rotation: bool,
}

/// The stand-in: asks the device to rotate once it is online (when told to), signs its CSR
/// with `ca`, accepts its `RegisterThing`. Runs on its own thread and runtime (never counted)
/// until the device says the rotation is over, or it answered `RegisterThing`.
fn responder(
    stand_in: StandIn<'_>,
    broker_root: &str,
    ca: CertifiedIssuer<'static, KeyPair>,
) -> std::thread::JoinHandle<()> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
    use rustls_pki_types::pem::PemObject as _;
    let StandIn {
        port,
        issuer,
        name,
        device_id,
        prefix,
        ask_rotation,
    } = stand_in;
    let (cert, key) = leaf(issuer, name, &[], false);
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(broker_root.as_bytes()).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![rustls_pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
            rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        )
        .unwrap();
    let mut options = MqttOptions::new(name, "localhost", port);
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
        std::sync::Arc::new(tls),
    )));
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let (client, mut events) = AsyncClient::new(options, 16);
            let csr_topic = format!("{prefix}$aws/certificates/create-from-csr/json");
            let register_topic =
                format!("{prefix}$aws/provisioning-templates/acorn-pups/provision/json");
            if ask_rotation {
                client
                    .subscribe(format!("acorn-pups/status/{device_id}"), QoS::AtLeastOnce)
                    .await
                    .unwrap();
            }
            for topic in [&csr_topic, &register_topic] {
                client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
            }
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
            let mut asked = false;
            while let Ok(Ok(event)) = tokio::time::timeout_at(deadline, events.poll()).await {
                let Event::Incoming(Packet::Publish(p)) = event else {
                    continue;
                };
                let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap_or_default();
                let answer = if p.topic.starts_with("acorn-pups/status/") {
                    if v["status"] == "online" && !asked {
                        asked = true;
                        let command = r#"{"requestId":"heap-1","command":"rotate-certificate"}"#;
                        client
                            .publish(
                                format!("acorn-pups/commands/{device_id}"),
                                QoS::AtLeastOnce,
                                false,
                                command,
                            )
                            .await
                            .unwrap();
                    }
                    if v["rotation"] == "committed" || v["rotation"] == "failed" {
                        return;
                    }
                    continue;
                } else if p.topic == csr_topic {
                    let csr = v["certificateSigningRequest"].as_str().unwrap_or_default();
                    let cert = rcgen::CertificateSigningRequestParams::from_pem(csr)
                        .unwrap()
                        .signed_by(&ca)
                        .unwrap();
                    serde_json::json!({
                        "certificateId": acorn_certs::fingerprint(cert.der()),
                        "certificatePem": cert.pem(),
                        "certificateOwnershipToken": "token-1"
                    })
                } else if p.topic == register_topic {
                    serde_json::json!({"deviceConfiguration": {}, "thingName": device_id})
                } else {
                    continue;
                };
                client
                    .publish(
                        format!("{}/accepted", p.topic),
                        QoS::AtLeastOnce,
                        false,
                        answer.to_string(),
                    )
                    .await
                    .unwrap();
                if p.topic == register_topic && !ask_rotation {
                    // Let the answer go out before the client is dropped.
                    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), async {
                        while events.poll().await.is_ok() {}
                    })
                    .await;
                    return;
                }
            }
        });
    })
}

/// One rotation by command on an ECC chain: the peak above `base`.
#[allow(clippy::too_many_arguments)]
fn rotation_run(
    runtime: &tokio::runtime::Runtime,
    port: u16,
    identity: &TlsIdentity,
    issuer: &str,
    slots: Nvs<MemFlash>,
    anchors: &TrustAnchors,
    buffers: &mut Buffers,
    facts: CertificateFacts,
    base: usize,
) -> usize {
    let (send, inputs) = mpsc::unbounded_channel();
    let io = RotationIo {
        inputs,
        send,
        committed: false,
    };
    let mut config = acorn_device::rotation::RotationConfig::new("acorn-pups").unwrap();
    config.topic_prefix = acorn_mqtt::provisioning::local_prefix(identity.device_id());
    let device = counted(|| device_with(identity.device_id(), facts, Some(config)));
    let rotation = counted(|| Rotation::new(slots, OsRng, "localhost", issuer));
    let mut driver = DeviceDriver::with_rotation(device, io, rotation);
    drive_counted(runtime, port, identity, anchors, buffers, &mut driver, 60);
    let peak = peak_bytes() - base;
    assert!(driver.io().committed, "the rotation committed");
    peak
}
