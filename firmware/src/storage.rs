//! Flash: the partition table, the `identity` NVS partition (encrypted when `nvs_keys` holds
//! keys) through acorn-nvs over esp-storage, the Wi-Fi credentials and the identity in it, and
//! the device settings in the `nvs` partition.

use core::convert::Infallible;

use acorn_certs::nvs_kv::NvsCertKv;
use acorn_certs::CertStore;
use acorn_device::acorn_mqtt::DeviceSettings;
use acorn_device::{CertificateFacts, MemorySettings, NvsSettingsError, SettingsStore};
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
/// The label of the partition that keeps the device settings (ESP-IDF's default `nvs`).
pub const SETTINGS_LABEL: &str = "nvs";

/// The flash and where the identity and the settings live.
pub struct Flash {
    storage: FlashStorage<'static>,
    identity: Option<(u32, u32)>,
    settings: Option<(u32, u32)>,
    keys: Option<NvsKeys>,
}

/// A loaded, valid P-256 identity and what the device core is told about its certificate.
pub struct Identity {
    /// The TLS client identity.
    pub tls: TlsIdentity,
    /// Its certificate's dates and fingerprint (for the heartbeat's days left).
    pub facts: CertificateFacts,
}

/// Where the settings are kept: the `nvs` partition, or RAM when it cannot be opened.
pub enum Settings<'a> {
    /// The `nvs` partition (plain NVS: settings are not secret).
    Nvs(Nvs<&'a mut FlashStorage<'static>>),
    /// RAM only (the partition is missing or unreadable: see the log).
    Memory(MemorySettings),
}

impl SettingsStore for Settings<'_> {
    type Error = NvsSettingsError;

    fn load(&mut self) -> Result<Option<DeviceSettings>, NvsSettingsError> {
        match self {
            Settings::Nvs(nvs) => nvs.load(),
            Settings::Memory(memory) => Ok(never(memory.load())),
        }
    }

    fn save(&mut self, settings: &DeviceSettings) -> Result<(), NvsSettingsError> {
        match self {
            Settings::Nvs(nvs) => nvs.save(settings),
            Settings::Memory(memory) => {
                never(memory.save(settings));
                Ok(())
            }
        }
    }
}

fn never<T>(result: Result<T, Infallible>) -> T {
    match result {
        Ok(value) => value,
        Err(never) => match never {},
    }
}

impl Flash {
    /// Reads the partition table and the NVS keys (if any).
    pub fn new(flash: esp_hal::peripherals::FLASH<'static>) -> Self {
        let mut storage = FlashStorage::new(flash);
        let mut table_buf = [0u8; PARTITION_TABLE_MAX_LEN];
        let mut identity = None;
        let mut settings = None;
        let mut keys_at = None;
        match read_partition_table(&mut storage, &mut table_buf) {
            Ok(table) => {
                for entry in table.iter() {
                    match entry.label_as_str() {
                        IDENTITY_LABEL => identity = Some((entry.offset(), entry.len())),
                        SETTINGS_LABEL => settings = Some((entry.offset(), entry.len())),
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
            settings,
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

    /// The settings store: the `nvs` partition, opened read-write. A partition that does not
    /// open is never formatted or written (it may hold something else): the settings then
    /// live in RAM, and the log says how to fix it.
    pub fn settings(&mut self) -> Settings<'_> {
        let Some((offset, size)) = self.settings else {
            warn!("no `{SETTINGS_LABEL}` partition: settings are kept in RAM only");
            return Settings::Memory(MemorySettings::default());
        };
        match Nvs::open_with(&mut self.storage, offset, size, None, Mode::ReadWrite) {
            Ok(nvs) => Settings::Nvs(nvs),
            Err(e) => {
                warn!(
                    "the `{SETTINGS_LABEL}` partition cannot be opened ({e}); settings are kept \
                     in RAM only. Erase it to start afresh: `espflash erase-region {offset:#x} {size:#x}`"
                );
                Settings::Memory(MemorySettings::default())
            }
        }
    }

    /// Where to register (NVS namespace `register` of the identity partition: `url`, `token`,
    /// optionally `device_id`); `None` when not configured.
    #[cfg(feature = "register")]
    pub fn registration(
        &mut self,
        mac: [u8; 6],
    ) -> Option<acorn_embedded::register::RegisterConfig> {
        let mut nvs = self.open()?;
        match acorn_embedded::register::read_config(&mut nvs, mac, crate::FIRMWARE_VERSION) {
            Ok(config) => config,
            Err(e) => {
                warn!("registration is configured wrongly: {e}");
                None
            }
        }
    }

    /// Stores a registered identity (checked first by the certificate store) at `now_unix`.
    #[cfg(feature = "register")]
    pub fn store_registered(
        &mut self,
        registered: &acorn_embedded::register::Registered,
        now_unix: u64,
    ) -> BootEvent {
        let Some(mut nvs) = self.open() else {
            return BootEvent::RegistrationFailed {
                reason: "the identity partition cannot be opened".into(),
            };
        };
        if registered.endpoint_port.is_some_and(|port| port != 8883) {
            warn!(
                "the backend names port {:?} with the endpoint; this firmware connects to 8883",
                registered.endpoint_port
            );
        }
        let mut store = CertStore::new(NvsCertKv::new(&mut nvs)).allow_custom_endpoint(true);
        match store.store(&registered.certificates, now_unix) {
            Ok(_) => {
                info!(
                    "registered as `{}` (certificate {})",
                    registered.certificates.device_id, registered.certificate_id
                );
                BootEvent::Registered
            }
            Err(e) => BootEvent::RegistrationFailed {
                reason: alloc::format!("{e}"),
            },
        }
    }

    /// Loads and validates the identity at `now_unix`; the boot event and, when valid and
    /// P-256, the TLS identity.
    pub fn identity(&mut self, now_unix: u64) -> (BootEvent, Option<Identity>) {
        let Some(mut nvs) = self.open() else {
            return (BootEvent::IdentityMissing, None);
        };
        let mut store = CertStore::new(NvsCertKv::new(&mut nvs)).allow_custom_endpoint(true);
        let loaded = store.load(now_unix);
        let event = identity_event(&loaded);
        let Ok(loaded) = loaded else {
            return (event, None);
        };
        let mut facts = CertificateFacts::default();
        if let Some(info) = &loaded.report.certificate {
            facts = CertificateFacts::new(info.not_before, info.not_after);
            facts.fingerprint = Some(info.fingerprint.clone());
        }
        match TlsIdentity::from_certificates(&loaded.certificates) {
            Ok(tls) => (event, Some(Identity { tls, facts })),
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
