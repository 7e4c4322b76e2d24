//! Certificate rotation on the embedded transport (feature `device`; the work itself needs
//! feature `rotation`): the driver side of `acorn_device::rotation`, the same on the chip and
//! on Linux (`acorn device run --transport embedded`).
//!
//! The device core decides what happens when; a [`Rotator`] carries out its requests: the new
//! key and CSR (P-256, the platform's cryptographic RNG: the hardware RNG on the chip), the
//! new certificate checked and stored as the candidate identity
//! (`acorn_certs::candidate::stage_checked` on the identity's NVS slots), the trial
//! connection with it (the [`crate::Transport`] connects with [`Rotator::identity`] when
//! there is one), commit and roll-back (`acorn_certs::Slots`). After a commit the new identity
//! stays in use for every later connection; a roll-back returns to the one before.

use acorn_certs::{LoadedIdentity, SlotKv, Slots};
use acorn_device::rotation::{RotationConfig, RotationInput, RotationRequest};
use acorn_device::CertificateFacts;

use crate::identity::TlsIdentity;
use crate::transport::Time;

/// The rotation side of a [`crate::device::DeviceDriver`] over the settings store `S`.
pub trait Rotator<S> {
    /// The identity to connect with instead of the transport's own: a candidate on trial, or
    /// one committed since the transport was made; `None` = the transport's.
    fn identity(&self) -> Option<&TlsIdentity>;
    /// Carries out `request` for device `device_id` (`store` is the device core's settings
    /// store, which on Linux is also the identity's image); the answer for
    /// `acorn_device::Device::rotation`, or `None` when the request takes none.
    fn step(
        &mut self,
        store: &mut S,
        device_id: &str,
        now: Time,
        request: RotationRequest,
    ) -> Option<RotationInput>;
}

/// No rotation: the device core only asks when it was given a rotation configuration, and
/// this answers every request with a refusal that says so.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRotation;

impl<S> Rotator<S> for NoRotation {
    fn identity(&self) -> Option<&TlsIdentity> {
        None
    }

    fn step(
        &mut self,
        _store: &mut S,
        _device_id: &str,
        _now: Time,
        request: RotationRequest,
    ) -> Option<RotationInput> {
        const WHY: &str = "this driver has no certificate rotation (no identity slots given)";
        Some(match request {
            RotationRequest::MakeKey => RotationInput::KeyFailed { reason: WHY.into() },
            RotationRequest::StageCandidate { .. } => {
                RotationInput::StageRefused { reason: WHY.into() }
            }
            RotationRequest::Commit => RotationInput::CommitFailed { reason: WHY.into() },
            RotationRequest::Discard { .. } => RotationInput::Discarded,
            _ => return None,
        })
    }
}

/// Rotation when there is one (`None`: as [`NoRotation`], e.g. when the identity's slots
/// cannot be opened).
impl<S, Z: Rotator<S>> Rotator<S> for Option<Z> {
    fn identity(&self) -> Option<&TlsIdentity> {
        self.as_ref()?.identity()
    }

    fn step(
        &mut self,
        store: &mut S,
        device_id: &str,
        now: Time,
        request: RotationRequest,
    ) -> Option<RotationInput> {
        match self {
            Some(rotation) => rotation.step(store, device_id, now, request),
            None => NoRotation.step(store, device_id, now, request),
        }
    }
}

/// Where the identity's two slots live, given the device core's settings store `S`: on the
/// chip an NVS partition of their own (`acorn_nvs::Nvs`, which ignores `S`), on Linux the
/// device image that also holds the settings.
pub trait RotationSlots<S> {
    /// The slots' store, borrowed.
    type Kv<'a>: SlotKv
    where
        Self: 'a,
        S: 'a;
    /// The identity slots.
    fn slots<'a>(&'a mut self, store: &'a mut S) -> Slots<Self::Kv<'a>>;
}

impl<F: embedded_storage::nor_flash::NorFlash, S> RotationSlots<S> for acorn_nvs::Nvs<F> {
    type Kv<'a>
        = &'a mut acorn_nvs::Nvs<F>
    where
        Self: 'a,
        S: 'a;

    fn slots<'a>(&'a mut self, _store: &'a mut S) -> Slots<Self::Kv<'a>> {
        Slots::new(self).allow_custom_endpoint(true)
    }
}

/// NVS namespace (in the identity partition) of the chip's rotation settings: `template`
/// (string) and `days_before` (an unsigned integer).
pub const NAMESPACE: &str = "rotation";

/// How a device with this identity rotates by default: the template `acorn-pups`, 30 days
/// before the end, and against an endpoint that is not AWS IoT's (a local stack) the device's
/// own `acorn-local/<id>/` topics, as `acorn device run --rotation-local` uses them.
pub fn default_config(device_id: &str, endpoint: &str) -> RotationConfig {
    let mut config = RotationConfig::new(acorn_mqtt::topics::FLEET_PROVISIONING_TEMPLATE)
        .expect("the fleet template's name is valid");
    if !acorn_certs::is_aws_iot_endpoint(endpoint) {
        config.topic_prefix = acorn_mqtt::provisioning::local_prefix(device_id);
    }
    config
}

/// [`default_config`] with what namespace [`NAMESPACE`] of `nvs` says (a factory may set
/// another provisioning template or threshold); an unusable value is an error that names it.
pub fn read_config<F: embedded_storage::nor_flash::NorFlash>(
    nvs: &mut acorn_nvs::Nvs<F>,
    device_id: &str,
    endpoint: &str,
) -> Result<RotationConfig, alloc::string::String> {
    let mut config = default_config(device_id, endpoint);
    let Some(ns) = nvs.find_namespace(NAMESPACE) else {
        return Ok(config);
    };
    let at = |key: &str, e: &dyn core::fmt::Display| alloc::format!("NVS `{NAMESPACE}/{key}`: {e}");
    if let Some(template) = nvs
        .get_string(ns, "template")
        .map_err(|e| at("template", &e))?
    {
        acorn_mqtt::provisioning::check_template_name(&template).map_err(|e| at("template", &e))?;
        config.template = template;
    }
    if let Some(value) = nvs
        .get_int(ns, "days_before")
        .map_err(|e| at("days_before", &e))?
    {
        use acorn_nvs::IntValue as V;
        let days = match value {
            V::U8(v) => Some(u32::from(v)),
            V::U16(v) => Some(u32::from(v)),
            V::U32(v) => Some(v),
            V::I8(v) => u32::try_from(v).ok(),
            V::I16(v) => u32::try_from(v).ok(),
            V::I32(v) => u32::try_from(v).ok(),
            V::U64(v) => u32::try_from(v).ok(),
            V::I64(v) => u32::try_from(v).ok(),
        };
        config.days_before = days
            .filter(|d| *d <= 3650)
            .ok_or_else(|| at("days_before", &"must be 0 to 3650 days"))?;
    }
    Ok(config)
}

/// What the device core is told about a loaded certificate: its dates and fingerprint.
pub fn certificate_facts(loaded: &LoadedIdentity) -> CertificateFacts {
    let mut facts = loaded
        .report
        .certificate
        .as_ref()
        .map(|info| CertificateFacts::new(info.not_before, info.not_after))
        .unwrap_or_default();
    facts.fingerprint = Some(loaded.metadata.certificate_fingerprint.clone());
    facts
}

#[cfg(feature = "rotation")]
pub use full::Rotation;

#[cfg(feature = "rotation")]
mod full {
    use alloc::string::{String, ToString};
    use alloc::vec::Vec;

    use acorn_certs::candidate::{stage_checked, ExpectedIssuer};
    use acorn_certs::DeviceCertificates;
    use acorn_device::rotation::{RotationInput, RotationRequest};
    use rand_core::{CryptoRng, RngCore};

    use super::{certificate_facts, RotationSlots, Rotator};
    use crate::identity::TlsIdentity;
    use crate::transport::Time;

    /// Certificate rotation over identity slots `A`, with keys from `G`.
    pub struct Rotation<A, G> {
        slots: A,
        rng: G,
        /// The endpoint the identity is stored with (kept for the new one).
        endpoint: String,
        /// The issuer of the certificate in use; a new one must match unless `ca` is given.
        issuer: String,
        /// The CA a new certificate must chain to, when known (PEM or DER).
        ca: Option<Vec<u8>>,
        /// The new key, until its certificate is staged with it.
        key: Option<p256::SecretKey>,
        /// The candidate identity, from `UseCandidate` until commit or roll-back.
        candidate: Option<TlsIdentity>,
        /// The identity committed by this driver (the transport's own before the first).
        active: Option<TlsIdentity>,
    }

    impl<A, G> core::fmt::Debug for Rotation<A, G> {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.debug_struct("Rotation")
                .field("endpoint", &self.endpoint)
                .field("issuer", &self.issuer)
                .field("key", &self.key.as_ref().map(|_| "<redacted>"))
                .field("on_trial", &self.candidate.is_some())
                .finish_non_exhaustive()
        }
    }

    impl<A, G: RngCore + CryptoRng> Rotation<A, G> {
        /// Rotation of the identity in use (stored with `endpoint`, issued by `issuer`) on
        /// `slots`, with keys from `rng`. A new certificate must come from the same issuer.
        pub fn new(slots: A, rng: G, endpoint: &str, issuer: &str) -> Self {
            Self {
                slots,
                rng,
                endpoint: endpoint.to_string(),
                issuer: issuer.to_string(),
                ca: None,
                key: None,
                candidate: None,
                active: None,
            }
        }

        /// The identity slots' store.
        pub fn slots_mut(&mut self) -> &mut A {
            &mut self.slots
        }

        /// A new certificate must chain to this CA certificate (PEM or DER) instead.
        pub fn with_ca(mut self, ca: Vec<u8>) -> Self {
            self.ca = Some(ca);
            self
        }
    }

    impl<S, A: RotationSlots<S>, G: RngCore + CryptoRng> Rotator<S> for Rotation<A, G> {
        fn identity(&self) -> Option<&TlsIdentity> {
            self.candidate.as_ref().or(self.active.as_ref())
        }

        fn step(
            &mut self,
            store: &mut S,
            device_id: &str,
            now: Time,
            request: RotationRequest,
        ) -> Option<RotationInput> {
            Some(match request {
                RotationRequest::MakeKey => {
                    match crate::csr::key_and_csr(&mut self.rng, device_id) {
                        Ok((key, pem)) => {
                            self.key = Some(key);
                            RotationInput::Csr { pem }
                        }
                        Err(e) => RotationInput::KeyFailed {
                            reason: e.to_string(),
                        },
                    }
                }
                RotationRequest::StageCandidate {
                    certificate_pem, ..
                } => self.stage(store, device_id, certificate_pem, now),
                RotationRequest::UseCandidate => {
                    self.use_candidate(store, now);
                    return None;
                }
                RotationRequest::Commit => self.commit(store, now),
                RotationRequest::Discard { .. } => {
                    self.key = None;
                    self.candidate = None;
                    // A candidate that cannot be erased now is dropped at the next boot
                    // (`Slots::recover`); the device goes on with the identity in use.
                    let _ = self.slots.slots(store).discard();
                    RotationInput::Discarded
                }
                _ => return None,
            })
        }
    }

    impl<A, G> Rotation<A, G> {
        fn stage<S>(
            &mut self,
            store: &mut S,
            device_id: &str,
            certificate_pem: String,
            now: Time,
        ) -> RotationInput
        where
            A: RotationSlots<S>,
        {
            let refuse = |reason: &str| RotationInput::StageRefused {
                reason: reason.into(),
            };
            let Some(key) = self.key.take() else {
                return refuse("no new key is held (the device restarted since it made one)");
            };
            if now.unix_ms == 0 {
                return refuse(
                    "the clock is not synced: the certificate's dates cannot be checked",
                );
            }
            let private_key = match crate::csr::sec1_pem(&key) {
                Ok(pem) => pem,
                Err(e) => return refuse(&e.to_string()),
            };
            let certs = DeviceCertificates {
                device_certificate: certificate_pem.into_bytes(),
                private_key,
                iot_endpoint: self.endpoint.clone(),
                device_id: device_id.to_string(),
            };
            let expected = match &self.ca {
                Some(ca) => ExpectedIssuer::Ca(ca),
                None => ExpectedIssuer::SameAs(&self.issuer),
            };
            let mut slots = self.slots.slots(store);
            match stage_checked(&mut slots, &certs, now.unix_ms / 1000, expected) {
                Ok(_) => RotationInput::Staged,
                Err(reason) => RotationInput::StageRefused { reason },
            }
        }

        /// The next CONNECT uses the candidate. When it cannot be loaded the trial runs with
        /// the identity in use and cannot prove the new one: the commit refuses, and the core
        /// rolls back.
        fn use_candidate<S>(&mut self, store: &mut S, now: Time)
        where
            A: RotationSlots<S>,
        {
            let now_unix = now.unix_ms / 1000;
            let loaded = self.slots.slots(store).load_candidate(now_unix);
            self.candidate = loaded
                .ok()
                .and_then(|l| TlsIdentity::from_certificates(&l.certificates).ok());
        }

        fn commit<S>(&mut self, store: &mut S, now: Time) -> RotationInput
        where
            A: RotationSlots<S>,
        {
            if self.candidate.is_none() {
                return RotationInput::CommitFailed {
                    reason: "the trial did not run with the new identity".into(),
                };
            }
            let mut slots = self.slots.slots(store);
            if let Err(e) = slots.commit() {
                return RotationInput::CommitFailed {
                    reason: e.to_string(),
                };
            }
            let loaded = match slots.load_active(now.unix_ms / 1000) {
                Ok(loaded) => loaded,
                Err(e) => {
                    return RotationInput::CommitFailed {
                        reason: e.to_string(),
                    }
                }
            };
            if let Some(info) = &loaded.report.certificate {
                self.issuer = info.issuer.clone();
            }
            self.active = self.candidate.take();
            RotationInput::Committed {
                certificate: certificate_facts(&loaded),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use acorn_nvs::{MemFlash, Nvs};

    const AWS: &str = "a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com";

    fn nvs() -> Nvs<MemFlash> {
        Nvs::open(MemFlash::new(0x6000), 0, 0x6000).unwrap()
    }

    #[test]
    fn defaults_follow_the_endpoint() {
        let aws = read_config(&mut nvs(), "acorn-0001", AWS).unwrap();
        assert_eq!(aws.template, "acorn-pups");
        assert_eq!(aws.days_before, 30);
        assert_eq!(aws.topic_prefix, "");
        let local = read_config(&mut nvs(), "acorn-0001", "192.168.1.20").unwrap();
        assert_eq!(local.topic_prefix, "acorn-local/acorn-0001/");
    }

    #[test]
    fn the_factory_may_set_the_template_and_the_threshold() {
        let mut nvs = nvs();
        let ns = nvs.namespace(NAMESPACE).unwrap();
        nvs.set_str(ns, "template", "AcornPupsRotation").unwrap();
        nvs.set_int(ns, "days_before", acorn_nvs::IntValue::U16(45))
            .unwrap();
        let config = read_config(&mut nvs, "acorn-0001", AWS).unwrap();
        assert_eq!(config.template, "AcornPupsRotation");
        assert_eq!(config.days_before, 45);
    }

    #[test]
    fn a_bad_value_is_named() {
        let mut nvs = nvs();
        let ns = nvs.namespace(NAMESPACE).unwrap();
        nvs.set_str(ns, "template", "acorn/#").unwrap();
        let error = read_config(&mut nvs, "acorn-0001", AWS).unwrap_err();
        assert!(error.contains("rotation/template"), "{error}");
        let mut nvs2 = super::tests::nvs();
        let ns = nvs2.namespace(NAMESPACE).unwrap();
        nvs2.set_int(ns, "days_before", acorn_nvs::IntValue::I32(-1))
            .unwrap();
        let error = read_config(&mut nvs2, "acorn-0001", AWS).unwrap_err();
        assert!(error.contains("rotation/days_before"), "{error}");
    }
}
