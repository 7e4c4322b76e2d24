//! The `aws` signer: AWS IoT Core is the certificate authority and the device registry.
//!
//! A registration, in order (each AWS call through one rate limiter, throttling and transient
//! errors retried by the SDK with exponential backoff and jitter):
//!
//! 0. `DescribeEndpoint` (`iot:Data-ATS`), once per process (cached): the endpoint devices get;
//! 1. `CreateThing`: name = device id, attributes [`super::THING_ATTRIBUTES`];
//! 2. `CreateCertificateFromCsr` when the device sent a CSR, else `CreateKeysAndCertificate`
//!    (AWS makes an RSA-2048 key), set active;
//! 3. `AttachPolicy`: the configured policy (`policies/device-policy.json`) to the certificate;
//! 4. `AttachThingPrincipal`: the certificate to the thing.
//!
//! When a step fails, the steps before it are undone in reverse ([`AwsSigner::undo`]: detach,
//! set the certificate `INACTIVE`, delete it, delete the thing), so no certificate is left
//! `ACTIVE` and no thing without its registry row; the caller answers 502 with a code naming
//! the step. The caller also undoes everything when the registry row cannot be written.
//! Revocation sets the certificate `REVOKED` and detaches it from its thing and policies;
//! AWS IoT Core then refuses its connections.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_iot::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_iot::types::{AttributePayload, CertificateStatus};
use aws_sdk_iot::Client;
use secrecy::SecretString;

use super::{AwsSignerConfig, IssueRequest, Issued, SignerError, THING_ATTRIBUTES};
use crate::error::BackendError;
use crate::registry::history::NewCertificate;
use crate::registry::DeviceRecord;

/// Amazon Root CA 1 (RSA) and 3 (EC): what an AWS IoT `-ats` endpoint's server certificate
/// chains to, handed to devices as `caCertificatePem`.
pub const AMAZON_ROOTS_PEM: &str = concat!(
    include_str!("../../certs/AmazonRootCA1.pem"),
    include_str!("../../certs/AmazonRootCA3.pem")
);

/// The device policy (`policies/device-policy.json`): what the signer creates when asked to
/// and compares with the account's policy at start-up.
pub const DEVICE_POLICY_DOCUMENT: &str = crate::policy::DEVICE_POLICY_FILE;

/// What one registration made in AWS IoT, for [`AwsSigner::undo`].
#[derive(Debug, Clone)]
pub(crate) struct Made {
    thing: String,
    certificate: Option<(String, String)>,
    policy_attached: bool,
    thing_attached: bool,
}

/// Most pages of `ListThingPrincipals` read for one thing.
const MAX_PRINCIPAL_PAGES: usize = 20;

/// The certificate id in a certificate ARN (`arn:aws:iot:REGION:ACCOUNT:cert/ID`); `None`
/// for other principals (Cognito identities, IAM users and roles).
pub(crate) fn certificate_id_of_arn(arn: &str) -> Option<&str> {
    let (_, id) = arn.rsplit_once(":cert/")?;
    (arn.starts_with("arn:") && !id.is_empty() && !id.contains('/')).then_some(id)
}

/// A certificate as AWS IoT Core describes it (`DescribeCertificate`).
#[derive(Debug, Clone)]
pub(crate) struct AwsCertificate {
    /// SHA-256 of its DER, lowercase hex.
    pub certificate_id: String,
    /// Its ARN.
    pub arn: String,
    /// `ACTIVE`, `INACTIVE`, `REVOKED`, `PENDING_TRANSFER`, ...
    pub status: String,
    /// When AWS made it, Unix milliseconds.
    pub created_ms: i64,
    /// The certificate, PEM.
    pub pem: String,
    /// Its serial, lowercase hex.
    pub serial: String,
}

impl AwsCertificate {
    /// Whether AWS IoT Core accepts connections with it.
    pub(crate) fn is_active(&self) -> bool {
        self.status == CertificateStatus::Active.as_str()
    }

    /// Whether it is `REVOKED` (for good: a revoked certificate cannot be activated again).
    pub(crate) fn is_revoked(&self) -> bool {
        self.status == CertificateStatus::Revoked.as_str()
    }
}

/// A token bucket without burst: calls are spaced `1 / rate` apart, in arrival order.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    interval: Duration,
    next: Mutex<Option<tokio::time::Instant>>,
    max_wait: Duration,
}

impl RateLimiter {
    /// At most `per_second` calls a second; a caller that would wait longer than `max_wait`
    /// is refused instead.
    pub(crate) fn new(per_second: f64, max_wait: Duration) -> Self {
        Self {
            interval: Duration::from_secs_f64(1.0 / per_second),
            next: Mutex::new(None),
            max_wait,
        }
    }

    /// Takes the next free slot: `Ok(wait)` until it, or `Err(wait)` (nothing taken) when
    /// it is further away than `max_wait`.
    fn reserve(&self) -> Result<Duration, Duration> {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let now = tokio::time::Instant::now();
        let slot = next.map_or(now, |n| n.max(now));
        let wait = slot - now;
        if wait > self.max_wait {
            return Err(wait);
        }
        *next = Some(slot + self.interval);
        Ok(wait)
    }

    /// Waits for this call's slot; `Err(wait)` when it is further away than `max_wait`.
    pub(crate) async fn acquire(&self) -> Result<(), Duration> {
        let wait = self.reserve()?;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }
}

/// The `aws` signer.
pub(crate) struct AwsSigner {
    client: Client,
    policy_name: String,
    limiter: RateLimiter,
    endpoint: tokio::sync::OnceCell<String>,
    ready_until: Mutex<Option<Instant>>,
    ready_cache: Duration,
}

/// A failed AWS call: its operation and the SDK's error, in words.
struct CallError {
    operation: &'static str,
    code: Option<String>,
    detail: String,
}

impl CallError {
    fn from_sdk<E, R>(operation: &'static str, err: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let code = err.code().map(str::to_owned);
        let detail = match &err {
            SdkError::ServiceError(service) => format!(
                "{}: {}",
                service.err().code().unwrap_or("service error"),
                service.err().message().unwrap_or("no message")
            ),
            other => {
                let mut text = other.to_string();
                let mut source = std::error::Error::source(other);
                while let Some(s) = source {
                    text.push_str(": ");
                    text.push_str(&s.to_string());
                    source = s.source();
                }
                text
            }
        };
        Self {
            operation,
            code,
            detail,
        }
    }

    fn rate_limited(operation: &'static str, wait: Duration) -> Self {
        Self {
            operation,
            code: Some("RateLimited".into()),
            detail: format!(
                "this instance's AWS request rate is used up for the next {wait:?}; raise aws \
                 requests_per_second if the account's quota allows, or add instances"
            ),
        }
    }

    fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    /// The API error for a registration step that failed (nothing is left behind).
    fn into_signer_error(self, api_code: &'static str) -> SignerError {
        if self.is("RateLimited") {
            return SignerError {
                status: 503,
                code: "aws_rate_limited",
                summary: "the registration service is at its AWS IoT request rate; nothing was made in AWS IoT, try again in a few seconds".into(),
                detail: self.detail,
            };
        }
        SignerError {
            status: 502,
            code: api_code,
            summary: format!(
                "AWS IoT Core failed at {} ({}); nothing was left in AWS IoT and the token is still valid: try again later",
                self.operation,
                self.code.as_deref().unwrap_or("no response")
            ),
            detail: format!("{}: {}", self.operation, self.detail),
        }
    }
}

/// Characters AWS IoT allows in a thing attribute value.
fn attribute_value_ok(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 800
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.,@/:#=[]-".contains(&b))
}

/// The aws signer's own refusals of a registration body.
pub(crate) fn check_request(
    firmware_version: &str,
    key_type_sent: Option<&str>,
    has_csr: bool,
) -> Result<(), (&'static str, String)> {
    if !attribute_value_ok(firmware_version) {
        return Err((
            "invalid_firmware_version",
            format!(
                "firmwareVersion becomes an AWS IoT thing attribute, which allows only letters, digits and _.,@/:#=[]-; got {:?}",
                firmware_version.chars().take(32).collect::<String>()
            ),
        ));
    }
    if !has_csr
        && key_type_sent
            .and_then(crate::ca::KeyType::parse)
            .is_some_and(|k| k != crate::ca::KeyType::Rsa2048)
    {
        return Err((
            "invalid_key_type",
            "AWS IoT Core makes RSA-2048 keys only (CreateKeysAndCertificate): omit keyType or send \"rsa2048\", or send a CSR to keep a P-256 key made on the device".into(),
        ));
    }
    Ok(())
}

/// The certificate's serial, lowercase hex, and the SHA-256 of its DER.
fn serial_and_id(pem: &str) -> Result<(String, String), String> {
    let der = crate::ca::pem_to_der(pem, "CERTIFICATE")
        .ok_or_else(|| "AWS returned a certificate that is not PEM".to_string())?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| format!("AWS returned a certificate that does not parse: {e}"))?;
    Ok((
        hex::encode(cert.raw_serial()),
        crate::ca::certificate_id(&der),
    ))
}

impl AwsSigner {
    /// Builds the SDK client from the standard chains, checks the device policy (creating it
    /// when configured to) and learns the account's data endpoint.
    pub(crate) async fn start(config: &AwsSignerConfig) -> Result<Self, BackendError> {
        use aws_smithy_http_client::tls;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let retry = RetryConfig::standard()
            .with_max_attempts(config.max_attempts)
            .with_initial_backoff(config.initial_backoff)
            .with_max_backoff(config.max_backoff);
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_timeout(config.operation_timeout)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .retry_config(retry)
            .timeout_config(timeouts);
        if let Some(region) = &config.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(url) = &config.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let sdk = loader.load().await;
        if sdk.region().is_none() {
            return Err(BackendError::Config(
                "the aws signer needs an AWS region: set AWS_REGION (or a region in the AWS profile)".into(),
            ));
        }
        let signer = Self {
            client: Client::new(&sdk),
            policy_name: config.policy_name.clone(),
            limiter: RateLimiter::new(config.requests_per_second, config.operation_timeout),
            endpoint: tokio::sync::OnceCell::new(),
            ready_until: Mutex::new(None),
            ready_cache: config.ready_cache,
        };
        signer.ensure_policy(config.create_policy).await?;
        let endpoint = signer.endpoint().await.map_err(|e| {
            BackendError::Unavailable(format!(
                "AWS IoT DescribeEndpoint failed: {}; check the credentials, the region and that the IAM role allows iot:DescribeEndpoint (docs/deploy.md)",
                e.detail
            ))
        })?;
        tracing::info!(region = ?sdk.region(), policy = %signer.policy_name, %endpoint, "aws signer ready");
        Ok(signer)
    }

    async fn limit(&self, operation: &'static str) -> Result<(), CallError> {
        self.limiter
            .acquire()
            .await
            .map_err(|wait| CallError::rate_limited(operation, wait))
    }

    /// Checks that the configured policy exists (creating it from
    /// [`DEVICE_POLICY_DOCUMENT`] when `create` is set) and warns when it differs from it.
    async fn ensure_policy(&self, create: bool) -> Result<(), BackendError> {
        self.limit("GetPolicy")
            .await
            .map_err(|e| BackendError::Unavailable(e.detail))?;
        let found = self
            .client
            .get_policy()
            .policy_name(&self.policy_name)
            .send()
            .await
            .map_err(|e| CallError::from_sdk("GetPolicy", e));
        match found {
            Ok(policy) => {
                let ours: Option<serde_json::Value> =
                    serde_json::from_str(DEVICE_POLICY_DOCUMENT).ok();
                let theirs: Option<serde_json::Value> = policy
                    .policy_document()
                    .and_then(|d| serde_json::from_str(d).ok());
                if ours != theirs {
                    tracing::warn!(policy = %self.policy_name,
                        "the AWS IoT policy differs from policies/device-policy.json; update it with `aws iot create-policy-version --set-as-default`");
                }
                Ok(())
            }
            Err(e) if e.is("ResourceNotFoundException") && create => {
                self.limit("CreatePolicy")
                    .await
                    .map_err(|e| BackendError::Unavailable(e.detail))?;
                self.client
                    .create_policy()
                    .policy_name(&self.policy_name)
                    .policy_document(DEVICE_POLICY_DOCUMENT)
                    .send()
                    .await
                    .map_err(|e| {
                        BackendError::Unavailable(format!(
                            "AWS IoT CreatePolicy {} failed: {}",
                            self.policy_name,
                            CallError::from_sdk("CreatePolicy", e).detail
                        ))
                    })?;
                tracing::info!(policy = %self.policy_name, "AWS IoT policy created from policies/device-policy.json");
                Ok(())
            }
            Err(e) if e.is("ResourceNotFoundException") => Err(BackendError::Config(format!(
                "the AWS IoT policy {name:?} does not exist: create it with `aws iot create-policy --policy-name {name} --policy-document file://policies/device-policy.json`, or set aws create_policy = true (ACORN_AWS_CREATE_POLICY=true)",
                name = self.policy_name
            ))),
            Err(e) => Err(BackendError::Unavailable(format!(
                "AWS IoT GetPolicy {} failed: {}; check the credentials, the region and the IAM permissions (docs/deploy.md)",
                self.policy_name, e.detail
            ))),
        }
    }

    /// The account's `iot:Data-ATS` endpoint, asked once.
    async fn endpoint(&self) -> Result<String, CallError> {
        self.endpoint
            .get_or_try_init(|| async {
                self.limit("DescribeEndpoint").await?;
                let out = self
                    .client
                    .describe_endpoint()
                    .endpoint_type("iot:Data-ATS")
                    .send()
                    .await
                    .map_err(|e| CallError::from_sdk("DescribeEndpoint", e))?;
                out.endpoint_address()
                    .map(str::to_owned)
                    .ok_or_else(|| CallError {
                        operation: "DescribeEndpoint",
                        code: None,
                        detail: "the answer holds no endpointAddress".into(),
                    })
            })
            .await
            .cloned()
    }

    /// Registers one device in AWS IoT (see the module docs); on failure, undoes what it made.
    pub(crate) async fn issue(&self, req: IssueRequest<'_>) -> Result<Issued, SignerError> {
        let endpoint = self
            .endpoint()
            .await
            .map_err(|e| e.into_signer_error("aws_describe_endpoint_failed"))?;
        self.limit("CreateThing")
            .await
            .map_err(|e| e.into_signer_error("aws_create_thing_failed"))?;
        let attributes = AttributePayload::builder()
            .attributes(THING_ATTRIBUTES[0], req.serial_number)
            .attributes(THING_ATTRIBUTES[1], req.mac_address)
            .attributes(THING_ATTRIBUTES[2], req.firmware_version)
            .build();
        let created = self
            .client
            .create_thing()
            .thing_name(req.device_id)
            .attribute_payload(attributes)
            .send()
            .await
            .map_err(|e| CallError::from_sdk("CreateThing", e));
        if let Err(e) = created {
            if e.is("ResourceAlreadyExistsException") {
                return Err(SignerError {
                    status: 409,
                    code: "thing_exists",
                    summary: format!(
                        "a thing named {:?} already exists in AWS IoT Core but not in this registry; delete it (aws iot delete-thing) or register under another deviceId",
                        req.device_id
                    ),
                    detail: e.detail,
                });
            }
            return Err(e.into_signer_error("aws_create_thing_failed"));
        }
        let mut made = Made {
            thing: req.device_id.to_owned(),
            certificate: None,
            policy_attached: false,
            thing_attached: false,
        };
        match self.make_certificate(&req, &mut made).await {
            Ok((pem, arn, key)) => {
                let certificate_id = made
                    .certificate
                    .as_ref()
                    .map(|(id, _)| id.clone())
                    .unwrap_or_default();
                let (serial, der_id) = match serial_and_id(&pem) {
                    Ok(parsed) => parsed,
                    Err(detail) => {
                        self.undo(&made).await;
                        return Err(SignerError {
                            status: 502,
                            code: "aws_create_certificate_failed",
                            summary: "AWS IoT Core returned a certificate that does not parse; nothing was left in AWS IoT".into(),
                            detail,
                        });
                    }
                };
                if der_id != certificate_id {
                    tracing::warn!(aws_certificate_id = %certificate_id, sha256 = %der_id,
                        "AWS's certificate id is not the SHA-256 of the certificate's DER");
                }
                Ok(Issued {
                    certificate_pem: pem,
                    certificate_id,
                    certificate_serial: serial,
                    certificate_arn: Some(arn),
                    private_key_pem: key,
                    iot_endpoint: endpoint,
                    made: Some(made),
                })
            }
            Err((e, api_code)) => {
                self.undo(&made).await;
                Err(e.into_signer_error(api_code))
            }
        }
    }

    /// Steps 2–4: the certificate, its policy and its thing. Records each step in `made`.
    async fn make_certificate(
        &self,
        req: &IssueRequest<'_>,
        made: &mut Made,
    ) -> Result<(String, String, Option<SecretString>), (CallError, &'static str)> {
        const CERT: &str = "aws_create_certificate_failed";
        let (arn, id, pem, key) = match req.csr {
            Some((csr_pem, _)) => {
                self.limit("CreateCertificateFromCsr")
                    .await
                    .map_err(|e| (e, CERT))?;
                let out = self
                    .client
                    .create_certificate_from_csr()
                    .certificate_signing_request(csr_pem)
                    .set_as_active(true)
                    .send()
                    .await
                    .map_err(|e| (CallError::from_sdk("CreateCertificateFromCsr", e), CERT))?;
                (
                    out.certificate_arn().map(str::to_owned),
                    out.certificate_id().map(str::to_owned),
                    out.certificate_pem().map(str::to_owned),
                    None,
                )
            }
            None => {
                self.limit("CreateKeysAndCertificate")
                    .await
                    .map_err(|e| (e, CERT))?;
                let out = self
                    .client
                    .create_keys_and_certificate()
                    .set_as_active(true)
                    .send()
                    .await
                    .map_err(|e| (CallError::from_sdk("CreateKeysAndCertificate", e), CERT))?;
                let key = out
                    .key_pair()
                    .and_then(|k| k.private_key())
                    .map(SecretString::from);
                (
                    out.certificate_arn().map(str::to_owned),
                    out.certificate_id().map(str::to_owned),
                    out.certificate_pem().map(str::to_owned),
                    Some(key),
                )
            }
        };
        let incomplete = |what: &str| CallError {
            operation: "CreateCertificate",
            code: None,
            detail: format!("the answer holds no {what}"),
        };
        let (Some(arn), Some(id)) = (arn, id) else {
            return Err((incomplete("certificateArn or certificateId"), CERT));
        };
        made.certificate = Some((id, arn.clone()));
        let pem = pem.ok_or_else(|| (incomplete("certificatePem"), CERT))?;
        let key = match key {
            None => None,
            Some(Some(key)) => Some(key),
            Some(None) => return Err((incomplete("private key"), CERT)),
        };

        const POLICY: &str = "aws_attach_policy_failed";
        self.limit("AttachPolicy").await.map_err(|e| (e, POLICY))?;
        self.client
            .attach_policy()
            .policy_name(&self.policy_name)
            .target(&arn)
            .send()
            .await
            .map_err(|e| (CallError::from_sdk("AttachPolicy", e), POLICY))?;
        made.policy_attached = true;

        const THING: &str = "aws_attach_thing_principal_failed";
        self.limit("AttachThingPrincipal")
            .await
            .map_err(|e| (e, THING))?;
        self.client
            .attach_thing_principal()
            .thing_name(&made.thing)
            .principal(&arn)
            .send()
            .await
            .map_err(|e| (CallError::from_sdk("AttachThingPrincipal", e), THING))?;
        made.thing_attached = true;
        Ok((pem, arn, key))
    }

    /// Removes what one registration made, in reverse order. Each step is tried even when an
    /// earlier one failed; what cannot be removed is logged with its name and ARN for an
    /// operator. The certificate is made `INACTIVE` before anything else can fail, so it is
    /// never left `ACTIVE`.
    pub(crate) async fn undo(&self, made: &Made) {
        let mut failures = Vec::new();
        if let Some((id, arn)) = &made.certificate {
            if self.limit("UpdateCertificate").await.is_ok() {
                if let Err(e) = self
                    .client
                    .update_certificate()
                    .certificate_id(id)
                    .new_status(CertificateStatus::Inactive)
                    .send()
                    .await
                {
                    failures.push(CallError::from_sdk("UpdateCertificate", e));
                }
            }
            if made.thing_attached && self.limit("DetachThingPrincipal").await.is_ok() {
                if let Err(e) = self
                    .client
                    .detach_thing_principal()
                    .thing_name(&made.thing)
                    .principal(arn)
                    .send()
                    .await
                {
                    failures.push(CallError::from_sdk("DetachThingPrincipal", e));
                }
            }
            if made.policy_attached && self.limit("DetachPolicy").await.is_ok() {
                if let Err(e) = self
                    .client
                    .detach_policy()
                    .policy_name(&self.policy_name)
                    .target(arn)
                    .send()
                    .await
                {
                    failures.push(CallError::from_sdk("DetachPolicy", e));
                }
            }
            if self.limit("DeleteCertificate").await.is_ok() {
                if let Err(e) = self
                    .client
                    .delete_certificate()
                    .certificate_id(id)
                    .force_delete(true)
                    .send()
                    .await
                {
                    failures.push(CallError::from_sdk("DeleteCertificate", e));
                }
            }
        }
        if self.limit("DeleteThing").await.is_ok() {
            if let Err(e) = self
                .client
                .delete_thing()
                .thing_name(&made.thing)
                .send()
                .await
            {
                failures.push(CallError::from_sdk("DeleteThing", e));
            }
        }
        if failures.is_empty() {
            tracing::info!(thing = %made.thing, "undid a failed registration in AWS IoT");
        } else {
            for f in &failures {
                tracing::error!(thing = %made.thing,
                    certificate_arn = made.certificate.as_ref().map(|(_, a)| a.as_str()).unwrap_or("-"),
                    operation = f.operation, error = %f.detail,
                    "could not undo part of a failed registration in AWS IoT: remove it by hand");
            }
        }
    }

    /// The certificate `certificate_id` as a new certificate of `device_id`, when AWS IoT Core
    /// holds it `ACTIVE` and attached to the device's thing (what `RegisterThing` of the
    /// provisioning template does in a rotation); else why not.
    pub(crate) async fn attached_certificate(
        &self,
        device_id: &str,
        certificate_id: &str,
    ) -> Result<NewCertificate, SignerError> {
        let refused = |code: &'static str, summary: String| SignerError {
            status: 409,
            code,
            summary,
            detail: String::new(),
        };
        let Some(certificate) = self.describe_certificate(certificate_id).await? else {
            return Err(refused(
                "certificate_not_found",
                format!("AWS IoT Core has no certificate {certificate_id}"),
            ));
        };
        if certificate.status != CertificateStatus::Active.as_str() {
            return Err(refused(
                "certificate_not_active",
                format!("certificate {certificate_id} is not ACTIVE in AWS IoT Core"),
            ));
        }
        let attached = self
            .thing_certificates(device_id)
            .await?
            .unwrap_or_default()
            .iter()
            .any(|(_, arn)| *arn == certificate.arn);
        if !attached {
            return Err(refused(
                "certificate_not_attached",
                format!("certificate {certificate_id} is not attached to thing {device_id:?}"),
            ));
        }
        Ok(NewCertificate {
            device_id: device_id.to_owned(),
            certificate_id: certificate_id.to_owned(),
            certificate_serial: certificate.serial,
            certificate_pem: certificate.pem,
            certificate_arn: Some(certificate.arn),
        })
    }

    /// Sets the device's certificate `REVOKED` and detaches it from its thing and policies.
    /// Repeating it is harmless.
    pub(crate) async fn revoke(&self, device: &DeviceRecord) -> Result<(), SignerError> {
        let Some(arn) = device.certificate_arn.as_deref() else {
            return Err(SignerError {
                status: 409,
                code: "not_an_aws_certificate",
                summary: format!(
                    "device {:?} has a certificate of the local CA, not of AWS IoT Core; revoke it with the local signer",
                    device.device_id
                ),
                detail: "no certificate ARN in the registry".into(),
            });
        };
        self.revoke_certificate(&device.device_id, &device.certificate_id, arn)
            .await
    }

    /// Sets certificate `certificate_id` (ARN `arn`) `REVOKED` and detaches it from the thing
    /// `thing` and from its policies. Repeating it is harmless; a certificate AWS does not
    /// have is an error (`UpdateCertificate` answers `ResourceNotFoundException`).
    pub(crate) async fn revoke_certificate(
        &self,
        thing: &str,
        certificate_id: &str,
        arn: &str,
    ) -> Result<(), SignerError> {
        const CODE: &str = "aws_revoke_failed";
        let err = |e: CallError| {
            let mut e = e.into_signer_error(CODE);
            if e.status == 502 {
                e.summary = format!(
                    "AWS IoT Core failed to revoke certificate {certificate_id} of {thing:?}; it is not revoked yet: try again"
                );
            }
            e
        };
        self.limit("UpdateCertificate").await.map_err(err)?;
        self.client
            .update_certificate()
            .certificate_id(certificate_id)
            .new_status(CertificateStatus::Revoked)
            .send()
            .await
            .map_err(|e| err(CallError::from_sdk("UpdateCertificate", e)))?;
        self.detach_certificate(thing, certificate_id, arn).await
    }

    /// Detaches certificate `certificate_id` (ARN `arn`) from the thing `thing` and from its
    /// policies, leaving its status alone (a `REVOKED` certificate's cannot change).
    pub(crate) async fn detach_certificate(
        &self,
        thing: &str,
        certificate_id: &str,
        arn: &str,
    ) -> Result<(), SignerError> {
        const CODE: &str = "aws_revoke_failed";
        let err = |e: CallError| {
            let mut e = e.into_signer_error(CODE);
            if e.status == 502 {
                e.summary = format!(
                    "AWS IoT Core failed to detach certificate {certificate_id} from {thing:?}; try again"
                );
            }
            e
        };
        self.limit("DetachThingPrincipal").await.map_err(err)?;
        let detached = self
            .client
            .detach_thing_principal()
            .thing_name(thing)
            .principal(arn)
            .send()
            .await
            .map_err(|e| CallError::from_sdk("DetachThingPrincipal", e));
        match detached {
            Ok(_) => {}
            Err(e) if e.is("ResourceNotFoundException") => {}
            Err(e) => return Err(err(e)),
        }
        self.limit("ListAttachedPolicies").await.map_err(err)?;
        let attached = self
            .client
            .list_attached_policies()
            .target(arn)
            .send()
            .await
            .map_err(|e| err(CallError::from_sdk("ListAttachedPolicies", e)))?;
        for policy in attached.policies() {
            let Some(name) = policy.policy_name() else {
                continue;
            };
            self.limit("DetachPolicy").await.map_err(err)?;
            let detached = self
                .client
                .detach_policy()
                .policy_name(name)
                .target(arn)
                .send()
                .await
                .map_err(|e| CallError::from_sdk("DetachPolicy", e));
            match detached {
                Ok(_) => {}
                Err(e) if e.is("ResourceNotFoundException") => {}
                Err(e) => return Err(err(e)),
            }
        }
        Ok(())
    }

    /// The certificate ids attached to the thing `thing` (`ListThingPrincipals`, every page;
    /// principals that are not certificates are left out), or `None` when AWS IoT Core has no
    /// such thing.
    pub(crate) async fn thing_certificates(
        &self,
        thing: &str,
    ) -> Result<Option<Vec<(String, String)>>, SignerError> {
        const CODE: &str = "aws_list_principals_failed";
        let mut found = Vec::new();
        let mut next: Option<String> = None;
        // AWS pages principals 25 at a time by default; a thing holds a handful. The bound
        // only guards against an endpoint that keeps answering with a next token.
        for _ in 0..MAX_PRINCIPAL_PAGES {
            self.limit("ListThingPrincipals")
                .await
                .map_err(|e| e.into_signer_error(CODE))?;
            let page = self
                .client
                .list_thing_principals()
                .thing_name(thing)
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| CallError::from_sdk("ListThingPrincipals", e));
            let page = match page {
                Ok(p) => p,
                Err(e) if e.is("ResourceNotFoundException") => return Ok(None),
                Err(e) => return Err(e.into_signer_error(CODE)),
            };
            found.extend(page.principals().iter().filter_map(|arn| {
                certificate_id_of_arn(arn).map(|id| (id.to_owned(), arn.clone()))
            }));
            match page.next_token() {
                Some(token) if !token.is_empty() => next = Some(token.to_owned()),
                _ => return Ok(Some(found)),
            }
        }
        Err(SignerError {
            status: 502,
            code: CODE,
            summary: format!(
                "AWS IoT Core listed more than {MAX_PRINCIPAL_PAGES} pages of principals for thing {thing:?}"
            ),
            detail: "ListThingPrincipals kept answering with a next token".into(),
        })
    }

    /// The certificate `certificate_id` as AWS IoT Core describes it (`DescribeCertificate`),
    /// or `None` when AWS has no such certificate.
    pub(crate) async fn describe_certificate(
        &self,
        certificate_id: &str,
    ) -> Result<Option<AwsCertificate>, SignerError> {
        const CODE: &str = "aws_describe_failed";
        self.limit("DescribeCertificate")
            .await
            .map_err(|e| e.into_signer_error(CODE))?;
        let described = self
            .client
            .describe_certificate()
            .certificate_id(certificate_id)
            .send()
            .await
            .map_err(|e| CallError::from_sdk("DescribeCertificate", e));
        let described = match described {
            Ok(d) => d,
            Err(e) if e.is("ResourceNotFoundException") => return Ok(None),
            Err(e) => return Err(e.into_signer_error(CODE)),
        };
        let incomplete = |what: &str| SignerError {
            status: 502,
            code: CODE,
            summary: format!("AWS IoT Core describes certificate {certificate_id} without {what}"),
            detail: String::new(),
        };
        let d = described
            .certificate_description()
            .ok_or_else(|| incomplete("a description"))?;
        let arn = d.certificate_arn().ok_or_else(|| incomplete("an ARN"))?;
        let pem = d.certificate_pem().ok_or_else(|| incomplete("a PEM"))?;
        let created = d
            .creation_date()
            .ok_or_else(|| incomplete("a creation date"))?;
        let (serial, _) = serial_and_id(pem).map_err(|detail| SignerError {
            status: 502,
            code: CODE,
            summary: format!("AWS IoT Core's certificate {certificate_id} does not parse"),
            detail,
        })?;
        Ok(Some(AwsCertificate {
            certificate_id: certificate_id.to_owned(),
            arn: arn.to_owned(),
            status: d
                .status()
                .map_or_else(|| "UNKNOWN".to_owned(), |s| s.as_str().to_owned()),
            created_ms: created
                .secs()
                .saturating_mul(1000)
                .saturating_add(i64::from(created.subsec_nanos() / 1_000_000)),
            pem: pem.to_owned(),
            serial,
        }))
    }

    /// Ready when the policy can be read (at most one `GetPolicy` per `ready_cache`) and the
    /// endpoint is known.
    pub(crate) async fn ready(&self) -> Result<(), String> {
        let fresh = self
            .ready_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|until| Instant::now() < until);
        if fresh {
            return Ok(());
        }
        self.endpoint()
            .await
            .map_err(|e| format!("DescribeEndpoint: {}", e.detail))?;
        self.limit("GetPolicy").await.map_err(|e| e.detail)?;
        self.client
            .get_policy()
            .policy_name(&self.policy_name)
            .send()
            .await
            .map_err(|e| format!("GetPolicy: {}", CallError::from_sdk("GetPolicy", e).detail))?;
        *self.ready_until.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Instant::now() + self.ready_cache);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_values_follow_aws_rules() {
        for ok in ["1.0.0", "SN-0001", "24:6F:28:AA:BB:CC", "v2_rc.1"] {
            assert!(attribute_value_ok(ok), "{ok}");
        }
        for bad in ["", "1.0.0+build", "a b", "é", "x~"] {
            assert!(!attribute_value_ok(bad), "{bad}");
        }
        assert!(check_request("1.0.0", Some("p256"), false).is_err());
        assert!(check_request("1.0.0", Some("rsa2048"), false).is_ok());
        assert!(check_request("1.0.0", None, false).is_ok());
        assert!(check_request("1.0.0", None, true).is_ok());
    }

    #[test]
    fn certificate_ids_come_from_certificate_arns_only() {
        let id = "a".repeat(64);
        assert_eq!(
            certificate_id_of_arn(&format!("arn:aws:iot:us-east-1:123456789012:cert/{id}")),
            Some(id.as_str())
        );
        for other in [
            "arn:aws:cognito-identity:us-east-1:123456789012:identitypool/x",
            "arn:aws:iam::123456789012:role/r",
            "arn:aws:iot:us-east-1:123456789012:cert/",
            "cert/abc",
        ] {
            assert_eq!(certificate_id_of_arn(other), None, "{other}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limiter_spaces_calls_and_refuses_long_waits() {
        let limiter = RateLimiter::new(10.0, Duration::from_millis(350));
        // Five callers at once at 10/s: slots 0, 100, 200, 300 ms; the fifth would wait
        // 400 ms, more than the 350 ms allowed, and is refused without taking a slot.
        let waits: Vec<_> = (0..5).map(|_| limiter.reserve()).collect();
        let ms = |d: Duration| d.as_millis();
        assert_eq!(
            waits
                .iter()
                .map(|w| w.map(ms).map_err(ms))
                .collect::<Vec<_>>(),
            vec![Ok(0), Ok(100), Ok(200), Ok(300), Err(400)]
        );
        // Once time has passed, calls flow again at the rate.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let start = tokio::time::Instant::now();
        for _ in 0..3 {
            limiter.acquire().await.expect("within the wait bound");
        }
        assert_eq!(start.elapsed(), Duration::from_millis(200));
    }
}
