//! Flash: the partition table, the `identity` NVS partition (encrypted when `nvs_keys` holds
//! keys) through acorn-nvs over esp-storage, the Wi-Fi credentials and the identity in it, the
//! device settings in the `nvs` partition and the durable press queue in the `presses`
//! partition. The one flash is shared by the partitions through embassy's blocking
//! partitions, so the settings and the press queue stay open side by side.

use alloc::string::String;
use core::cell::RefCell;
use core::convert::Infallible;

use acorn_certs::nvs_kv::NvsCertKv;
use acorn_certs::{CertStore, Slots};
use acorn_device::acorn_mqtt::DeviceSettings;
use acorn_device::presses::{PressId, QueuedPress, StoredQueue};
use acorn_device::rotation::RotationConfig;
use acorn_device::{
    CertificateFacts, MemoryPresses, MemorySettings, NvsPressError, NvsSettingsError, PressStore,
    SettingsStore,
};
use acorn_embedded::boot::{identity_event, read_wifi_credentials, BootEvent, WifiCredentials};
use acorn_embedded::rotation::certificate_facts;
use acorn_embedded::TlsIdentity;
use acorn_nvs::{Mode, Nvs, NvsKeys};
use embassy_embedded_hal::flash::partition::BlockingPartition;
use embassy_sync_08::blocking_mutex::raw::NoopRawMutex;
use embassy_sync_08::blocking_mutex::Mutex;
use esp_bootloader_esp_idf::partitions::{read_partition_table, PARTITION_TABLE_MAX_LEN};
use esp_storage::FlashStorage;
use log::{info, warn};

/// The identity partition's label in `partitions.csv`.
pub const IDENTITY_LABEL: &str = "identity";
/// The NVS keys partition's label.
pub const KEYS_LABEL: &str = "nvs_keys";
/// The label of the partition that keeps the device settings (ESP-IDF's default `nvs`).
pub const SETTINGS_LABEL: &str = "nvs";
/// The label of the partition that keeps the durable press queue.
pub const PRESSES_LABEL: &str = "presses";
/// Flash sector size: partitions start and end on sector boundaries.
const SECTOR: u32 = 4096;

/// One partition of the shared flash, addressed from its start.
pub type Part<'a> = BlockingPartition<'a, NoopRawMutex, FlashStorage<'static>>;

/// The flash and where the identity, the settings and the presses live.
pub struct Flash {
    storage: Mutex<NoopRawMutex, RefCell<FlashStorage<'static>>>,
    identity: Option<(u32, u32)>,
    settings: Option<(u32, u32)>,
    presses: Option<(u32, u32)>,
    keys: Option<NvsKeys>,
}

/// A loaded, valid P-256 identity and what the device core is told about its certificate.
pub struct Identity {
    /// The TLS client identity.
    pub tls: TlsIdentity,
    /// Its certificate's dates and fingerprint (for the heartbeat's days left).
    pub facts: CertificateFacts,
    /// Its certificate's issuer: a rotated certificate must come from the same one.
    pub issuer: String,
}

/// Where the settings are kept: the `nvs` partition, or RAM when it cannot be opened.
pub enum Settings<'a> {
    /// The `nvs` partition (plain NVS: settings are not secret).
    Nvs(Nvs<Part<'a>>),
    /// RAM only (the partition is missing or unreadable: see the log).
    Memory(MemorySettings),
}

impl SettingsStore for Settings<'_> {
    type Error = NvsSettingsError;

    fn load(&mut self) -> Result<Option<DeviceSettings>, NvsSettingsError> {
        match self {
            Settings::Nvs(nvs) => SettingsStore::load(nvs),
            Settings::Memory(memory) => Ok(never(memory.load())),
        }
    }

    fn save(&mut self, settings: &DeviceSettings) -> Result<(), NvsSettingsError> {
        match self {
            Settings::Nvs(nvs) => SettingsStore::save(nvs, settings),
            Settings::Memory(memory) => {
                never(memory.save(settings));
                Ok(())
            }
        }
    }
}

/// Where the presses are kept: the `presses` partition, or RAM when it cannot be opened.
pub enum Presses<'a> {
    /// The `presses` partition (plain NVS: presses are not secret).
    Nvs(Nvs<Part<'a>>),
    /// RAM only (the partition is missing or unreadable: see the log); a reset loses them.
    Memory(MemoryPresses),
}

impl PressStore for Presses<'_> {
    type Error = NvsPressError;

    fn load(&mut self) -> Result<StoredQueue, NvsPressError> {
        match self {
            Presses::Nvs(nvs) => PressStore::load(nvs),
            Presses::Memory(memory) => Ok(never(memory.load())),
        }
    }

    fn save_boot(&mut self, boot: u32) -> Result<(), NvsPressError> {
        match self {
            Presses::Nvs(nvs) => PressStore::save_boot(nvs, boot),
            Presses::Memory(memory) => Ok(never(memory.save_boot(boot))),
        }
    }

    fn append(&mut self, press: &QueuedPress) -> Result<(), NvsPressError> {
        match self {
            Presses::Nvs(nvs) => PressStore::append(nvs, press),
            Presses::Memory(memory) => Ok(never(memory.append(press))),
        }
    }

    fn remove(&mut self, id: PressId) -> Result<(), NvsPressError> {
        match self {
            Presses::Nvs(nvs) => PressStore::remove(nvs, id),
            Presses::Memory(memory) => Ok(never(memory.remove(id))),
        }
    }

    fn save_dropped(&mut self, dropped: u32) -> Result<(), NvsPressError> {
        match self {
            Presses::Nvs(nvs) => PressStore::save_dropped(nvs, dropped),
            Presses::Memory(memory) => Ok(never(memory.save_dropped(dropped))),
        }
    }

    fn is_full(error: &NvsPressError) -> bool {
        <Nvs<Part<'_>> as PressStore>::is_full(error)
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
        let mut presses = None;
        let mut keys_at = None;
        match read_partition_table(&mut storage, &mut table_buf) {
            Ok(table) => {
                for entry in table.iter() {
                    match entry.label_as_str() {
                        IDENTITY_LABEL => identity = Some((entry.offset(), entry.len())),
                        SETTINGS_LABEL => settings = Some((entry.offset(), entry.len())),
                        PRESSES_LABEL => presses = Some((entry.offset(), entry.len())),
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
            storage: Mutex::new(RefCell::new(storage)),
            identity,
            settings,
            presses,
            keys,
        }
    }

    /// The partition at `(offset, size)`, when both are whole sectors (a partition table
    /// that says otherwise is refused here rather than panicking in the partition type).
    fn part(&self, (offset, size): (u32, u32)) -> Option<Part<'_>> {
        if offset % SECTOR != 0 || size % SECTOR != 0 || size == 0 {
            warn!("partition at {offset:#x} ({size:#x} bytes) is not sector-aligned: not used");
            return None;
        }
        Some(BlockingPartition::new(&self.storage, offset, size))
    }

    fn open(&self) -> Option<Nvs<Part<'_>>> {
        let (offset, size) = self.identity?;
        let part = self.part((offset, size))?;
        match Nvs::open_with(part, 0, size, self.keys.as_ref(), Mode::ReadWrite) {
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

    /// A plain NVS partition (`label`, found at `at`), opened read-write; `None` (and the log
    /// says why, and how to fix it) when there is none or it does not open. A partition that
    /// does not open is never formatted or written: it may hold something else.
    fn open_plain(&self, label: &str, at: Option<(u32, u32)>, what: &str) -> Option<Nvs<Part<'_>>> {
        let Some((offset, size)) = at else {
            warn!("no `{label}` partition: {what} are kept in RAM only (a reset loses them)");
            return None;
        };
        let part = self.part((offset, size))?;
        match Nvs::open_with(part, 0, size, None, Mode::ReadWrite) {
            Ok(nvs) => Some(nvs),
            Err(e) => {
                warn!(
                    "the `{label}` partition cannot be opened ({e}); {what} are kept in RAM \
                     only. Erase it to start afresh: `espflash erase-region {offset:#x} {size:#x}`"
                );
                None
            }
        }
    }

    /// The settings store: the `nvs` partition (plain NVS: settings are not secret), or RAM.
    pub fn settings(&self) -> Settings<'_> {
        match self.open_plain(SETTINGS_LABEL, self.settings, "settings") {
            Some(nvs) => Settings::Nvs(nvs),
            None => Settings::Memory(MemorySettings::default()),
        }
    }

    /// The press store: the `presses` partition (a blank one is formatted as NVS), or RAM.
    pub fn presses(&self) -> Presses<'_> {
        match self.open_plain(PRESSES_LABEL, self.presses, "presses") {
            Some(nvs) => Presses::Nvs(nvs),
            None => Presses::Memory(MemoryPresses::default()),
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
        self.store_identity(
            &registered.certificates,
            &registered.certificate_id,
            registered.endpoint_port,
            now_unix,
        )
    }

    /// The claim identity (NVS namespace `mqtt_claim` of the identity partition), when the
    /// factory wrote one (`acorn certs provision --claim`).
    #[cfg(feature = "claim")]
    pub fn claim(&self) -> Option<acorn_embedded::claim::ClaimConfig> {
        let mut nvs = self.open()?;
        acorn_embedded::claim::read_config(&mut nvs).unwrap_or_else(|e| {
            warn!("{e}");
            None
        })
    }

    /// Stores the device's own identity, obtained by claim, at `now_unix`.
    #[cfg(feature = "claim")]
    pub fn store_claimed(
        &mut self,
        claimed: &acorn_embedded::claim::Claimed,
        now_unix: u64,
    ) -> BootEvent {
        self.store_identity(
            &claimed.certificates,
            &claimed.certificate_id,
            claimed.endpoint_port,
            now_unix,
        )
    }

    /// Stores a newly obtained identity (checked first by the certificate store: the
    /// certificate is for this key, within its dates, for this device) at `now_unix`.
    #[cfg(any(feature = "register", feature = "claim"))]
    fn store_identity(
        &mut self,
        certificates: &acorn_certs::DeviceCertificates,
        certificate_id: &str,
        endpoint_port: Option<u16>,
        now_unix: u64,
    ) -> BootEvent {
        if endpoint_port.is_some_and(|port| port != 8883) {
            warn!("the answer names port {endpoint_port:?} with the endpoint; this firmware connects to 8883");
        }
        let Some(mut nvs) = self.open() else {
            return BootEvent::RegistrationFailed {
                reason: "the identity partition cannot be opened".into(),
            };
        };
        let mut store = CertStore::new(NvsCertKv::new(&mut nvs)).allow_custom_endpoint(true);
        match store.store(certificates, now_unix) {
            Ok(_) => {
                info!(
                    "registered as `{}` (certificate {certificate_id})",
                    certificates.device_id
                );
                BootEvent::Registered
            }
            Err(e) => BootEvent::RegistrationFailed {
                reason: alloc::format!("{e}"),
            },
        }
    }

    /// The identity partition, for certificate rotation's two slots (the active identity in
    /// `mqtt_certs`, a candidate in `mqtt_certs_next`).
    pub fn identity_slots(&self) -> Option<Nvs<Part<'_>>> {
        self.open()
    }

    /// Loads and validates the identity at `now_unix`; the boot event and, when valid and
    /// P-256, the TLS identity. What an interrupted rotation left is finished or dropped
    /// first: a commit the power cut stopped is completed, a candidate whose trial never
    /// ended is erased (the rotation starts again when it is triggered again).
    pub fn identity(&mut self, now_unix: u64) -> (BootEvent, Option<Identity>) {
        let Some(mut nvs) = self.open() else {
            return (BootEvent::IdentityMissing, None);
        };
        recover_rotation(&mut nvs);
        let mut store = CertStore::new(NvsCertKv::new(&mut nvs)).allow_custom_endpoint(true);
        let loaded = store.load(now_unix);
        let event = identity_event(&loaded);
        let Ok(loaded) = loaded else {
            return (event, None);
        };
        let facts = certificate_facts(&loaded);
        let issuer = loaded
            .report
            .certificate
            .as_ref()
            .map(|info| info.issuer.clone())
            .unwrap_or_default();
        match TlsIdentity::from_certificates(&loaded.certificates) {
            Ok(tls) => (event, Some(Identity { tls, facts, issuer })),
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

/// Finishes or drops what an interrupted certificate rotation left (at every boot, before the
/// identity is loaded), and says what it did.
fn recover_rotation(nvs: &mut Nvs<Part<'_>>) {
    match Slots::new(nvs)
        .allow_custom_endpoint(true)
        .recover_at_start()
    {
        Ok(None) => {}
        Ok(Some(note)) => info!("rotation: {note}"),
        Err(e) => warn!("rotation: what an interrupted rotation left cannot be finished: {e}"),
    }
}

/// How this device rotates its certificate: over AWS IoT's provisioning MQTT API with the
/// template `acorn-pups`, on the `rotate-certificate` command or 30 days before the end, unless
/// NVS namespace `rotation` of the identity partition (`nvs`) says otherwise (`template`,
/// `days_before`); against a local stack's endpoint on the device's own topics.
pub fn rotation_config(nvs: &mut Nvs<Part<'_>>, identity: &TlsIdentity) -> RotationConfig {
    let (id, endpoint) = (identity.device_id(), identity.endpoint());
    acorn_embedded::rotation::read_config(nvs, id, endpoint).unwrap_or_else(|e| {
        warn!("rotation: {e}; using the defaults");
        acorn_embedded::rotation::default_config(id, endpoint)
    })
}
