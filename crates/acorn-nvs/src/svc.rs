//! embedded-svc's `StorageBase`/`RawStorage` over one namespace, with the on-flash encoding of
//! esp-idf-svc 0.53's `EspNvs`: values shorter than 8 bytes in a u64 entry (low byte = length,
//! then the bytes), longer ones as blobs. A value set here reads back on a device through
//! `EspKeyValueStorage`, and back.

use core::cell::RefCell;

use embedded_storage::nor_flash::NorFlash;
use embedded_svc::storage::{RawStorage, StorageBase};

use crate::error::{Error, Result};
use crate::nvs::{Namespace, Nvs};
use crate::value::{ValueInfo, ValueType};

/// One namespace of an [`Nvs`] as an embedded-svc raw storage.
pub struct NvsRawStorage<'a, F> {
    nvs: &'a RefCell<Nvs<F>>,
    ns: Namespace,
}

impl<'a, F: NorFlash> NvsRawStorage<'a, F> {
    /// Opens (creating if needed) namespace `name`.
    pub fn new(nvs: &'a RefCell<Nvs<F>>, name: &str) -> Result<Self> {
        let ns = nvs.borrow_mut().namespace(name)?;
        Ok(NvsRawStorage { nvs, ns })
    }
}

/// Packs a value shorter than 8 bytes as esp-idf-svc does.
pub fn pack_small(value: &[u8]) -> Option<u64> {
    if value.len() >= 8 {
        return None;
    }
    let mut packed = 0u64;
    for &b in value.iter().rev() {
        packed = (packed << 8) | u64::from(b);
    }
    Some((packed << 8) | value.len() as u64)
}

/// Unpacks a small value into `buf`; returns its length.
pub fn unpack_small(packed: u64, buf: &mut [u8]) -> Option<usize> {
    let len = (packed & 0xFF) as usize;
    if len >= 8 || buf.len() < len {
        return None;
    }
    for (i, b) in buf[..len].iter_mut().enumerate() {
        *b = (packed >> (8 * (i + 1))) as u8;
    }
    Some(len)
}

impl<F: NorFlash> StorageBase for NvsRawStorage<'_, F> {
    type Error = Error;

    fn contains(&self, name: &str) -> Result<bool> {
        Ok(self.nvs.borrow().value_info(self.ns, name)?.is_some())
    }

    fn remove(&mut self, name: &str) -> Result<bool> {
        self.nvs.borrow_mut().erase(self.ns, name)
    }
}

impl<F: NorFlash> RawStorage for NvsRawStorage<'_, F> {
    fn len(&self, name: &str) -> Result<Option<usize>> {
        let mut nvs = self.nvs.borrow_mut();
        match nvs.value_info(self.ns, name)? {
            None => Ok(None),
            Some(ValueInfo {
                value_type: ValueType::U64,
                ..
            }) => Ok(nvs.get::<u64>(self.ns, name)?.map(|v| (v & 0xFF) as usize)),
            Some(ValueInfo {
                value_type: ValueType::Blob,
                len,
            }) => Ok(Some(len)),
            Some(other) => Err(Error::TypeMismatch {
                key: name.into(),
                found: other.value_type.name(),
                wanted: "u64 or blob",
            }),
        }
    }

    fn get_raw<'a>(&self, name: &str, buf: &'a mut [u8]) -> Result<Option<&'a [u8]>> {
        let mut nvs = self.nvs.borrow_mut();
        match nvs.value_info(self.ns, name)? {
            None => Ok(None),
            Some(ValueInfo {
                value_type: ValueType::U64,
                ..
            }) => {
                let packed = nvs.get::<u64>(self.ns, name)?.unwrap_or(0);
                let need = (packed & 0xFF) as usize;
                let len = unpack_small(packed, buf).ok_or_else(|| Error::BufferTooSmall {
                    key: name.into(),
                    need,
                    have: buf.len(),
                })?;
                Ok(Some(&buf[..len]))
            }
            Some(_) => {
                let len = nvs.get_blob_into(self.ns, name, buf)?.unwrap_or(0);
                Ok(Some(&buf[..len]))
            }
        }
    }

    fn set_raw(&mut self, name: &str, buf: &[u8]) -> Result<bool> {
        let mut nvs = self.nvs.borrow_mut();
        match pack_small(buf) {
            Some(packed) => nvs.set::<u64>(self.ns, name, packed)?,
            None => nvs.set_blob(self.ns, name, buf)?,
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_pack_like_esp_idf_svc() {
        assert_eq!(pack_small(&[0xAB]), Some(0xAB01));
        assert_eq!(pack_small(&[]), Some(0));
        assert_eq!(
            pack_small(&[1, 2, 3, 4, 5, 6, 7]),
            Some(0x0706_0504_0302_0107)
        );
        assert_eq!(pack_small(&[0; 8]), None);
        let mut buf = [0u8; 7];
        assert_eq!(unpack_small(0x0706_0504_0302_0107, &mut buf), Some(7));
        assert_eq!(buf, [1, 2, 3, 4, 5, 6, 7]);
    }
}
