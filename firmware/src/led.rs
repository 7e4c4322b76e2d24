//! The status LED (GPIO8, the ESP32-C3 DevKit's LED) and the watchdog feed.
//!
//! | pattern | meaning |
//! |---|---|
//! | slow blink (1 s on, 1 s off) | no network: no Wi-Fi credentials, or joining |
//! | fast blink (100 ms) | connecting to the broker |
//! | steady on | connected |
//! | double blink every 2 s | error: the last attempt failed (see the serial log) |

use core::sync::atomic::{AtomicU8, Ordering};

use acorn_mqtt::ConnectionStatus;
use embassy_time::Timer;
use esp_hal::gpio::{Level, Output, OutputConfig};
use esp_hal::peripherals::{GPIO8, TIMG1};
use esp_hal::timer::timg::Wdt;

/// The LED patterns.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Pattern {
    /// No network.
    NoNetwork = 0,
    /// Connecting to the broker.
    Connecting = 1,
    /// Connected.
    Connected = 2,
    /// The last attempt failed.
    Error = 3,
}

static PATTERN: AtomicU8 = AtomicU8::new(Pattern::NoNetwork as u8);

/// Shows `pattern`.
pub fn set(pattern: Pattern) {
    PATTERN.store(pattern as u8, Ordering::Relaxed);
}

/// Blinks the LED and feeds the watchdog (so a stuck executor resets the chip).
#[embassy_executor::task]
pub async fn task(pin: GPIO8<'static>, mut wdt: Wdt<TIMG1<'static>>) {
    let mut led = Output::new(pin, Level::Low, OutputConfig::default());
    loop {
        let steps: &[(bool, u64)] = match PATTERN.load(Ordering::Relaxed) {
            0 => &[(true, 1000), (false, 1000)],
            1 => &[(true, 100), (false, 100)],
            2 => &[(true, 1000)],
            _ => &[(true, 150), (false, 150), (true, 150), (false, 1550)],
        };
        for (on, ms) in steps {
            // The DevKit's LED is active low.
            led.set_level(if *on { Level::Low } else { Level::High });
            Timer::after_millis(*ms).await;
        }
        wdt.feed();
    }
}

/// The pattern for a connection status.
pub fn show(status: &ConnectionStatus) {
    set(match status {
        ConnectionStatus::Connected => Pattern::Connected,
        ConnectionStatus::Connecting | ConnectionStatus::Disconnected => Pattern::Connecting,
        ConnectionStatus::Error(_) => Pattern::Error,
    });
}
