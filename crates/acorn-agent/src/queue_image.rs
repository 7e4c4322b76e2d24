//! The durable press queue on a host: a second NVS partition image file beside the identity
//! image (a device keeps its queue in a partition of its own: the identity partition has no
//! room for 256 presses beside two identity slots).
//!
//! [`QueueImage`] is the device core's [`PressStore`] through the same NVS code the firmware
//! runs (namespace `press_queue`, see [`acorn_device::presses`]): every press is written to the
//! file before the press is answered and erased once its PUBACK arrives, so a crash, a
//! `kill -9` or a reboot loses none. The file is made on first use ([`QUEUE_IMAGE_SIZE`]
//! bytes, mode 0600 like the identity image, encrypted with the identity image's `nvs_keys`
//! when that one is encrypted).

use std::path::{Path, PathBuf};

use acorn_device::{NvsPressError, PressId, PressStore, QueuedPress, StoredQueue};
use acorn_nvs::{FileFlash, Mode, Nvs, NvsKeys};

use crate::device_image::ImageError;

/// Size of a queue image made on first use: 6 NVS pages, as the firmware's queue partition
/// (room for 256 presses of two NVS entries each, beside the one page NVS keeps free).
pub const QUEUE_IMAGE_SIZE: u32 = 0x6000;

/// The queue image of the identity image at `image` when none is named: beside it, named
/// after it (`device-nvs.bin` → `device-nvs.queue.bin`).
pub fn default_queue_path(image: &Path) -> PathBuf {
    image.with_extension("queue.bin")
}

/// The press queue's NVS image file, mounted read-write.
pub struct QueueImage {
    nvs: Nvs<FileFlash>,
    path: PathBuf,
    created: bool,
}

/// Why the press queue image could not be read or written (the device carries on: see
/// [`acorn_device::Notice::PressNotStored`]).
#[derive(Debug, thiserror::Error)]
#[error("{error} (press queue image {path})")]
pub struct QueueImageError {
    /// The image.
    pub path: PathBuf,
    /// What the NVS store said.
    pub error: NvsPressError,
}

impl QueueImage {
    /// Mounts the queue image at `path`, making a blank one first when there is no file
    /// (encrypted with `keys` when given: pass the identity image's keys).
    pub fn open_or_create(path: &Path, keys: Option<&NvsKeys>) -> Result<Self, ImageError> {
        let created = !path.exists();
        if created {
            create_blank(path)?;
        }
        let flash = FileFlash::open(path).map_err(|error| ImageError::File {
            path: path.to_owned(),
            error,
        })?;
        let size = u32::try_from(flash_size(path)?).map_err(|_| ImageError::File {
            path: path.to_owned(),
            error: std::io::Error::other("the image is larger than 4 GiB"),
        })?;
        let nvs = Nvs::open_with(flash, 0, size, keys, Mode::ReadWrite).map_err(|error| {
            ImageError::QueueMount {
                path: path.to_owned(),
                error,
                encrypted: keys.is_some(),
            }
        })?;
        Ok(Self {
            nvs,
            path: path.to_owned(),
            created,
        })
    }

    /// The image's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether [`QueueImage::open_or_create`] made the file.
    pub fn was_created(&self) -> bool {
        self.created
    }

    /// The NVS partition.
    pub fn nvs_mut(&mut self) -> &mut Nvs<FileFlash> {
        &mut self.nvs
    }

    fn error(&self, error: NvsPressError) -> QueueImageError {
        QueueImageError {
            path: self.path.clone(),
            error,
        }
    }
}

fn flash_size(path: &Path) -> Result<u64, ImageError> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|error| ImageError::File {
            path: path.to_owned(),
            error,
        })
}

/// Writes a blank image under a temporary name and renames it into place, so that a crash
/// never leaves a short file at `path`. The file is private (0600) and made without following
/// a symbolic link (see [`FileFlash::create`]).
fn create_blank(path: &Path) -> Result<(), ImageError> {
    let file_error = |error| ImageError::File {
        path: path.to_owned(),
        error,
    };
    let mut tmp_name = path
        .file_name()
        .ok_or_else(|| file_error(std::io::Error::other("the path names no file")))?
        .to_owned();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    // A leftover of a crashed start by a process with the same id.
    let _ = std::fs::remove_file(&tmp);
    let flash =
        FileFlash::create(&tmp, QUEUE_IMAGE_SIZE as usize).map_err(|error| ImageError::File {
            path: tmp.clone(),
            error,
        })?;
    drop(flash);
    std::fs::rename(&tmp, path).map_err(|error| {
        let _ = std::fs::remove_file(&tmp);
        file_error(error)
    })
}

impl PressStore for QueueImage {
    type Error = QueueImageError;

    fn load(&mut self) -> Result<StoredQueue, QueueImageError> {
        PressStore::load(&mut self.nvs).map_err(|e| self.error(e))
    }

    fn save_boot(&mut self, boot: u32) -> Result<(), QueueImageError> {
        self.nvs.save_boot(boot).map_err(|e| self.error(e))
    }

    fn append(&mut self, press: &QueuedPress) -> Result<(), QueueImageError> {
        self.nvs.append(press).map_err(|e| self.error(e))
    }

    fn remove(&mut self, id: PressId) -> Result<(), QueueImageError> {
        self.nvs.remove(id).map_err(|e| self.error(e))
    }

    fn save_dropped(&mut self, dropped: u32) -> Result<(), QueueImageError> {
        self.nvs.save_dropped(dropped).map_err(|e| self.error(e))
    }

    fn is_full(error: &QueueImageError) -> bool {
        <Nvs<FileFlash> as PressStore>::is_full(&error.error)
    }
}
