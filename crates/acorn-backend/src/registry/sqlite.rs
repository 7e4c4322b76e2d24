//! The SQLite store of the registry (blocking; [`super::Registry`] runs it on tokio's
//! blocking pool).
//!
//! Every operation opens its own connection (WAL mode, 10 s busy timeout), so concurrent
//! requests really run concurrently and SQLite's locking, not a process mutex, guarantees
//! correctness. Writers that read first use `BEGIN IMMEDIATE`, so two of them never both
//! read the same token as free.

mod history;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};

use super::migrate::{self, MIGRATIONS_TABLE};
use super::{
    token_hash, DeviceRecord, NewDevice, RegisterError, RegistrationStatus, Reservation,
    TokenBinding, TokenClaim, TokenRow, RESERVATION_SECONDS,
};
use crate::error::BackendError;

/// Columns the token table gained in releases before migrations existed; a legacy database
/// gets the missing ones before it is adopted as version 1.
const LEGACY_TOKEN_COLUMNS: [(&str, &str); 5] = [
    ("reservation", "TEXT"),
    ("reserved_until", "INTEGER"),
    ("bound_device_id", "TEXT"),
    ("bound_serial", "TEXT"),
    ("bound_mac", "TEXT"),
];

fn db(what: &'static str) -> impl FnOnce(rusqlite::Error) -> BackendError {
    move |source| BackendError::Database { what, source }
}

/// The SQLite registry file.
#[derive(Debug, Clone)]
pub(super) struct SqliteStore {
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies the migrations.
    pub(super) fn open(path: &Path) -> Result<Self, BackendError> {
        let store = Self {
            path: path.to_path_buf(),
        };
        let mut conn = store.connect()?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db("switch the registry to WAL mode"))?;
        migrate_sqlite(&mut conn)?;
        Ok(store)
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    fn connect(&self) -> Result<Connection, BackendError> {
        let conn = Connection::open(&self.path).map_err(db("open the registry database"))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(db("set the busy timeout"))?;
        Ok(conn)
    }

    pub(super) fn schema_version(&self) -> Result<i64, BackendError> {
        current_version(&self.connect()?)
    }

    pub(super) fn check(&self) -> Result<(), BackendError> {
        let conn = self.connect()?;
        conn.query_row(
            "SELECT (SELECT COUNT(*) FROM devices) + (SELECT COUNT(*) FROM tokens)",
            [],
            |row| row.get::<_, i64>(0),
        )
        .map_err(db("read the registry"))?;
        Ok(())
    }

    pub(super) fn insert_tokens(
        &self,
        hashes: &[String],
        now: i64,
        expires_at: i64,
        binding: &TokenBinding,
    ) -> Result<(), BackendError> {
        let mut conn = self.connect()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("begin a transaction"))?;
        for hash in hashes {
            tx.execute(
                "INSERT INTO tokens (token_hash, created_at, expires_at, bound_device_id,
                     bound_serial, bound_mac) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    hash,
                    now,
                    expires_at,
                    binding.device_id,
                    binding.serial_number,
                    binding.mac_address
                ],
            )
            .map_err(db("store a new token"))?;
        }
        tx.commit().map_err(db("commit the new tokens"))
    }

    pub(super) fn reserve(
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
        row.reservable(claim, now)?;
        if device_exists(&tx, claim.device_id)? {
            return Err(RegisterError::DeviceExists);
        }
        let hash = token_hash(token);
        let other: Option<i64> = tx
            .query_row(
                "SELECT 1 FROM tokens WHERE reserved_for = ?1 AND reserved_until > ?2
                     AND used_at IS NULL AND token_hash <> ?3",
                params![claim.device_id, now, hash],
                |row| row.get(0),
            )
            .optional()
            .map_err(db("look up reservations of the device id"))?;
        if other.is_some() {
            return Err(RegisterError::DeviceBusy);
        }
        let reservation = Reservation::new();
        tx.execute(
            "UPDATE tokens SET reservation = ?1, reserved_until = ?2, reserved_for = ?3
             WHERE token_hash = ?4",
            params![
                reservation.0,
                now.saturating_add(RESERVATION_SECONDS),
                claim.device_id,
                hash
            ],
        )
        .map_err(db("reserve the token"))?;
        tx.commit().map_err(db("commit the reservation"))?;
        Ok(reservation)
    }

    pub(super) fn release(
        &self,
        token: &str,
        reservation: &Reservation,
    ) -> Result<(), BackendError> {
        let conn = self.connect()?;
        conn.execute(
            "UPDATE tokens SET reservation = NULL, reserved_until = NULL, reserved_for = NULL
             WHERE token_hash = ?1 AND reservation = ?2 AND used_at IS NULL",
            params![token_hash(token), reservation.0],
        )
        .map_err(db("release the token"))?;
        Ok(())
    }

    pub(super) fn register(
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
                     reserved_until = NULL, reserved_for = NULL
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
        let inserted = insert_device(&tx, "INSERT", device, now);
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
        let record = tx
            .query_row(
                &format!("{SELECT_DEVICE} WHERE device_id = ?1"),
                [&device.device_id],
                row_to_device,
            )
            .map_err(db("read the registered device back"))?;
        tx.commit().map_err(db("commit the registration"))?;
        Ok(record)
    }

    pub(super) fn get(&self, device_id: &str) -> Result<Option<DeviceRecord>, BackendError> {
        let conn = self.connect()?;
        conn.query_row(
            &format!("{SELECT_DEVICE} WHERE device_id = ?1"),
            [device_id],
            row_to_device,
        )
        .optional()
        .map_err(db("read a device"))
    }

    pub(super) fn list(&self) -> Result<Vec<DeviceRecord>, BackendError> {
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

    pub(super) fn active_devices_after(
        &self,
        after: &str,
        limit: u32,
    ) -> Result<Vec<DeviceRecord>, BackendError> {
        let conn = self.connect()?;
        let mut stmt = conn
            .prepare(&format!(
                "{SELECT_DEVICE} WHERE status = 'active' AND device_id > ?1
                 ORDER BY device_id LIMIT ?2"
            ))
            .map_err(db("list a page of active devices"))?;
        let rows = stmt
            .query_map(params![after, limit], row_to_device)
            .map_err(db("list a page of active devices"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(db("list a page of active devices"))
    }

    pub(super) fn revoke(
        &self,
        device_id: &str,
        now: i64,
    ) -> Result<Option<DeviceRecord>, BackendError> {
        let mut conn = self.connect()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("begin the revocation transaction"))?;
        let changed = tx
            .execute(
                "UPDATE devices SET status = 'revoked', revoked_at = COALESCE(revoked_at, ?1),
                 updated_at = ?1 WHERE device_id = ?2",
                params![now, device_id],
            )
            .map_err(db("revoke a device"))?;
        if changed == 0 {
            return Ok(None);
        }
        // A certificate issued for a rotation and not yet in use goes with the device.
        history::abandon(
            &tx,
            Some(device_id),
            i64::MAX,
            now,
            super::history::UNUSED_STATES,
        )?;
        tx.commit().map_err(db("commit the revocation"))?;
        self.get(device_id)
    }

    pub(super) fn revoked_serials(&self) -> Result<Vec<(String, Option<i64>)>, BackendError> {
        let conn = self.connect()?;
        let mut stmt = conn
            .prepare(
                "SELECT certificate_serial, revoked_at FROM devices WHERE status = 'revoked'
                 UNION ALL
                 SELECT certificate_serial, revoked_at FROM certificates
                 WHERE revoked_at IS NOT NULL
                 ORDER BY 2, 1",
            )
            .map_err(db("list revoked certificates"))?;
        let rows = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(db("list revoked certificates"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(db("list revoked certificates"))
    }

    pub(super) fn next_crl_number(&self) -> Result<i64, BackendError> {
        let conn = self.connect()?;
        conn.query_row(
            "UPDATE meta SET value = value + 1 WHERE key = 'crl_number' RETURNING value",
            [],
            |row| row.get(0),
        )
        .map_err(db("advance the CRL number"))
    }
}

const SELECT_DEVICE: &str = "SELECT device_id, serial_number, mac_address, firmware_version,
    certificate_pem, certificate_id, certificate_serial, certificate_arn, status, created_at,
    updated_at, revoked_at FROM devices";

fn row_to_device(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceRecord> {
    let status: String = row.get(8)?;
    Ok(DeviceRecord {
        device_id: row.get(0)?,
        serial_number: row.get(1)?,
        mac_address: row.get(2)?,
        firmware_version: row.get(3)?,
        certificate_pem: row.get(4)?,
        certificate_id: row.get(5)?,
        certificate_serial: row.get(6)?,
        certificate_arn: row.get(7)?,
        status: RegistrationStatus::from_db(&status),
        created_at: row.get(9)?,
        updated_at: row.get(10)?,
        revoked_at: row.get(11)?,
    })
}

/// Inserts an active device (`verb`: `INSERT`, or `INSERT OR IGNORE`); the rows inserted.
fn insert_device(
    conn: &Connection,
    verb: &str,
    device: &NewDevice,
    now: i64,
) -> rusqlite::Result<usize> {
    conn.execute(
        &format!(
            "{verb} INTO devices (device_id, serial_number, mac_address, firmware_version,
                 certificate_pem, certificate_id, certificate_serial, certificate_arn, status,
                 created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'active', ?9, ?9)"
        ),
        params![
            device.device_id,
            device.serial_number,
            device.mac_address,
            device.firmware_version,
            device.certificate_pem,
            device.certificate_id,
            device.certificate_serial,
            device.certificate_arn,
            now
        ],
    )
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

fn table_exists(conn: &Connection, name: &str) -> Result<bool, BackendError> {
    conn.query_row(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |_| Ok(()),
    )
    .optional()
    .map(|found| found.is_some())
    .map_err(db("read the registry's tables"))
}

fn current_version(conn: &Connection) -> Result<i64, BackendError> {
    if !table_exists(conn, MIGRATIONS_TABLE)? {
        return Ok(0);
    }
    conn.query_row(
        &format!("SELECT COALESCE(MAX(version), 0) FROM {MIGRATIONS_TABLE}"),
        [],
        |row| row.get(0),
    )
    .map_err(db("read the registry's schema version"))
}

/// Applies the missing migrations in one `BEGIN IMMEDIATE` transaction.
fn migrate_sqlite(conn: &mut Connection) -> Result<(), BackendError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db("begin the migration transaction"))?;
    let fresh = !table_exists(&tx, MIGRATIONS_TABLE)?;
    tx.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
             version    INTEGER PRIMARY KEY NOT NULL,
             name       TEXT NOT NULL,
             applied_at INTEGER NOT NULL
         )"
    ))
    .map_err(db("create the migrations table"))?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if fresh && table_exists(&tx, "devices")? {
        // A registry made before migrations existed: bring it to version 1 and adopt it.
        add_legacy_token_columns(&tx)?;
        tx.execute(
            &format!(
                "INSERT INTO {MIGRATIONS_TABLE} (version, name, applied_at) VALUES (1, 'initial (adopted)', ?1)"
            ),
            [now],
        )
        .map_err(db("record the adopted schema"))?;
        tracing::info!("adopted an SQLite registry made before schema migrations as version 1");
    }
    let current = current_version(&tx)?;
    for m in migrate::pending(migrate::SQLITE, current)? {
        tx.execute_batch(m.sql)
            .map_err(db("apply a schema migration"))?;
        tx.execute(
            &format!(
                "INSERT INTO {MIGRATIONS_TABLE} (version, name, applied_at) VALUES (?1, ?2, ?3)"
            ),
            params![m.version, m.name, now],
        )
        .map_err(db("record a schema migration"))?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "registry migrated (sqlite)"
        );
    }
    tx.commit().map_err(db("commit the migrations"))
}

/// Adds the [`LEGACY_TOKEN_COLUMNS`] a database made by an early release lacks.
fn add_legacy_token_columns(conn: &Connection) -> Result<(), BackendError> {
    let mut stmt = conn
        .prepare("SELECT name FROM pragma_table_info('tokens')")
        .map_err(db("read the token table's columns"))?;
    let present = stmt
        .query_map([], |row| row.get::<_, String>(0))
        .map_err(db("read the token table's columns"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db("read the token table's columns"))?;
    for (name, kind) in LEGACY_TOKEN_COLUMNS {
        if !present.iter().any(|p| p == name) {
            conn.execute_batch(&format!("ALTER TABLE tokens ADD COLUMN {name} {kind}"))
                .map_err(db("add a column to the token table"))?;
        }
    }
    Ok(())
}

impl SqliteStore {
    /// Tokens neither used nor expired at `now`, soonest expiry first (the web console's list).
    pub(super) fn unused_tokens(&self, now: i64) -> Result<Vec<super::UnusedToken>, BackendError> {
        let conn = self.connect()?;
        let mut stmt = conn
            .prepare(super::unused::SELECT_UNUSED)
            .map_err(db("list unused tokens"))?;
        let rows = stmt
            .query_map([now], |row| {
                Ok(super::UnusedToken {
                    hash: row.get(0)?,
                    created_at: row.get(1)?,
                    expires_at: row.get(2)?,
                    bound_device_id: row.get(3)?,
                })
            })
            .map_err(db("list unused tokens"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(db("list unused tokens"))
    }
}
