//! The device's NVS image: identity load and checks before any connection, encrypted images,
//! settings storage. No broker needed.

use acorn_test_support::mqtt as common;

use acorn_agent::device::DeviceError;
use acorn_agent::{Device, DeviceImage, ImageError};
use acorn_mqtt::DeviceSettings;
use acorn_nvs::NvsKeys;
use common::{device_image, Ca, Validity};

fn certs(ca: &Ca, id: &str) -> (acorn_certs::DeviceCertificates, String) {
    let (cert, key) = ca.leaf(id, &[], Validity::Valid);
    (
        acorn_certs::DeviceCertificates {
            device_certificate: cert.into_bytes(),
            private_key: acorn_certs::PrivateKey::new(key.clone().into_bytes()),
            iot_endpoint: "a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com".into(),
            device_id: id.into(),
        },
        key,
    )
}

#[test]
fn an_unsynced_clock_is_a_warning_and_the_default_broker_is_the_stored_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("CA");
    let (image, _) = device_image(dir.path(), &ca, "dev-clock");
    let mut options = acorn_agent::DeviceOptions::new(&image);
    options.now_unix = Some(1_000_000_000); // 2001: no SNTP yet
    let device = Device::open(options).unwrap();
    assert!(
        device
            .warnings()
            .iter()
            .any(|w| w.starts_with("clock not synced")),
        "{:?}",
        device.warnings()
    );
    // No --broker: the endpoint stored in the image, MQTT over TLS port.
    assert_eq!(device.address(), "localhost:8883");
    let mut options = acorn_agent::DeviceOptions::new(&image);
    options.alpn = true;
    assert_eq!(Device::open(options).unwrap().address(), "localhost:443");
}

#[test]
fn an_expired_certificate_is_refused_in_plain_language() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("CA");
    let (cert, key) = ca.leaf("dev-old", &[], Validity::Expired);
    let path = dir.path().join("old.bin");
    let mut image = DeviceImage::create(&path, 0x6000, None).unwrap();
    let certs = acorn_certs::DeviceCertificates {
        device_certificate: cert.into_bytes(),
        private_key: acorn_certs::PrivateKey::new(key.into_bytes()),
        iot_endpoint: "localhost".into(),
        device_id: "dev-old".into(),
    };
    image.provision(&certs, 1_593_561_600).unwrap(); // mid-2020, when it was valid
    drop(image);
    let err = Device::open(acorn_agent::DeviceOptions::new(&path))
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(text.contains("certificate expired"), "{text}");
    assert!(text.contains("old.bin"), "{text}");
    assert!(matches!(
        err,
        DeviceError::Image(ImageError::Identity {
            verdict: acorn_certs::CertificateValidation::Expired,
            ..
        })
    ));
}

#[test]
fn an_image_without_identity_or_a_missing_file_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.bin");
    drop(DeviceImage::create(&empty, 0x6000, None).unwrap());
    let text = Device::open(acorn_agent::DeviceOptions::new(&empty))
        .err()
        .unwrap()
        .to_string();
    assert!(text.contains("no device identity is stored"), "{text}");
    let text = Device::open(acorn_agent::DeviceOptions::new(dir.path().join("nope.bin")))
        .err()
        .unwrap()
        .to_string();
    assert!(text.contains("nope.bin"), "{text}");
    std::fs::write(dir.path().join("odd.bin"), [0u8; 1000]).unwrap();
    let text = Device::open(acorn_agent::DeviceOptions::new(dir.path().join("odd.bin")))
        .err()
        .unwrap()
        .to_string();
    assert!(text.contains("4096"), "{text}");
}

#[test]
fn encrypted_images_need_their_keys_and_keep_secrets_out_of_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("CA");
    let keys = NvsKeys::generate(&mut rand::rngs::OsRng);
    let path = dir.path().join("enc.bin");
    let (certs, key_pem) = certs(&ca, "dev-enc");
    let mut image = DeviceImage::create(&path, 0x6000, Some(&keys)).unwrap();
    image
        .provision(&certs, acorn_agent::device_image::unix_now())
        .unwrap();
    let settings = DeviceSettings {
        sound_enabled: false,
        ..DeviceSettings::default()
    };
    image.save_settings(&settings).unwrap();
    drop(image);
    // The key never appears in the file in clear.
    let raw = std::fs::read(&path).unwrap();
    let line = key_pem.lines().nth(1).unwrap();
    assert!(!raw.windows(line.len()).any(|w| w == line.as_bytes()));

    let mut options = acorn_agent::DeviceOptions::new(&path);
    options.nvs_keys = Some(keys);
    let device = Device::open(options).unwrap();
    assert_eq!(device.device_id(), "dev-enc");
    assert!(!device.settings().sound_enabled);
    assert_eq!(
        device.address(),
        "a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com:8883"
    );
    drop(device);

    let before = std::fs::read(&path).unwrap();
    let err = Device::open(acorn_agent::DeviceOptions::new(&path))
        .err()
        .unwrap();
    assert!(!err.to_string().contains(line));
    // Opening without the key failed and wrote nothing.
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn unreadable_settings_fall_back_to_the_defaults_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("CA");
    let (path, _) = device_image(dir.path(), &ca, "dev-set");
    let mut image = DeviceImage::open(&path, None).unwrap();
    let nvs = image.nvs_mut();
    let ns = nvs.namespace("settings").unwrap();
    nvs.set_blob(ns, "settings", b"{\"soundVolume\":").unwrap();
    drop(image);
    let device = Device::open(acorn_agent::DeviceOptions::new(&path)).unwrap();
    assert_eq!(device.settings(), DeviceSettings::default());
    assert!(device
        .warnings()
        .iter()
        .any(|w| w.contains("settings are unreadable")));
    // The same words as before the device core kept the settings.
    assert!(
        device
            .warnings()
            .iter()
            .any(|w| w.starts_with("the stored settings are unreadable (")
                && w.ends_with("); using the defaults")),
        "{:?}",
        device.warnings()
    );
}

#[test]
fn settings_are_stored_in_the_device_cores_one_format() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("CA");
    let (path, _) = device_image(dir.path(), &ca, "dev-fmt");
    let mut image = DeviceImage::open(&path, None).unwrap();
    assert_eq!(image.stored_settings().unwrap(), None, "none stored yet");
    let settings = DeviceSettings {
        sound_volume: 9,
        cooldown_ms: 250,
        ..DeviceSettings::default()
    };
    image.save_settings(&settings).unwrap();
    // The blob is the core's encoding, where the firmware keeps it.
    let nvs = image.nvs_mut();
    let ns = nvs
        .find_namespace(acorn_device::SETTINGS_NAMESPACE)
        .unwrap();
    let stored = nvs.get_blob(ns, acorn_device::SETTINGS_KEY).unwrap();
    assert_eq!(stored, Some(acorn_device::encode_settings(&settings)));
    drop(image);
    // The device core reads them back as the settings in effect, with no warning.
    let device = Device::open(acorn_agent::DeviceOptions::new(&path)).unwrap();
    assert_eq!(device.settings(), settings);
    assert!(
        !device.warnings().iter().any(|w| w.contains("settings")),
        "{:?}",
        device.warnings()
    );
}
