//! The press source: a debounced GPIO button (GPIO9, the DevKit's BOOT button) now, the RF
//! receiver later — both behind [`PressSource`].

use core::cell::RefCell;

use acorn_embedded::app::BasicDevice;
use acorn_mqtt::Topics;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::blocking_mutex::Mutex;
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

static TOPICS: Mutex<CriticalSectionRawMutex, RefCell<Option<Topics>>> =
    Mutex::new(RefCell::new(None));

/// Tells the button task which device it belongs to (once the identity is loaded).
pub fn set_device(topics: &Topics) {
    TOPICS.lock(|t| *t.borrow_mut() = Some(topics.clone()));
}

/// Turns presses into publish requests for the transport.
#[embassy_executor::task]
pub async fn task(pin: GPIO9<'static>) {
    let mut button = GpioButton {
        input: Input::new(pin, InputConfig::default().with_pull(Pull::Up)),
    };
    loop {
        let press = button.next_press().await;
        let unix = crate::unix_ms();
        let topics = TOPICS.lock(|t| t.borrow().clone());
        let Some(topics) = topics else {
            warn!("press ignored: no identity loaded yet");
            continue;
        };
        if unix == 0 {
            warn!("press ignored: the clock is not synced yet");
            continue;
        }
        match BasicDevice::<crate::Presses>::press(
            &topics,
            press.button_rf_id,
            unix,
            press.battery_level,
        ) {
            Ok(request) => {
                if crate::REQUESTS.try_send(request).is_err() {
                    warn!("press dropped: the request queue is full");
                } else {
                    info!(
                        "press at {} (uptime {} ms)",
                        unix,
                        Instant::now().as_millis()
                    );
                }
            }
            Err(e) => warn!("press not sent: {e}"),
        }
    }
}
