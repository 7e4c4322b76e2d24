//! Acorn Pups button device firmware for the ESP32-C3 (bare metal: esp-hal, esp-rtos/embassy,
//! esp-radio Wi-Fi, embassy-net, esp-storage).
//!
//! Boot (the state machine is `acorn_embedded::boot`, tested on Linux): Wi-Fi credentials from
//! NVS namespace `wifi` → Wi-Fi station, DHCP, DNS → SNTP (never connect on unchecked dates) →
//! identity from the `identity` NVS partition (encrypted when `nvs_keys` holds keys) →
//! operational: the embedded transport (TLS 1.3 + MQTT 3.1.1) driven by `acorn_mqtt::Session`,
//! a debounced button as press source, a status LED, a watchdog. Panics are printed and the
//! chip resets (esp-backtrace).
#![no_std]
#![no_main]

extern crate alloc;

mod button;
mod led;
mod net;
mod storage;

use alloc::string::String;
use core::sync::atomic::Ordering;
use portable_atomic::AtomicU64;

use acorn_embedded::app::{BasicDevice, RequestSource};
use acorn_embedded::boot::{Boot, BootAction, BootEvent};
use acorn_embedded::{Buffers, Request, Target, Transport, TransportConfig};
use acorn_mqtt::{Session, SessionConfig, Topics};
use embassy_executor::Spawner;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::channel::Channel;
use embassy_time::{Duration, Instant, Timer};
use esp_backtrace as _;
use esp_hal::clock::CpuClock;
use esp_hal::timer::timg::TimerGroup;
use log::{info, warn};

esp_bootloader_esp_idf::esp_app_desc!();

/// Firmware version reported in status messages.
pub const FIRMWARE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Unix time in ms minus `Instant::now()` in ms, once SNTP answered (0 = not synced).
static UNIX_OFFSET_MS: AtomicU64 = AtomicU64::new(0);

/// Presses from the button task to the transport.
pub static REQUESTS: Channel<CriticalSectionRawMutex, Request, 8> = Channel::new();

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
        match unix_ms() {
            0 => None,
            t => Some(t / 1000),
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

/// Requests from the button task.
pub(crate) struct Presses;

impl RequestSource for Presses {
    async fn next(&mut self) -> Request {
        REQUESTS.receive().await
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
    let registration_possible = false; // see docs/esp32.md: registration over HTTP is not built yet
    let mut boot = Boot::new(registration_possible);
    let mut network: Option<net::Network> = None;
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
                    Some(n) => n.sntp().await,
                    None => BootEvent::ClockFailed {
                        reason: String::from("no network"),
                    },
                },
                BootAction::LoadIdentity { now_unix } => {
                    let (event, loaded) = flash.identity(now_unix);
                    identity = loaded;
                    event
                }
                BootAction::Register { .. } => BootEvent::RegistrationFailed {
                    reason: String::from("registration is not built into this firmware yet"),
                },
                BootAction::StartOperation => {
                    let (Some(n), Some(id)) = (network.as_ref(), identity.take()) else {
                        continue;
                    };
                    operate(n, id, rng).await;
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

/// The operational phase: runs the transport forever (the session never gives up).
async fn operate(network: &net::Network, identity: acorn_embedded::TlsIdentity, rng: ChipRng) {
    let Ok(topics) = Topics::new(identity.device_id()) else {
        warn!("the stored device id cannot make MQTT topics");
        return;
    };
    button::set_device(&topics);
    let anchors = acorn_embedded::TrustAnchors::amazon();
    let mut device = BasicDevice::new(topics.clone(), FIRMWARE_VERSION, unix_ms, Presses);
    let mut config = TransportConfig::new(Target::new(identity.endpoint(), 8883));
    config.will = device.last_will();
    let mut buffers = Buffers::new();
    let Ok(mut session) = Session::new(SessionConfig::for_device(&topics), rng) else {
        warn!("invalid session configuration");
        return;
    };
    let mut transport = Transport::new(
        network.connector(),
        ChipClock,
        rng,
        &identity,
        &anchors,
        config,
        &mut buffers,
    );
    led::set(led::Pattern::Connecting);
    transport
        .run(&mut session, &mut led::Watching(&mut device))
        .await;
}
