//! [`CertKv`] over an acorn-nvs partition: the certificate store on real NVS flash (an ESP32's,
//! or a partition image file on a host).

use acorn_nvs::{Namespace, Nvs, ValueType};
use embedded_storage::nor_flash::NorFlash;

use crate::kv::{CertKv, NAMESPACE};

/// The `mqtt_certs` namespace of an [`Nvs`] partition as a [`CertKv`].
///
/// Values are written as blobs; reads accept blobs and strings alike, so images made from
/// `file,binary` and `file,string` CSV rows both load. Lengths are exact: a string's length is
/// reported without its NUL, and values are read straight into the caller's buffer.
pub struct NvsCertKv<'a, F> {
    nvs: &'a mut Nvs<F>,
    name: &'static str,
    ns: Option<Namespace>,
}

impl<'a, F: NorFlash> NvsCertKv<'a, F> {
    /// Uses the partition's `mqtt_certs` namespace (created on the first write if absent).
    pub fn new(nvs: &'a mut Nvs<F>) -> Self {
        Self::in_namespace(nvs, NAMESPACE)
    }

    /// Uses namespace `name` (e.g. the candidate identity slot's, created on the first write
    /// if absent).
    pub fn in_namespace(nvs: &'a mut Nvs<F>, name: &'static str) -> Self {
        let ns = nvs.find_namespace(name);
        NvsCertKv { nvs, name, ns }
    }

    fn namespace_for_write(&mut self) -> Result<Namespace, acorn_nvs::Error> {
        match self.ns {
            Some(ns) => Ok(ns),
            None => {
                let ns = self.nvs.namespace(self.name)?;
                self.ns = Some(ns);
                Ok(ns)
            }
        }
    }
}

impl<F: NorFlash> CertKv for NvsCertKv<'_, F> {
    type Error = acorn_nvs::Error;

    fn stored_len(&mut self, key: &str) -> Result<Option<usize>, Self::Error> {
        let Some(ns) = self.ns else { return Ok(None) };
        Ok(self.nvs.value_info(ns, key)?.map(|info| info.len))
    }

    fn read(&mut self, key: &str, buf: &mut [u8]) -> Result<Option<usize>, Self::Error> {
        let Some(ns) = self.ns else { return Ok(None) };
        self.nvs.get_bytes_into(ns, key, buf)
    }

    fn write(&mut self, key: &str, value: &[u8]) -> Result<(), Self::Error> {
        let ns = self.namespace_for_write()?;
        self.nvs.set_blob(ns, key, value)
    }

    fn read_u8(&mut self, key: &str) -> Result<Option<u8>, Self::Error> {
        let Some(ns) = self.ns else { return Ok(None) };
        match self.nvs.value_info(ns, key)? {
            Some(info) if info.value_type == ValueType::U8 => self.nvs.get::<u8>(ns, key),
            Some(_) => Ok(None),
            None => Ok(None),
        }
    }

    fn write_u8(&mut self, key: &str, value: u8) -> Result<(), Self::Error> {
        let ns = self.namespace_for_write()?;
        self.nvs.set::<u8>(ns, key, value)
    }

    fn erase(&mut self, key: &str) -> Result<(), Self::Error> {
        let Some(ns) = self.ns else { return Ok(()) };
        self.nvs.erase(ns, key).map(|_| ())
    }
}
