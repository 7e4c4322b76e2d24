//! Errors of the NVS engine.

/// What went wrong in the NVS engine. Every variant says where and, when it can, how to fix it.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The flash driver failed.
    #[error("flash {op} at partition offset {offset:#x} failed: {kind}")]
    Flash {
        /// read, write or erase.
        op: &'static str,
        /// Partition-relative offset.
        offset: u32,
        /// The driver's error kind.
        kind: FlashFault,
    },
    /// The partition geometry is not usable.
    #[error("partition of {size} bytes at offset {offset:#x} is not usable: {reason}")]
    Geometry {
        /// Partition offset in the flash.
        offset: u32,
        /// Partition size.
        size: u32,
        /// Why.
        reason: &'static str,
    },
    /// A key or namespace name breaks the rules.
    #[error("invalid key {key:?}: {reason} (keys are 1 to 15 ASCII characters)")]
    InvalidKey {
        /// The offending key (keys are never secret).
        key: alloc::string::String,
        /// What rule it breaks.
        reason: &'static str,
    },
    /// The value does not fit the format's limits.
    #[error("value for key {key:?} is too long: {len} bytes, the limit is {max}")]
    ValueTooLong {
        /// The key.
        key: alloc::string::String,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A string value contains a NUL byte, which the format cannot store.
    #[error("string value for key {key:?} contains a NUL byte at {at}")]
    NulInString {
        /// The key.
        key: alloc::string::String,
        /// Byte position.
        at: usize,
    },
    /// The value exists but has another type.
    #[error("key {key:?} holds a {found}, not a {wanted}")]
    TypeMismatch {
        /// The key.
        key: alloc::string::String,
        /// The stored type.
        found: &'static str,
        /// The requested type.
        wanted: &'static str,
    },
    /// The caller's buffer is smaller than the value.
    #[error(
        "buffer of {have} bytes is too small for key {key:?} ({need} bytes); size it with len()"
    )]
    BufferTooSmall {
        /// The key.
        key: alloc::string::String,
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        have: usize,
    },
    /// The stored value fails its CRC or is incomplete.
    #[error("value of key {key:?} in page {page} entry {entry} is corrupt: {reason}")]
    CorruptValue {
        /// The key.
        key: alloc::string::String,
        /// Physical page index within the partition.
        page: usize,
        /// Entry index within the page.
        entry: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// No space is left, even after garbage collection.
    #[error(
        "NVS partition is full: {needed} more entries needed; erase keys or use a bigger partition"
    )]
    NotEnoughSpace {
        /// Entries that could not be found.
        needed: usize,
    },
    /// All 254 namespace indexes are taken.
    #[error("no free namespace index (254 namespaces exist)")]
    TooManyNamespaces,
    /// The partition was written by an unknown format version.
    #[error("page {page} has NVS format version {version:#04x}; only 0xfe (v2) and 0xff (v1) are understood")]
    UnsupportedVersion {
        /// Physical page index.
        page: usize,
        /// The version byte found.
        version: u8,
    },
    /// Entries exist but none decodes: wrong key, an encrypted image read without a key, or not NVS at all.
    #[error("{0}")]
    Undecodable(Undecodable),
    /// The `nvs_keys` partition content is not valid.
    #[error("NVS key partition is invalid: {0}")]
    BadKeys(&'static str),
    /// The partition was opened read-only.
    #[error("the partition was opened read-only; reopen it writable to change it")]
    ReadOnly,
}

/// Why a partition with written entries could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undecodable {
    /// A key was given and nothing decrypts with it, though the image reads as plain NVS.
    ImageNotEncrypted,
    /// A key was given and nothing decrypts with it.
    WrongKey,
    /// No key was given and entries do not decode: the image is probably encrypted.
    NeedsKey,
}

impl core::fmt::Display for Undecodable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Undecodable::ImageNotEncrypted => {
                "the image is not encrypted but an NVS key was given; open it without the key"
            }
            Undecodable::WrongKey => {
                "no entry decrypts with the given NVS key: it is the wrong key for this image \
                 (nothing was written)"
            }
            Undecodable::NeedsKey => {
                "no entry of the image decodes: it is probably encrypted; give its nvs_keys \
                 partition (nothing was written)"
            }
        })
    }
}

/// The flash driver's error, reduced to embedded-storage's kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashFault {
    /// Not aligned to the driver's read/write/erase size.
    NotAligned,
    /// Outside the flash.
    OutOfBounds,
    /// Anything else the driver reports (power cut, bit set back to 1, I/O error).
    Other,
}

impl core::fmt::Display for FlashFault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            FlashFault::NotAligned => "not aligned",
            FlashFault::OutOfBounds => "out of bounds",
            FlashFault::Other => "driver error",
        })
    }
}

impl Error {
    /// Builds a flash error from a driver error.
    pub(crate) fn flash<E: embedded_storage::nor_flash::NorFlashError>(
        op: &'static str,
        offset: u32,
        err: E,
    ) -> Error {
        use embedded_storage::nor_flash::NorFlashErrorKind as K;
        let kind = match err.kind() {
            K::NotAligned => FlashFault::NotAligned,
            K::OutOfBounds => FlashFault::OutOfBounds,
            _ => FlashFault::Other,
        };
        Error::Flash { op, offset, kind }
    }
}

/// Result with the engine's error.
pub type Result<T> = core::result::Result<T, Error>;
