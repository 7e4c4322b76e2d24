//! The Acorn Pups device on a host: [`device`] runs what a device does — identity and
//! settings from an NVS partition image file ([`device_image`]), presses waiting for their
//! PUBACK in a second one ([`queue_image`]), the device core of `acorn-device`
//! (the same sans-IO state machine as the firmware) driven over the rustls + rumqttc
//! transport of `acorn-transport` — for `acorn device run`, the demo and the integration
//! tests.
//!
//! ```no_run
//! use acorn_agent::{Device, DeviceOptions};
//! # async fn run() -> Result<(), acorn_agent::DeviceError> {
//! let device = Device::open(DeviceOptions::new("device-nvs.bin"))?;
//! let handle = device.spawn();
//! handle.press("rf-5a3c", Some(87)).await?;
//! handle.shutdown().await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod device;
pub mod device_image;
pub mod queue_image;

pub use device::{
    Device, DeviceError, DeviceEvent, DeviceHandle, DeviceOptions, PressOutcome, PressQueue,
};
pub use device_image::{DeviceImage, ImageError, LoadedDevice};
pub use queue_image::QueueImage;
