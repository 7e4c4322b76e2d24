//! The device's flash on a host: an NVS partition image holding the identity (namespace
//! `mqtt_certs`, through [`acorn_certs::CertStore`]) and the settings (namespace `settings`,
//! in the device core's one stored format: [`DeviceImage`] is an
//! [`acorn_device::SettingsStore`] through the same NVS code the firmware runs).
//!
//! [`DeviceImage::open`] works on the image file itself ([`FileFlash`]: every write goes to the
//! file at once, as on a device), so the metadata updated by each identity load (`last_used`,
//! `validation_attempts`) and every settings change persist. [`DeviceImage::open_copy`] works
//! on a copy in memory, for read-only uses such as `acorn device ping` that must not write to an
//! image a running device may own.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use acorn_certs::nvs_kv::NvsCertKv;
use acorn_certs::{
    CertStore, CertificateMetadata, CertificateValidation, DeviceCertificates, PrivateKeyFormat,
    Problem, Slots, Status, StoreError, ValidationReport,
};
use acorn_device::{CertificateFacts, NvsSettingsError, SettingsStore};
use acorn_mqtt::DeviceSettings;
use acorn_nvs::{FileFlash, MemFlash, Mode, Nvs, NvsKeys};
use embedded_storage::nor_flash::NorFlash;

use acorn_transport::{ClientIdentity, DerKeyFormat};
use acorn_transport::{ExposeSecret as _, SecretSlice, SecretString};

/// NVS namespace and key of the device settings (a blob: [`DeviceSettings`] as JSON, written
/// in one atomic NVS write), defined once by the device core.
pub use acorn_device::{SETTINGS_KEY, SETTINGS_NAMESPACE};

/// Problems with the device image or the identity in it. Messages never hold key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The image file could not be opened or read.
    #[error("cannot open the NVS image {path}: {error}; give the partition image made by `acorn nvs generate` (or read from the device)")]
    File {
        /// The image.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file is not a usable NVS partition (size, pages, encryption key).
    #[error("cannot mount the NVS image {path}: {error}")]
    Mount {
        /// The image.
        path: PathBuf,
        /// What the NVS engine said.
        error: acorn_nvs::Error,
    },
    /// The press queue image is not a usable NVS partition (size, pages, encryption key).
    #[error("cannot mount the press queue image {path}: {error}; it must be the queue image this device made{}; to start with an empty queue, move the file away (the presses in it are then not delivered)", if *.encrypted { ", encrypted with the same nvs_keys as the identity image" } else { ", not encrypted (as the identity image is not)" })]
    QueueMount {
        /// The queue image.
        path: PathBuf,
        /// What the NVS engine said.
        error: acorn_nvs::Error,
        /// Whether it was mounted with the identity image's keys.
        encrypted: bool,
    },
    /// The identity is missing, corrupted or does not validate.
    #[error("no usable device identity in {path}: {detail}")]
    Identity {
        /// The image.
        path: PathBuf,
        /// What is wrong, in plain language (`certificate expired`, `clock not synced`, ...).
        detail: String,
        /// The seed's category.
        verdict: CertificateValidation,
    },
    /// The settings could not be written.
    #[error("cannot save the settings in {path} (namespace `settings`): {error}")]
    SaveSettings {
        /// The image.
        path: PathBuf,
        /// What the NVS engine said.
        error: acorn_nvs::Error,
    },
    /// The stored settings cannot be read or do not decode.
    #[error(transparent)]
    Settings(NvsSettingsError),
}

/// An identity loaded from an image and validated.
#[derive(Debug, Clone)]
pub struct LoadedDevice {
    /// The device id (MQTT client id, thing name).
    pub device_id: String,
    /// The IoT endpoint stored with the identity.
    pub endpoint: String,
    /// The TLS client identity.
    pub identity: ClientIdentity,
    /// The metadata as updated by this load.
    pub metadata: CertificateMetadata,
    /// Warnings of the validation (`clock not synced`, `expires in 12 days`, ...).
    pub warnings: Vec<String>,
    /// What the device core is told of the certificate (validity, fingerprint).
    pub certificate: CertificateFacts,
    /// The certificate's issuer (a rotated certificate must have the same, unless a CA is
    /// given).
    pub issuer: String,
}

/// An NVS partition image used as a device's flash.
pub struct DeviceImage<F> {
    nvs: Nvs<F>,
    path: PathBuf,
}

impl DeviceImage<FileFlash> {
    /// Opens the image file for reading and writing (as a device mounts its NVS at boot),
    /// encrypted when `keys` are given.
    pub fn open(path: &Path, keys: Option<&NvsKeys>) -> Result<Self, ImageError> {
        let flash = FileFlash::open(path).map_err(|error| ImageError::File {
            path: path.to_owned(),
            error,
        })?;
        let size = file_size(path)?;
        Self::mount(flash, size, keys, path)
    }

    /// Creates a blank image file of `size` bytes (a multiple of 4096, at least 3 pages).
    pub fn create(path: &Path, size: u32, keys: Option<&NvsKeys>) -> Result<Self, ImageError> {
        let flash = FileFlash::create(path, size as usize).map_err(|error| ImageError::File {
            path: path.to_owned(),
            error,
        })?;
        Self::mount(flash, size, keys, path)
    }
}

impl DeviceImage<MemFlash> {
    /// Opens a copy of the image in memory: nothing is ever written to the file.
    pub fn open_copy(path: &Path, keys: Option<&NvsKeys>) -> Result<Self, ImageError> {
        let bytes = std::fs::read(path).map_err(|error| ImageError::File {
            path: path.to_owned(),
            error,
        })?;
        let size = u32::try_from(bytes.len()).map_err(|_| ImageError::File {
            path: path.to_owned(),
            error: std::io::Error::other("the image is larger than 4 GiB"),
        })?;
        Self::mount(MemFlash::from_bytes(bytes), size, keys, path)
    }
}

fn file_size(path: &Path) -> Result<u32, ImageError> {
    let len = std::fs::metadata(path)
        .map_err(|error| ImageError::File {
            path: path.to_owned(),
            error,
        })?
        .len();
    u32::try_from(len).map_err(|_| ImageError::File {
        path: path.to_owned(),
        error: std::io::Error::other("the image is larger than 4 GiB"),
    })
}

/// The current time in Unix seconds (0 if the clock reads before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl<F: NorFlash> DeviceImage<F> {
    fn mount(flash: F, size: u32, keys: Option<&NvsKeys>, path: &Path) -> Result<Self, ImageError> {
        let mount = |error| ImageError::Mount {
            path: path.to_owned(),
            error,
        };
        let nvs = Nvs::open_with(flash, 0, size, keys, Mode::ReadWrite).map_err(mount)?;
        Ok(Self {
            nvs,
            path: path.to_owned(),
        })
    }

    /// The image's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The NVS partition.
    pub fn nvs_mut(&mut self) -> &mut Nvs<F> {
        &mut self.nvs
    }

    /// Validates `certs` at `now` (Unix seconds) and stores them power-cut safely (namespace
    /// `mqtt_certs`); any DNS host name is accepted as endpoint (local brokers).
    pub fn provision(
        &mut self,
        certs: &DeviceCertificates,
        now: u64,
    ) -> Result<ValidationReport, ImageError> {
        let mut store = CertStore::new(NvsCertKv::new(&mut self.nvs)).allow_custom_endpoint(true);
        store
            .store(certs, now)
            .map_err(|e| identity_error(&self.path, &e))
    }

    /// Loads and validates the identity at `now` (Unix seconds). The metadata update the
    /// certificate store makes (`validation_attempts`, `last_used`) is written to the image.
    pub fn load_identity(&mut self, now: u64) -> Result<LoadedDevice, ImageError> {
        let mut store = CertStore::new(NvsCertKv::new(&mut self.nvs)).allow_custom_endpoint(true);
        let loaded = store
            .load(now)
            .map_err(|e| identity_error(&self.path, &e))?;
        let warnings = loaded
            .report
            .checks
            .iter()
            .filter(|c| c.status == Status::Warning)
            .map(|c| match c.problem {
                Some(Problem::ClockNotSynced) => format!("clock not synced: {}", c.explanation),
                _ => c.explanation.clone(),
            })
            .collect();
        let identity =
            client_identity(&loaded.certificates).map_err(|detail| ImageError::Identity {
                path: self.path.clone(),
                detail,
                verdict: CertificateValidation::InvalidFormat,
            })?;
        let mut certificate = loaded
            .report
            .certificate
            .as_ref()
            .map(|info| CertificateFacts::new(info.not_before, info.not_after))
            .unwrap_or_default();
        certificate.fingerprint = Some(loaded.metadata.certificate_fingerprint.clone());
        let issuer = loaded
            .report
            .certificate
            .as_ref()
            .map(|info| info.issuer.clone())
            .unwrap_or_default();
        Ok(LoadedDevice {
            issuer,
            device_id: loaded.metadata.device_id.clone(),
            endpoint: loaded.certificates.iot_endpoint.clone(),
            identity,
            metadata: loaded.metadata,
            warnings,
            certificate,
        })
    }

    /// Finishes or drops what an interrupted certificate rotation left (at every start,
    /// before the identity is loaded); a note for the log when there was something.
    pub fn recover_rotation(&mut self) -> Result<Option<String>, ImageError> {
        let path = self.path.clone();
        let err = |e: acorn_certs::SlotError<acorn_nvs::Error>| slot_error(&path, &e);
        let mut slots = Slots::new(&mut self.nvs).allow_custom_endpoint(true);
        let note = slots.recover_at_start().map_err(err)?.map(str::to_owned);
        Ok(note)
    }

    /// The two identity slots of the image (certificate rotation).
    pub fn slots(&mut self) -> Slots<&mut Nvs<F>> {
        Slots::new(&mut self.nvs).allow_custom_endpoint(true)
    }

    /// The stored settings; `Ok(None)` when none were ever stored. Read by the device
    /// core's NVS store (namespace `settings`, key `settings`).
    pub fn stored_settings(&mut self) -> Result<Option<DeviceSettings>, ImageError> {
        SettingsStore::load(&mut self.nvs).map_err(ImageError::Settings)
    }

    /// Stores `settings` (one atomic NVS write: a power cut leaves the old or the new ones).
    pub fn save_settings(&mut self, settings: &DeviceSettings) -> Result<(), ImageError> {
        SettingsStore::save(&mut self.nvs, settings).map_err(|e| match e {
            NvsSettingsError::Write(error) => ImageError::SaveSettings {
                path: self.path.clone(),
                error,
            },
            other => ImageError::Settings(other),
        })
    }
}

/// The image keeps the device core's settings: [`acorn_device::Device`] loads them once
/// (unreadable ones give the defaults and [`acorn_device::Device::settings_warning`]) and
/// saves every accepted update before applying it.
impl<F: NorFlash> SettingsStore for DeviceImage<F> {
    type Error = ImageError;

    fn load(&mut self) -> Result<Option<DeviceSettings>, ImageError> {
        self.stored_settings()
    }

    fn save(&mut self, settings: &DeviceSettings) -> Result<(), ImageError> {
        self.save_settings(settings)
    }
}

/// Turns a store error into plain language, naming expiry and clock problems first.
fn identity_error<E: core::fmt::Display>(path: &Path, err: &StoreError<E>) -> ImageError {
    let verdict = err.verdict();
    let detail = match err {
        StoreError::Invalid { report } | StoreError::Rejected { report } => {
            let clock = report
                .checks
                .iter()
                .any(|c| c.problem == Some(Problem::ClockNotSynced));
            let failures: Vec<&str> = report
                .checks
                .iter()
                .filter(|c| c.status == Status::Fail)
                .map(|c| c.explanation.as_str())
                .collect();
            let mut text = match verdict {
                CertificateValidation::Expired => "certificate expired: ".to_owned(),
                _ => String::new(),
            };
            if clock {
                text.push_str("clock not synced (certificate dates cannot be checked); ");
            }
            text.push_str(&failures.join("; "));
            text
        }
        other => other.to_string(),
    };
    ImageError::Identity {
        path: path.to_owned(),
        detail,
        verdict,
    }
}

/// A slot operation's failure, as an identity error of the image at `path`.
fn slot_error(path: &Path, e: &acorn_certs::SlotError<acorn_nvs::Error>) -> ImageError {
    ImageError::Identity {
        path: path.to_owned(),
        detail: e.to_string(),
        verdict: CertificateValidation::InvalidFormat,
    }
}

/// PEM text when both items are PEM (keeps any intermediate certificates), else DER.
pub(crate) fn client_identity(certs: &DeviceCertificates) -> Result<ClientIdentity, String> {
    let pem_text = |bytes: &[u8]| {
        std::str::from_utf8(bytes)
            .ok()
            .filter(|s| s.trim_start().starts_with("-----BEGIN"))
            .map(str::to_owned)
    };
    if let (Some(cert), Some(key)) = (
        pem_text(&certs.device_certificate),
        pem_text(certs.private_key.expose_secret()),
    ) {
        return Ok(ClientIdentity::new(cert, SecretString::from(key)));
    }
    let cert = certs.certificate_der().map_err(|e| e.to_string())?;
    let key = certs.private_key_der().map_err(|e| e.to_string())?;
    let format = match key.format {
        PrivateKeyFormat::Pkcs1 => DerKeyFormat::Pkcs1,
        PrivateKeyFormat::Pkcs8 => DerKeyFormat::Pkcs8,
        PrivateKeyFormat::Sec1 => DerKeyFormat::Sec1,
    };
    Ok(ClientIdentity::from_der(
        cert,
        SecretSlice::from(key.expose_secret().to_vec()),
        format,
    ))
}
