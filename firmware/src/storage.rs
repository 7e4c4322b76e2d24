//! Flash: the partition table, the `identity` NVS partition (encrypted when `nvs_keys` holds
//! keys) through acorn-nvs over esp-storage, the Wi-Fi credentials and the identity in it.

use acorn_certs::nvs_kv::NvsCertKv;
use acorn_certs::CertStore;
use acorn_embedded::boot::{identity_event, read_wifi_credentials, BootEvent, WifiCredentials};
use acorn_embedded::TlsIdentity;
use acorn_nvs::{Mode, Nvs, NvsKeys};
use esp_bootloader_esp_idf::partitions::{read_partition_table, PARTITION_TABLE_MAX_LEN};
use esp_storage::FlashStorage;
use log::{info, warn};

/// The identity partition's label in `partitions.csv`.
pub const IDENTITY_LABEL: &str = "identity";
/// The NVS keys partition's label.
pub const KEYS_LABEL: &str = "nvs_keys";

/// The flash and where the identity lives.
pub struct Flash {
    storage: FlashStorage<'static>,
    identity: Option<(u32, u32)>,
    keys: Option<NvsKeys>,
}

impl Flash {
    /// Reads the partition table and the NVS keys (if any).
    pub fn new(flash: esp_hal::peripherals::FLASH<'static>) -> Self {
        let mut storage = FlashStorage::new(flash);
        let mut table_buf = [0u8; PARTITION_TABLE_MAX_LEN];
        let mut identity = None;
        let mut keys_at = None;
        match read_partition_table(&mut storage, &mut table_buf) {
            Ok(table) => {
                for entry in table.iter() {
                    match entry.label_as_str() {
                        IDENTITY_LABEL => identity = Some((entry.offset(), entry.len())),
                        KEYS_LABEL => keys_at = Some(entry.offset()),
                        _ => {}
                    }
                }
            }
            Err(e) => warn!("partition table unreadable: {e:?}"),
        }
        let keys = keys_at.and_then(|offset| {
            let mut bytes = [0u8; 4096];
            storage.read(offset, &mut bytes).ok()?;
            if bytes.iter().all(|b| *b == 0xff) {
                return None;
            }
            match NvsKeys::from_partition(&bytes) {
                Ok(keys) => Some(keys),
                Err(e) => {
                    warn!(
                        "nvs_keys partition is not valid ({e}); reading the identity as plain NVS"
                    );
                    None
                }
            }
        });
        info!(
            "identity partition: {:?}, encrypted: {}",
            identity,
            keys.is_some()
        );
        Flash {
            storage,
            identity,
            keys,
        }
    }

    fn open(&mut self) -> Option<Nvs<&mut FlashStorage<'static>>> {
        let (offset, size) = self.identity?;
        match Nvs::open_with(
            &mut self.storage,
            offset,
            size,
            self.keys.as_ref(),
            Mode::ReadWrite,
        ) {
            Ok(nvs) => Some(nvs),
            Err(e) => {
                warn!("the identity partition cannot be opened: {e}");
                None
            }
        }
    }

    /// The Wi-Fi credentials (namespace `wifi`).
    pub fn wifi_credentials(&mut self) -> Option<WifiCredentials> {
        let mut nvs = self.open()?;
        read_wifi_credentials(&mut nvs).unwrap_or_else(|e| {
            warn!("reading the Wi-Fi credentials failed: {e}");
            None
        })
    }

    /// Loads and validates the identity at `now_unix`; the boot event and, when valid and
    /// P-256, the TLS identity.
    pub fn identity(&mut self, now_unix: u64) -> (BootEvent, Option<TlsIdentity>) {
        let Some(mut nvs) = self.open() else {
            return (BootEvent::IdentityMissing, None);
        };
        let mut store = CertStore::new(NvsCertKv::new(&mut nvs)).allow_custom_endpoint(true);
        let loaded = store.load(now_unix);
        let event = identity_event(&loaded);
        let Ok(loaded) = loaded else {
            return (event, None);
        };
        match TlsIdentity::from_certificates(&loaded.certificates) {
            Ok(identity) => (event, Some(identity)),
            Err(e) => (
                BootEvent::IdentityInvalid {
                    check: "key_type".into(),
                    explanation: alloc::format!("{e}"),
                },
                None,
            ),
        }
    }
}
