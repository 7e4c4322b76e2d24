//! Certificate history: the certificates a device has had or been issued besides its current
//! one, and the steps of a rotation over AWS IoT's MQTT API as the registry records them
//! (issued → registered → in use, or abandoned), so that every certificate a device no longer
//! uses is revoked.

use super::{blocking, token_hash, DeviceRecord, RegistrationStatus, Registry, Store};
use crate::error::BackendError;

/// How long an ownership token of `CreateCertificateFromCsr` stays valid (AWS: one hour).
pub const OWNERSHIP_TOKEN_SECONDS: i64 = 3600;

/// Where a certificate of the history stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertificateState {
    /// Issued by `CreateCertificateFromCsr`; waits for `RegisterThing` with its ownership token.
    Pending,
    /// `RegisterThing` done; becomes the device's current certificate when the device first
    /// reports it in use.
    Registered,
    /// Was the device's current certificate until a rotation replaced it; revoked.
    Superseded,
    /// Issued but never used (a newer rotation, a timeout, or the device's revocation); revoked.
    Abandoned,
}

impl CertificateState {
    /// The name used in the database and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Registered => "registered",
            Self::Superseded => "superseded",
            Self::Abandoned => "abandoned",
        }
    }

    pub(super) fn from_db(name: &str) -> Self {
        match name {
            "pending" => Self::Pending,
            "registered" => Self::Registered,
            "superseded" => Self::Superseded,
            _ => Self::Abandoned,
        }
    }
}

/// A certificate of a device's history (not its current one, which is in [`DeviceRecord`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRecord {
    /// SHA-256 of the certificate DER, lowercase hex.
    pub certificate_id: String,
    /// The device it was issued to.
    pub device_id: String,
    /// The certificate serial, lowercase hex.
    pub certificate_serial: String,
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// Its ARN when AWS IoT Core issued it.
    pub certificate_arn: Option<String>,
    /// Where it stands.
    pub state: CertificateState,
    /// When it was issued (or, for a superseded one, when it was last made current), Unix s.
    pub created_at: i64,
    /// Last change, Unix seconds.
    pub updated_at: i64,
    /// When it was revoked, Unix seconds.
    pub revoked_at: Option<i64>,
}

/// A certificate just issued to a registered device by `CreateCertificateFromCsr`.
#[derive(Debug, Clone)]
pub struct NewCertificate {
    /// The device.
    pub device_id: String,
    /// SHA-256 of the DER, lowercase hex.
    pub certificate_id: String,
    /// Serial, lowercase hex.
    pub certificate_serial: String,
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// Its ARN when AWS IoT Core issued it.
    pub certificate_arn: Option<String>,
}

/// Why the registry refused to record a step of a rotation or a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RotationRefusal {
    /// No device with this id is registered (a rotation needs one).
    UnknownDevice,
    /// The device is revoked.
    DeviceRevoked,
    /// A device with this id is registered already (a claim makes a new one).
    DeviceExists,
    /// Too many certificates for this device lately (see [`MAX_CERTIFICATES_PER_DAY`] and
    /// [`MIN_SECONDS_BETWEEN_CERTIFICATES`]): every unused one ends in the CRL, so a device
    /// asking in a loop must not grow it without bound.
    Throttled {
        /// When to ask again, in seconds.
        retry_after_seconds: i64,
    },
}

/// Most certificates issued to one device id in 24 hours (rotations and claims).
pub const MAX_CERTIFICATES_PER_DAY: i64 = 20;
/// Least time between two certificates issued to one device id.
pub const MIN_SECONDS_BETWEEN_CERTIFICATES: i64 = 60;

/// The refusal, if a device issued `count` certificates in the last 24 hours, the latest at
/// `latest` (Unix seconds), may not get another at `now`.
pub(super) fn throttled(count: i64, latest: i64, now: i64) -> Option<RotationRefusal> {
    let wait = if count >= MAX_CERTIFICATES_PER_DAY {
        3600
    } else {
        latest + MIN_SECONDS_BETWEEN_CERTIFICATES - now
    };
    (count > 0 && wait > 0).then_some(RotationRefusal::Throttled {
        retry_after_seconds: wait,
    })
}

/// The query counting a device's certificates since a time: (count, latest `created_at`).
pub(super) const RECENT_CERTIFICATES: &str =
    "SELECT COUNT(*), COALESCE(MAX(created_at), 0) FROM certificates
     WHERE device_id = $1 AND created_at > $2";

/// What a certificate issued by `CreateCertificateFromCsr` is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificatePurpose {
    /// A registered, active device replaces its certificate.
    Rotation,
    /// A device not yet registered provisions itself with the shared claim certificate.
    Claim,
}

/// A device provisioning itself by claim, as `RegisterThing`'s parameters describe it.
#[derive(Debug, Clone)]
pub struct ClaimedDevice {
    /// The device id (the thing name).
    pub device_id: String,
    /// The hardware serial number.
    pub serial_number: String,
    /// The normalised MAC address.
    pub mac_address: String,
    /// The firmware version.
    pub firmware_version: String,
}

impl ClaimedDevice {
    /// The device to insert, registered with `cert`.
    pub(super) fn with(&self, cert: CertificateRecord) -> super::NewDevice {
        super::NewDevice {
            device_id: self.device_id.clone(),
            serial_number: self.serial_number.clone(),
            mac_address: self.mac_address.clone(),
            firmware_version: self.firmware_version.clone(),
            certificate_pem: cert.certificate_pem,
            certificate_id: cert.certificate_id,
            certificate_serial: cert.certificate_serial,
            certificate_arn: cert.certificate_arn,
        }
    }
}

/// What [`Registry::promote_certificate`] did.
#[derive(Debug, Clone)]
pub struct Promotion {
    /// The device, with the promoted certificate as its current one.
    pub device: DeviceRecord,
    /// The serial of the certificate it replaced (now superseded and revoked).
    pub superseded_serial: String,
    /// The id (SHA-256) of the certificate it replaced.
    pub superseded_id: String,
    /// The ARN of the certificate it replaced, when AWS IoT Core issued it.
    pub superseded_arn: Option<String>,
    /// How many other issued-but-unused certificates of the device were abandoned.
    pub abandoned: u64,
}

impl Registry {
    /// Records a certificate issued to `certificate.device_id` by `CreateCertificateFromCsr`,
    /// `pending` until `RegisterThing` presents `ownership_token`. Any other certificate of
    /// the device still pending (not registered) is abandoned (revoked) in the same transaction;
    /// returns how many.
    ///
    /// For a [`CertificatePurpose::Claim`] the device must *not* be registered yet; the
    /// certificate waits for [`Registry::register_claimed_device`].
    pub async fn add_pending_certificate(
        &self,
        certificate: &NewCertificate,
        ownership_token: &str,
        purpose: CertificatePurpose,
        now: i64,
    ) -> Result<Result<u64, RotationRefusal>, BackendError> {
        let hash = token_hash(ownership_token);
        match &self.store {
            Store::Sqlite(s) => {
                let (s, c) = (s.clone(), certificate.clone());
                blocking(move || s.add_pending_certificate(&c, &hash, purpose, now)).await
            }
            #[cfg(feature = "postgres")]
            Store::Postgres(p) => {
                p.add_pending_certificate(certificate, &hash, purpose, now)
                    .await
            }
        }
    }

    /// `RegisterThing` of a claim: the pending certificate of `device.device_id` whose
    /// ownership token is `ownership_token` (issued less than [`OWNERSHIP_TOKEN_SECONDS`]
    /// ago) becomes the current certificate of a new device with `device`'s other fields, in
    /// one transaction. `None` when no such certificate waits or the device exists by now.
    pub async fn register_claimed_device(
        &self,
        device: &ClaimedDevice,
        ownership_token: &str,
        now: i64,
    ) -> Result<Option<DeviceRecord>, BackendError> {
        let hash = token_hash(ownership_token);
        match &self.store {
            Store::Sqlite(s) => {
                let (s, d) = (s.clone(), device.clone());
                blocking(move || s.register_claimed_device(&d, &hash, now)).await
            }
            #[cfg(feature = "postgres")]
            Store::Postgres(p) => p.register_claimed_device(device, &hash, now).await,
        }
    }

    /// Records a certificate made and attached to the device outside this service (AWS IoT
    /// Core's own provisioning API) as `registered`, ready for
    /// [`Registry::promote_certificate`]. Nothing changes when it is known already.
    pub async fn add_registered_certificate(
        &self,
        certificate: &NewCertificate,
        now: i64,
    ) -> Result<(), BackendError> {
        match &self.store {
            Store::Sqlite(s) => {
                let (s, c) = (s.clone(), certificate.clone());
                blocking(move || s.add_registered_certificate(&c, now)).await
            }
            #[cfg(feature = "postgres")]
            Store::Postgres(p) => p.add_registered_certificate(certificate, now).await,
        }
    }

    /// `RegisterThing`: the pending certificate of `device_id` whose ownership token is
    /// `ownership_token` (issued less than [`OWNERSHIP_TOKEN_SECONDS`] ago) becomes
    /// `registered`; the token cannot be used again. `None` when no such certificate waits.
    pub async fn register_certificate(
        &self,
        device_id: &str,
        ownership_token: &str,
        now: i64,
    ) -> Result<Option<CertificateRecord>, BackendError> {
        let hash = token_hash(ownership_token);
        match &self.store {
            Store::Sqlite(s) => {
                let (s, id) = (s.clone(), device_id.to_owned());
                blocking(move || s.register_certificate(&id, &hash, now)).await
            }
            #[cfg(feature = "postgres")]
            Store::Postgres(p) => p.register_certificate(device_id, &hash, now).await,
        }
    }

    /// The device reported `certificate_id` in use: when it is a `registered` certificate of
    /// the (active) device, it becomes the current one, the current one is superseded
    /// (revoked), and any other unused one abandoned, in one transaction. `None` when
    /// `certificate_id` is not a registered certificate of this device (already current,
    /// unknown, pending, revoked).
    pub async fn promote_certificate(
        &self,
        device_id: &str,
        certificate_id: &str,
        now: i64,
    ) -> Result<Option<Promotion>, BackendError> {
        match &self.store {
            Store::Sqlite(s) => {
                let (s, d, c) = (s.clone(), device_id.to_owned(), certificate_id.to_owned());
                blocking(move || s.promote_certificate(&d, &c, now)).await
            }
            #[cfg(feature = "postgres")]
            Store::Postgres(p) => p.promote_certificate(device_id, certificate_id, now).await,
        }
    }

    /// Abandons (revokes) every certificate issued and never registered whose last step is older
    /// than `max_age_seconds`; returns how many.
    pub async fn abandon_stale_certificates(
        &self,
        now: i64,
        max_age_seconds: i64,
    ) -> Result<u64, BackendError> {
        let before = now.saturating_sub(max_age_seconds);
        match &self.store {
            Store::Sqlite(s) => {
                let s = s.clone();
                blocking(move || s.abandon_certificates(None, before, now)).await
            }
            #[cfg(feature = "postgres")]
            Store::Postgres(p) => p.abandon_certificates(None, before, now).await,
        }
    }

    /// Abandons (revokes) the certificate `certificate_id` of `device_id` when it is still
    /// unused (`pending` or `registered`): the signer no longer accepts it (the aws signer's
    /// reconciliation found it revoked, inactive or deleted in AWS IoT Core). Returns whether
    /// it changed.
    pub async fn abandon_certificate(
        &self,
        device_id: &str,
        certificate_id: &str,
        now: i64,
    ) -> Result<bool, BackendError> {
        match &self.store {
            Store::Sqlite(s) => {
                let (s, d, c) = (s.clone(), device_id.to_owned(), certificate_id.to_owned());
                blocking(move || s.abandon_certificate(&d, &c, now)).await
            }
            #[cfg(feature = "postgres")]
            Store::Postgres(p) => p.abandon_certificate(device_id, certificate_id, now).await,
        }
    }

    /// The device's certificates besides its current one, the latest changed first.
    pub async fn certificate_history(
        &self,
        device_id: &str,
    ) -> Result<Vec<CertificateRecord>, BackendError> {
        match &self.store {
            Store::Sqlite(s) => {
                let (s, id) = (s.clone(), device_id.to_owned());
                blocking(move || s.certificate_history(&id)).await
            }
            #[cfg(feature = "postgres")]
            Store::Postgres(p) => p.certificate_history(device_id).await,
        }
    }
}

/// Whether a certificate for `purpose` may be issued to a device in `status` (`None`: not
/// registered).
pub(super) fn purpose_admits(
    purpose: CertificatePurpose,
    status: Option<RegistrationStatus>,
) -> Result<(), RotationRefusal> {
    match (purpose, status) {
        (CertificatePurpose::Rotation, None) => Err(RotationRefusal::UnknownDevice),
        (CertificatePurpose::Rotation, Some(RegistrationStatus::Revoked)) => {
            Err(RotationRefusal::DeviceRevoked)
        }
        (CertificatePurpose::Claim, Some(_)) => Err(RotationRefusal::DeviceExists),
        _ => Ok(()),
    }
}

/// The columns of a [`CertificateRecord`], in the order the stores read them.
pub(super) const CERTIFICATE_COLUMNS: &str = "certificate_id, device_id, certificate_serial,
    certificate_pem, certificate_arn, state, created_at, updated_at, revoked_at";

/// The states of certificates issued but not in use.
pub(super) const UNUSED_STATES: &str = "('pending', 'registered')";

/// The state of certificates issued and not yet registered. Only these are abandoned by a
/// newer `CreateCertificateFromCsr` or by the sweep: a `registered` one may already be in use
/// on a device whose status the service missed, and revoking it would cut that device off;
/// it is abandoned when another certificate of the device is seen in use, or with the device.
pub(super) const PENDING_STATES: &str = "('pending')";
