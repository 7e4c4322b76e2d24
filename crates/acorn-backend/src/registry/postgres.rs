//! The PostgreSQL store of the registry: tokio-postgres through a deadpool pool, for several
//! instances of the service sharing one database.
//!
//! Single use across instances: [`PgStore::reserve`] locks the token's row (`SELECT … FOR
//! UPDATE`) before it checks and reserves it, so two instances reserving one token are
//! serialised by PostgreSQL and the second sees the first's reservation; [`PgStore::register`]
//! uses the token with `UPDATE … WHERE used_at IS NULL AND reservation = $ours` (re-checked by
//! PostgreSQL after any concurrent writer commits) and inserts the device in the same
//! transaction.

mod history;

use std::str::FromStr;
use std::sync::Arc;

use deadpool_postgres::GenericClient;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

use super::migrate::{self, MIGRATIONS_TABLE};
use super::{
    token_hash, DeviceRecord, NewDevice, PoolOptions, RegisterError, RegistrationStatus,
    Reservation, TokenBinding, TokenClaim, TokenRow, RESERVATION_SECONDS,
};
use crate::error::BackendError;

/// Key of the advisory lock held while migrating, so instances starting together apply each
/// migration once (`acorn` in ASCII).
const MIGRATION_LOCK: i64 = 0x61_636f_726e;

/// Parses a `postgres://` URL into tokio-postgres's configuration (errors never echo it: it
/// may hold a password).
pub(super) fn parse_config(url: &str) -> Result<tokio_postgres::Config, BackendError> {
    tokio_postgres::Config::from_str(url).map_err(|e| {
        BackendError::Config(format!(
            "the PostgreSQL URL ({}) does not parse: {e}; the form is \
             postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=require]",
            super::redact_url(url)
        ))
    })
}

/// The PostgreSQL registry.
#[derive(Clone)]
pub(super) struct PgStore {
    pool: Pool,
    target: Arc<str>,
}

impl core::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// Reads a PEM CA file into a rustls client configuration for the PostgreSQL connection.
fn tls_config(path: &std::path::Path) -> Result<rustls::ClientConfig, BackendError> {
    let pem = std::fs::read(path).map_err(|source| BackendError::Io {
        action: "read the database CA file",
        path: path.to_path_buf(),
        source,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    let mut found = 0usize;
    use rustls_pki_types::pem::PemObject as _;
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| {
            BackendError::Config(format!(
                "the database CA file {} is not PEM certificates: {e}",
                path.display()
            ))
        })?;
        roots.add(cert).map_err(|e| {
            BackendError::Config(format!(
                "the database CA file {} holds a certificate rustls refuses: {e}",
                path.display()
            ))
        })?;
        found += 1;
    }
    if found == 0 {
        return Err(BackendError::Config(format!(
            "the database CA file {} holds no certificate; give the PEM bundle of the CA that \
             signs the PostgreSQL server's certificate",
            path.display()
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| BackendError::Config(format!("TLS setup for PostgreSQL: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl PgStore {
    /// Builds the pool, checks that the database answers, and applies the migrations.
    pub(super) async fn connect(url: &str, options: &PoolOptions) -> Result<Self, BackendError> {
        let mut config = parse_config(url)?;
        let target: Arc<str> = super::redact_url(url).into();
        if let Some(password) = &options.password {
            use secrecy::ExposeSecret as _;
            config.password(password.expose_secret());
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.timeout);
        }
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &options.ca_file {
            Some(path) => {
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(path)?);
                Manager::from_config(config, tls, manager_config)
            }
            None => {
                if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
                    return Err(BackendError::Config(format!(
                        "the database URL ({target}) asks for sslmode=require but no database \
                         CA file is set; set database_ca_file (ACORN_DATABASE_CA_FILE) to the \
                         PEM of the CA that signs the server's certificate"
                    )));
                }
                Manager::from_config(config, tokio_postgres::NoTls, manager_config)
            }
        };
        let pool = Pool::builder(manager)
            .max_size(options.max_connections.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.timeout))
            .create_timeout(Some(options.timeout))
            .recycle_timeout(Some(options.timeout))
            .build()
            .map_err(|e| BackendError::Config(format!("PostgreSQL pool for {target}: {e}")))?;
        let store = Self { pool, target };
        store.migrate().await?;
        Ok(store)
    }

    pub(super) fn target(&self) -> &str {
        &self.target
    }

    fn err(&self, what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> BackendError + '_ {
        move |e| BackendError::Postgres {
            what,
            target: self.target.to_string(),
            detail: describe(&e),
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, BackendError> {
        self.pool.get().await.map_err(|e| {
            let detail = match e {
                deadpool_postgres::PoolError::Backend(e) => describe(&e),
                deadpool_postgres::PoolError::Timeout(_) => {
                    "no connection could be made or freed in time".into()
                }
                other => other.to_string(),
            };
            BackendError::Postgres {
                what: "get a database connection",
                target: self.target.to_string(),
                detail,
            }
        })
    }

    async fn migrate(&self) -> Result<(), BackendError> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(self.err("begin the migration transaction"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(self.err("take the migration lock"))?;
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
                 version    BIGINT PRIMARY KEY NOT NULL,
                 name       TEXT NOT NULL,
                 applied_at BIGINT NOT NULL
             )"
        ))
        .await
        .map_err(self.err("create the migrations table"))?;
        let current = current_version(&tx)
            .await
            .map_err(self.err("read the schema version"))?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        for m in migrate::pending(migrate::POSTGRES, current)? {
            tx.batch_execute(m.sql)
                .await
                .map_err(self.err("apply a schema migration"))?;
            tx.execute(
                &format!(
                    "INSERT INTO {MIGRATIONS_TABLE} (version, name, applied_at) VALUES ($1, $2, $3)"
                ),
                &[&m.version, &m.name, &now],
            )
            .await
            .map_err(self.err("record a schema migration"))?;
            tracing::info!(version = m.version, name = m.name, target = %self.target, "registry migrated (postgres)");
        }
        tx.commit().await.map_err(self.err("commit the migrations"))
    }

    pub(super) async fn schema_version(&self) -> Result<i64, BackendError> {
        let client = self.client().await?;
        current_version(&client)
            .await
            .map_err(self.err("read the schema version"))
    }

    pub(super) async fn check(&self) -> Result<(), BackendError> {
        let client = self.client().await?;
        client
            .query_one(
                "SELECT (SELECT COUNT(*) FROM devices) + (SELECT COUNT(*) FROM tokens)",
                &[],
            )
            .await
            .map_err(self.err("read the registry"))?;
        Ok(())
    }

    pub(super) async fn insert_tokens(
        &self,
        hashes: &[String],
        now: i64,
        expires_at: i64,
        binding: &TokenBinding,
    ) -> Result<(), BackendError> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(self.err("begin a transaction"))?;
        let insert = tx
            .prepare(
                "INSERT INTO tokens (token_hash, created_at, expires_at, bound_device_id,
                     bound_serial, bound_mac) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .await
            .map_err(self.err("store a new token"))?;
        for hash in hashes {
            tx.execute(
                &insert,
                &[
                    hash,
                    &now,
                    &expires_at,
                    &binding.device_id,
                    &binding.serial_number,
                    &binding.mac_address,
                ],
            )
            .await
            .map_err(self.err("store a new token"))?;
        }
        tx.commit().await.map_err(self.err("commit the new tokens"))
    }

    pub(super) async fn reserve(
        &self,
        token: &str,
        claim: &TokenClaim<'_>,
        now: i64,
    ) -> Result<Reservation, RegisterError> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(self.err("begin the reservation transaction"))?;
        // Reservations of one device id are serialised (then the token's row is locked):
        // two tokens cannot both find the device id free.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&claim.device_id],
        )
        .await
        .map_err(self.err("lock the device id"))?;
        let hash = token_hash(token);
        let row = token_row(&tx, &hash, true)
            .await
            .map_err(self.err("look up a token"))?
            .ok_or(RegisterError::TokenUnknown)?;
        row.reservable(claim, now)?;
        if device_exists(&tx, claim.device_id)
            .await
            .map_err(self.err("look up a device"))?
        {
            return Err(RegisterError::DeviceExists);
        }
        let other = tx
            .query_opt(
                "SELECT 1 FROM tokens WHERE reserved_for = $1 AND reserved_until > $2
                     AND used_at IS NULL AND token_hash <> $3",
                &[&claim.device_id, &now, &hash],
            )
            .await
            .map_err(self.err("look up reservations of the device id"))?;
        if other.is_some() {
            return Err(RegisterError::DeviceBusy);
        }
        let reservation = Reservation::new();
        tx.execute(
            "UPDATE tokens SET reservation = $1, reserved_until = $2, reserved_for = $3
             WHERE token_hash = $4",
            &[
                &reservation.0,
                &now.saturating_add(RESERVATION_SECONDS),
                &claim.device_id,
                &hash,
            ],
        )
        .await
        .map_err(self.err("reserve the token"))?;
        tx.commit()
            .await
            .map_err(self.err("commit the reservation"))?;
        Ok(reservation)
    }

    pub(super) async fn release(
        &self,
        token: &str,
        reservation: &Reservation,
    ) -> Result<(), BackendError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE tokens SET reservation = NULL, reserved_until = NULL, reserved_for = NULL
                 WHERE token_hash = $1 AND reservation = $2 AND used_at IS NULL",
                &[&token_hash(token), &reservation.0],
            )
            .await
            .map_err(self.err("release the token"))?;
        Ok(())
    }

    pub(super) async fn register(
        &self,
        token: &str,
        reservation: &Reservation,
        device: &NewDevice,
        now: i64,
    ) -> Result<DeviceRecord, RegisterError> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(self.err("begin the registration transaction"))?;
        let hash = token_hash(token);
        let used = tx
            .execute(
                "UPDATE tokens SET used_at = $1, used_by = $2, reservation = NULL,
                     reserved_until = NULL, reserved_for = NULL
                 WHERE token_hash = $3 AND used_at IS NULL AND expires_at > $1
                     AND reservation = $4",
                &[&now, &device.device_id, &hash, &reservation.0],
            )
            .await
            .map_err(self.err("mark the token used"))?;
        if used != 1 {
            // Say why; the transaction rolls back when dropped.
            let row = token_row(&tx, &hash, false)
                .await
                .map_err(self.err("look up a token"))?
                .ok_or(RegisterError::TokenUnknown)?;
            row.usable(now)?;
            return Err(RegisterError::TokenBusy);
        }
        let inserted = insert_device(&tx, device, now)
            .await
            .map_err(self.err("insert the device"))?;
        let Some(row) = inserted else {
            if device_exists(&tx, &device.device_id)
                .await
                .map_err(self.err("look up a device"))?
            {
                return Err(RegisterError::DeviceExists);
            }
            return Err(BackendError::Postgres {
                what: "insert the device",
                target: self.target.to_string(),
                detail:
                    "its certificate id or serial number is already registered to another device"
                        .into(),
            }
            .into());
        };
        let record = row_to_device(&row);
        tx.commit()
            .await
            .map_err(self.err("commit the registration"))?;
        Ok(record)
    }

    pub(super) async fn get(&self, device_id: &str) -> Result<Option<DeviceRecord>, BackendError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE device_id = $1"),
                &[&device_id],
            )
            .await
            .map_err(self.err("read a device"))?;
        Ok(row.as_ref().map(row_to_device))
    }

    pub(super) async fn list(&self) -> Result<Vec<DeviceRecord>, BackendError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {DEVICE_COLUMNS} FROM devices ORDER BY device_id"),
                &[],
            )
            .await
            .map_err(self.err("list devices"))?;
        Ok(rows.iter().map(row_to_device).collect())
    }

    pub(super) async fn active_devices_after(
        &self,
        after: &str,
        limit: u32,
    ) -> Result<Vec<DeviceRecord>, BackendError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {DEVICE_COLUMNS} FROM devices
                     WHERE status = 'active' AND device_id > $1
                     ORDER BY device_id LIMIT $2"
                ),
                &[&after, &i64::from(limit)],
            )
            .await
            .map_err(self.err("list a page of active devices"))?;
        Ok(rows.iter().map(row_to_device).collect())
    }

    pub(super) async fn revoke(
        &self,
        device_id: &str,
        now: i64,
    ) -> Result<Option<DeviceRecord>, BackendError> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(self.err("begin the revocation transaction"))?;
        let row = tx
            .query_opt(
                &format!(
                    "UPDATE devices SET status = 'revoked', revoked_at = COALESCE(revoked_at, $1),
                     updated_at = $1 WHERE device_id = $2 RETURNING {DEVICE_COLUMNS}"
                ),
                &[&now, &device_id],
            )
            .await
            .map_err(self.err("revoke a device"))?;
        if row.is_some() {
            // A certificate issued for a rotation and not yet in use goes with the device.
            history::abandon(
                &tx,
                Some(device_id),
                i64::MAX,
                now,
                super::history::UNUSED_STATES,
            )
            .await
            .map_err(self.err("abandon unused certificates"))?;
        }
        tx.commit()
            .await
            .map_err(self.err("commit the revocation"))?;
        Ok(row.as_ref().map(row_to_device))
    }

    pub(super) async fn revoked_serials(&self) -> Result<Vec<(String, Option<i64>)>, BackendError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT certificate_serial, revoked_at FROM devices WHERE status = 'revoked'
                 UNION ALL
                 SELECT certificate_serial, revoked_at FROM certificates
                 WHERE revoked_at IS NOT NULL
                 ORDER BY 2, 1",
                &[],
            )
            .await
            .map_err(self.err("list revoked certificates"))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub(super) async fn next_crl_number(&self) -> Result<i64, BackendError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "UPDATE meta SET value = value + 1 WHERE key = 'crl_number' RETURNING value",
                &[],
            )
            .await
            .map_err(self.err("advance the CRL number"))?;
        Ok(row.get(0))
    }
}

/// A tokio-postgres error in one line: the server's message and SQLSTATE, or the client's
/// reason (connection refused, timeout, …) with its cause.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    if e.code() == Some(&SqlState::UNDEFINED_TABLE) {
        text.push_str(" (the schema is missing: was the database reset?)");
    }
    text
}

const DEVICE_COLUMNS: &str = "device_id, serial_number, mac_address, firmware_version,
    certificate_pem, certificate_id, certificate_serial, certificate_arn, status, created_at,
    updated_at, revoked_at";

fn row_to_device(row: &Row) -> DeviceRecord {
    let status: String = row.get(8);
    DeviceRecord {
        device_id: row.get(0),
        serial_number: row.get(1),
        mac_address: row.get(2),
        firmware_version: row.get(3),
        certificate_pem: row.get(4),
        certificate_id: row.get(5),
        certificate_serial: row.get(6),
        certificate_arn: row.get(7),
        status: RegistrationStatus::from_db(&status),
        created_at: row.get(9),
        updated_at: row.get(10),
        revoked_at: row.get(11),
    }
}

async fn current_version(client: &impl GenericClient) -> Result<i64, tokio_postgres::Error> {
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.tables
                 WHERE table_schema = current_schema() AND table_name = $1)",
            &[&MIGRATIONS_TABLE],
        )
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let row = client
        .query_one(
            &format!("SELECT COALESCE(MAX(version), 0)::BIGINT FROM {MIGRATIONS_TABLE}"),
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// Inserts an active device unless its id, certificate id or serial is taken; the row, if
/// inserted. (`ON CONFLICT DO NOTHING`: a unique violation would abort the transaction, and
/// a caller may still need to ask why nothing was inserted.)
async fn insert_device(
    client: &impl GenericClient,
    device: &NewDevice,
    now: i64,
) -> Result<Option<Row>, tokio_postgres::Error> {
    client
        .query_opt(
            &format!(
                "INSERT INTO devices (device_id, serial_number, mac_address,
                     firmware_version, certificate_pem, certificate_id, certificate_serial,
                     certificate_arn, status, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'active', $9, $9)
                 ON CONFLICT DO NOTHING RETURNING {DEVICE_COLUMNS}"
            ),
            &[
                &device.device_id,
                &device.serial_number,
                &device.mac_address,
                &device.firmware_version,
                &device.certificate_pem,
                &device.certificate_id,
                &device.certificate_serial,
                &device.certificate_arn,
                &now,
            ],
        )
        .await
}

async fn device_exists(
    client: &impl GenericClient,
    device_id: &str,
) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_opt("SELECT 1 FROM devices WHERE device_id = $1", &[&device_id])
        .await?
        .is_some())
}

async fn token_row(
    client: &impl GenericClient,
    hash: &str,
    lock: bool,
) -> Result<Option<TokenRow>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT expires_at, used_at, reserved_until, bound_device_id, bound_serial, bound_mac
         FROM tokens WHERE token_hash = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let row = client.query_opt(&sql, &[&hash]).await?;
    Ok(row.map(|r| TokenRow {
        expires_at: r.get(0),
        used_at: r.get(1),
        reserved_until: r.get(2),
        binding: TokenBinding {
            device_id: r.get(3),
            serial_number: r.get(4),
            mac_address: r.get(5),
        },
    }))
}

impl PgStore {
    /// Tokens neither used nor expired at `now`, soonest expiry first (the web console's list).
    pub(super) async fn unused_tokens(
        &self,
        now: i64,
    ) -> Result<Vec<super::UnusedToken>, BackendError> {
        let client = self.client().await?;
        let sql = super::unused::SELECT_UNUSED.replace("?1", "$1");
        let rows = client
            .query(&sql, &[&now])
            .await
            .map_err(self.err("list unused tokens"))?;
        Ok(rows
            .iter()
            .map(|r| super::UnusedToken {
                hash: r.get(0),
                created_at: r.get(1),
                expires_at: r.get(2),
                bound_device_id: r.get(3),
            })
            .collect())
    }
}
