//! The device's NVS partition image (a file used as flash): look for a stored identity, and
//! store a new one through the certificate store (namespace `mqtt_certs`).

use std::path::{Path, PathBuf};

use acorn_certs::nvs_kv::NvsCertKv;
use acorn_certs::{CertStore, DeviceCertificates, StoreError};
use acorn_nvs::{FileFlash, Mode, Nvs, NvsKeys};

use crate::RegistrationError;

/// Size of a new image: 24 KiB, ESP-IDF's default `nvs` partition (6 pages).
pub const DEFAULT_IMAGE_SIZE: usize = 0x6000;

/// An NVS partition image file and its optional encryption keys.
#[derive(Debug, Clone)]
pub struct ImageTarget {
    /// The image file; created (blank, [`ImageTarget::create_size`] bytes) if missing.
    pub path: PathBuf,
    /// The `nvs_keys` when the partition is encrypted.
    pub keys: Option<NvsKeys>,
    /// Size of a new image, a multiple of 4096 (at least 3 pages).
    pub create_size: usize,
}

impl ImageTarget {
    /// A plain image at `path`, made with [`DEFAULT_IMAGE_SIZE`] if missing.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            keys: None,
            create_size: DEFAULT_IMAGE_SIZE,
        }
    }

    /// An error about this image.
    pub(crate) fn image_error(&self, detail: impl Into<String>) -> RegistrationError {
        self.err(detail)
    }

    fn err(&self, detail: impl Into<String>) -> RegistrationError {
        RegistrationError::Image {
            path: self.path.clone(),
            detail: detail.into(),
        }
    }

    pub(crate) fn open(&self) -> Result<Nvs<FileFlash>, RegistrationError> {
        let flash = if self.path.exists() {
            FileFlash::open(&self.path).map_err(|e| self.err(format!("cannot open: {e}")))?
        } else {
            if self.create_size == 0 || self.create_size % 4096 != 0 {
                return Err(self.err(format!(
                    "a new image must be a non-zero multiple of 4096 bytes, not {}",
                    self.create_size
                )));
            }
            FileFlash::create(&self.path, self.create_size)
                .map_err(|e| self.err(format!("cannot create: {e}")))?
        };
        let size = std::fs::metadata(&self.path)
            .map_err(|e| self.err(format!("cannot read its size: {e}")))?
            .len();
        if size == 0 || size % 4096 != 0 {
            return Err(self.err(format!(
                "{size} bytes is not a non-zero multiple of 4096: not an NVS partition image"
            )));
        }
        let size = u32::try_from(size).map_err(|_| self.err("the image is larger than 4 GiB"))?;
        Nvs::open_with(flash, 0, size, self.keys.as_ref(), Mode::ReadWrite).map_err(|e| {
            self.err(format!(
                "cannot mount the NVS partition: {e}{}",
                if self.keys.is_some() {
                    ""
                } else {
                    " (if it is encrypted, give its nvs_keys)"
                }
            ))
        })
    }

    /// The device id of a valid stored identity, if there is one (`now`: Unix seconds).
    pub fn stored_device(&self, now: u64) -> Result<Option<String>, RegistrationError> {
        if !self.path.exists() {
            return Ok(None);
        }
        let mut nvs = self.open()?;
        let mut store = CertStore::new(NvsCertKv::new(&mut nvs)).allow_custom_endpoint(true);
        match store.load(now) {
            Ok(loaded) => Ok(Some(loaded.certificates.device_id.clone())),
            Err(err @ StoreError::Kv { .. }) => Err(self.err(err.to_string())),
            Err(err) => {
                tracing::info!(image = %self.path.display(), "no valid identity stored: {err}");
                Ok(None)
            }
        }
    }

    /// Stores `certs` (validated again by the store; nothing is written if invalid).
    pub fn store(
        &self,
        certs: &DeviceCertificates,
        now: u64,
        allow_custom_endpoint: bool,
    ) -> Result<(), RegistrationError> {
        let mut nvs = self.open()?;
        let mut store =
            CertStore::new(NvsCertKv::new(&mut nvs)).allow_custom_endpoint(allow_custom_endpoint);
        store
            .store(certs, now)
            .map(|_| ())
            .map_err(|e| self.err(e.to_string()))
    }

    /// Loads and validates the stored identity (what a device does at boot).
    pub fn load(&self, now: u64) -> Result<DeviceCertificates, RegistrationError> {
        let mut nvs = self.open()?;
        let mut store = CertStore::new(NvsCertKv::new(&mut nvs)).allow_custom_endpoint(true);
        store
            .load(now)
            .map(|loaded| loaded.certificates)
            .map_err(|e| self.err(e.to_string()))
    }

    /// The image path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
