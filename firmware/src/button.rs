//! The press source: a debounced GPIO button (GPIO9, the DevKit's BOOT button) now, the RF
//! receiver later — both behind [`PressSource`].

use core::sync::atomic::{AtomicBool, Ordering};

use acorn_embedded::device::Input as DeviceInput;
use embassy_time::{Duration, Instant, Timer};
use esp_hal::gpio::{Input, InputConfig, Pull};
use esp_hal::peripherals::GPIO9;
use log::{info, warn};

/// A button press as the RF receiver would report it.
pub struct Press {
    /// The RF id of the button.
    pub button_rf_id: &'static str,
    /// Its battery level, when known.
    pub battery_level: Option<u8>,
}

/// Where presses come from (the RF receiver implements this too).
pub trait PressSource {
    /// Waits for the next press.
    async fn next_press(&mut self) -> Press;
}

/// Shortest accepted press: shorter pulses are contact bounce.
const DEBOUNCE: Duration = Duration::from_millis(30);

/// A push button to ground with the internal pull-up.
pub struct GpioButton {
    input: Input<'static>,
}

impl PressSource for GpioButton {
    async fn next_press(&mut self) -> Press {
        loop {
            self.input.wait_for_falling_edge().await;
            Timer::after(DEBOUNCE).await;
            if self.input.is_low() {
                self.input.wait_for_high().await;
                Timer::after(DEBOUNCE).await;
                return Press {
                    button_rf_id: "gpio-button",
                    battery_level: None,
                };
            }
        }
    }
}

/// Whether the device core runs (identity loaded, clock synced): presses before are dropped.
static OPERATIONAL: AtomicBool = AtomicBool::new(false);

/// Tells the button task that the device core takes presses now.
pub fn set_operational(on: bool) {
    OPERATIONAL.store(on, Ordering::Relaxed);
}

/// Hands presses to the device core (cooldown, queueing and the message are its job).
#[embassy_executor::task]
pub async fn task(pin: GPIO9<'static>) {
    let mut button = GpioButton {
        input: Input::new(pin, InputConfig::default().with_pull(Pull::Up)),
    };
    loop {
        let press = button.next_press().await;
        if !OPERATIONAL.load(Ordering::Relaxed) {
            warn!("press ignored: no identity loaded or clock not synced yet");
            continue;
        }
        let input = DeviceInput::Press {
            button: press.button_rf_id.into(),
            battery: press.battery_level,
        };
        if crate::INPUTS.try_send(input).is_err() {
            warn!("press dropped: the input queue is full");
        } else {
            info!(
                "press of {} at {} (uptime {} ms)",
                press.button_rf_id,
                crate::unix_ms(),
                Instant::now().as_millis()
            );
        }
    }
}
