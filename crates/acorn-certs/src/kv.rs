//! [`CertKv`]: the small key-value interface the certificate store needs, and its key names.

/// The NVS namespace the certificate store lives in (the seed's layout).
pub const NAMESPACE: &str = "mqtt_certs";
/// Key of the device certificate (PEM or DER bytes).
pub const KEY_DEVICE_CERT: &str = "device_cert";
/// Key of the private key (PEM or DER bytes).
pub const KEY_PRIVATE_KEY: &str = "private_key";
/// Key of the IoT endpoint host name.
pub const KEY_IOT_ENDPOINT: &str = "iot_endpoint";
/// Key of the metadata ([`crate::CertificateMetadata`] as JSON).
pub const KEY_CERT_META: &str = "cert_meta";
/// Key of the validity flag (u8: 1 = a complete, validated set is stored; 0 or absent = none).
pub const KEY_CERT_VALID: &str = "cert_valid";

/// A key-value store scoped to one namespace ([`NAMESPACE`]); what [`crate::CertStore`] runs on.
///
/// An implementation over ESP-IDF NVS (or acorn-nvs) opens the `mqtt_certs` namespace and maps:
///
/// * byte values ([`CertKv::stored_len`], [`CertKv::read`], [`CertKv::write`]) to NVS blobs when
///   writing, and to **either blobs or strings** when reading, so partitions made from
///   `file,binary` and `file,string` CSV rows both load;
/// * [`CertKv::read_u8`]/[`CertKv::write_u8`] to NVS `u8` entries.
///
/// Each single write must be atomic (NVS is: the new entry is complete before the old one is
/// erased); the store orders its writes so that a power cut between two of them is safe.
pub trait CertKv {
    /// The implementation's error (flash I/O, wrong entry type, ...).
    type Error: core::fmt::Debug + core::fmt::Display;

    /// The number of bytes needed to read `key`'s value, without reading it; `None` if absent.
    ///
    /// For an NVS string this is its stored length *including* the trailing NUL.
    fn stored_len(&mut self, key: &str) -> Result<Option<usize>, Self::Error>;

    /// Reads `key`'s value into `buf` (sized by [`CertKv::stored_len`]) and returns the length of
    /// the value: for an NVS string, without its trailing NUL (the caller drops the last byte of
    /// `buf`). `None` if absent.
    fn read(&mut self, key: &str, buf: &mut [u8]) -> Result<Option<usize>, Self::Error>;

    /// Stores `value` under `key` (as a blob), replacing any value of any type.
    fn write(&mut self, key: &str, value: &[u8]) -> Result<(), Self::Error>;

    /// Reads a `u8` value; `None` if absent.
    fn read_u8(&mut self, key: &str) -> Result<Option<u8>, Self::Error>;

    /// Stores a `u8` value under `key`.
    fn write_u8(&mut self, key: &str, value: u8) -> Result<(), Self::Error>;

    /// Removes `key`; removing an absent key is not an error.
    fn erase(&mut self, key: &str) -> Result<(), Self::Error>;
}

/// A borrowed store is a store: lets a [`crate::CertStore`] run on `&mut kv`.
impl<T: CertKv + ?Sized> CertKv for &mut T {
    type Error = T::Error;

    fn stored_len(&mut self, key: &str) -> Result<Option<usize>, Self::Error> {
        (**self).stored_len(key)
    }

    fn read(&mut self, key: &str, buf: &mut [u8]) -> Result<Option<usize>, Self::Error> {
        (**self).read(key, buf)
    }

    fn write(&mut self, key: &str, value: &[u8]) -> Result<(), Self::Error> {
        (**self).write(key, value)
    }

    fn read_u8(&mut self, key: &str) -> Result<Option<u8>, Self::Error> {
        (**self).read_u8(key)
    }

    fn write_u8(&mut self, key: &str, value: u8) -> Result<(), Self::Error> {
        (**self).write_u8(key, value)
    }

    fn erase(&mut self, key: &str) -> Result<(), Self::Error> {
        (**self).erase(key)
    }
}
