//! The device registry: devices and registration tokens in SQLite.
//!
//! Every operation opens its own connection (WAL mode, 10 s busy timeout), so concurrent
//! requests really run concurrently and SQLite's locking, not a process mutex, guarantees
//! correctness. A registration consumes its token with one conditional `UPDATE` (`... WHERE
//! used_at IS NULL AND expires_at > now`, checking that exactly one row changed) and inserts the
//! device in the same `BEGIN IMMEDIATE` transaction: a token is used at most once, and a failed
//! registration leaves no row behind and the token still unused.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};
use sha2::{Digest, Sha256};

use crate::ca::RevokedSerial;
use crate::error::BackendError;
use secrecy::{ExposeSecret, SecretString};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS devices (
    device_id          TEXT PRIMARY KEY NOT NULL,
    serial_number      TEXT NOT NULL,
    mac_address        TEXT NOT NULL,
    firmware_version   TEXT NOT NULL,
    certificate_pem    TEXT NOT NULL,
    certificate_id     TEXT NOT NULL UNIQUE,
    certificate_serial TEXT NOT NULL UNIQUE,
    status             TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    revoked_at         INTEGER
);
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER,
    used_by    TEXT
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('crl_number', 0);
";

/// Columns added to `tokens` after the first release, applied to older databases at open:
/// a reservation (held while a registration does its expensive work) and a binding.
const TOKEN_COLUMNS: [(&str, &str); 5] = [
    ("reservation", "TEXT"),
    ("reserved_until", "INTEGER"),
    ("bound_device_id", "TEXT"),
    ("bound_serial", "TEXT"),
    ("bound_mac", "TEXT"),
];

/// How long a reservation holds a token when its request dies without releasing it.
pub const RESERVATION_SECONDS: i64 = 120;

/// The state of a device's registration (its certificate): active or revoked. Not the
/// device's online status, which `acorn_mqtt::DeviceStatus` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationStatus {
    /// Registered and allowed to connect.
    Active,
    /// Revoked: its certificate serial is in the CRL.
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
}

/// A device as stored in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The device id (also the certificate's CN and the MQTT client id).
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

/// A token held by one registration in flight (see [`Registry::reserve`]).
#[derive(Debug, Clone)]
pub struct Reservation(String);

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
    /// The database failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// The SQLite device registry. Cheap to clone (it holds only the database path).
#[derive(Debug, Clone)]
pub struct Registry {
    path: PathBuf,
}

fn db(what: &'static str) -> impl FnOnce(rusqlite::Error) -> BackendError {
    move |source| BackendError::Database { what, source }
}

/// SHA-256 of a token, lowercase hex: what the registry stores instead of the token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Registry {
    /// Opens (creating if needed) the registry database at `path`.
    pub fn open(path: &Path) -> Result<Self, BackendError> {
        let registry = Self {
            path: path.to_path_buf(),
        };
        let conn = registry.connect()?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db("switch the registry to WAL mode"))?;
        conn.execute_batch(SCHEMA)
            .map_err(db("create the registry tables"))?;
        add_missing_token_columns(&conn)?;
        Ok(registry)
    }

    /// Checks that the database answers (opens it and runs a trivial query on each table).
    pub fn check(&self) -> Result<(), BackendError> {
        let conn = self.connect()?;
        conn.query_row(
            "SELECT (SELECT COUNT(*) FROM devices) + (SELECT COUNT(*) FROM tokens)",
            [],
            |row| row.get::<_, i64>(0),
        )
        .map_err(db("read the registry"))?;
        Ok(())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn connect(&self) -> Result<Connection, BackendError> {
        let conn = Connection::open(&self.path).map_err(db("open the registry database"))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(db("set the busy timeout"))?;
        Ok(conn)
    }

    /// Mints `count` single-use tokens valid until `now + ttl_seconds`.
    pub fn mint_tokens(
        &self,
        count: u32,
        ttl_seconds: i64,
        now: i64,
    ) -> Result<Vec<MintedToken>, BackendError> {
        self.mint_bound_tokens(count, ttl_seconds, &TokenBinding::default(), now)
    }

    /// Mints `count` single-use tokens valid until `now + ttl_seconds`, each usable only by a
    /// registration that matches `binding` (an empty binding matches every device).
    pub fn mint_bound_tokens(
        &self,
        count: u32,
        ttl_seconds: i64,
        binding: &TokenBinding,
        now: i64,
    ) -> Result<Vec<MintedToken>, BackendError> {
        let mut conn = self.connect()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("begin a transaction"))?;
        let expires_at = now.saturating_add(ttl_seconds);
        let mut minted = Vec::new();
        for _ in 0..count {
            let token = SecretString::from(hex::encode(rand::random::<[u8; 32]>()));
            tx.execute(
                "INSERT INTO tokens (token_hash, created_at, expires_at, bound_device_id,
                     bound_serial, bound_mac) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    token_hash(token.expose_secret()),
                    now,
                    expires_at,
                    binding.device_id,
                    binding.serial_number,
                    binding.mac_address
                ],
            )
            .map_err(db("store a new token"))?;
            minted.push(MintedToken { token, expires_at });
        }
        tx.commit().map_err(db("commit the new tokens"))?;
        Ok(minted)
    }

    /// Reserves `token` for one registration of `claim` before any expensive work (key
    /// generation, signing): checks, in one transaction, that the token is known, unused,
    /// unexpired, not reserved by another request in flight, and bound (if at all) to this
    /// device, and that the device id is free; then holds the token for
    /// [`RESERVATION_SECONDS`]. A parallel request with the same token gets
    /// [`RegisterError::TokenBusy`]. Finish with [`Registry::register`] or give the token
    /// back with [`Registry::release`].
    pub fn reserve(
        &self,
        token: &str,
        claim: &TokenClaim<'_>,
        now: i64,
    ) -> Result<Reservation, RegisterError> {
        let mut conn = self.connect()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("begin the reservation transaction"))?;
        let row = token_row(&tx, token)?.ok_or(RegisterError::TokenUnknown)?;
        row.usable(now)?;
        if row.reserved_until.is_some_and(|until| until > now) {
            return Err(RegisterError::TokenBusy);
        }
        if !row.binding.admits(claim) {
            return Err(RegisterError::TokenBound);
        }
        if device_exists(&tx, claim.device_id)? {
            return Err(RegisterError::DeviceExists);
        }
        let reservation = Reservation(hex::encode(rand::random::<[u8; 16]>()));
        tx.execute(
            "UPDATE tokens SET reservation = ?1, reserved_until = ?2 WHERE token_hash = ?3",
            params![
                reservation.0,
                now.saturating_add(RESERVATION_SECONDS),
                token_hash(token)
            ],
        )
        .map_err(db("reserve the token"))?;
        tx.commit().map_err(db("commit the reservation"))?;
        Ok(reservation)
    }

    /// Gives a reserved token back (the registration failed before it was used). A no-op
    /// when the reservation is no longer the token's.
    pub fn release(&self, token: &str, reservation: &Reservation) -> Result<(), BackendError> {
        let conn = self.connect()?;
        conn.execute(
            "UPDATE tokens SET reservation = NULL, reserved_until = NULL
             WHERE token_hash = ?1 AND reservation = ?2 AND used_at IS NULL",
            params![token_hash(token), reservation.0],
        )
        .map_err(db("release the token"))?;
        Ok(())
    }

    /// Uses the token reserved by `reservation` and inserts `device`, in one transaction:
    /// both happen or neither. The token must still be held by this reservation.
    pub fn register(
        &self,
        token: &str,
        reservation: &Reservation,
        device: &NewDevice,
        now: i64,
    ) -> Result<DeviceRecord, RegisterError> {
        let mut conn = self.connect()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("begin the registration transaction"))?;
        let used = tx
            .execute(
                "UPDATE tokens SET used_at = ?1, used_by = ?2, reservation = NULL,
                     reserved_until = NULL
                 WHERE token_hash = ?3 AND used_at IS NULL AND expires_at > ?1
                     AND reservation = ?4",
                params![now, device.device_id, token_hash(token), reservation.0],
            )
            .map_err(db("mark the token used"))?;
        if used != 1 {
            // Say why; the transaction rolls back when dropped.
            let row = token_row(&tx, token)?.ok_or(RegisterError::TokenUnknown)?;
            row.usable(now)?;
            // Usable but not ours: the reservation lapsed and another request holds it.
            return Err(RegisterError::TokenBusy);
        }
        let inserted = tx.execute(
            "INSERT INTO devices (device_id, serial_number, mac_address, firmware_version,
                 certificate_pem, certificate_id, certificate_serial, status, created_at,
                 updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'active', ?8, ?8)",
            params![
                device.device_id,
                device.serial_number,
                device.mac_address,
                device.firmware_version,
                device.certificate_pem,
                device.certificate_id,
                device.certificate_serial,
                now
            ],
        );
        match inserted {
            Ok(_) => {}
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == ErrorCode::ConstraintViolation
                    && device_exists(&tx, &device.device_id)? =>
            {
                return Err(RegisterError::DeviceExists);
            }
            Err(source) => {
                return Err(BackendError::Database {
                    what: "insert the device",
                    source,
                }
                .into())
            }
        }
        tx.commit().map_err(db("commit the registration"))?;
        self.get(&device.device_id)?
            .ok_or_else(|| {
                BackendError::Task("the registered device vanished before it was read back".into())
            })
            .map_err(RegisterError::from)
    }

    /// The device `device_id`, if registered.
    pub fn get(&self, device_id: &str) -> Result<Option<DeviceRecord>, BackendError> {
        let conn = self.connect()?;
        conn.query_row(
            &format!("{SELECT_DEVICE} WHERE device_id = ?1"),
            [device_id],
            row_to_device,
        )
        .optional()
        .map_err(db("read a device"))
    }

    /// Every registered device, by id.
    pub fn list(&self) -> Result<Vec<DeviceRecord>, BackendError> {
        let conn = self.connect()?;
        let mut stmt = conn
            .prepare(&format!("{SELECT_DEVICE} ORDER BY device_id"))
            .map_err(db("list devices"))?;
        let rows = stmt
            .query_map([], row_to_device)
            .map_err(db("list devices"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(db("list devices"))
    }

    /// Marks `device_id` revoked (idempotent: the first revocation time is kept).
    /// `None` if no such device.
    pub fn revoke(&self, device_id: &str, now: i64) -> Result<Option<DeviceRecord>, BackendError> {
        let conn = self.connect()?;
        let changed = conn
            .execute(
                "UPDATE devices SET status = 'revoked', revoked_at = COALESCE(revoked_at, ?1),
                 updated_at = ?1 WHERE device_id = ?2",
                params![now, device_id],
            )
            .map_err(db("revoke a device"))?;
        if changed == 0 {
            return Ok(None);
        }
        self.get(device_id)
    }

    /// Serial numbers of all revoked certificates, for the CRL.
    pub fn revoked_serials(&self) -> Result<Vec<RevokedSerial>, BackendError> {
        let conn = self.connect()?;
        let mut stmt = conn
            .prepare(
                "SELECT certificate_serial, revoked_at FROM devices
                 WHERE status = 'revoked' ORDER BY revoked_at, device_id",
            )
            .map_err(db("list revoked certificates"))?;
        let rows = stmt
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, Option<i64>>(1)?))
            })
            .map_err(db("list revoked certificates"))?;
        let mut out = Vec::new();
        for row in rows {
            let (serial_hex, at) = row.map_err(db("list revoked certificates"))?;
            let revoked_at = time::OffsetDateTime::from_unix_timestamp(at.unwrap_or(0))
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            out.push(RevokedSerial {
                serial_hex,
                revoked_at,
            });
        }
        Ok(out)
    }

    /// The next CRL number (1, 2, ...), persisted so numbers only grow across restarts.
    pub fn next_crl_number(&self) -> Result<u64, BackendError> {
        let conn = self.connect()?;
        let n: i64 = conn
            .query_row(
                "UPDATE meta SET value = value + 1 WHERE key = 'crl_number' RETURNING value",
                [],
                |row| row.get(0),
            )
            .map_err(db("advance the CRL number"))?;
        Ok(u64::try_from(n).unwrap_or(1))
    }
}

const SELECT_DEVICE: &str = "SELECT device_id, serial_number, mac_address, firmware_version,
    certificate_pem, certificate_id, certificate_serial, status, created_at, updated_at,
    revoked_at FROM devices";

fn row_to_device(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceRecord> {
    let status: String = row.get(7)?;
    Ok(DeviceRecord {
        device_id: row.get(0)?,
        serial_number: row.get(1)?,
        mac_address: row.get(2)?,
        firmware_version: row.get(3)?,
        certificate_pem: row.get(4)?,
        certificate_id: row.get(5)?,
        certificate_serial: row.get(6)?,
        status: if status == "revoked" {
            RegistrationStatus::Revoked
        } else {
            RegistrationStatus::Active
        },
        created_at: row.get(8)?,
        updated_at: row.get(9)?,
        revoked_at: row.get(10)?,
    })
}

fn device_exists(conn: &Connection, device_id: &str) -> Result<bool, BackendError> {
    conn.query_row(
        "SELECT 1 FROM devices WHERE device_id = ?1",
        [device_id],
        |_| Ok(()),
    )
    .optional()
    .map(|found| found.is_some())
    .map_err(db("look up a device"))
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
}

fn token_row(conn: &Connection, token: &str) -> Result<Option<TokenRow>, BackendError> {
    conn.query_row(
        "SELECT expires_at, used_at, reserved_until, bound_device_id, bound_serial, bound_mac
         FROM tokens WHERE token_hash = ?1",
        [token_hash(token)],
        |row| {
            Ok(TokenRow {
                expires_at: row.get(0)?,
                used_at: row.get(1)?,
                reserved_until: row.get(2)?,
                binding: TokenBinding {
                    device_id: row.get(3)?,
                    serial_number: row.get(4)?,
                    mac_address: row.get(5)?,
                },
            })
        },
    )
    .optional()
    .map_err(db("look up a token"))
}

/// Adds the [`TOKEN_COLUMNS`] a database made by an older release lacks.
fn add_missing_token_columns(conn: &Connection) -> Result<(), BackendError> {
    let mut stmt = conn
        .prepare("SELECT name FROM pragma_table_info('tokens')")
        .map_err(db("read the token table's columns"))?;
    let present = stmt
        .query_map([], |row| row.get::<_, String>(0))
        .map_err(db("read the token table's columns"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db("read the token table's columns"))?;
    for (name, kind) in TOKEN_COLUMNS {
        if !present.iter().any(|p| p == name) {
            conn.execute_batch(&format!("ALTER TABLE tokens ADD COLUMN {name} {kind}"))
                .map_err(db("add a column to the token table"))?;
        }
    }
    Ok(())
}
