//! The Linux side of certificate rotation: the key and CSR (rcgen, P-256), the candidate
//! identity checked and staged in the image's second slot, the trial connection with it,
//! commit and roll-back (`acorn_certs::Slots`). What happens when is the device core's
//! (`acorn_device::rotation`).

use acorn_certs::candidate::{stage_checked, ExpectedIssuer};
use acorn_certs::{DeviceCertificates, PrivateKey};
use acorn_device::rotation::{RotationInput, RotationRequest};
use acorn_device::CertificateFacts;
use rcgen::{CertificateParams, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use rumqttc::MqttOptions;
use tracing::{info, warn};
use zeroize::Zeroizing;

use super::runtime::Runtime;
use crate::device_image::{client_identity, unix_now};

/// What the driver keeps between the core's rotation requests.
pub(super) struct RotationDriver {
    /// The new key, until its certificate is staged with it.
    key: Option<KeyPair>,
    /// The endpoint the identity is stored with (kept for the new one).
    endpoint: String,
    /// The active certificate's issuer (the new one must match unless `ca` is given).
    issuer: String,
    /// The CA a new certificate must chain to, if given.
    ca: Option<Vec<u8>>,
    /// The connection options of the active identity while a candidate is tried.
    active: Option<MqttOptions>,
}

impl RotationDriver {
    pub(super) fn new(endpoint: String, issuer: String, ca: Option<Vec<u8>>) -> Self {
        Self {
            key: None,
            endpoint,
            issuer,
            ca,
            active: None,
        }
    }
}

/// A new P-256 key and a CSR for it (subject CN = the device id), PEM.
fn key_and_csr(device_id: &str) -> Result<(KeyPair, String), String> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(DnType::CommonName, device_id);
    let csr = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|e| e.to_string())?;
    Ok((key, csr))
}

impl Runtime {
    /// Carries out one rotation request and answers the core.
    pub(super) fn rotation_step(&mut self, request: RotationRequest) {
        let input = match request {
            RotationRequest::MakeKey => match key_and_csr(self.device.device_id()) {
                Ok((key, csr)) => {
                    self.rotation.key = Some(key);
                    RotationInput::Csr { pem: csr }
                }
                Err(reason) => RotationInput::KeyFailed { reason },
            },
            RotationRequest::StageCandidate {
                certificate_pem,
                certificate_id,
            } => self.stage_candidate(certificate_pem, &certificate_id),
            RotationRequest::UseCandidate => {
                self.use_candidate();
                return;
            }
            RotationRequest::Commit => self.commit_candidate(),
            RotationRequest::Discard { reason } => {
                warn!("rotation rolled back: {reason}");
                if let Err(e) = self.device.store_mut().slots().discard() {
                    warn!("the new identity could not be erased: {e}");
                }
                if let Some(active) = self.rotation.active.take() {
                    self.mqtt = active;
                }
                self.rotation.key = None;
                RotationInput::Discarded
            }
            _ => return,
        };
        let now = self.now();
        self.device.rotation(now, input);
    }

    /// Checks the new certificate (it is for our new key, dates, endpoint, and its CA) and
    /// stores it with the key as the candidate identity.
    fn stage_candidate(&mut self, certificate_pem: String, certificate_id: &str) -> RotationInput {
        let Some(key) = self.rotation.key.take() else {
            return RotationInput::StageRefused {
                reason: "no new key is held (the device restarted since it made one)".into(),
            };
        };
        let key_pem = Zeroizing::new(key.serialize_pem());
        let certs = DeviceCertificates {
            device_certificate: certificate_pem.into_bytes(),
            private_key: PrivateKey::new(key_pem.as_bytes().to_vec()),
            iot_endpoint: self.rotation.endpoint.clone(),
            device_id: self.device.device_id().to_owned(),
        };
        let expected = match &self.rotation.ca {
            Some(ca) => ExpectedIssuer::Ca(ca),
            None => ExpectedIssuer::SameAs(&self.rotation.issuer),
        };
        let mut slots = self.device.store_mut().slots();
        match stage_checked(&mut slots, &certs, unix_now(), expected) {
            Ok(_) => {
                info!(certificate = %certificate_id, "new certificate stored as the candidate identity");
                RotationInput::Staged
            }
            Err(reason) => RotationInput::StageRefused { reason },
        }
    }

    /// The next CONNECT uses the candidate identity.
    fn use_candidate(&mut self) {
        let loaded = self.device.store_mut().slots().load_candidate(unix_now());
        let identity = loaded
            .map_err(|e| e.to_string())
            .and_then(|l| client_identity(&l.certificates));
        let options = identity.and_then(|identity| {
            let mut session = self.session_options.clone();
            session.identity = identity;
            session.mqtt_options().map_err(|e| e.to_string())
        });
        match options {
            Ok(options) => {
                let active = std::mem::replace(&mut self.mqtt, options);
                self.rotation.active.get_or_insert(active);
                info!("trying a connection with the new certificate");
            }
            // The trial then runs with the old identity and cannot prove the new one: the
            // commit refuses (below), and the core rolls back.
            Err(e) => warn!("the new identity cannot be used: {e}"),
        }
    }

    fn commit_candidate(&mut self) -> RotationInput {
        if self.rotation.active.is_none() {
            return RotationInput::CommitFailed {
                reason: "the trial did not run with the new identity".into(),
            };
        }
        let mut slots = self.device.store_mut().slots();
        if let Err(e) = slots.commit() {
            return RotationInput::CommitFailed {
                reason: e.to_string(),
            };
        }
        let loaded = match slots.load_active(unix_now()) {
            Ok(loaded) => loaded,
            Err(e) => {
                return RotationInput::CommitFailed {
                    reason: e.to_string(),
                }
            }
        };
        self.rotation.active = None;
        let mut facts = loaded
            .report
            .certificate
            .as_ref()
            .map(|info| CertificateFacts::new(info.not_before, info.not_after))
            .unwrap_or_default();
        facts.fingerprint = Some(loaded.metadata.certificate_fingerprint.clone());
        if let Some(info) = &loaded.report.certificate {
            self.rotation.issuer = info.issuer.clone();
        }
        info!(certificate = %loaded.metadata.certificate_fingerprint, "new certificate committed");
        RotationInput::Committed { certificate: facts }
    }
}
