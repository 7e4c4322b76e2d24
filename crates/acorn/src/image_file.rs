//! NVS partition image files and key files on the host: loading with checks, opening, and
//! writing results atomically (temporary file + rename) so a failure never leaves a damaged or
//! partial file, and privately (mode 0600) because they hold keys.

use std::path::Path;

use acorn_nvs::{MemFlash, Mode, Nvs, NvsKeys, ProblemKind};
use anyhow::{bail, Context, Result};

/// Reads a partition image and checks its size.
pub fn load_image(path: &Path) -> Result<Vec<u8>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read image {}", path.display()))?;
    if bytes.is_empty() || bytes.len() % 4096 != 0 {
        bail!(
            "image {} is {} bytes, not a non-zero multiple of 4096: it is truncated or not an NVS partition image",
            path.display(),
            bytes.len()
        );
    }
    Ok(bytes)
}

/// Reads an `nvs_keys` partition file (as made by `acorn nvs keygen` or ESP-IDF's generator).
pub fn load_keys(path: &Path) -> Result<NvsKeys> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read NVS key file {}", path.display()))?;
    NvsKeys::from_partition(&bytes).with_context(|| format!("NVS key file {}", path.display()))
}

/// Loads the keys when a path is given.
pub fn maybe_keys(path: Option<&Path>) -> Result<Option<NvsKeys>> {
    path.map(load_keys).transpose()
}

/// Opens an image held in memory.
pub fn open(
    bytes: Vec<u8>,
    keys: Option<&NvsKeys>,
    mode: Mode,
    what: &Path,
) -> Result<Nvs<MemFlash>> {
    let size = bytes.len() as u32;
    let nvs = Nvs::open_with(MemFlash::from_bytes(bytes), 0, size, keys, mode)
        .with_context(|| format!("cannot open {}", what.display()))?;
    let stats = nvs.stats();
    if stats.pages_corrupt == stats.pages {
        bail!(
            "{} holds no NVS page (all {} pages are unreadable): it is not an NVS partition image",
            what.display(),
            stats.pages
        );
    }
    Ok(nvs)
}

/// Opens an image file for a change: refuses images with damaged pages, whose repair by a
/// writable mount could destroy data a support engineer still needs.
pub fn open_for_change(path: &Path, keys: Option<&NvsKeys>) -> Result<Nvs<MemFlash>> {
    let bytes = load_image(path)?;
    let probe = open(bytes.clone(), keys, Mode::ReadOnly, path)?;
    let damaged = probe
        .mount_findings()
        .iter()
        .filter(|p| {
            matches!(
                p.kind,
                ProblemKind::BadPageHeader
                    | ProblemKind::UnknownPageState
                    | ProblemKind::UninitializedNotBlank
            )
        })
        .count();
    if damaged > 0 {
        bail!(
            "{} has {damaged} damaged page(s); refusing to change it. Run `acorn nvs check {}` for details",
            path.display(),
            path.display()
        );
    }
    open(bytes, keys, Mode::ReadWrite, path)
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
///
/// Every file the CLI writes this way (partition images, which hold device private keys;
/// `nvs_keys` files; values written by `nvs get --out`) is private to its owner (mode 0600)
/// from its creation on; the temporary file is made exclusively without following symbolic
/// links, and a symbolic link at `path` is replaced, never written through.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    acorn_files::write_private(path, bytes).map_err(anyhow::Error::new)
}
