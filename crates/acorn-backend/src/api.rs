//! The HTTP API (axum): routes, request/response bodies, and the JSON error format
//! `{"error": {"code": "...", "message": "..."}}`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize, Serializer};

use crate::ca::{CheckedCsr, KeyType, LocalCa};
use crate::error::{BackendError, CsrError};
use crate::metrics::Metrics;
use crate::registry::{
    DeviceRecord, NewDevice, RegisterError, Registry, Reservation, TokenBinding, TokenClaim,
    RESERVATION_SECONDS,
};
use crate::server::{CrlEvent, CrlHook, Revocation};
use crate::signer::{IssueRequest, Signer, SignerError};
use crate::stats::{Count, Counters};
use crate::{fields, files};
use secrecy::{ExposeSecret, SecretString};

/// Longest accepted token lifetime: 30 days.
pub const MAX_TOKEN_TTL_SECONDS: i64 = 30 * 24 * 3600;
/// Default token lifetime: 1 hour.
pub const DEFAULT_TOKEN_TTL_SECONDS: i64 = 3600;
/// Most tokens minted by one request.
pub const MAX_TOKENS_PER_REQUEST: u32 = 100;

/// Shared state of the handlers.
pub(crate) struct AppState {
    pub(crate) ca: Arc<LocalCa>,
    /// Who issues device certificates: the local CA or AWS IoT Core.
    pub(crate) signer: Signer,
    pub(crate) service_ca: LocalCa,
    pub(crate) registry: Registry,
    pub(crate) iot_endpoint: String,
    pub(crate) service_endpoint: Option<String>,
    pub(crate) admin_key: SecretString,
    pub(crate) crl_path: std::path::PathBuf,
    pub(crate) crl_validity: std::time::Duration,
    pub(crate) crl_hook: Option<CrlHook>,
    /// Serialises revocations so CRL files are written in CRL-number order.
    pub(crate) crl_lock: tokio::sync::Mutex<()>,
    /// The issue time of the last CRL written (each next one is later).
    pub(crate) last_crl_issued: Mutex<Option<time::OffsetDateTime>>,
    /// Server-side key generations allowed at once.
    pub(crate) keygen_limit: tokio::sync::Semaphore,
    /// What the backend did since start-up.
    pub(crate) counters: Counters,
    /// The same, and more, for Prometheus.
    pub(crate) metrics: Metrics,
    /// Set when the service is shutting down: `/v1/ready` answers 503 so load balancers
    /// stop sending new requests.
    pub(crate) draining: AtomicBool,
    /// The last readiness verdict (to log changes, not every probe).
    pub(crate) last_ready: AtomicBool,
    /// Publishes a command to a device, when the service has an MQTT link (the dev stack).
    pub(crate) command_sink: Mutex<Option<crate::rotation::CommandSink>>,
    /// The reconciliation sweep running now, and the last one.
    pub(crate) reconciler: crate::reconcile::Reconciler,
}

/// The router with every route of the API.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/v1/devices/register", post(register))
        .route("/v1/tokens", post(mint_tokens))
        .route("/v1/devices", get(list_devices))
        .route("/v1/devices/{id}", get(get_device))
        .route("/v1/devices/{id}/revoke", post(revoke_device))
        .route("/v1/devices/{id}/rotate", post(rotate_device))
        .route(
            "/v1/devices/{id}/certificate-in-use",
            post(certificate_in_use),
        )
        .route("/v1/devices/{id}/reconcile", post(reconcile_device))
        .route("/v1/reconcile", get(reconcile_status).post(reconcile_all))
        .route("/v1/service-identities", post(issue_service_identity))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// An API error: HTTP status, a stable machine-readable code, and a message for people.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// The stable error code (for in-process callers, see `admin.rs`).
    pub(crate) fn code(&self) -> &'static str {
        self.code
    }

    /// The message for people.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// A server fault: the details go to the log under a fresh request id, the client gets
    /// only that id (no paths, SQL or library messages).
    pub(crate) fn internal(err: &dyn std::fmt::Display) -> Self {
        Self::fault("internal_error", "internal error", err)
    }

    /// A server fault with its own code and a public summary; the details only in the log.
    pub(crate) fn fault(code: &'static str, summary: &str, detail: &dyn std::fmt::Display) -> Self {
        Self::fault_with_status(StatusCode::INTERNAL_SERVER_ERROR, code, summary, detail)
    }

    fn fault_with_status(
        status: StatusCode,
        code: &'static str,
        summary: &str,
        detail: &dyn std::fmt::Display,
    ) -> Self {
        let request_id = hex::encode(rand::random::<[u8; 8]>());
        tracing::error!(%request_id, code, error = %detail, "request failed with a server fault");
        Self::new(
            status,
            code,
            format!("{summary} (request id {request_id}; the backend's log has the details)"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "code": self.code, "message": self.message }
        });
        (self.status, Json(body)).into_response()
    }
}

impl From<BackendError> for ApiError {
    fn from(err: BackendError) -> Self {
        Self::internal(&err)
    }
}

impl ApiError {
    /// A signer's failure: 5xx answers carry only the summary and a request id (the details
    /// are logged under it), 4xx the summary.
    pub(crate) fn from_signer(state: &AppState, err: SignerError) -> Self {
        state.metrics.signer_error(state.signer.name(), err.code);
        let status = StatusCode::from_u16(err.status).unwrap_or(StatusCode::BAD_GATEWAY);
        if status.is_server_error() {
            Self::fault_with_status(status, err.code, &err.summary, &err.detail)
        } else {
            tracing::warn!(code = err.code, error = %err.detail, "the signer refused a request");
            Self::new(status, err.code, err.summary)
        }
    }
}

impl From<CsrError> for ApiError {
    fn from(err: CsrError) -> Self {
        let code = match err {
            CsrError::Malformed(_) => "csr_malformed",
            CsrError::BadSignature => "csr_bad_signature",
            CsrError::UnsupportedExtension => "csr_unsupported_extension",
            CsrError::UnsupportedAlgorithm(_) => "csr_unsupported_algorithm",
            CsrError::UnsupportedKey(_) => "csr_unsupported_key",
            CsrError::MissingCommonName => "csr_missing_common_name",
            CsrError::CommonNameMismatch { .. } => "csr_common_name_mismatch",
        };
        Self::bad_request(code, err.to_string())
    }
}

impl From<fields::RegistrationRefusal> for ApiError {
    fn from(err: fields::RegistrationRefusal) -> Self {
        match err {
            fields::RegistrationRefusal::Field { code, message } => {
                Self::bad_request(code, message)
            }
            fields::RegistrationRefusal::Csr(err) => Self::from(err),
        }
    }
}

impl From<RegisterError> for ApiError {
    fn from(err: RegisterError) -> Self {
        match err {
            RegisterError::TokenUnknown => Self::new(
                StatusCode::UNAUTHORIZED,
                "token_unknown",
                "the registration token is not known to this backend; ask an administrator for a token (POST /v1/tokens)",
            ),
            RegisterError::TokenExpired { expires_at } => Self::new(
                StatusCode::UNAUTHORIZED,
                "token_expired",
                format!("the registration token expired at {}; ask an administrator for a new token", rfc3339(expires_at)),
            ),
            RegisterError::TokenUsed => Self::new(
                StatusCode::CONFLICT,
                "token_used",
                "the registration token was already used (tokens are single-use); ask an administrator for a new token",
            ),
            RegisterError::TokenBusy => Self::new(
                StatusCode::CONFLICT,
                "token_in_use",
                "another registration with this token is in progress; wait for its answer (a token registers one device)",
            ),
            RegisterError::TokenBound => Self::new(
                StatusCode::FORBIDDEN,
                "token_bound",
                "this registration token is bound to another device (device id, serial number or MAC address); use the token minted for this device",
            ),
            RegisterError::DeviceExists => Self::new(
                StatusCode::CONFLICT,
                "device_exists",
                "a device with this deviceId is already registered; use another deviceId, or ask an administrator to look it up (GET /v1/devices/{id})",
            ),
            RegisterError::DeviceBusy => Self::new(
                StatusCode::CONFLICT,
                "device_registration_in_progress",
                "another registration for this deviceId (with another token) is in progress; wait for its answer",
            ),
            RegisterError::Backend(e) => Self::internal(&e),
        }
    }
}

/// Unix seconds as RFC 3339 (UTC).
fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The bearer token of the `Authorization` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = bearer(headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "admin_key_required",
            "this endpoint needs the admin key: send 'Authorization: Bearer <admin key>' (printed at start-up, or set in the backend config)",
        ));
    };
    if !crate::secret::constant_time_eq(&state.admin_key, key) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_key_invalid",
            "the admin key is wrong; use the key printed at start-up or set in the backend config",
        ));
    }
    Ok(())
}

/// Turns a JSON extractor rejection into our error format.
fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    match body {
        Ok(Json(value)) => Ok(value),
        Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with 'Content-Type: application/json'",
        )),
        Err(rejection) => Err(ApiError::new(
            rejection.status(),
            "invalid_json",
            format!(
                "the request body is not the expected JSON: {}",
                rejection.body_text()
            ),
        )),
    }
}

async fn blocking<T: Send + 'static, E: From<BackendError> + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| E::from(BackendError::Task(e.to_string())))?
}

/// Answers 408 when a request (reading its body and handling it) takes longer than `limit`.
pub(crate) async fn request_deadline(
    State(limit): State<std::time::Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("the request took longer than {limit:?}; send it again, whole and at once"),
        )
        .into_response(),
    }
}

/// Liveness: the process serves HTTP. It does not touch the database or the signer (that is
/// `/v1/ready`), so an outage of either never gets healthy instances restarted.
async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// How long `/v1/ready` waits for the database and for the signer.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

/// Readiness: the database answers and the signer can issue; 503 while either fails, and
/// while the service drains for shutdown. Only `ok`/`unavailable` per check is shown (this
/// endpoint needs no authentication); the reasons are logged when the verdict changes.
async fn ready(State(state): State<Arc<AppState>>) -> (StatusCode, Json<serde_json::Value>) {
    if state.draining.load(Ordering::SeqCst) {
        state.metrics.set_ready(false);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "draining" })),
        );
    }
    let (database, signer) = tokio::join!(state.registry.check(READY_TIMEOUT), async {
        tokio::time::timeout(READY_TIMEOUT, state.signer.ready())
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {READY_TIMEOUT:?}")))
    });
    let ok = database.is_ok() && signer.is_ok();
    state.metrics.set_ready(ok);
    if state.last_ready.swap(ok, Ordering::SeqCst) != ok {
        if ok {
            tracing::info!("ready: the database and the signer answer");
        } else {
            tracing::warn!(
                database = %database.as_ref().err().map(ToString::to_string).unwrap_or_else(|| "ok".into()),
                signer = %signer.as_ref().err().cloned().unwrap_or_else(|| "ok".into()),
                "not ready"
            );
        }
    }
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    let body = serde_json::json!({
        "status": if ok { "ready" } else { "not_ready" },
        "checks": { "database": word(database.is_ok()), "signer": word(signer.is_ok()) },
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// Prometheus metrics (OpenMetrics text format).
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see docs/backend.md for the API (all paths start with /v1/)",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not accept this HTTP method; see docs/backend.md",
    )
}

async fn register(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<acorn_api::RegisterRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<acorn_api::RegisterResponse>), ApiError> {
    let started = Instant::now();
    let result = register_checked(&state, &headers, body).await;
    let seconds = started.elapsed().as_secs_f64();
    match &result {
        Ok(_) => {
            state.counters.add(Count::Registration);
            state.metrics.registration("registered", 201, seconds);
        }
        Err(e) => {
            state.counters.add(Count::Refusal);
            state
                .metrics
                .registration(e.code, e.status.as_u16(), seconds);
            if e.status.is_client_error() {
                tracing::warn!(code = e.code, reason = %e.message, "registration refused");
            }
        }
    }
    result
}

async fn register_checked(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    body: Result<Json<acorn_api::RegisterRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<acorn_api::RegisterResponse>), ApiError> {
    let token = SecretString::from(
        bearer(headers).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "token_required",
                "registration needs a one-time token: send 'Authorization: Bearer <registration token>'",
            )
        })?,
    );
    let req = json_body(body)?;
    let checked = fields::check_registration(&req)?;
    state
        .signer
        .check_request(
            &checked.firmware_version,
            req.key_type.as_deref(),
            checked.csr.is_some(),
        )
        .map_err(|(code, message)| ApiError::bad_request(code, message))?;
    let (csr, key_type) = (checked.csr, checked.key_type);
    let device = NewDevice {
        device_id: checked.device_id,
        serial_number: checked.serial_number,
        mac_address: checked.mac_address,
        firmware_version: checked.firmware_version,
        certificate_pem: String::new(),
        certificate_id: String::new(),
        certificate_serial: String::new(),
        certificate_arn: None,
    };

    // Hold the token before any expensive work, so one token costs at most one key
    // generation however many requests race with it.
    let claim = TokenClaim {
        device_id: &device.device_id,
        serial_number: &device.serial_number,
        mac_address: &device.mac_address,
    };
    let reservation = state
        .registry
        .reserve(token.expose_secret(), &claim, now())
        .await?;
    let csr = req.csr.as_deref().zip(csr);
    let outcome = issue_and_record(state, &token, &reservation, device, csr, key_type).await;
    if outcome.is_err() {
        let released = state
            .registry
            .release(token.expose_secret(), &reservation)
            .await;
        if let Err(e) = released {
            tracing::error!(
                error = %e,
                "could not release a reserved token; it frees itself in {RESERVATION_SECONDS} s"
            );
        }
    }
    let (record, private_key_pem, iot_endpoint) = outcome?;
    tracing::info!(device_id = %record.device_id, certificate_id = %record.certificate_id,
        server_keygen = private_key_pem.is_some(), "device registered");
    Ok((
        StatusCode::CREATED,
        Json(acorn_api::RegisterResponse {
            device_id: record.device_id,
            certificate_pem: record.certificate_pem,
            private_key_pem,
            certificate_id: record.certificate_id,
            iot_endpoint,
            ca_certificate_pem: state.signer.trust_pem(&state.ca).to_owned(),
        }),
    ))
}

/// Issues the certificate through the signer (signing the CSR, or making a key pair under
/// the key-generation limit; or AWS IoT Core) and records the device, using the reserved
/// token. When the registry row cannot be written, what the signer made is undone. Returns
/// the record, the key made for the device (if any) and the endpoint it connects to.
async fn issue_and_record(
    state: &Arc<AppState>,
    token: &SecretString,
    reservation: &Reservation,
    mut device: NewDevice,
    csr: Option<(&str, CheckedCsr)>,
    key_type: KeyType,
) -> Result<(DeviceRecord, Option<SecretString>, String), ApiError> {
    // Key generation here (RSA-2048 takes ~100 ms of CPU) runs a few at a time.
    let local_keygen = csr.is_none() && matches!(state.signer, Signer::Local);
    let _permit = if local_keygen {
        let permit = state
            .keygen_limit
            .acquire()
            .await
            .map_err(|e| ApiError::internal(&e))?;
        state.counters.add(Count::KeyGeneration);
        state.metrics.key_generation();
        tracing::info!(device_id = %device.device_id, ?key_type, "generating the device's key pair (server-side key generation)");
        Some(permit)
    } else {
        None
    };
    let request = IssueRequest {
        device_id: &device.device_id,
        serial_number: &device.serial_number,
        mac_address: &device.mac_address,
        firmware_version: &device.firmware_version,
        csr: csr.as_ref().map(|(pem, checked)| (*pem, checked)),
        key_type,
    };
    let issued = state
        .signer
        .issue(&state.ca, &state.iot_endpoint, request)
        .await
        .map_err(|e| ApiError::from_signer(state, e))?;
    device.certificate_pem = issued.certificate_pem.clone();
    device.certificate_id = issued.certificate_id.clone();
    device.certificate_serial = issued.certificate_serial.clone();
    device.certificate_arn = issued.certificate_arn.clone();
    match state
        .registry
        .register(token.expose_secret(), reservation, &device, now())
        .await
    {
        Ok(record) => Ok((
            record,
            issued.private_key_pem.clone(),
            issued.iot_endpoint.clone(),
        )),
        Err(e) => {
            state.signer.undo(&issued).await;
            Err(e.into())
        }
    }
}

/// Body of `POST /v1/tokens` (every field optional).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokensRequest {
    #[serde(default)]
    ttl_seconds: Option<i64>,
    #[serde(default)]
    count: Option<i64>,
    /// Binds the token to this device id.
    #[serde(default)]
    device_id: Option<String>,
    /// Binds the token to this serial number.
    #[serde(default)]
    serial_number: Option<String>,
    /// Binds the token to this MAC address.
    #[serde(default)]
    mac_address: Option<String>,
}

impl TokensRequest {
    /// The binding asked for, each field validated as a registration would validate it.
    fn binding(&self) -> Result<TokenBinding, ApiError> {
        let check = |value: &Option<String>,
                     rule: fn(&str) -> Result<String, String>,
                     code: &'static str| {
            value
                .as_deref()
                .map(rule)
                .transpose()
                .map_err(|m| ApiError::bad_request(code, m))
        };
        Ok(TokenBinding {
            device_id: check(&self.device_id, fields::device_id, "invalid_device_id")?,
            serial_number: check(
                &self.serial_number,
                fields::serial_number,
                "invalid_serial_number",
            )?,
            mac_address: check(
                &self.mac_address,
                fields::mac_address,
                "invalid_mac_address",
            )?,
        })
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenView {
    #[serde(serialize_with = "expose_token")]
    token: SecretString,
    expires_at: String,
}

fn expose_token<S: Serializer>(value: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(value.expose_secret())
}

async fn mint_tokens(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<TokensRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    require_admin(&state, &headers)?;
    // An empty body means all defaults.
    let req = match body {
        Err(JsonRejection::MissingJsonContentType(_))
            if headers.get(header::CONTENT_LENGTH).is_none_or(|v| v == "0") =>
        {
            TokensRequest::default()
        }
        other => json_body(other)?,
    };
    let ttl = req.ttl_seconds.unwrap_or(DEFAULT_TOKEN_TTL_SECONDS);
    if !(1..=MAX_TOKEN_TTL_SECONDS).contains(&ttl) {
        return Err(ApiError::bad_request(
            "invalid_ttl",
            format!(
                "ttlSeconds must be between 1 and {MAX_TOKEN_TTL_SECONDS} (30 days), got {ttl}"
            ),
        ));
    }
    let count = req.count.unwrap_or(1);
    let count = u32::try_from(count)
        .ok()
        .filter(|c| (1..=MAX_TOKENS_PER_REQUEST).contains(c))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_count",
                format!("count must be between 1 and {MAX_TOKENS_PER_REQUEST}, got {count}"),
            )
        })?;
    let binding = req.binding()?;
    if !binding.is_empty() && count != 1 {
        return Err(ApiError::bad_request(
            "invalid_count",
            "a token bound to a device registers that one device: mint bound tokens one at a time (count 1)",
        ));
    }
    let minted = state
        .registry
        .mint_bound_tokens(count, ttl, &binding, now())
        .await?;
    state.counters.add(Count::TokensMinted(u64::from(count)));
    state.metrics.tokens_minted(u64::from(count));
    tracing::info!(
        count,
        ttl_seconds = ttl,
        bound_device_id = binding.device_id.as_deref().unwrap_or("-"),
        bound_serial = binding.serial_number.as_deref().unwrap_or("-"),
        bound_mac = binding.mac_address.as_deref().unwrap_or("-"),
        "registration tokens minted"
    );
    let tokens: Vec<TokenView> = minted
        .into_iter()
        .map(|m| TokenView {
            token: m.token,
            expires_at: rfc3339(m.expires_at),
        })
        .collect();
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "tokens": tokens })),
    ))
}

/// A device as the API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DeviceView {
    device_id: String,
    serial_number: String,
    mac_address: String,
    firmware_version: String,
    certificate_id: String,
    certificate_serial: String,
    status: &'static str,
    created_at: String,
    updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate_pem: Option<String>,
    /// The device's other certificates, the latest changed first (single-device view only).
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate_history: Option<Vec<CertificateView>>,
}

/// A certificate of a device's history as the API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CertificateView {
    certificate_id: String,
    certificate_serial: String,
    state: &'static str,
    created_at: String,
    updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked_at: Option<String>,
}

impl From<crate::registry::history::CertificateRecord> for CertificateView {
    fn from(c: crate::registry::history::CertificateRecord) -> Self {
        Self {
            state: c.state.as_str(),
            created_at: rfc3339(c.created_at),
            updated_at: rfc3339(c.updated_at),
            revoked_at: c.revoked_at.map(rfc3339),
            certificate_id: c.certificate_id,
            certificate_serial: c.certificate_serial,
        }
    }
}

impl DeviceView {
    fn new(d: DeviceRecord, with_pem: bool) -> Self {
        Self {
            status: d.status.as_str(),
            created_at: rfc3339(d.created_at),
            updated_at: rfc3339(d.updated_at),
            revoked_at: d.revoked_at.map(rfc3339),
            certificate_pem: with_pem.then_some(d.certificate_pem),
            certificate_history: None,
            device_id: d.device_id,
            serial_number: d.serial_number,
            mac_address: d.mac_address,
            firmware_version: d.firmware_version,
            certificate_id: d.certificate_id,
            certificate_serial: d.certificate_serial,
        }
    }
}

async fn list_devices(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&state, &headers)?;
    let devices = state.registry.list().await?;
    let views: Vec<DeviceView> = devices
        .into_iter()
        .map(|d| DeviceView::new(d, false))
        .collect();
    Ok(Json(serde_json::json!({ "devices": views })))
}

pub(crate) fn device_not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "device_not_found",
        format!(
            "no device with id {:?} is registered; list devices with GET /v1/devices",
            id.chars().take(128).collect::<String>()
        ),
    )
}

async fn get_device(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<DeviceView>, ApiError> {
    require_admin(&state, &headers)?;
    let device = state
        .registry
        .get(&id)
        .await?
        .ok_or_else(|| device_not_found(&id))?;
    let history = state.registry.certificate_history(&id).await?;
    let mut view = DeviceView::new(device, true);
    view.certificate_history = Some(history.into_iter().map(CertificateView::from).collect());
    Ok(Json(view))
}

async fn revoke_device(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&state, &headers)?;
    let result = revoke(&state, &id).await;
    state.metrics.revocation(result.is_ok());
    result
}

async fn rotate_device(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    require_admin(&state, &headers)?;
    let request_id = crate::rotation::send_rotate_command(&state, &id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "deviceId": id, "requestId": request_id })),
    ))
}

/// Body of `POST /v1/devices/{id}/certificate-in-use`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CertificateInUse {
    certificate_id: String,
}

async fn certificate_in_use(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<CertificateInUse>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&state, &headers)?;
    let req = json_body(body)?;
    crate::rotation::report_certificate_in_use(&state, &id, &req.certificate_id)
        .await
        .map(Json)
}

/// `POST /v1/devices/{id}/reconcile`: the device's certificates made to match AWS IoT Core.
async fn reconcile_device(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&state, &headers)?;
    let report = crate::reconcile::reconcile_device(&state, &id).await?;
    Ok(Json(
        serde_json::to_value(report).map_err(|e| ApiError::internal(&e))?,
    ))
}

/// `POST /v1/reconcile`: a sweep over every active device, in the background (202).
async fn reconcile_all(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    require_admin(&state, &headers)?;
    let Some(report) = crate::reconcile::start_sweep(&state) else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "reconcile_in_progress",
            "a reconciliation sweep is running already; follow it with GET /v1/reconcile",
        ));
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "sweep": report })),
    ))
}

/// `GET /v1/reconcile`: the sweep running now, or the last one (`null` before the first).
async fn reconcile_status(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&state, &headers)?;
    Ok(Json(
        serde_json::json!({ "sweep": state.reconciler.last() }),
    ))
}

/// Revokes where the signer keeps the certificate (AWS: `REVOKED` and detached), then in the
/// registry, then (local CA) publishes the CRL and calls the hook.
pub(crate) async fn revoke(
    state: &Arc<AppState>,
    id: &str,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Some(current) = state.registry.get(id).await? else {
        return Err(device_not_found(id));
    };
    state
        .signer
        .revoke(&current)
        .await
        .map_err(|e| ApiError::from_signer(state, e))?;
    let device = state
        .registry
        .revoke(id, now())
        .await?
        .ok_or_else(|| device_not_found(id))?;
    let crl_number = if state.signer.uses_crl() {
        let revocation = Revocation {
            device_id: device.device_id.clone(),
            certificate_serial: device.certificate_serial.clone(),
            firmware_version: device.firmware_version.clone(),
        };
        let number = publish_crl(state, Some(revocation)).await.map_err(|e| match e {
            CrlError::Hook(detail) => ApiError::fault(
                "revocation_hook_failed",
                "the device is revoked and the CRL written, but the broker could not be made to apply it; restart the broker",
                &detail,
            ),
            CrlError::Backend(e) => ApiError::internal(&e),
        })?;
        Some(number)
    } else {
        None
    };
    state.counters.add(Count::Revocation);
    tracing::info!(device_id = %device.device_id, serial = %device.certificate_serial,
        crl_number = crl_number.unwrap_or(0), signer = state.signer.name(), "device revoked");
    let mut answer = serde_json::json!({ "device": DeviceView::new(device, false) });
    match crl_number {
        Some(n) => answer["crlNumber"] = n.into(),
        None => answer["certificateStatus"] = "REVOKED".into(),
    }
    Ok(Json(answer))
}

/// Why a CRL could not be published.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CrlError {
    /// Writing it failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The CRL hook (the broker) failed; the CRL file is written.
    #[error("the CRL hook failed: {0}")]
    Hook(String),
}

/// Writes a fresh CRL and calls the CRL hook with it (for `revoked`, or as a renewal).
/// Serialised, so CRL files and hook calls follow CRL-number order.
pub(crate) async fn publish_crl(
    state: &Arc<AppState>,
    revoked: Option<Revocation>,
) -> Result<u64, CrlError> {
    let _guard = state.crl_lock.lock().await;
    let crl_number = write_crl(state).await?;
    state.counters.add(Count::CrlIssued);
    state.metrics.crl_issued();
    if let Some(hook) = state.crl_hook.clone() {
        let event = CrlEvent {
            crl_path: state.crl_path.clone(),
            crl_number,
            revoked,
        };
        // The hook blocks (it waits for the broker to reload).
        tokio::task::spawn_blocking(move || hook(&event))
            .await
            .map_err(|e| CrlError::Hook(format!("the CRL hook panicked: {e}")))?
            .map_err(CrlError::Hook)?;
    }
    Ok(crl_number)
}

/// Body of `POST /v1/service-identities`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ServiceIdentityRequest {
    name: String,
}

/// Answer of `POST /v1/service-identities`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ServiceIdentityResponse {
    client_id: String,
    certificate_pem: String,
    #[serde(serialize_with = "expose_token")]
    private_key_pem: SecretString,
    certificate_id: String,
    /// Where service identities connect (the broker's service listener), if configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    service_endpoint: Option<String>,
    /// The CA the broker's server certificate chains to.
    ca_certificate_pem: String,
}

/// Issues a service identity (admin only): a certificate from the service CA, valid only on
/// the broker's service listener. Registration can never produce one.
async fn issue_service_identity(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<ServiceIdentityRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<ServiceIdentityResponse>), ApiError> {
    require_admin(&state, &headers)?;
    let req = json_body(body)?;
    let client_id = acorn_mqtt::service_client_id(&req.name)
        .map_err(|e| ApiError::bad_request("invalid_service_name", e.to_string()))?;
    let st = Arc::clone(&state);
    let cn = client_id.clone();
    let issued = blocking(move || {
        st.service_ca
            .issue_with_new_key(&cn, KeyType::P256)
            .map_err(ApiError::from)
    })
    .await?;
    tracing::info!(%client_id, certificate_id = %issued.certificate.certificate_id, "service identity issued");
    Ok((
        StatusCode::CREATED,
        Json(ServiceIdentityResponse {
            client_id,
            certificate_pem: issued.certificate.pem,
            private_key_pem: issued.private_key_pem,
            certificate_id: issued.certificate.certificate_id,
            service_endpoint: state.service_endpoint.clone(),
            ca_certificate_pem: state.ca.certificate_pem().to_owned(),
        }),
    ))
}

/// Writes a fresh CRL of every revoked serial to the CRL file; returns its number.
pub(crate) async fn write_crl(state: &Arc<AppState>) -> Result<u64, BackendError> {
    let revoked = state.registry.revoked_serials().await?;
    let number = state.registry.next_crl_number().await?;
    let validity = time::Duration::try_from(state.crl_validity)
        .map_err(|e| BackendError::Config(format!("crl_validity: {e}")))?;
    let pem = {
        // Callers hold `crl_lock`, so this read-modify-write is not raced.
        let mut last = state
            .last_crl_issued
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let this_update = LocalCa::crl_issue_time(*last);
        let pem = state.ca.crl_pem(&revoked, number, this_update, validity)?;
        *last = Some(this_update);
        pem
    };
    let path = state.crl_path.clone();
    blocking(move || files::write_atomic(&path, pem.as_bytes(), false)).await?;
    Ok(number)
}
