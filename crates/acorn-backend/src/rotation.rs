//! The registration service's side of certificate rotation over AWS IoT Core's provisioning
//! MQTT API, for a stack where it is the certificate authority (the local CA): what AWS IoT
//! Core does for `CreateCertificateFromCsr` and `RegisterThing`, and what follows a device's
//! first use of its new certificate (the old one revoked, within the same CRL round).
//!
//! The MQTT side (subscribing to the devices' requests, answering each device on its own
//! topics) is the caller's: [`crate::BackendHandle::local_iot`] gives it these calls. Every
//! request names the device by the topic it arrived on, which the broker lets only that
//! device publish to.

use std::sync::Arc;

use acorn_mqtt::provisioning::{
    CreateCertificateFromCsrAccepted, CreateCertificateFromCsrRequest, ProvisioningRejected,
    RegisterThingAccepted, RegisterThingRequest,
};

use crate::api::{self, AppState};
use crate::ca::LocalCa;
use crate::registry::history::{
    CertificatePurpose, ClaimedDevice, NewCertificate, Promotion, RotationRefusal,
};
use crate::stats::Count;

/// Certificates issued and not registered (`RegisterThing`) within this long are abandoned (revoked).
pub const UNREGISTERED_CERTIFICATE_SECONDS: i64 = 3600;

/// An AWS-style rejection: `statusCode`, `errorCode`, `errorMessage`.
fn rejected(
    status_code: u16,
    error_code: &str,
    message: impl Into<String>,
) -> ProvisioningRejected {
    ProvisioningRejected {
        status_code,
        error_code: error_code.to_owned(),
        error_message: message.into(),
    }
}

/// `RegisterThing` with a token that does not open any pending certificate of the device.
fn invalid_ownership_token() -> ProvisioningRejected {
    rejected(
        400,
        "InvalidCertificateOwnershipToken",
        "the certificate ownership token is unknown, used, expired or not this device's; call CreateCertificateFromCsr again",
    )
}

fn internal(what: &str, e: &dyn std::fmt::Display) -> ProvisioningRejected {
    tracing::error!(error = %e, "{what}");
    rejected(500, "InternalFailure", format!("{what}; try again later"))
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The calls an MQTT responder makes on behalf of the devices (see the module docs).
#[derive(Clone)]
pub struct LocalIot {
    pub(crate) state: Arc<AppState>,
    /// The provisioning template devices name in `RegisterThing`.
    pub(crate) template: String,
}

impl core::fmt::Debug for LocalIot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LocalIot")
            .field("template", &self.template)
            .finish_non_exhaustive()
    }
}

impl LocalIot {
    /// The provisioning template this stack serves.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// `CreateCertificateFromCsr` for `device_id`: a certificate from the local CA for the
    /// CSR's key (subject CN = the device id), recorded as pending with a fresh ownership
    /// token. Any earlier certificate issued to the device and not yet registered is revoked.
    pub async fn create_certificate_from_csr(
        &self,
        device_id: &str,
        request: &CreateCertificateFromCsrRequest,
    ) -> Result<CreateCertificateFromCsrAccepted, ProvisioningRejected> {
        self.issue(device_id, request, CertificatePurpose::Rotation)
            .await
    }

    /// `CreateCertificateFromCsr` on a claim connection (client id `claim:<device_id>`): as
    /// [`LocalIot::create_certificate_from_csr`], for a device id not registered yet.
    pub async fn claim_certificate_from_csr(
        &self,
        device_id: &str,
        request: &CreateCertificateFromCsrRequest,
    ) -> Result<CreateCertificateFromCsrAccepted, ProvisioningRejected> {
        self.issue(device_id, request, CertificatePurpose::Claim)
            .await
    }

    async fn issue(
        &self,
        device_id: &str,
        request: &CreateCertificateFromCsrRequest,
        purpose: CertificatePurpose,
    ) -> Result<CreateCertificateFromCsrAccepted, ProvisioningRejected> {
        if !self.state.signer.uses_crl() {
            return Err(rejected(
                403,
                "Forbidden",
                "this registration service does not issue certificates over MQTT (its signer is AWS IoT Core, which answers this API itself)",
            ));
        }
        let csr = LocalCa::check_csr(device_id, &request.certificate_signing_request)
            .map_err(|e| rejected(400, "InvalidCsr", format!("the CSR is refused: {e}")))?;
        let ca = Arc::clone(&self.state.ca);
        let issued = tokio::task::spawn_blocking(move || ca.issue_for_csr(&csr))
            .await
            .map_err(|e| internal("the signing task failed", &e))?
            .map_err(|e| internal("the certificate could not be signed", &e))?;
        let token = hex::encode(rand::random::<[u8; 32]>());
        let certificate = NewCertificate {
            device_id: device_id.to_owned(),
            certificate_id: issued.certificate_id.clone(),
            certificate_serial: issued.serial_hex.clone(),
            certificate_pem: issued.pem.clone(),
            certificate_arn: None,
        };
        let abandoned = self
            .state
            .registry
            .add_pending_certificate(&certificate, &token, purpose, now())
            .await
            .map_err(|e| internal("the registry could not record the certificate", &e))?
            .map_err(|refusal| match refusal {
                RotationRefusal::UnknownDevice => rejected(
                    403,
                    "Forbidden",
                    format!("{device_id} is not registered with this service"),
                ),
                RotationRefusal::DeviceExists => rejected(
                    409,
                    "ResourceConflict",
                    format!("{device_id} is registered already; a claim makes new devices only"),
                ),
                RotationRefusal::Throttled {
                    retry_after_seconds,
                } => rejected(
                    429,
                    "ThrottlingException",
                    format!(
                        "too many certificates for {device_id} lately; ask again in {retry_after_seconds} s"
                    ),
                ),
                _ => rejected(403, "Forbidden", format!("{device_id} is revoked")),
            })?;
        if abandoned > 0 {
            self.publish_crl("earlier unused certificate revoked")
                .await?;
        }
        tracing::info!(%device_id, certificate_id = %issued.certificate_id, ?purpose,
            "certificate issued for the device's CSR (pending RegisterThing)");
        Ok(CreateCertificateFromCsrAccepted {
            certificate_id: issued.certificate_id,
            certificate_pem: issued.pem,
            certificate_ownership_token: token,
        })
    }

    fn check_template(&self, template: &str) -> Result<(), ProvisioningRejected> {
        if template == self.template {
            return Ok(());
        }
        Err(rejected(
            404,
            "NotFound",
            format!(
                "no provisioning template named {template:?}; this stack serves {:?}",
                self.template
            ),
        ))
    }

    /// `RegisterThing` of `template` on a claim connection for `device_id`: the ownership
    /// token of its pending certificate (once, within an hour) and the template's parameters
    /// (`DeviceId` = the connection's device, `SerialNumber`, `MacAddress`, `FirmwareVersion`,
    /// checked as a registration checks them) make the device, registered with that
    /// certificate. The answer's `deviceConfiguration` names the MQTT endpoint
    /// (`iotEndpoint`) the device connects to as itself.
    pub async fn claim_register_thing(
        &self,
        device_id: &str,
        template: &str,
        request: &RegisterThingRequest,
    ) -> Result<RegisterThingAccepted, ProvisioningRejected> {
        self.check_template(template)?;
        let param = |name: &str| request.parameters.get(name).map(String::as_str);
        if param("DeviceId") != Some(device_id) {
            return Err(rejected(
                400,
                "InvalidParameters",
                format!("the DeviceId parameter must be this connection's device ({device_id})"),
            ));
        }
        let field = |name: &str, rule: fn(&str) -> Result<String, String>| {
            rule(param(name).unwrap_or_default())
                .map_err(|e| rejected(400, "InvalidParameters", format!("{name}: {e}")))
        };
        let device = ClaimedDevice {
            device_id: device_id.to_owned(),
            serial_number: field("SerialNumber", crate::fields::serial_number)?,
            mac_address: field("MacAddress", crate::fields::mac_address)?,
            firmware_version: field("FirmwareVersion", crate::fields::firmware_version)?,
        };
        let record = self
            .state
            .registry
            .register_claimed_device(&device, &request.certificate_ownership_token, now())
            .await
            .map_err(|e| internal("the registry could not register the device", &e))?
            .ok_or_else(invalid_ownership_token)?;
        self.state.counters.add(Count::Registration);
        tracing::info!(device_id = %record.device_id, certificate_id = %record.certificate_id,
            "device provisioned by claim");
        Ok(RegisterThingAccepted {
            device_configuration: [("iotEndpoint".to_owned(), self.state.iot_endpoint.clone())]
                .into(),
            thing_name: device_id.to_owned(),
        })
    }

    /// `RegisterThing` of `template` for `device_id`: the ownership token must be the one
    /// handed out with a pending certificate of this device (once, within an hour), and the
    /// `DeviceId` parameter, when given, must be the device itself.
    pub async fn register_thing(
        &self,
        device_id: &str,
        template: &str,
        request: &RegisterThingRequest,
    ) -> Result<RegisterThingAccepted, ProvisioningRejected> {
        self.check_template(template)?;
        if let Some(asked) = request.parameters.get("DeviceId") {
            if asked != device_id {
                return Err(rejected(
                    403,
                    "Forbidden",
                    format!("DeviceId {asked:?} is not this connection's device ({device_id})"),
                ));
            }
        }
        let registered = self
            .state
            .registry
            .register_certificate(device_id, &request.certificate_ownership_token, now())
            .await
            .map_err(|e| internal("the registry could not register the certificate", &e))?
            .ok_or_else(invalid_ownership_token)?;
        tracing::info!(%device_id, certificate_id = %registered.certificate_id,
            "rotation: certificate registered (becomes current at its first use)");
        Ok(RegisterThingAccepted {
            device_configuration: Default::default(),
            thing_name: device_id.to_owned(),
        })
    }

    /// The device reported `certificate_id` in use (its status says so; only the device can
    /// publish on its status topic). When that is a registered rotation certificate, it
    /// becomes the device's current one and the one it replaces is revoked at once (a new
    /// CRL, applied by the broker before this returns). `None` when there was nothing to do.
    pub async fn certificate_in_use(
        &self,
        device_id: &str,
        certificate_id: &str,
    ) -> Result<Option<Promotion>, crate::BackendError> {
        let Some(device) = self.state.registry.get(device_id).await? else {
            return Ok(None);
        };
        make_current(&self.state, &device, certificate_id)
            .await
            .map_err(|e| crate::BackendError::Task(e.message().to_owned()))
    }

    /// Revokes certificates issued more than [`UNREGISTERED_CERTIFICATE_SECONDS`] ago and never
    /// registered; returns how many.
    pub async fn abandon_stale(&self) -> Result<u64, crate::BackendError> {
        let n = self
            .state
            .registry
            .abandon_stale_certificates(now(), UNREGISTERED_CERTIFICATE_SECONDS)
            .await?;
        if n > 0 {
            self.publish_crl("stale rotation certificates revoked")
                .await
                .map_err(|r| crate::BackendError::Task(r.error_message))?;
        }
        Ok(n)
    }

    /// A new CRL for revocations that end no live connection (the device is on its new
    /// certificate, or never used the revoked one).
    async fn publish_crl(&self, why: &str) -> Result<(), ProvisioningRejected> {
        let number = api::publish_crl(&self.state, None)
            .await
            .map_err(|e| internal("the CRL could not be published", &e))?;
        tracing::info!(crl_number = number, "{why}: CRL published");
        Ok(())
    }
}

/// Publishes `payload` on `topic` (QoS 1) for the service, e.g. through the dev stack's MQTT
/// link; an `Err` says why it could not be queued.
pub type CommandSink = Arc<dyn Fn(&str, Vec<u8>) -> Result<(), String> + Send + Sync>;

/// Sends `rotate-certificate` to an active device through the command sink; returns the
/// command's `requestId` (the device echoes it in its answers on its status topic).
pub(crate) async fn send_rotate_command(
    state: &Arc<AppState>,
    device_id: &str,
) -> Result<String, api::ApiError> {
    use axum::http::StatusCode;
    active_device(state, device_id).await?;
    let sink = state
        .command_sink
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .ok_or_else(|| {
            api::ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_mqtt_link",
                "this service has no MQTT connection to send commands through (`acorn dev up` and `acorn demo` have one); send `rotate-certificate` on the device's commands topic yourself",
            )
        })?;
    let request_id = format!("rotate-{}", hex::encode(rand::random::<[u8; 6]>()));
    let command = acorn_mqtt::CommandMessage {
        request_id: request_id.clone(),
        command: acorn_mqtt::CommandKind::RotateCertificate,
    };
    let topics = acorn_mqtt::Topics::new(device_id)
        .map_err(|e| api::ApiError::bad_request("invalid_device_id", e.to_string()))?;
    let payload = serde_json::to_vec(&command).map_err(|e| api::ApiError::internal(&e))?;
    sink(topics.commands(), payload).map_err(|detail| {
        api::ApiError::fault(
            "command_not_sent",
            "the rotate-certificate command could not be sent; try again",
            &detail,
        )
    })?;
    tracing::info!(%device_id, %request_id, "rotate-certificate command sent");
    Ok(request_id)
}

/// `POST /v1/devices/{id}/certificate-in-use`: the device reports `certificate_id` in use
/// (its status after a rotation). A certificate AWS IoT Core made (the `aws` signer: AWS
/// answers the provisioning API itself) is checked to be `ACTIVE` and attached to the device's
/// thing and recorded; then the old certificate is revoked where the signer keeps it (AWS:
/// `REVOKED` and detached, before the registry changes, so a retry finishes the job) and the
/// new one becomes current (local CA: a new CRL). Idempotent.
pub(crate) async fn report_certificate_in_use(
    state: &Arc<AppState>,
    device_id: &str,
    certificate_id: &str,
) -> Result<serde_json::Value, api::ApiError> {
    use axum::http::StatusCode;
    let id_ok = certificate_id.len() == 64 && certificate_id.bytes().all(|b| b.is_ascii_hexdigit());
    if !id_ok {
        return Err(api::ApiError::bad_request(
            "invalid_certificate_id",
            "certificateId must be the certificate's SHA-256, 64 hex digits",
        ));
    }
    let certificate_id = certificate_id.to_ascii_lowercase();
    let device = active_device(state, device_id).await?;
    let unchanged = serde_json::json!({
        "deviceId": device_id, "certificateId": certificate_id, "changed": false,
    });
    if device.certificate_id == certificate_id {
        return Ok(unchanged);
    }
    let Some(promotion) = make_current(state, &device, &certificate_id).await? else {
        return Err(api::ApiError::new(
            StatusCode::CONFLICT,
            "certificate_not_registered",
            format!(
                "{certificate_id} is not a registered certificate of {device_id} (one issued by CreateCertificateFromCsr and registered by RegisterThing)"
            ),
        ));
    };
    Ok(serde_json::json!({
        "deviceId": device_id,
        "certificateId": certificate_id,
        "changed": true,
        "supersededCertificateId": promotion.superseded_id,
    }))
}

/// The registered, active device `device_id`, or the API's answer why not (404 or 409).
pub(crate) async fn active_device(
    state: &Arc<AppState>,
    device_id: &str,
) -> Result<crate::registry::DeviceRecord, api::ApiError> {
    let device = state
        .registry
        .get(device_id)
        .await?
        .ok_or_else(|| api::device_not_found(device_id))?;
    if device.status != crate::registry::RegistrationStatus::Active {
        return Err(api::ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "device_revoked",
            format!("{device_id} is revoked; a revoked device's certificate does not change"),
        ));
    }
    Ok(device)
}

/// The device reported `certificate_id` in use: a certificate the signer made outside this
/// service (AWS IoT Core answering the provisioning API) is checked and recorded, and the old
/// one revoked there first (a retry after a failure then finishes the job); a `registered`
/// certificate of the history becomes current, the old one superseded (local CA: a new CRL).
/// `None` when `certificate_id` is no registered certificate of the device.
async fn make_current(
    state: &Arc<AppState>,
    device: &crate::registry::DeviceRecord,
    certificate_id: &str,
) -> Result<Option<Promotion>, api::ApiError> {
    let device_id = device.device_id.as_str();
    let now = now();
    if let Some(made) = state
        .signer
        .attached_certificate(device_id, certificate_id)
        .await
        .map_err(|e| api::ApiError::from_signer(state, e))?
    {
        state
            .registry
            .add_registered_certificate(&made, now)
            .await?;
        state
            .signer
            .revoke(device)
            .await
            .map_err(|e| api::ApiError::from_signer(state, e))?;
    }
    promote(state, device_id, certificate_id, now).await
}

/// The registry half of making a certificate current, after the signer has revoked the old
/// one where it keeps it: the `registered` certificate `certificate_id` becomes current and
/// the old one superseded (local CA: a new CRL), counted and logged. `None` when it is no
/// registered certificate of the device. Shared by [`make_current`] and the aws signer's
/// reconciliation ([`crate::reconcile`]).
pub(crate) async fn promote(
    state: &Arc<AppState>,
    device_id: &str,
    certificate_id: &str,
    now: i64,
) -> Result<Option<Promotion>, api::ApiError> {
    let Some(promotion) = state
        .registry
        .promote_certificate(device_id, certificate_id, now)
        .await?
    else {
        return Ok(None);
    };
    if state.signer.uses_crl() {
        let number = api::publish_crl(state, None)
            .await
            .map_err(|e| api::ApiError::internal(&e))?;
        tracing::info!(
            crl_number = number,
            "superseded certificate revoked: CRL published"
        );
    }
    state.counters.add(Count::Revocation);
    tracing::info!(%device_id, %certificate_id, superseded = %promotion.superseded_id,
        signer = state.signer.name(), "the device uses its new certificate; the old one is revoked");
    Ok(Some(promotion))
}
