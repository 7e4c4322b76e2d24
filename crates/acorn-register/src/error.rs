//! [`RegistrationError`]: every way device registration can fail, each saying what, where and
//! what to do.

use std::path::PathBuf;

/// Errors of the registration flow.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistrationError {
    /// A setting given to the client is not usable (nothing was sent).
    #[error("registration settings: {0}")]
    Config(String),
    /// The network-join step (Wi-Fi on a device) failed.
    #[error("network step `{step}` failed: {detail}")]
    Network {
        /// The step's name.
        step: String,
        /// What went wrong.
        detail: String,
    },
    /// The device key pair or its certificate request could not be made.
    #[error("could not make the device's {key_type} key pair or CSR: {detail}")]
    KeyGeneration {
        /// `P-256` or `RSA-2048`.
        key_type: &'static str,
        /// What failed.
        detail: String,
    },
    /// The backend refused the request (HTTP 4xx): retrying would not help.
    #[error("the registration backend refused the request (HTTP {status}, {code}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The backend's error code (e.g. `token_used`), or `http_<status>` without one.
        code: String,
        /// The backend's message.
        message: String,
    },
    /// The backend could not be reached, or kept failing (network errors, HTTP 5xx), for every
    /// attempt.
    #[error(
        "the registration backend at {url} did not answer successfully after {attempts} \
         attempt(s); last error: {last}. Check the URL, that the backend runs, and the network"
    )]
    Unavailable {
        /// The URL tried.
        url: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// The backend answered 201 but its answer is not usable (not stored).
    #[error("the backend's answer is not usable, nothing was stored: {0}")]
    BadAnswer(String),
    /// The NVS partition image could not be created, opened or written.
    #[error("NVS image {path}: {detail}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The image already holds a valid identity of another device.
    #[error(
        "NVS image {path} already holds a valid identity for device `{stored}`, not `{requested}`: \
         use another image, or erase it first (`acorn certs` / `acorn nvs erase`)"
    )]
    OtherDevice {
        /// The image file.
        path: PathBuf,
        /// The device id stored.
        stored: String,
        /// The device id requested.
        requested: String,
    },
}

impl RegistrationError {
    /// Whether trying again later could succeed (network or server trouble).
    pub fn is_transient(&self) -> bool {
        matches!(self, RegistrationError::Unavailable { .. })
    }
}
