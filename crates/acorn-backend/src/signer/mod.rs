//! Who issues device certificates: the `local` signer (the data directory's rcgen CA, for the
//! dev stack, the demo and tests) or the `aws` signer (AWS IoT Core as certificate authority
//! and registry; cargo feature `aws`).
//!
//! The registration handler reserves the token, asks the signer to [`Signer::issue`], writes
//! the registry row, and calls [`Signer::undo`] when that write fails, so nothing the signer
//! made outlives a failed registration.

#[cfg(feature = "aws")]
pub mod aws;

use std::time::Duration;

use secrecy::SecretString;

use crate::ca::{CheckedCsr, KeyType, LocalCa};
use crate::error::BackendError;

/// Default name of the AWS IoT policy attached to every device certificate.
pub const DEFAULT_AWS_POLICY_NAME: &str = "acorn-device";

/// Default interval of the aws signer's reconciliation with AWS IoT Core: one hour.
pub const DEFAULT_RECONCILE_INTERVAL_SECS: u64 = 3600;

/// The attribute names of a device's AWS IoT thing (also the parameters of the provisioning
/// template in `policies/provisioning-template.json`).
pub const THING_ATTRIBUTES: [&str; 3] = ["serialNumber", "macAddress", "firmwareVersion"];

/// Every AWS IoT action the `aws` signer calls (registration, undo, revocation, readiness,
/// start-up, certificate-in-use and reconciliation): the IAM permissions of
/// `policies/iam-service-policy.json` (a test keeps them equal).
pub const AWS_ACTIONS: [&str; 16] = [
    "iot:DescribeEndpoint",
    "iot:CreateCertificateFromCsr",
    "iot:CreateKeysAndCertificate",
    "iot:CreateThing",
    "iot:DeleteThing",
    "iot:AttachThingPrincipal",
    "iot:DetachThingPrincipal",
    "iot:ListThingPrincipals",
    "iot:UpdateCertificate",
    "iot:DescribeCertificate",
    "iot:DeleteCertificate",
    "iot:AttachPolicy",
    "iot:DetachPolicy",
    "iot:ListAttachedPolicies",
    "iot:GetPolicy",
    "iot:CreatePolicy",
];

/// Which signer a backend uses, and its settings.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum SignerConfig {
    /// The data directory's local CA (rcgen): certificates for the dev stack's broker.
    #[default]
    Local,
    /// AWS IoT Core (needs the cargo feature `aws`).
    Aws(AwsSignerConfig),
}

impl SignerConfig {
    /// `local` or `aws`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Aws(_) => "aws",
        }
    }
}

/// Settings of the `aws` signer. Region, credentials and endpoint come from the AWS SDK's
/// standard chains (`AWS_REGION`, `AWS_PROFILE`, instance or task roles, …; `AWS_ENDPOINT_URL`
/// is honoured).
#[derive(Debug, Clone)]
pub struct AwsSignerConfig {
    /// The AWS region; `None` takes it from the SDK's chain (`AWS_REGION`, the profile).
    pub region: Option<String>,
    /// The AWS IoT API endpoint; `None` uses the SDK's (which honours `AWS_ENDPOINT_URL`).
    /// For VPC endpoints and local emulators.
    pub endpoint_url: Option<String>,
    /// The AWS IoT policy attached to each device certificate (`policies/device-policy.json`).
    pub policy_name: String,
    /// Create the policy from `policies/device-policy.json` at start-up when it does not exist
    /// (otherwise a missing policy stops the start with the command to create it).
    pub create_policy: bool,
    /// Most AWS IoT control-plane requests per second this instance sends (a token bucket
    /// over every call). Set it to the account's quota divided by the number of instances.
    pub requests_per_second: f64,
    /// Attempts per AWS call: throttling (`ThrottlingException`) and transient errors are
    /// retried with exponential backoff and jitter up to this many times in all.
    pub max_attempts: u32,
    /// The first retry's backoff (doubling up to `max_backoff`).
    pub initial_backoff: Duration,
    /// The longest backoff between two attempts.
    pub max_backoff: Duration,
    /// The longest one AWS call may take, retries included.
    pub operation_timeout: Duration,
    /// How long a successful readiness probe of AWS IoT (`GetPolicy`) is trusted.
    pub ready_cache: Duration,
    /// How often the service reconciles every device's certificates with AWS IoT Core
    /// (`ListThingPrincipals`, `DescribeCertificate`; see `docs/backend.md`); zero turns the
    /// schedule off (`POST /v1/reconcile` still runs it on demand).
    pub reconcile_interval: Duration,
}

impl Default for AwsSignerConfig {
    /// Policy `acorn-device` (not created), 10 requests/s, 5 attempts from 200 ms backoff
    /// up to 5 s, 20 s per call, readiness re-probed every 30 s, a reconciliation every hour.
    fn default() -> Self {
        Self {
            region: None,
            endpoint_url: None,
            policy_name: DEFAULT_AWS_POLICY_NAME.into(),
            create_policy: false,
            requests_per_second: 10.0,
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(20),
            ready_cache: Duration::from_secs(30),
            reconcile_interval: Duration::from_secs(DEFAULT_RECONCILE_INTERVAL_SECS),
        }
    }
}

impl AwsSignerConfig {
    pub(crate) fn check(&self) -> Result<(), BackendError> {
        let name_ok = (1..=128).contains(&self.policy_name.len())
            && self
                .policy_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@-_".contains(&b));
        if !name_ok {
            return Err(BackendError::Config(format!(
                "aws policy_name {:?} is not an AWS IoT policy name (1-128 of letters, digits and +=,.@-_)",
                self.policy_name
            )));
        }
        if !(self.requests_per_second.is_finite() && self.requests_per_second > 0.0) {
            return Err(BackendError::Config(format!(
                "aws requests_per_second must be a positive number, got {}",
                self.requests_per_second
            )));
        }
        if !(1..=20).contains(&self.max_attempts) {
            return Err(BackendError::Config(format!(
                "aws max_attempts must be 1 to 20, got {}",
                self.max_attempts
            )));
        }
        if self.initial_backoff.is_zero() || self.initial_backoff > self.max_backoff {
            return Err(BackendError::Config(
                "aws initial_backoff must be non-zero and at most max_backoff".into(),
            ));
        }
        Ok(())
    }
}

/// What a registration asks the signer for (the local CA uses only the id and the key).
#[cfg_attr(not(feature = "aws"), allow(dead_code))]
pub(crate) struct IssueRequest<'a> {
    pub device_id: &'a str,
    pub serial_number: &'a str,
    pub mac_address: &'a str,
    pub firmware_version: &'a str,
    /// The device's CSR as sent (PEM) and as checked; `None` for server-side key generation.
    pub csr: Option<(&'a str, &'a CheckedCsr)>,
    /// The key type to make without a CSR.
    pub key_type: KeyType,
}

/// A certificate the signer issued for one registration.
pub(crate) struct Issued {
    pub certificate_pem: String,
    pub certificate_id: String,
    pub certificate_serial: String,
    pub certificate_arn: Option<String>,
    pub private_key_pem: Option<SecretString>,
    /// The MQTT endpoint the device connects to.
    pub iot_endpoint: String,
    /// What `undo` must remove (aws only).
    #[cfg(feature = "aws")]
    pub made: Option<aws::Made>,
}

/// Why a signer failed: the API answers with `status` and `code`; `detail` goes to the log.
#[derive(Debug)]
pub(crate) struct SignerError {
    pub status: u16,
    pub code: &'static str,
    pub summary: String,
    pub detail: String,
}

impl SignerError {
    pub(crate) fn internal(err: &BackendError) -> Self {
        Self {
            status: 500,
            code: "internal_error",
            summary: "internal error".into(),
            detail: err.to_string(),
        }
    }
}

/// The running signer.
pub(crate) enum Signer {
    Local,
    #[cfg(feature = "aws")]
    Aws(aws::AwsSigner),
}

impl Signer {
    /// Makes the signer `config` names (for `aws`: the SDK client, the policy check).
    pub(crate) async fn start(config: &SignerConfig) -> Result<Self, BackendError> {
        match config {
            SignerConfig::Local => Ok(Self::Local),
            #[cfg(feature = "aws")]
            SignerConfig::Aws(aws) => {
                aws.check()?;
                Ok(Self::Aws(aws::AwsSigner::start(aws).await?))
            }
            #[cfg(not(feature = "aws"))]
            SignerConfig::Aws(aws) => aws.check().and(Err(BackendError::Config(
                "the aws signer is not in this build of acorn: build it with `cargo build --release --features aws` (or choose signer = \"local\")".into(),
            ))),
        }
    }

    /// `local` or `aws`.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Local => "local",
            #[cfg(feature = "aws")]
            Self::Aws(_) => "aws",
        }
    }

    /// Whether revocations publish a CRL of the local CA (only the local signer's certificates
    /// are in it; AWS IoT Core revokes its own).
    pub(crate) fn uses_crl(&self) -> bool {
        matches!(self, Self::Local)
    }

    /// Refusals of a registration body that depend on the signer (HTTP 400 code and message).
    pub(crate) fn check_request(
        &self,
        firmware_version: &str,
        key_type_sent: Option<&str>,
        has_csr: bool,
    ) -> Result<(), (&'static str, String)> {
        match self {
            Self::Local => {
                let _ = (firmware_version, key_type_sent, has_csr);
                Ok(())
            }
            #[cfg(feature = "aws")]
            Self::Aws(_) => aws::check_request(firmware_version, key_type_sent, has_csr),
        }
    }

    /// Issues the certificate for one registration (blocking work runs off the runtime).
    pub(crate) async fn issue(
        &self,
        ca: &std::sync::Arc<LocalCa>,
        iot_endpoint: &str,
        request: IssueRequest<'_>,
    ) -> Result<Issued, SignerError> {
        match self {
            Self::Local => {
                let issued = match request.csr {
                    // Signing is quick (one ECDSA signature): no need to leave the runtime.
                    Some((_, checked)) => ca.issue_for_csr(checked).map(|c| (c, None)),
                    // Key generation is not (RSA-2048 takes ~100 ms of CPU).
                    None => {
                        let ca = std::sync::Arc::clone(ca);
                        let device_id = request.device_id.to_owned();
                        let key_type = request.key_type;
                        tokio::task::spawn_blocking(move || {
                            ca.issue_with_new_key(&device_id, key_type)
                                .map(|k| (k.certificate, Some(k.private_key_pem)))
                        })
                        .await
                        .map_err(|e| SignerError::internal(&BackendError::Task(e.to_string())))?
                    }
                }
                .map_err(|e| SignerError::internal(&e))?;
                let (cert, key) = issued;
                Ok(Issued {
                    certificate_pem: cert.pem,
                    certificate_id: cert.certificate_id,
                    certificate_serial: cert.serial_hex,
                    certificate_arn: None,
                    private_key_pem: key,
                    iot_endpoint: iot_endpoint.to_owned(),
                    #[cfg(feature = "aws")]
                    made: None,
                })
            }
            #[cfg(feature = "aws")]
            Self::Aws(aws) => aws.issue(request).await,
        }
    }

    /// Removes what [`Signer::issue`] made (the registry row could not be written).
    pub(crate) async fn undo(&self, issued: &Issued) {
        match self {
            Self::Local => {
                let _ = issued;
            }
            #[cfg(feature = "aws")]
            Self::Aws(aws) => {
                if let Some(made) = &issued.made {
                    aws.undo(made).await;
                }
            }
        }
    }

    /// Revokes a device's certificate where the signer keeps it (AWS: `REVOKED` and
    /// detached). The local signer's revocation is the CRL, published by the caller.
    pub(crate) async fn revoke(
        &self,
        device: &crate::registry::DeviceRecord,
    ) -> Result<(), SignerError> {
        match self {
            Self::Local => {
                let _ = device;
                Ok(())
            }
            #[cfg(feature = "aws")]
            Self::Aws(aws) => aws.revoke(device).await,
        }
    }

    /// A certificate the device reports in use that the signer made outside this service
    /// (AWS IoT Core's own `CreateCertificateFromCsr` and `RegisterThing` in a rotation),
    /// checked to belong to the device; `None` for the local signer, whose rotation
    /// certificates are in the registry already.
    pub(crate) async fn attached_certificate(
        &self,
        device_id: &str,
        certificate_id: &str,
    ) -> Result<Option<crate::registry::history::NewCertificate>, SignerError> {
        match self {
            Self::Local => {
                let _ = (device_id, certificate_id);
                Ok(None)
            }
            #[cfg(feature = "aws")]
            Self::Aws(aws) => aws
                .attached_certificate(device_id, certificate_id)
                .await
                .map(Some),
        }
    }

    /// Whether the signer can issue now (`Err` says why not).
    pub(crate) async fn ready(&self) -> Result<(), String> {
        match self {
            Self::Local => Ok(()),
            #[cfg(feature = "aws")]
            Self::Aws(aws) => aws.ready().await,
        }
    }

    /// The trust roots a registered device gets as `caCertificatePem`: the local CA, or the
    /// Amazon roots the AWS IoT endpoint's server certificate chains to.
    pub(crate) fn trust_pem<'a>(&self, ca: &'a LocalCa) -> &'a str {
        match self {
            Self::Local => ca.certificate_pem(),
            #[cfg(feature = "aws")]
            Self::Aws(_) => aws::AMAZON_ROOTS_PEM,
        }
    }
}
