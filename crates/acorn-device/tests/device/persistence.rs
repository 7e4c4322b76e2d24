//! Settings persistence through [`SettingsStore`]: loaded at construction, saved before they
//! apply, the same NVS format on every store.

use acorn_device::acorn_mqtt::DeviceSettings;
use acorn_device::{MemorySettings, SettingsStore, SETTINGS_KEY, SETTINGS_NAMESPACE};
use acorn_nvs::{MemFlash, Mode, Nvs};

use crate::support::{config, reply, BrokenStore, Sim, SETTINGS};

const PARTITION: u32 = 0x6000;

#[test]
fn stored_settings_are_in_effect_from_the_start() {
    let stored = DeviceSettings {
        heartbeat_seconds: 300,
        sound_enabled: false,
        sound_volume: 3,
        led_brightness: 0,
        cooldown_ms: 0,
    };
    let sim = Sim::with(config(), MemorySettings::with(stored));
    assert_eq!(sim.settings(), stored);
    assert_eq!(sim.device.settings_warning(), None);
    // Nothing stored: the defaults, no warning.
    assert_eq!(Sim::new().settings(), DeviceSettings::default());
}

#[test]
fn unreadable_settings_give_the_defaults_and_a_warning() {
    let store = BrokenStore {
        load_fails: true,
        ..Default::default()
    };
    let sim = Sim::with(config(), store);
    assert_eq!(sim.settings(), DeviceSettings::default());
    assert_eq!(
        sim.device.settings_warning(),
        Some("the stored settings cannot be read (flash read failed); using the defaults")
    );
}

#[test]
fn every_applied_update_is_saved_once_and_partial_updates_keep_the_rest() {
    let mut sim = Sim::online();
    sim.message(SETTINGS, br#"{"soundVolume":9}"#);
    sim.message(SETTINGS, br#"{"requestId":"b","soundEnabled":false}"#);
    let store = sim.device.store();
    assert_eq!(store.saves, 2);
    let saved = store.stored.unwrap();
    assert_eq!(saved.sound_volume, 9);
    assert!(!saved.sound_enabled);
    assert_eq!(saved.led_brightness, 50);
}

fn blank_nvs() -> Nvs<MemFlash> {
    Nvs::open(MemFlash::new(PARTITION as usize), 0, PARTITION).unwrap()
}

#[test]
fn settings_persist_in_nvs_across_a_reboot() {
    let mut sim = Sim::with(config(), blank_nvs());
    sim.connect(true);
    let answer = reply(&sim.message(
        SETTINGS,
        br#"{"requestId":"n1","soundVolume":7,"ledBrightness":20}"#,
    ));
    assert_eq!(answer["result"], "ok");

    // The flash after a reboot: a new device on the same partition has the settings.
    let flash = sim.device.into_store().release();
    let nvs = Nvs::open(flash, 0, PARTITION).unwrap();
    let mut rebooted = Sim::with(config(), nvs);
    assert_eq!(rebooted.settings().sound_volume, 7);
    assert_eq!(rebooted.settings().led_brightness, 20);

    // Stored as the documented blob (what the Linux image and the chip both read).
    let nvs = rebooted.device.store_mut();
    let ns = nvs.find_namespace(SETTINGS_NAMESPACE).unwrap();
    assert_eq!(
        nvs.get_blob(ns, SETTINGS_KEY).unwrap().unwrap(),
        br#"{"soundEnabled":true,"soundVolume":7,"ledBrightness":20,"cooldownMs":1000,"heartbeatSeconds":300}"#
    );
}

#[test]
fn nvs_store_reports_unreadable_and_unwritable_settings() {
    // A value that is not the settings JSON.
    let mut nvs = blank_nvs();
    let ns = nvs.namespace(SETTINGS_NAMESPACE).unwrap();
    nvs.set_blob(ns, SETTINGS_KEY, b"{\"volume\":1}").unwrap();
    let err = nvs.load().unwrap_err().to_string();
    assert!(
        err.starts_with("the stored settings are unreadable ("),
        "{err}"
    );
    let sim = Sim::with(config(), nvs);
    assert!(sim
        .device
        .settings_warning()
        .unwrap()
        .ends_with("; using the defaults"));

    // A partition opened read-only: the update is refused in words, nothing applied.
    let flash = blank_nvs().release();
    let nvs = Nvs::open_with(flash, 0, PARTITION, None, Mode::ReadOnly).unwrap();
    let mut sim = Sim::with(config(), nvs);
    sim.connect(true);
    let answer = reply(&sim.message(SETTINGS, br#"{"requestId":"ro","soundVolume":2}"#));
    assert_eq!(answer["result"], "error");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.starts_with(
            "settings not applied: cannot save the settings (NVS namespace `settings`)"
        ),
        "{error}"
    );
    assert_eq!(sim.settings().sound_volume, 5);
}
