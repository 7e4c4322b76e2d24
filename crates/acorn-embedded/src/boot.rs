//! The firmware's boot sequence as a sans-IO state machine: what to do next, and what to say
//! about it. The firmware carries out [`BootAction`]s with its radio, flash and clock and
//! feeds back [`BootEvent`]s; tests do the same with a fake radio.
//!
//! ```text
//! ReadWifi ──none──▶ NoWifiCredentials (say so, re-read every 30 s)
//!    │ ssid+password
//!    ▼
//! ConnectWifi ──fail──▶ wait (backoff) ─▶ ConnectWifi      (Wi-Fi, DHCP and DNS)
//!    │ up
//!    ▼
//! SyncClock ──fail/not yet──▶ wait 5 s ─▶ SyncClock         (SNTP: never go on unsynced)
//!    │ synced
//!    ▼
//! LoadIdentity ──missing──▶ Register ──fail──▶ wait ─▶ Register (key + CSR on the chip;
//!    │ ok          │           by HTTP to the backend, or by claim over AWS IoT's
//!    │             │           provisioning MQTT API: see [`Provisioning`])
//!    │ invalid: say which check failed, re-check every 5 min
//!    ▼             ▼
//! Operational ◀── registered (then LoadIdentity again)
//! ```

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use acorn_certs::{LoadedIdentity, StoreError};

/// Re-read the Wi-Fi credentials this often while there are none, ms.
pub const WIFI_CREDENTIALS_RETRY_MS: u64 = 30_000;
/// Retry SNTP this often until the clock is synced, ms.
pub const CLOCK_RETRY_MS: u64 = 5_000;
/// Re-check an invalid identity this often (a factory tool may rewrite it), ms.
pub const IDENTITY_RECHECK_MS: u64 = 300_000;
/// Longest wait between Wi-Fi or registration attempts, ms.
pub const MAX_RETRY_MS: u64 = 60_000;

/// Wi-Fi station credentials (NVS namespace `wifi`, keys `ssid` and `password`).
#[derive(Clone, PartialEq, Eq)]
pub struct WifiCredentials {
    /// The network name.
    pub ssid: String,
    /// The passphrase (empty for an open network). Never printed; its bytes are zeroed when
    /// it is dropped (the Wi-Fi driver keeps a copy of its own while it runs).
    pub password: zeroize::Zeroizing<String>,
}

impl core::fmt::Debug for WifiCredentials {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WifiCredentials")
            .field("ssid", &self.ssid)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Where the boot sequence is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootState {
    /// Reading the Wi-Fi credentials from NVS.
    ReadingWifi,
    /// No credentials stored: waiting (re-reading now and then).
    NoWifiCredentials,
    /// Joining the network (association, DHCP, DNS).
    ConnectingWifi {
        /// 1-based attempt.
        attempt: u32,
    },
    /// Getting the time by SNTP.
    SyncingClock {
        /// 1-based attempt.
        attempt: u32,
    },
    /// Loading and validating the identity from the `identity` partition.
    LoadingIdentity,
    /// No identity: registering with the backend.
    Registering {
        /// 1-based attempt.
        attempt: u32,
    },
    /// The stored identity failed a check.
    IdentityInvalid {
        /// The failed check (`validity`, `key_match`, `endpoint`, ...).
        check: String,
    },
    /// Connected to the network, clock synced, identity loaded: the MQTT transport runs.
    Operational,
}

/// What the firmware must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootAction {
    /// Read namespace `wifi` (keys `ssid`, `password`); answer [`BootEvent::WifiCredentials`].
    ReadWifiCredentials,
    /// Join the network; answer [`BootEvent::WifiUp`] or [`BootEvent::WifiFailed`].
    ConnectWifi(WifiCredentials),
    /// Ask SNTP for the time; answer [`BootEvent::ClockSynced`] or [`BootEvent::ClockFailed`].
    SyncClock,
    /// Load the identity at this (synced) time; answer with [`identity_event`].
    LoadIdentity {
        /// Unix seconds.
        now_unix: u64,
    },
    /// Register (key pair and CSR made on the chip, HTTP to the backend); answer
    /// [`BootEvent::Registered`] or [`BootEvent::RegistrationFailed`].
    Register {
        /// Unix seconds.
        now_unix: u64,
    },
    /// Provision by claim (key pair and CSR made on the chip, the certificate over AWS IoT's
    /// provisioning MQTT API with the claim certificate); answer [`BootEvent::Registered`] or
    /// [`BootEvent::RegistrationFailed`].
    Claim {
        /// Unix seconds.
        now_unix: u64,
    },
    /// Start the MQTT transport.
    StartOperation,
    /// Log this line (the serial monitor shows it).
    Log(String),
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootEvent {
    /// The stored Wi-Fi credentials (`None`: not provisioned).
    WifiCredentials(Option<WifiCredentials>),
    /// Joined; DHCP gave an address.
    WifiUp {
        /// The address, as text.
        address: String,
    },
    /// Joining failed.
    WifiFailed {
        /// Why.
        reason: String,
    },
    /// The network went away (after `WifiUp`).
    WifiLost,
    /// SNTP answered.
    ClockSynced {
        /// Unix seconds.
        unix_secs: u64,
    },
    /// SNTP did not answer (or the answer was implausible).
    ClockFailed {
        /// Why.
        reason: String,
    },
    /// A valid identity is loaded.
    IdentityLoaded {
        /// Its device id.
        device_id: String,
    },
    /// No identity is stored.
    IdentityMissing,
    /// The stored identity failed a check.
    IdentityInvalid {
        /// The check's name.
        check: String,
        /// Its plain explanation.
        explanation: String,
    },
    /// Registration stored a new identity.
    Registered,
    /// Registration failed (or is not possible: no backend configured).
    RegistrationFailed {
        /// Why.
        reason: String,
    },
    /// Time passed ([`Boot::poll_timeout`] reached).
    Tick,
}

/// Turns the certificate store's answer into the boot event: missing, invalid (naming the
/// first failed check) or loaded.
pub fn identity_event<E: core::fmt::Display>(
    loaded: &Result<LoadedIdentity, StoreError<E>>,
) -> BootEvent {
    match loaded {
        Ok(identity) => BootEvent::IdentityLoaded {
            device_id: identity.certificates.device_id.clone(),
        },
        Err(StoreError::Missing { .. }) => BootEvent::IdentityMissing,
        Err(StoreError::Invalid { report }) | Err(StoreError::Rejected { report }) => {
            let failed = report
                .checks
                .iter()
                .find(|c| c.status == acorn_certs::Status::Fail);
            BootEvent::IdentityInvalid {
                check: failed.map_or("unknown", |c| c.id.name()).into(),
                explanation: failed.map_or_else(String::new, |c| c.explanation.clone()),
            }
        }
        Err(other) => BootEvent::IdentityInvalid {
            check: "storage".into(),
            explanation: format!("{other}"),
        },
    }
}

/// NVS namespace of the Wi-Fi credentials (in the `identity` partition, beside
/// `mqtt_certs`, so one factory image holds identity and network).
pub const WIFI_NAMESPACE: &str = "wifi";

fn text_value<F: embedded_storage::nor_flash::NorFlash>(
    nvs: &mut acorn_nvs::Nvs<F>,
    ns: acorn_nvs::Namespace,
    key: &str,
) -> Result<Option<String>, acorn_nvs::Error> {
    match nvs.get_string(ns, key) {
        Ok(value) => Ok(value),
        // Stored as a blob (e.g. through `RawStorage`): accept UTF-8 bytes.
        Err(_) => Ok(nvs
            .get_blob(ns, key)?
            .and_then(|bytes| String::from_utf8(bytes).ok())),
    }
}

/// Reads the Wi-Fi credentials (namespace [`WIFI_NAMESPACE`], keys `ssid` and `password`;
/// strings or blobs). `None` when there is no `ssid`; a missing password means an open
/// network.
pub fn read_wifi_credentials<F: embedded_storage::nor_flash::NorFlash>(
    nvs: &mut acorn_nvs::Nvs<F>,
) -> Result<Option<WifiCredentials>, acorn_nvs::Error> {
    let Some(ns) = nvs.find_namespace(WIFI_NAMESPACE) else {
        return Ok(None);
    };
    let Some(ssid) = text_value(nvs, ns, "ssid")?.filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let password = zeroize::Zeroizing::new(text_value(nvs, ns, "password")?.unwrap_or_default());
    Ok(Some(WifiCredentials { ssid, password }))
}

/// How a device without identity gets one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provisioning {
    /// It cannot: it waits for a factory tool to write one.
    None,
    /// By HTTP to the registration backend with a one-time token (NVS namespace `register`).
    Register,
    /// By claim: the shared claim certificate (NVS namespace `mqtt_claim`) and AWS IoT's
    /// provisioning MQTT API.
    Claim,
}

/// `AA:BB:CC:DD:EE:FF` and the default device id `acorn-aabbccddeeff` for a MAC address.
pub fn mac_names(mac: [u8; 6]) -> (String, String) {
    let text = mac
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    let id = format!("acorn-{}", text.replace(':', "").to_ascii_lowercase());
    (text, id)
}

/// An endpoint as a backend names it, `host` or `host:port`: the host and the port if any.
pub fn split_endpoint(endpoint: &str) -> Result<(String, Option<u16>), String> {
    match endpoint.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("endpoint `{endpoint}` has a bad port"))?;
            Ok((host.into(), Some(port)))
        }
        _ => Ok((endpoint.into(), None)),
    }
}

/// The boot state machine.
#[derive(Debug)]
pub struct Boot {
    state: BootState,
    actions: alloc::collections::VecDeque<BootAction>,
    wake_at: Option<u64>,
    wifi: Option<WifiCredentials>,
    unix_secs: Option<u64>,
    provisioning: Provisioning,
}

fn backoff(attempt: u32) -> u64 {
    (1_000u64 << attempt.min(6)).min(MAX_RETRY_MS)
}

impl Boot {
    /// Starts the sequence. `registration_possible`: a backend and token are configured, so a
    /// device without identity can register itself.
    pub fn new(registration_possible: bool) -> Self {
        Self::with_provisioning(if registration_possible {
            Provisioning::Register
        } else {
            Provisioning::None
        })
    }

    /// Starts the sequence; a device without identity gets one by `provisioning`.
    pub fn with_provisioning(provisioning: Provisioning) -> Self {
        let mut boot = Boot {
            state: BootState::ReadingWifi,
            actions: alloc::collections::VecDeque::new(),
            wake_at: None,
            wifi: None,
            unix_secs: None,
            provisioning,
        };
        boot.actions.push_back(BootAction::ReadWifiCredentials);
        boot
    }

    /// Where it is.
    pub fn state(&self) -> &BootState {
        &self.state
    }

    /// The synced time, once known (Unix seconds at the sync).
    pub fn synced_at(&self) -> Option<u64> {
        self.unix_secs
    }

    /// The next action, oldest first.
    pub fn poll_action(&mut self) -> Option<BootAction> {
        self.actions.pop_front()
    }

    /// When to send [`BootEvent::Tick`] (ms, the caller's monotonic clock).
    pub fn poll_timeout(&self) -> Option<u64> {
        self.wake_at
    }

    fn log(&mut self, line: String) {
        self.actions.push_back(BootAction::Log(line));
    }

    fn wait(&mut self, now: u64, ms: u64) {
        self.wake_at = Some(now.saturating_add(ms));
    }

    /// Feeds an event at `now_ms`.
    pub fn handle(&mut self, now_ms: u64, event: BootEvent) {
        let due = self.wake_at.is_some_and(|t| now_ms >= t);
        match (self.state.clone(), event) {
            (_, BootEvent::Tick) if !due => {}
            (_, BootEvent::Tick) => {
                self.wake_at = None;
                self.retry(now_ms);
            }
            (
                BootState::ReadingWifi | BootState::NoWifiCredentials,
                BootEvent::WifiCredentials(None),
            ) => {
                if self.state != BootState::NoWifiCredentials {
                    self.log("no Wi-Fi credentials: NVS namespace `wifi` has no `ssid`; provision them (`acorn certs provision --wifi-ssid ... --wifi-password ...`). Waiting".into());
                }
                self.state = BootState::NoWifiCredentials;
                self.wait(now_ms, WIFI_CREDENTIALS_RETRY_MS);
            }
            (
                BootState::ReadingWifi | BootState::NoWifiCredentials,
                BootEvent::WifiCredentials(Some(creds)),
            ) => {
                self.log(format!("joining Wi-Fi network `{}`", creds.ssid));
                self.state = BootState::ConnectingWifi { attempt: 1 };
                self.wifi = Some(creds.clone());
                self.actions.push_back(BootAction::ConnectWifi(creds));
            }
            (BootState::ConnectingWifi { attempt }, BootEvent::WifiFailed { reason }) => {
                let delay = backoff(attempt);
                self.log(format!(
                    "Wi-Fi: {reason}; attempt {attempt}, next in {} s",
                    delay / 1000
                ));
                self.wait(now_ms, delay);
            }
            (BootState::ConnectingWifi { .. }, BootEvent::WifiUp { address }) => {
                self.log(format!(
                    "Wi-Fi up, address {address}; syncing the clock (SNTP)"
                ));
                self.state = BootState::SyncingClock { attempt: 1 };
                self.actions.push_back(BootAction::SyncClock);
            }
            (BootState::SyncingClock { attempt }, BootEvent::ClockFailed { reason }) => {
                self.log(format!(
                    "clock not synced ({reason}): certificates cannot be checked yet; attempt {attempt}, retrying in {} s",
                    CLOCK_RETRY_MS / 1000
                ));
                self.wait(now_ms, CLOCK_RETRY_MS);
            }
            (BootState::SyncingClock { attempt }, BootEvent::ClockSynced { unix_secs }) => {
                if unix_secs < crate::diagnosis::EARLIEST_PLAUSIBLE_UNIX_TIME {
                    self.handle(
                        now_ms,
                        BootEvent::ClockFailed {
                            reason: format!("the answer {unix_secs} is before 2024"),
                        },
                    );
                    let _ = attempt;
                    return;
                }
                self.unix_secs = Some(unix_secs);
                self.log(format!("clock synced: {unix_secs} s since 1970"));
                self.state = BootState::LoadingIdentity;
                self.actions.push_back(BootAction::LoadIdentity {
                    now_unix: unix_secs,
                });
            }
            (BootState::LoadingIdentity, BootEvent::IdentityLoaded { device_id }) => {
                self.log(format!(
                    "identity of `{device_id}` loaded and valid; connecting"
                ));
                self.state = BootState::Operational;
                self.actions.push_back(BootAction::StartOperation);
            }
            (BootState::LoadingIdentity, BootEvent::IdentityMissing) => {
                if self.provisioning != Provisioning::None {
                    self.log(match self.provisioning {
                        Provisioning::Claim => "no identity stored: provisioning by claim (P-256 key and CSR made on this chip, the certificate over AWS IoT's provisioning MQTT API)".into(),
                        _ => "no identity stored: registering (P-256 key and CSR made on this chip)".into(),
                    });
                    self.state = BootState::Registering { attempt: 1 };
                    self.actions.push_back(self.provision_action());
                } else {
                    self.log("no identity stored in the `identity` partition and no registration backend configured: provision the device (`acorn certs provision`). Waiting".into());
                    self.state = BootState::IdentityInvalid {
                        check: "missing".into(),
                    };
                    self.wait(now_ms, IDENTITY_RECHECK_MS);
                }
            }
            (BootState::LoadingIdentity, BootEvent::IdentityInvalid { check, explanation }) => {
                self.log(format!(
                    "the stored identity failed the `{check}` check: {explanation}. Not connecting; re-checking in {} s",
                    IDENTITY_RECHECK_MS / 1000
                ));
                self.state = BootState::IdentityInvalid { check };
                self.wait(now_ms, IDENTITY_RECHECK_MS);
            }
            (BootState::Registering { .. }, BootEvent::Registered) => {
                self.log("registered: identity stored; loading it".into());
                self.state = BootState::LoadingIdentity;
                self.actions.push_back(BootAction::LoadIdentity {
                    now_unix: self.unix_secs.unwrap_or(0),
                });
            }
            (BootState::Registering { attempt }, BootEvent::RegistrationFailed { reason }) => {
                let delay = backoff(attempt);
                self.log(format!(
                    "registration failed: {reason}; attempt {attempt}, next in {} s",
                    delay / 1000
                ));
                self.wait(now_ms, delay);
            }
            (
                BootState::Operational
                | BootState::SyncingClock { .. }
                | BootState::LoadingIdentity
                | BootState::Registering { .. },
                BootEvent::WifiLost,
            ) => {
                self.log("Wi-Fi lost: joining again".into());
                self.wake_at = None;
                if let Some(creds) = self.wifi.clone() {
                    self.state = BootState::ConnectingWifi { attempt: 1 };
                    self.actions.push_back(BootAction::ConnectWifi(creds));
                } else {
                    self.state = BootState::ReadingWifi;
                    self.actions.push_back(BootAction::ReadWifiCredentials);
                }
            }
            (state, event) => {
                self.log(format!("boot: ignored {event:?} in state {state:?}"));
            }
        }
    }

    /// The action that gets an identity.
    fn provision_action(&self) -> BootAction {
        let now_unix = self.unix_secs.unwrap_or(0);
        match self.provisioning {
            Provisioning::Claim => BootAction::Claim { now_unix },
            _ => BootAction::Register { now_unix },
        }
    }

    /// A wait ended: try the step again.
    fn retry(&mut self, now_ms: u64) {
        let _ = now_ms;
        match self.state.clone() {
            BootState::NoWifiCredentials | BootState::ReadingWifi => {
                self.actions.push_back(BootAction::ReadWifiCredentials)
            }
            BootState::ConnectingWifi { attempt } => {
                self.state = BootState::ConnectingWifi {
                    attempt: attempt + 1,
                };
                if let Some(creds) = self.wifi.clone() {
                    self.actions.push_back(BootAction::ConnectWifi(creds));
                }
            }
            BootState::SyncingClock { attempt } => {
                self.state = BootState::SyncingClock {
                    attempt: attempt + 1,
                };
                self.actions.push_back(BootAction::SyncClock);
            }
            BootState::Registering { attempt } => {
                self.state = BootState::Registering {
                    attempt: attempt + 1,
                };
                self.actions.push_back(self.provision_action());
            }
            BootState::IdentityInvalid { .. } => {
                // Re-sync first: the check may be a date check.
                self.state = BootState::SyncingClock { attempt: 1 };
                self.actions.push_back(BootAction::SyncClock);
            }
            BootState::LoadingIdentity | BootState::Operational => {}
        }
    }
}
