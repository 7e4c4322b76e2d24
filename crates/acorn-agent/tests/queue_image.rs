//! The press queue image: made beside the identity image on first use (private, encrypted
//! like it), presses kept in it across a restart while no broker is reachable, and a queue
//! file that cannot be used explained. No broker needed: the device points at a port where
//! nothing listens.

use acorn_test_support::mqtt as common;

use std::path::Path;

use acorn_agent::device::{DeviceError, PressOutcome};
use acorn_agent::{Device, DeviceImage, DeviceOptions, ImageError};
use acorn_device::PressStore as _;
use acorn_nvs::{FileFlash, Mode, Nvs, NvsKeys};
use acorn_transport::BrokerTarget;
use common::{device_image, Ca, Validity};

/// Options for `image`, connecting to a loopback port where nothing listens.
fn offline(image: &Path) -> DeviceOptions {
    let port = acorn_devstack::broker::free_port().unwrap();
    let mut options = DeviceOptions::new(image);
    options.broker = Some(BrokerTarget::new("127.0.0.1", port));
    options
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn presses_wait_in_a_private_queue_image_beside_the_identity_image_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("CA");
    let (image, _) = device_image(dir.path(), &ca, "dev-q");
    let queue = dir.path().join("dev-q.queue.bin");
    assert!(!queue.exists());

    let device = Device::open(offline(&image)).unwrap();
    assert_eq!(device.queue_image_path(), queue);
    assert_eq!(device.recovered_presses(), 0);
    assert_eq!(std::fs::metadata(&queue).unwrap().len(), 0x6000);
    #[cfg(unix)]
    assert_eq!(mode(&queue), 0o600, "private, like the identity image");
    let handle = device.spawn();
    let mut ids = Vec::new();
    for (button, battery) in [("rf-1", Some(10)), ("rf-2", None), ("rf-3", Some(100))] {
        match handle.press(button, battery).await.unwrap() {
            PressOutcome::Queued(id) => ids.push(id),
            other => panic!("{other:?}"),
        }
    }
    handle.shutdown().await.unwrap();

    // A new start finds them, oldest first, with their ids, times and batteries.
    let device = Device::open(offline(&image)).unwrap();
    assert_eq!(device.recovered_presses(), 3);
    let queue_now = device.press_queue();
    let stored: Vec<_> = queue_now
        .presses
        .iter()
        .map(|p| (p.id, p.button.as_str(), p.battery))
        .collect();
    assert_eq!(
        stored,
        [
            (ids[0], "rf-1", Some(10)),
            (ids[1], "rf-2", None),
            (ids[2], "rf-3", Some(100))
        ]
    );
    assert!(queue_now
        .presses
        .iter()
        .all(|p| p.unix_ms > 1_700_000_000_000));
    // New presses of this start come after them.
    let handle = device.spawn();
    let PressOutcome::Queued(fourth) = handle.press("rf-4", None).await.unwrap() else {
        panic!("queued")
    };
    assert!(fourth > ids[2], "{fourth} after {}", ids[2]);
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_encrypted_identity_image_gets_an_encrypted_queue_image() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("CA");
    let keys = NvsKeys::generate(&mut rand::rngs::OsRng);
    let image = dir.path().join("enc.bin");
    let (cert, key) = ca.leaf("dev-qe", &[], Validity::Valid);
    let mut nvs = DeviceImage::create(&image, 0x8000, Some(&keys)).unwrap();
    nvs.provision(
        &acorn_certs::DeviceCertificates {
            device_certificate: cert.into_bytes(),
            private_key: acorn_certs::PrivateKey::new(key.into_bytes()),
            iot_endpoint: "localhost".into(),
            device_id: "dev-qe".into(),
        },
        acorn_agent::device_image::unix_now(),
    )
    .unwrap();
    drop(nvs);
    let queue = dir.path().join("elsewhere").join("presses.bin");
    std::fs::create_dir(queue.parent().unwrap()).unwrap();
    let mut options = offline(&image);
    options.nvs_keys = Some(keys.clone());
    options.queue_image = Some(queue.clone());
    let handle = Device::open(options).unwrap().spawn();
    let PressOutcome::Queued(id) = handle.press("rf-secret-button", Some(42)).await.unwrap() else {
        panic!("queued")
    };
    handle.shutdown().await.unwrap();
    assert!(
        !dir.path().join("enc.queue.bin").exists(),
        "--queue-image names it"
    );

    // Nothing of the press is in the file in clear; with the keys it reads back.
    let raw = std::fs::read(&queue).unwrap();
    let id_text = id.to_string();
    assert!(!raw.windows(id_text.len()).any(|w| w == id_text.as_bytes()));
    assert!(!raw.windows(16).any(|w| w == b"rf-secret-button"));
    let mut nvs = Nvs::open_with(
        FileFlash::open(&queue).unwrap(),
        0,
        0x6000,
        Some(&keys),
        Mode::ReadOnly,
    )
    .unwrap();
    let stored = nvs.load().unwrap();
    assert_eq!(stored.presses.len(), 1);
    assert_eq!(stored.presses[0].id, id);
    assert_eq!(stored.presses[0].button, "rf-secret-button");
}

#[test]
fn a_queue_file_that_is_not_a_queue_image_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("CA");
    let (image, _) = device_image(dir.path(), &ca, "dev-qbad");
    let queue = dir.path().join("dev-qbad.queue.bin");
    std::fs::write(&queue, [0u8; 1000]).unwrap();
    let err = Device::open(offline(&image)).err().expect("refused");
    assert!(
        matches!(err, DeviceError::Image(ImageError::QueueMount { .. })),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("dev-qbad.queue.bin"), "{text}");
    assert!(text.contains("move the file away"), "{text}");
    // The file is left as it was.
    assert_eq!(std::fs::read(&queue).unwrap(), [0u8; 1000]);
}
