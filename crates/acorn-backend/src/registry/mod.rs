//! The device registry: devices and registration tokens, in SQLite (one file, the embedded
//! default) or PostgreSQL (shared by several instances of the service).
//!
//! Both stores have the same schema, the same behaviour and pass the same test suite
//! (`tests/registry.rs`). Their schema is versioned: the migrations in
//! `crates/acorn-backend/migrations/{sqlite,postgres}/` are applied in order when the registry
//! is opened ([`migrate`]).
//!
//! A token is single-use under any concurrency, in one process or across instances: a
//! registration first **reserves** its token ([`Registry::reserve`]: known, unused, unexpired,
//! not held by another request in flight, binding matched, device id free), then **uses** it
//! and inserts the device in one transaction ([`Registry::register`]: `UPDATE … WHERE used_at
//! IS NULL AND reservation = ours`, which must change exactly one row). SQLite serialises
//! writers with `BEGIN IMMEDIATE`; PostgreSQL locks the token's row (`SELECT … FOR UPDATE`)
//! and re-checks the `UPDATE`'s condition after any concurrent writer commits.

pub mod history;
pub mod migrate;
#[cfg(feature = "postgres")]
mod postgres;
mod sqlite;
mod unused;

pub use unused::UnusedToken;

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::ca::RevokedSerial;
use crate::error::BackendError;

/// How long a reservation holds a token when its request dies without releasing it.
pub const RESERVATION_SECONDS: i64 = 120;

/// The pool of PostgreSQL connections.
#[derive(Clone)]
pub struct PoolOptions {
    /// Most connections open at once (per instance).
    pub max_connections: usize,
    /// How long a request waits for a free connection, and how long a new connection may take.
    pub timeout: Duration,
    /// A PEM file of the CA(s) that sign the server's certificate: connect with TLS (the
    /// server's name is checked). Without it the URL's `sslmode` must not be `require`.
    pub ca_file: Option<PathBuf>,
    /// The password, when it is not in the URL (read from a 0600 file).
    pub password: Option<secrecy::SecretString>,
}

impl core::fmt::Debug for PoolOptions {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PoolOptions")
            .field("max_connections", &self.max_connections)
            .field("timeout", &self.timeout)
            .field("ca_file", &self.ca_file)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Default for PoolOptions {
    /// 16 connections, 5 s, no TLS, the password (if any) from the URL.
    fn default() -> Self {
        Self {
            max_connections: 16,
            timeout: Duration::from_secs(5),
            ca_file: None,
            password: None,
        }
    }
}

/// The state of a device's registration (its certificate): active or revoked. Not the
/// device's online status, which `acorn_mqtt::DeviceStatus` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationStatus {
    /// Registered and allowed to connect.
    Active,
    /// Revoked: its certificate serial is in the CRL (local CA) or its certificate is
    /// `REVOKED` in AWS IoT Core (aws signer).
    Revoked,
}

impl RegistrationStatus {
    /// The name used in the database and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Revoked => "revoked",
        }
    }

    fn from_db(name: &str) -> Self {
        if name == "revoked" {
            Self::Revoked
        } else {
            Self::Active
        }
    }
}

/// A device as stored in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The device id (also the certificate's CN, the MQTT client id and the AWS IoT thing name).
    pub device_id: String,
    /// The hardware serial number.
    pub serial_number: String,
    /// The MAC address, normalised to `AA:BB:CC:DD:EE:FF`.
    pub mac_address: String,
    /// The firmware version reported at registration.
    pub firmware_version: String,
    /// The issued certificate, PEM.
    pub certificate_pem: String,
    /// SHA-256 of the certificate DER, lowercase hex.
    pub certificate_id: String,
    /// The certificate serial number, lowercase hex.
    pub certificate_serial: String,
    /// The certificate's ARN when AWS IoT Core issued it; `None` for the local CA.
    pub certificate_arn: Option<String>,
    /// Active or revoked.
    pub status: RegistrationStatus,
    /// Registration time, Unix seconds.
    pub created_at: i64,
    /// Last change, Unix seconds.
    pub updated_at: i64,
    /// Revocation time, Unix seconds.
    pub revoked_at: Option<i64>,
}

/// The fields of a device to insert at registration.
#[derive(Debug, Clone)]
pub struct NewDevice {
    /// The device id.
    pub device_id: String,
    /// The hardware serial number.
    pub serial_number: String,
    /// The normalised MAC address.
    pub mac_address: String,
    /// The firmware version.
    pub firmware_version: String,
    /// The issued certificate, PEM.
    pub certificate_pem: String,
    /// SHA-256 of the certificate DER, lowercase hex.
    pub certificate_id: String,
    /// The certificate serial, lowercase hex.
    pub certificate_serial: String,
    /// The certificate's ARN when AWS IoT Core issued it.
    pub certificate_arn: Option<String>,
}

/// A freshly minted registration token. The registry keeps only its SHA-256.
#[derive(Debug, Clone)]
pub struct MintedToken {
    /// The token to hand to a device (shown once).
    pub token: SecretString,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
}

/// What a token may register: each field set must equal the registration's. The default
/// (nothing set) admits any device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenBinding {
    /// The only device id the token registers.
    pub device_id: Option<String>,
    /// The only hardware serial number the token registers.
    pub serial_number: Option<String>,
    /// The only MAC address (normalised `AA:BB:CC:DD:EE:FF`) the token registers.
    pub mac_address: Option<String>,
}

impl TokenBinding {
    /// Whether nothing is bound.
    pub fn is_empty(&self) -> bool {
        self.device_id.is_none() && self.serial_number.is_none() && self.mac_address.is_none()
    }

    fn admits(&self, claim: &TokenClaim<'_>) -> bool {
        let ok = |bound: &Option<String>, value: &str| bound.as_deref().is_none_or(|b| b == value);
        ok(&self.device_id, claim.device_id)
            && ok(&self.serial_number, claim.serial_number)
            && ok(&self.mac_address, claim.mac_address)
    }
}

/// The identity a registration claims, checked against a token's [`TokenBinding`].
#[derive(Debug, Clone, Copy)]
pub struct TokenClaim<'a> {
    /// The device id asked for.
    pub device_id: &'a str,
    /// The serial number sent.
    pub serial_number: &'a str,
    /// The normalised MAC address sent.
    pub mac_address: &'a str,
}

/// A [`TokenClaim`] that owns its strings (to cross into a blocking task).
#[derive(Debug, Clone)]
struct OwnedClaim {
    device_id: String,
    serial_number: String,
    mac_address: String,
}

impl OwnedClaim {
    fn new(claim: &TokenClaim<'_>) -> Self {
        Self {
            device_id: claim.device_id.to_owned(),
            serial_number: claim.serial_number.to_owned(),
            mac_address: claim.mac_address.to_owned(),
        }
    }

    fn as_claim(&self) -> TokenClaim<'_> {
        TokenClaim {
            device_id: &self.device_id,
            serial_number: &self.serial_number,
            mac_address: &self.mac_address,
        }
    }
}

/// A token held by one registration in flight (see [`Registry::reserve`]).
#[derive(Debug, Clone)]
pub struct Reservation(String);

impl Reservation {
    fn new() -> Self {
        Self(hex::encode(rand::random::<[u8; 16]>()))
    }
}

/// Why a registration was refused by the registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// No such token was ever minted.
    #[error("the registration token is not known to this backend")]
    TokenUnknown,
    /// The token expired.
    #[error("the registration token expired at {expires_at} (Unix seconds)")]
    TokenExpired {
        /// When it expired.
        expires_at: i64,
    },
    /// The token was already used.
    #[error("the registration token was already used")]
    TokenUsed,
    /// Another registration with this token is in progress.
    #[error("another registration with this token is in progress")]
    TokenBusy,
    /// The token is bound to another device (id, serial number or MAC address).
    #[error("the registration token is bound to another device")]
    TokenBound,
    /// A device with this id exists.
    #[error("a device with this id is already registered")]
    DeviceExists,
    /// Another registration (with another token) for this device id is in progress.
    #[error("another registration for this device id is in progress")]
    DeviceBusy,
    /// The database failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// SHA-256 of a token, lowercase hex: what the registry stores instead of the token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// What the registry knows of one token.
struct TokenRow {
    expires_at: i64,
    used_at: Option<i64>,
    reserved_until: Option<i64>,
    binding: TokenBinding,
}

impl TokenRow {
    /// `Ok` if the token is unused and unexpired at `now`, else why not.
    fn usable(&self, now: i64) -> Result<(), RegisterError> {
        match (self.used_at, self.expires_at) {
            (Some(_), _) => Err(RegisterError::TokenUsed),
            (None, expires_at) if expires_at <= now => {
                Err(RegisterError::TokenExpired { expires_at })
            }
            _ => Ok(()),
        }
    }

    /// Whether `claim` may reserve this token at `now` (the device id is checked apart).
    fn reservable(&self, claim: &TokenClaim<'_>, now: i64) -> Result<(), RegisterError> {
        self.usable(now)?;
        if self.reserved_until.is_some_and(|until| until > now) {
            return Err(RegisterError::TokenBusy);
        }
        if !self.binding.admits(claim) {
            return Err(RegisterError::TokenBound);
        }
        Ok(())
    }
}

/// Where the registry lives: `sqlite:PATH` or `postgres://…` (`postgresql://…`).
#[derive(Clone)]
pub enum DatabaseUrl {
    /// An SQLite file (created if missing).
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (it may hold a password: never printed).
    Postgres(SecretString),
}

impl core::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl DatabaseUrl {
    /// Parses `sqlite:PATH` (also `sqlite://PATH`) or `postgres://…` / `postgresql://…`.
    pub fn parse(text: &str) -> Result<Self, BackendError> {
        let text = text.trim();
        if let Some(path) = text
            .strip_prefix("sqlite://")
            .or_else(|| text.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err(BackendError::Config(
                    "the database URL `sqlite:` names no file; write sqlite:/var/lib/acorn/registry.sqlite3".into(),
                ));
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            #[cfg(feature = "postgres")]
            {
                postgres::parse_config(text)?;
                return Ok(Self::Postgres(SecretString::from(text)));
            }
            #[cfg(not(feature = "postgres"))]
            return Err(BackendError::Config(format!(
                "this acorn was built without PostgreSQL ({}): build it with `cargo build --release --features postgres` (or use sqlite:PATH)",
                redact_url(text)
            )));
        }
        let shown: String = text.chars().take(16).collect();
        Err(BackendError::Config(format!(
            "the database URL must start with sqlite: or postgres:// (got `{shown}…`); e.g. \
             sqlite:/var/lib/acorn/registry.sqlite3 or postgres://acorn@db.internal/acorn"
        )))
    }

    /// The URL without its password (for logs and errors).
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite(path) => format!("sqlite:{}", path.display()),
            Self::Postgres(url) => redact_url(url.expose_secret()),
        }
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }
}

/// `postgres://user@host:port/db`: the URL without its password and query (for logs and
/// errors; never fails, whatever the text).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparsable database URL>".into();
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let path = rest[authority.len()..].split('?').next().unwrap_or("");
    let (user, host) = match authority.rsplit_once('@') {
        Some((userinfo, host)) => (userinfo.split(':').next().unwrap_or(""), host),
        None => ("", authority),
    };
    let user = if user.is_empty() {
        String::new()
    } else {
        format!("{user}@")
    };
    format!("{scheme}://{user}{host}{path}")
}

#[derive(Debug, Clone)]
enum Store {
    Sqlite(sqlite::SqliteStore),
    #[cfg(feature = "postgres")]
    Postgres(postgres::PgStore),
}

/// The device registry, SQLite or PostgreSQL. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Registry {
    store: Store,
}

/// Runs `f` on tokio's blocking pool (SQLite calls block).
async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, E>
where
    T: Send + 'static,
    E: From<BackendError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| E::from(BackendError::Task(e.to_string())))?
}

impl Registry {
    /// Opens (creating if needed) the SQLite registry at `path` and applies its migrations.
    /// Blocking; inside a runtime prefer [`Registry::connect`].
    pub fn open(path: &Path) -> Result<Self, BackendError> {
        Ok(Self {
            store: Store::Sqlite(sqlite::SqliteStore::open(path)?),
        })
    }

    /// Opens the registry at `url` and applies its migrations: SQLite (created if missing) or
    /// PostgreSQL (a pool of at most `pool.max_connections`; the database must exist).
    pub async fn connect(url: &DatabaseUrl, pool: &PoolOptions) -> Result<Self, BackendError> {
        let store = match url {
            DatabaseUrl::Sqlite(path) => {
                let path = path.clone();
                Store::Sqlite(blocking(move || sqlite::SqliteStore::open(&path)).await?)
            }
            #[cfg(feature = "postgres")]
            DatabaseUrl::Postgres(url) => {
                Store::Postgres(postgres::PgStore::connect(url.expose_secret(), pool).await?)
            }
            #[cfg(not(feature = "postgres"))]
            DatabaseUrl::Postgres(_) => {
                let _ = pool;
                return Err(BackendError::Config(
                    "this acorn was built without PostgreSQL: build it with `cargo build --release --features postgres`".into(),
                ));
            }
        };
        Ok(Self { store })
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match &self.store {
            Store::Sqlite(_) => "sqlite",
            #[cfg(feature = "postgres")]
            Store::Postgres(_) => "postgres",
        }
    }

    /// Where the registry is, without secrets (`sqlite:/path` or `postgres://user@host/db`).
    pub fn describe(&self) -> String {
        match &self.store {
            Store::Sqlite(s) => format!("sqlite:{}", s.path().display()),
            #[cfg(feature = "postgres")]
            Store::Postgres(p) => p.target().to_owned(),
        }
    }

    /// The SQLite file, for an SQLite registry.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match &self.store {
            Store::Sqlite(s) => Some(s.path()),
            #[cfg(feature = "postgres")]
            Store::Postgres(_) => None,
        }
    }

    /// The schema version the database is at (the last migration applied).
    pub async fn schema_version(&self) -> Result<i64, BackendError> {
        match &self.store {
            Store::Sqlite(s) => {
                let s = s.clone();
                blocking(move || s.schema_version()).await
            }
            #[cfg(feature = "postgres")]
            Store::Postgres(p) => p.schema_version().await,
        }
    }

    /// Checks that the database answers (a trivial query on each table), within `timeout`.
    pub async fn check(&self, timeout: Duration) -> Result<(), BackendError> {
        let work = async {
            match &self.store {
                Store::Sqlite(s) => {
                    let s = s.clone();
                    blocking(move || s.check()).await
                }
                #[cfg(feature = "postgres")]
                Store::Postgres(p) => p.check().await,
            }
        };
        tokio::time::timeout(timeout, work).await.map_err(|_| {
            BackendError::Unavailable(format!(
                "the registry ({}) did not answer within {timeout:?}",
                self.describe()
            ))
        })?
    }

    /// Mints `count` single-use tokens valid until `now + ttl_seconds`.
    pub async fn mint_tokens(
        &self,
        count: u32,
        ttl_seconds: i64,
        now: i64,
    ) -> Result<Vec<MintedToken>, BackendError> {
        self.mint_bound_tokens(count, ttl_seconds, &TokenBinding::default(), now)
            .await
    }

    /// Mints `count` single-use tokens valid until `now + ttl_seconds`, each usable only by a
    /// registration that matches `binding` (an empty binding matches every device).
    pub async fn mint_bound_tokens(
        &self,
        count: u32,
        ttl_seconds: i64,
        binding: &TokenBinding,
        now: i64,
    ) -> Result<Vec<MintedToken>, BackendError> {
        let expires_at = now.saturating_add(ttl_seconds);
        let minted: Vec<MintedToken> = (0..count)
            .map(|_| MintedToken {
                token: SecretString::from(hex::encode(rand::random::<[u8; 32]>())),
                expires_at,
            })
            .collect();
        let hashes: Vec<String> = minted
            .iter()
            .map(|m| token_hash(m.token.expose_secret()))
            .collect();
        match &self.store {
            Store::Sqlite(s) => {
                let (s, binding) = (s.clone(), binding.clone());
                blocking(move || s.insert_tokens(&hashes, now, expires_at, &binding)).await?
            }
            #[cfg(feature = "postgres")]
            Store::Postgres(p) => p.insert_tokens(&hashes, now, expires_at, binding).await?,
        }
        Ok(minted)
    }

    /// Reserves `token` for one registration of `claim` before any expensive work (key
    /// generation, signing, AWS calls): checks, in one transaction, that the token is known,
    /// unused, unexpired, not reserved by another request in flight, and bound (if at all) to
    /// this device, and that the device id is free and not being registered with another
    /// token; then holds the token (and the device id) for [`RESERVATION_SECONDS`]. A
    /// parallel request with the same token — in this process or another instance on the same
    /// database — gets [`RegisterError::TokenBusy`]; one for the same device id with another
    /// token gets [`RegisterError::DeviceBusy`]. Finish
    /// with [`Registry::register`] or give the token back with [`Registry::release`].
    pub async fn reserve(
        &self,
        token: &str,
        claim: &TokenClaim<'_>,
        now: i64,
    ) -> Result<Reservation, RegisterError> {
        match &self.store {
            Store::Sqlite(s) => {
                let (s, token, claim) =
                    (s.clone(), SecretString::from(token), OwnedClaim::new(claim));
                blocking(move || s.reserve(token.expose_secret(), &claim.as_claim(), now)).await
            }
            #[cfg(feature = "postgres")]
            Store::Postgres(p) => p.reserve(token, claim, now).await,
        }
    }

    /// Gives a reserved token back (the registration failed before it was used). A no-op
    /// when the reservation is no longer the token's.
    pub async fn release(
        &self,
        token: &str,
        reservation: &Reservation,
    ) -> Result<(), BackendError> {
        match &self.store {
            Store::Sqlite(s) => {
                let (s, token, r) = (s.clone(), SecretString::from(token), reservation.clone());
                blocking(move || s.release(token.expose_secret(), &r)).await
            }
            #[cfg(feature = "postgres")]
            Store::Postgres(p) => p.release(token, reservation).await,
        }
    }

    /// Uses the token reserved by `reservation` and inserts `device`, in one transaction:
    /// both happen or neither. The token must still be held by this reservation.
    pub async fn register(
        &self,
        token: &str,
        reservation: &Reservation,
        device: &NewDevice,
        now: i64,
    ) -> Result<DeviceRecord, RegisterError> {
        match &self.store {
            Store::Sqlite(s) => {
                let (s, token, r, d) = (
                    s.clone(),
                    SecretString::from(token),
                    reservation.clone(),
                    device.clone(),
                );
                blocking(move || s.register(token.expose_secret(), &r, &d, now)).await
            }
            #[cfg(feature = "postgres")]
            Store::Postgres(p) => p.register(token, reservation, device, now).await,
        }
    }

    /// The device `device_id`, if registered.
    pub async fn get(&self, device_id: &str) -> Result<Option<DeviceRecord>, BackendError> {
        match &self.store {
            Store::Sqlite(s) => {
                let (s, id) = (s.clone(), device_id.to_owned());
                blocking(move || s.get(&id)).await
            }
            #[cfg(feature = "postgres")]
            Store::Postgres(p) => p.get(device_id).await,
        }
    }

    /// Every registered device, by id.
    pub async fn list(&self) -> Result<Vec<DeviceRecord>, BackendError> {
        match &self.store {
            Store::Sqlite(s) => {
                let s = s.clone();
                blocking(move || s.list()).await
            }
            #[cfg(feature = "postgres")]
            Store::Postgres(p) => p.list().await,
        }
    }

    /// At most `limit` active devices whose id sorts after `after` (`""`: from the first), by
    /// id: one page of a walk over the fleet that a registration in the middle of it does not
    /// upset (the next page starts after the last id seen).
    pub async fn active_devices_after(
        &self,
        after: &str,
        limit: u32,
    ) -> Result<Vec<DeviceRecord>, BackendError> {
        match &self.store {
            Store::Sqlite(s) => {
                let (s, after) = (s.clone(), after.to_owned());
                blocking(move || s.active_devices_after(&after, limit)).await
            }
            #[cfg(feature = "postgres")]
            Store::Postgres(p) => p.active_devices_after(after, limit).await,
        }
    }

    /// Marks `device_id` revoked (idempotent: the first revocation time is kept).
    /// `None` if no such device.
    pub async fn revoke(
        &self,
        device_id: &str,
        now: i64,
    ) -> Result<Option<DeviceRecord>, BackendError> {
        match &self.store {
            Store::Sqlite(s) => {
                let (s, id) = (s.clone(), device_id.to_owned());
                blocking(move || s.revoke(&id, now)).await
            }
            #[cfg(feature = "postgres")]
            Store::Postgres(p) => p.revoke(device_id, now).await,
        }
    }

    /// Serial numbers of all revoked certificates, for the CRL.
    pub async fn revoked_serials(&self) -> Result<Vec<RevokedSerial>, BackendError> {
        let rows = match &self.store {
            Store::Sqlite(s) => {
                let s = s.clone();
                blocking(move || s.revoked_serials()).await?
            }
            #[cfg(feature = "postgres")]
            Store::Postgres(p) => p.revoked_serials().await?,
        };
        Ok(rows
            .into_iter()
            .map(|(serial_hex, at)| RevokedSerial {
                serial_hex,
                revoked_at: time::OffsetDateTime::from_unix_timestamp(at.unwrap_or(0))
                    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
            })
            .collect())
    }

    /// The next CRL number (1, 2, ...), persisted so numbers only grow across restarts (and
    /// across instances sharing a database).
    pub async fn next_crl_number(&self) -> Result<u64, BackendError> {
        let n = match &self.store {
            Store::Sqlite(s) => {
                let s = s.clone();
                blocking(move || s.next_crl_number()).await?
            }
            #[cfg(feature = "postgres")]
            Store::Postgres(p) => p.next_crl_number().await?,
        };
        Ok(u64::try_from(n).unwrap_or(1))
    }
}
