//! What the admin API does, as calls in the same process: for a web console (or any other
//! front end) mounted into the backend's HTTP server ([`crate::BackendConfig::console`]).
//! Each call does exactly what its endpoint does (the same checks, logs, counters and CRL
//! hook); authentication is the caller's job.

use std::sync::Arc;

use tokio::sync::watch;

use crate::api::{self, AppState};
use crate::ca::{IssuedKeyPair, KeyType};
use crate::error::BackendError;
use crate::registry::{DeviceRecord, MintedToken, TokenBinding, UnusedToken};
use crate::stats::Count;

/// Builds the router of a front end from the backend's [`Admin`] calls; it is merged into
/// the backend's router (its paths must not start with `/v1/` nor be `/metrics`, and it must
/// not set a fallback).
pub type ConsoleMount = Arc<dyn Fn(Admin) -> axum::Router + Send + Sync>;

/// The admin operations of a running backend. Cheap to clone.
#[derive(Clone)]
pub struct Admin {
    state: Arc<AppState>,
    tls: bool,
    stop: watch::Receiver<bool>,
}

impl core::fmt::Debug for Admin {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Admin")
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// Why an admin call failed, in words fit for an operator (server faults carry only a
/// request id; the details are in the log under it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AdminError {
    /// The API's stable error code (e.g. `device_not_found`).
    pub code: &'static str,
    /// What went wrong and how to fix it.
    pub message: String,
}

impl From<api::ApiError> for AdminError {
    fn from(e: api::ApiError) -> Self {
        Self {
            code: e.code(),
            message: e.message().to_owned(),
        }
    }
}

impl From<BackendError> for AdminError {
    fn from(e: BackendError) -> Self {
        api::ApiError::from(e).into()
    }
}

impl Admin {
    pub(crate) fn new(state: Arc<AppState>, tls: bool, stop: watch::Receiver<bool>) -> Self {
        Self { state, tls, stop }
    }

    /// Whether `key` is the admin key (compared in constant time).
    pub fn is_admin_key(&self, key: &str) -> bool {
        crate::secret::constant_time_eq(&self.state.admin_key, key)
    }

    /// Whether the backend serves HTTPS (cookies then get `Secure`).
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// Resolves when the backend begins to shut down (for tasks a front end starts).
    pub async fn stopping(&self) {
        let mut stop = self.stop.clone();
        let _ = stop.wait_for(|s| *s).await;
    }

    /// Every device, sorted by id (`GET /v1/devices`).
    pub async fn devices(&self) -> Result<Vec<DeviceRecord>, AdminError> {
        Ok(self.state.registry.list().await?)
    }

    /// One device (`GET /v1/devices/{id}`); `None` when unknown.
    pub async fn device(&self, id: &str) -> Result<Option<DeviceRecord>, AdminError> {
        Ok(self.state.registry.get(id).await?)
    }

    /// A device's earlier and pending certificates, the latest changed first (its current
    /// one is in its [`DeviceRecord`]).
    pub async fn certificate_history(
        &self,
        id: &str,
    ) -> Result<Vec<crate::registry::history::CertificateRecord>, AdminError> {
        Ok(self.state.registry.certificate_history(id).await?)
    }

    /// Revokes a device as `POST /v1/devices/{id}/revoke` does (signer, registry, CRL, hook).
    pub async fn revoke(&self, id: &str) -> Result<(), AdminError> {
        let result = api::revoke(&self.state, id).await;
        self.state.metrics.revocation(result.is_ok());
        result.map(|_| ()).map_err(AdminError::from)
    }

    /// Mints one registration token valid for `ttl_seconds` (1 s to 30 days), bound to
    /// `device_id` when given (validated as a registration validates it), as `POST /v1/tokens`.
    pub async fn mint_token(
        &self,
        ttl_seconds: i64,
        device_id: Option<&str>,
    ) -> Result<MintedToken, AdminError> {
        let refuse = |code, message: String| AdminError { code, message };
        if !(1..=api::MAX_TOKEN_TTL_SECONDS).contains(&ttl_seconds) {
            return Err(refuse(
                "invalid_ttl",
                format!("the lifetime must be between 1 second and 30 days, got {ttl_seconds} s"),
            ));
        }
        let binding = TokenBinding {
            device_id: device_id
                .map(crate::fields::device_id)
                .transpose()
                .map_err(|m| refuse("invalid_device_id", m))?,
            ..TokenBinding::default()
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut minted = self
            .state
            .registry
            .mint_bound_tokens(1, ttl_seconds, &binding, now)
            .await?;
        self.state.counters.add(Count::TokensMinted(1));
        self.state.metrics.tokens_minted(1);
        tracing::info!(
            count = 1,
            ttl_seconds,
            bound_device_id = binding.device_id.as_deref().unwrap_or("-"),
            "registration token minted (console)"
        );
        minted.pop().ok_or_else(|| AdminError {
            code: "internal_error",
            message: "no token was minted".into(),
        })
    }

    /// Tokens neither used nor expired, soonest expiry first (only their hashes are stored).
    pub async fn unused_tokens(&self) -> Result<Vec<UnusedToken>, AdminError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        Ok(self.state.registry.unused_tokens(now).await?)
    }

    /// Issues a service identity `service:<name>` from the service CA (in memory only).
    pub fn issue_service_identity(&self, name: &str) -> Result<IssuedKeyPair, AdminError> {
        Ok(issue_service_identity(&self.state, name)?)
    }

    /// The broker's service listener (`host:port`), when the backend knows one.
    pub fn service_endpoint(&self) -> Option<&str> {
        self.state.service_endpoint.as_deref()
    }

    /// The device CA certificate (PEM), which the broker's server certificate chains to.
    pub fn ca_certificate_pem(&self) -> &str {
        self.state.ca.certificate_pem()
    }
}

/// Issues a service identity `service:<name>` from the service CA: trusted only on the
/// broker's service listener (for [`Admin`] and `BackendHandle`).
pub(crate) fn issue_service_identity(
    state: &AppState,
    name: &str,
) -> Result<IssuedKeyPair, BackendError> {
    let client_id =
        acorn_mqtt::service_client_id(name).map_err(|e| BackendError::Config(e.to_string()))?;
    let issued = state
        .service_ca
        .issue_with_new_key(&client_id, KeyType::P256)?;
    tracing::info!(%client_id, "service identity issued");
    Ok(issued)
}
