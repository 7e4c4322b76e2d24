//! Acorn Pups button device firmware for the ESP32-C3 (bare metal: esp-hal, esp-rtos/embassy,
//! esp-radio Wi-Fi, embassy-net, esp-storage).
//!
//! Boot (the state machine is `acorn_embedded::boot`, tested on Linux): Wi-Fi credentials from
//! NVS namespace `wifi` → Wi-Fi station, DHCP, DNS → SNTP (never connect on unchecked dates) →
//! identity from the `identity` NVS partition (encrypted when `nvs_keys` holds keys) →
//! operational: the device core (`acorn_device::Device`: presses with cooldown, settings saved
//! in the `nvs` partition and answered, commands answered, online/offline) driving the
//! embedded transport (TLS 1.3 + MQTT 3.1.1) through `acorn_embedded::device::DeviceDriver`,
//! a debounced button as press source, a status LED, a watchdog. Panics are printed
//! (esp-backtrace) and the chip resets at once (`custom_halt`).
#![no_std]
#![no_main]

extern crate alloc;

mod button;
mod led;
mod net;
mod storage;
mod trust;

use alloc::string::String;
use core::sync::atomic::Ordering;
use portable_atomic::AtomicU64;

use acorn_device::{Device, DeviceConfig, HostFacts, Level, Notice};
use acorn_embedded::boot::{Boot, BootAction, BootEvent, Provisioning};
#[cfg(feature = "claim")]
use acorn_embedded::claim::ThingParameters;
use acorn_embedded::device::{DeviceDriver, DeviceIo, Input, Report};
use acorn_embedded::rotation::Rotation;
use acorn_embedded::{Buffers, Target, Time, Transport, TransportConfig};
use embassy_executor::Spawner;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::channel::Channel;
use embassy_time::{Duration, Instant, Timer};
use esp_backtrace as _;
use esp_hal::clock::CpuClock;
use esp_hal::timer::timg::TimerGroup;
use log::{debug, info, warn};

esp_bootloader_esp_idf::esp_app_desc!();

/// Firmware version reported in status messages.
pub const FIRMWARE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Unix time in ms minus `Instant::now()` in ms, once SNTP answered (0 = not synced).
static UNIX_OFFSET_MS: AtomicU64 = AtomicU64::new(0);

/// Presses from the button task to the device core.
pub static INPUTS: Channel<CriticalSectionRawMutex, Input, 8> = Channel::new();

/// Buttons the device core remembers for the cooldown (each entry holds a button id).
const COOLDOWN_ENTRIES: usize = 32;

/// The synced wall clock in Unix ms (0 before SNTP).
pub fn unix_ms() -> u64 {
    match UNIX_OFFSET_MS.load(Ordering::Relaxed) {
        0 => 0,
        offset => offset + Instant::now().as_millis(),
    }
}

/// Records an SNTP answer.
pub fn set_unix_ms(unix_ms: u64) {
    UNIX_OFFSET_MS.store(
        unix_ms.saturating_sub(Instant::now().as_millis()),
        Ordering::Relaxed,
    );
}

/// The transport's clock: embassy time and the SNTP offset.
#[derive(Clone, Copy)]
pub struct ChipClock;

impl acorn_embedded::Clock for ChipClock {
    fn now_ms(&self) -> u64 {
        Instant::now().as_millis()
    }

    fn unix_secs(&self) -> Option<u64> {
        self.unix_ms().map(|t| t / 1000)
    }

    fn unix_ms(&self) -> Option<u64> {
        match unix_ms() {
            0 => None,
            t => Some(t),
        }
    }

    async fn sleep_until(&self, at_ms: u64) {
        Timer::at(Instant::from_millis(at_ms)).await
    }
}

/// The hardware random number generator (true random while the radio runs).
#[derive(Clone, Copy)]
pub struct ChipRng(pub esp_hal::rng::Rng);

impl rand_core::RngCore for ChipRng {
    fn next_u32(&mut self) -> u32 {
        self.0.random()
    }
    fn next_u64(&mut self) -> u64 {
        (u64::from(self.0.random()) << 32) | u64::from(self.0.random())
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(4) {
            let r = self.0.random().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rand_core::CryptoRng for ChipRng {}

/// The device core's platform side: presses from the button task in, reports to the serial
/// log and the LED out.
pub(crate) struct ChipIo;

impl DeviceIo for ChipIo {
    async fn next_input(&mut self) -> Input {
        INPUTS.receive().await
    }

    fn report(&mut self, _now: Time, report: Report<'_>) {
        match report {
            Report::Notice(Notice::Status(status)) => {
                // Every status change is shown (and the LED follows it).
                led::show(status);
                info!("mqtt: {status}");
            }
            // Each at its own level: a press answer repeats the core's notice (debug).
            other => match other.level() {
                Level::Warn => warn!("{other}"),
                Level::Info => info!("{other}"),
                Level::Debug => debug!("{other}"),
            },
        }
    }

    fn host_facts(&mut self) -> Option<HostFacts> {
        let mut facts = HostFacts::default();
        facts.free_heap_bytes = Some(esp_alloc::HEAP.free() as u64);
        facts.wifi_rssi_dbm = net::rssi_dbm();
        facts.reset_reason = Some(reset_reason().into());
        Some(facts)
    }
}

/// Why the chip last reset, in the heartbeat's words.
fn reset_reason() -> &'static str {
    use esp_hal::rtc_cntl::SocResetReason as R;
    match esp_hal::system::reset_reason() {
        Some(R::ChipPowerOn) => "power-on",
        Some(R::CoreSw | R::Cpu0Sw) => "software",
        Some(R::CoreDeepSleep) => "deep-sleep",
        Some(R::SysBrownOut) => "brown-out",
        Some(
            R::CoreMwdt0
            | R::CoreMwdt1
            | R::CoreRtcWdt
            | R::Cpu0Mwdt0
            | R::Cpu0RtcWdt
            | R::SysRtcWdt
            | R::Cpu0Mwdt1
            | R::SysSuperWdt,
        ) => "watchdog",
        Some(R::CoreUsbUart | R::CoreUsbJtag) => "usb",
        Some(_) => "other",
        None => "unknown",
    }
}

#[esp_rtos::main]
async fn main(spawner: Spawner) -> ! {
    esp_println::logger::init_logger_from_env();
    let peripherals = esp_hal::init(esp_hal::Config::default().with_cpu_clock(CpuClock::max()));
    esp_alloc::heap_allocator!(#[esp_hal::ram(reclaimed)] size: 64 * 1024);
    esp_alloc::heap_allocator!(size: 72 * 1024);

    let timg0 = TimerGroup::new(peripherals.TIMG0);
    esp_rtos::start(timg0.timer0, peripherals.FROM_CPU_INTR0);

    // Watchdog: a stuck firmware resets after 30 s; the LED task feeds it.
    let timg1 = TimerGroup::new(peripherals.TIMG1);
    let mut wdt = timg1.wdt;
    wdt.set_timeout(
        esp_hal::timer::timg::MwdtStage::Stage0,
        esp_hal::time::Duration::from_secs(30),
    );
    wdt.enable();

    info!("acorn firmware {FIRMWARE_VERSION} starting");
    let rng = ChipRng(esp_hal::rng::Rng::new());

    spawner.spawn(led::task(peripherals.GPIO8, wdt).unwrap());
    spawner.spawn(button::task(peripherals.GPIO9).unwrap());

    let mut flash = storage::Flash::new(peripherals.FLASH);
    #[cfg(any(feature = "register", feature = "claim"))]
    let mac = {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(esp_hal::efuse::base_mac_address().as_bytes());
        mac
    };
    #[cfg(feature = "register")]
    let registration_possible = flash.registration(mac).is_some();
    #[cfg(not(feature = "register"))]
    let registration_possible = false;
    #[cfg(feature = "claim")]
    let claim_possible = flash.claim().is_some();
    #[cfg(not(feature = "claim"))]
    let claim_possible = false;
    let mut boot = Boot::with_provisioning(match (registration_possible, claim_possible) {
        (true, _) => Provisioning::Register,
        (false, true) => Provisioning::Claim,
        (false, false) => Provisioning::None,
    });
    let mut network: Option<net::Network> = None;
    // One TCP socket (its buffers allocated once) for registration and MQTT.
    let mut connector: Option<net::ChipConnector> = None;
    let mut radio = Some(peripherals.WIFI);
    let mut identity = None;

    loop {
        while let Some(action) = boot.poll_action() {
            let now = Instant::now().as_millis();
            let event = match action {
                BootAction::Log(line) => {
                    info!("{line}");
                    continue;
                }
                BootAction::ReadWifiCredentials => {
                    led::set(led::Pattern::NoNetwork);
                    BootEvent::WifiCredentials(flash.wifi_credentials())
                }
                BootAction::ConnectWifi(credentials) => {
                    if network.is_none() {
                        if let Some(wifi) = radio.take() {
                            network = Some(net::Network::start(spawner, wifi, &credentials, rng));
                        }
                    }
                    match network.as_mut() {
                        Some(n) => n.wait_up().await,
                        None => BootEvent::WifiFailed {
                            reason: String::from("the radio could not be started"),
                        },
                    }
                }
                BootAction::SyncClock => match network.as_ref() {
                    Some(n) => {
                        // The answer must echo it: 64 bits an off-path forger must guess.
                        let mut nonce = [0u8; 8];
                        let mut rng = rng;
                        rand_core::RngCore::fill_bytes(&mut rng, &mut nonce);
                        n.sntp(nonce).await
                    }
                    None => BootEvent::ClockFailed {
                        reason: String::from("no network"),
                    },
                },
                BootAction::LoadIdentity { now_unix } => {
                    let (event, loaded) = flash.identity(now_unix);
                    identity = loaded;
                    event
                }
                #[cfg(feature = "register")]
                BootAction::Register { now_unix } => {
                    match (network.as_ref(), flash.registration(mac)) {
                        (Some(n), Some(config)) => {
                            let connector = connector.get_or_insert_with(|| n.connector());
                            let mut rng = rng;
                            let attempt =
                                acorn_embedded::register::register(connector, &mut rng, &config);
                            match embassy_time::with_timeout(Duration::from_secs(60), attempt).await
                            {
                                Ok(Ok(registered)) => flash.store_registered(&registered, now_unix),
                                Ok(Err(e)) => BootEvent::RegistrationFailed {
                                    reason: alloc::format!("{e}"),
                                },
                                Err(_) => BootEvent::RegistrationFailed {
                                    reason: String::from(
                                        "no answer from the registration backend within 60 s",
                                    ),
                                },
                            }
                        }
                        _ => BootEvent::RegistrationFailed {
                            reason: String::from(
                                "no network, or registration is no longer configured",
                            ),
                        },
                    }
                }
                #[cfg(not(feature = "register"))]
                BootAction::Register { .. } => BootEvent::RegistrationFailed {
                    reason: String::from("this firmware is built without the `register` feature"),
                },
                #[cfg(feature = "claim")]
                BootAction::Claim { now_unix } => match (network.as_ref(), flash.claim()) {
                    (Some(n), Some(config)) => {
                        let connector = connector.get_or_insert_with(|| n.connector());
                        let anchors = trust::anchors();
                        let parameters = ThingParameters::for_mac(mac, FIRMWARE_VERSION);
                        let attempt = acorn_embedded::claim::provision(
                            connector, ChipClock, rng, &config, &anchors, parameters,
                        );
                        // Each step is bounded by the claim driver (30 s); this bounds the whole.
                        match embassy_time::with_timeout(Duration::from_secs(180), attempt).await {
                            Ok(Ok(claimed)) => flash.store_claimed(&claimed, now_unix),
                            Ok(Err(e)) => BootEvent::RegistrationFailed {
                                reason: alloc::format!("{e}"),
                            },
                            Err(_) => BootEvent::RegistrationFailed {
                                reason: String::from("provisioning by claim took over 180 s"),
                            },
                        }
                    }
                    _ => BootEvent::RegistrationFailed {
                        reason: String::from("no network, or the claim identity is gone"),
                    },
                },
                #[cfg(not(feature = "claim"))]
                BootAction::Claim { .. } => BootEvent::RegistrationFailed {
                    reason: String::from("this firmware is built without the `claim` feature"),
                },
                BootAction::StartOperation => {
                    let (Some(n), Some(id)) = (network.as_ref(), identity.take()) else {
                        continue;
                    };
                    let connector = connector.get_or_insert_with(|| n.connector());
                    operate(connector, id, rng, &mut flash).await;
                    continue;
                }
            };
            boot.handle(now, event);
        }
        match boot.poll_timeout() {
            Some(t) => Timer::at(Instant::from_millis(t)).await,
            None => Timer::after(Duration::from_secs(1)).await,
        }
        boot.handle(Instant::now().as_millis(), BootEvent::Tick);
    }
}

/// The operational phase: the device core drives the transport, forever (the session never
/// gives up).
async fn operate(
    connector: &mut net::ChipConnector,
    identity: storage::Identity,
    rng: ChipRng,
    flash: &mut storage::Flash,
) {
    // The identity's slots stay open beside the settings and the presses (one flash, three
    // partitions); without them the device does not rotate (`rotate-certificate` is refused).
    let mut slots = flash.identity_slots();
    if slots.is_none() {
        warn!("rotation: the identity partition cannot be opened for a new certificate");
    }
    let config = match DeviceConfig::new(identity.tls.device_id(), FIRMWARE_VERSION) {
        Ok(mut config) => {
            config.certificate = identity.facts.clone();
            config.cooldown_entries = COOLDOWN_ENTRIES;
            config.rotation = slots
                .as_mut()
                .map(|nvs| storage::rotation_config(nvs, &identity.tls));
            config
        }
        Err(e) => {
            warn!("the stored identity cannot run a device: {e}");
            return;
        }
    };
    let device = match Device::with_press_store(config, flash.settings(), flash.presses(), rng) {
        Ok(device) => device,
        Err(e) => {
            warn!("the device cannot start: {e}");
            return;
        }
    };
    if let Some(warning) = device.settings_warning() {
        warn!("settings: {warning}");
    }
    for warning in device.press_queue_warnings() {
        warn!("press queue: {warning}");
    }
    if device.recovered_presses() > 0 {
        info!(
            "{} queued presses from before the restart",
            device.recovered_presses()
        );
    }
    info!("settings: {}", device.settings());
    let anchors = trust::anchors();
    let config = TransportConfig::new(Target::new(identity.tls.endpoint(), 8883));
    let mut buffers = Buffers::new();
    let mut transport = Transport::new(
        connector,
        ChipClock,
        rng,
        &identity.tls,
        &anchors,
        config,
        &mut buffers,
    );
    let rotation =
        slots.map(|slots| Rotation::new(slots, rng, identity.tls.endpoint(), &identity.issuer));
    let mut driver = DeviceDriver::with_rotation(device, ChipIo, rotation);
    led::set(led::Pattern::Connecting);
    button::set_operational(true);
    transport.drive(&mut driver).await;
    button::set_operational(false);
}

/// After esp-backtrace has printed a panic (message and backtrace on the serial port), reset
/// the chip at once instead of spinning until the watchdog bites.
// esp-backtrace calls this by its symbol name (feature `custom-halt`); `no_mangle` is what makes
// that link, and the function touches no memory.
#[allow(unsafe_code)]
#[no_mangle]
fn custom_halt() -> ! {
    esp_hal::system::software_reset()
}
