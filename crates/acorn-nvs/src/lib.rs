//! ESP-IDF NVS (non-volatile storage) partitions, format v2, plain and encrypted, over any
//! [`embedded_storage::nor_flash::NorFlash`]. `no_std` + `alloc`.
//!
//! The same bytes an ESP32 reads and writes: pages with states and sequence numbers, the entry
//! bitmap, entry and data CRCs, namespaces, every integer type, strings, multi-page blobs,
//! legacy v1 blobs, garbage collection that keeps one page free, and the recovery ESP-IDF does
//! on mount. Encrypted partitions use AES-256-XTS per entry exactly as ESP-IDF does.
//!
//! ```
//! use acorn_nvs::{MemFlash, Nvs};
//!
//! let flash = MemFlash::new(0x6000);
//! let mut nvs = Nvs::open(flash, 0, 0x6000)?;
//! let ns = nvs.namespace("mqtt_certs")?;
//! nvs.set_str(ns, "iot_endpoint", "abc123-ats.iot.us-west-2.amazonaws.com")?;
//! nvs.set_blob(ns, "device_cert", &[0x30; 1220])?;
//! nvs.set::<u8>(ns, "cert_valid", 1)?;
//!
//! // Size the buffer from the stored length, then read into it: no copy, no guessing.
//! let info = nvs.value_info(ns, "device_cert")?.expect("stored");
//! let mut cert = vec![0u8; info.len];
//! nvs.get_blob_into(ns, "device_cert", &mut cert)?;
//! assert_eq!(nvs.get::<u8>(ns, "cert_valid")?, Some(1));
//! # Ok::<(), acorn_nvs::Error>(())
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod builder;
pub mod crc;
mod crypto;
mod error;
#[cfg(feature = "std")]
mod fileflash;
pub mod format;
mod key;
mod memflash;
mod nvs;
mod partition;
mod scan;
mod svc;
mod value;

pub use crypto::{NvsKey, NvsKeys, KEYS_PARTITION_SIZE};
pub use error::{Error, FlashFault, Result, Undecodable};
#[cfg(feature = "std")]
pub use fileflash::{FileFlash, FileFlashError};
pub use key::encode_key;
pub use memflash::{MemFlash, MemFlashError, PowerCut};
pub use nvs::{EntryInfo, Mode, Namespace, Nvs, Stats};
pub use scan::{Problem, ProblemKind};
/// The one trait that reads a secret ([`NvsKey`]), re-exported from `secrecy`.
pub use secrecy::ExposeSecret;
pub use svc::{pack_small, unpack_small, NvsRawStorage};
pub use value::{IntValue, Integer, ValueInfo, ValueType};
