//! acorn-backend: the registration service for Acorn Pups devices, with its device registry
//! (SQLite, or PostgreSQL for several instances) and a signer: a local certificate authority
//! (rcgen) or, with the cargo feature `aws`, AWS IoT Core. `acorn backend serve` runs it from
//! a configuration file and environment variables ([`config`]). The broker of the dev stack is
//! in `acorn-devstack`; the API's wire types are in `acorn-api`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), acorn_backend::BackendError> {
//! use acorn_backend::{Backend, BackendConfig};
//!
//! let mut config = BackendConfig::new("/tmp/acorn-dev");
//! config.iot_endpoint = "localhost:8883".into();
//! let backend = Backend::start(config).await?;
//! let token = backend.mint_token(3600).await?;
//! println!("POST {}/v1/devices/register", backend.base_url());
//! # let _ = token;
//! backend.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! The API is described in `docs/backend.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod admin;
mod api;
pub mod ca;
pub mod config;
pub mod error;
pub mod fields;
mod files;
mod keygen;
mod metrics;
pub mod policy;
mod reconcile;
pub mod registry;
pub mod rotation;
pub mod secret;
mod serve;
mod server;
pub mod signer;
mod stats;
mod tls;

pub use admin::{Admin, AdminError, ConsoleMount};
pub use api::{DEFAULT_TOKEN_TTL_SECONDS, MAX_TOKENS_PER_REQUEST, MAX_TOKEN_TTL_SECONDS};
pub use ca::{CaRole, IssuedCertificate, IssuedKeyPair, KeyType, LocalCa};
pub use error::{BackendError, CsrError};
pub use registry::{DatabaseUrl, PoolOptions, Registry};
pub use secrecy::{ExposeSecret, SecretString};
pub use serve::ServeLimits;
pub use server::{
    Backend, BackendConfig, BackendHandle, BackendPaths, CrlEvent, CrlHook, Revocation,
    ADMIN_KEY_FILE, CLAIM_CA_DIR, CRL_FILE, DEFAULT_CRL_REFRESH, DEFAULT_CRL_VALIDITY,
    DEFAULT_KEYGEN_CONCURRENCY, REGISTRY_FILE, SERVER_CERT_FILE, SERVER_KEY_FILE, SERVICE_CA_DIR,
};
pub use signer::{AwsSignerConfig, SignerConfig};
pub use stats::BackendStats;
