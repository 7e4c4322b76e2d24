//! The SQLite store's certificate history (see [`crate::registry::history`]).

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{db, insert_device, row_to_device, SqliteStore, SELECT_DEVICE};
use crate::error::BackendError;
use crate::registry::history::{purpose_admits, throttled, RECENT_CERTIFICATES};
use crate::registry::history::{
    CertificatePurpose, CertificateRecord, CertificateState, ClaimedDevice, NewCertificate,
    Promotion, RotationRefusal, CERTIFICATE_COLUMNS, OWNERSHIP_TOKEN_SECONDS, PENDING_STATES,
    UNUSED_STATES,
};
use crate::registry::{DeviceRecord, RegistrationStatus};

impl SqliteStore {
    pub(in crate::registry) fn add_pending_certificate(
        &self,
        c: &NewCertificate,
        ownership_token_hash: &str,
        purpose: CertificatePurpose,
        now: i64,
    ) -> Result<Result<u64, RotationRefusal>, BackendError> {
        let mut conn = self.connect()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("begin the certificate transaction"))?;
        let status: Option<String> = tx
            .query_row(
                "SELECT status FROM devices WHERE device_id = ?1",
                [&c.device_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(db("read the device's status"))?;
        if let Err(refusal) =
            purpose_admits(purpose, status.as_deref().map(RegistrationStatus::from_db))
        {
            return Ok(Err(refusal));
        }
        let (count, latest): (i64, i64) = tx
            .query_row(
                RECENT_CERTIFICATES,
                params![c.device_id, now - 86_400],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(db("count the device's recent certificates"))?;
        if let Some(refusal) = throttled(count, latest, now) {
            return Ok(Err(refusal));
        }
        let abandoned = abandon(&tx, Some(&c.device_id), i64::MAX, now, PENDING_STATES)?;
        tx.execute(
            "INSERT INTO certificates (certificate_id, device_id, certificate_serial,
                 certificate_pem, certificate_arn, state, ownership_token_hash, created_at,
                 updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7, ?7)",
            params![
                c.certificate_id,
                c.device_id,
                c.certificate_serial,
                c.certificate_pem,
                c.certificate_arn,
                ownership_token_hash,
                now
            ],
        )
        .map_err(db("record the issued certificate"))?;
        tx.commit().map_err(db("commit the issued certificate"))?;
        Ok(Ok(abandoned))
    }

    pub(in crate::registry) fn add_registered_certificate(
        &self,
        c: &NewCertificate,
        now: i64,
    ) -> Result<(), BackendError> {
        self.connect()?
            .execute(
                "INSERT OR IGNORE INTO certificates (certificate_id, device_id,
                     certificate_serial, certificate_pem, certificate_arn, state, created_at,
                     updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'registered', ?6, ?6)",
                params![
                    c.certificate_id,
                    c.device_id,
                    c.certificate_serial,
                    c.certificate_pem,
                    c.certificate_arn,
                    now
                ],
            )
            .map_err(db("record the registered certificate"))?;
        Ok(())
    }

    pub(in crate::registry) fn register_certificate(
        &self,
        device_id: &str,
        ownership_token_hash: &str,
        now: i64,
    ) -> Result<Option<CertificateRecord>, BackendError> {
        let conn = self.connect()?;
        conn.query_row(
            &format!(
                "UPDATE certificates SET state = 'registered', ownership_token_hash = NULL,
                     updated_at = ?1
                 WHERE device_id = ?2 AND ownership_token_hash = ?3 AND state = 'pending'
                     AND created_at > ?4
                 RETURNING {CERTIFICATE_COLUMNS}"
            ),
            params![
                now,
                device_id,
                ownership_token_hash,
                now - OWNERSHIP_TOKEN_SECONDS
            ],
            row_to_certificate,
        )
        .optional()
        .map_err(db("register the certificate"))
    }

    pub(in crate::registry) fn register_claimed_device(
        &self,
        device: &ClaimedDevice,
        ownership_token_hash: &str,
        now: i64,
    ) -> Result<Option<DeviceRecord>, BackendError> {
        let mut conn = self.connect()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("begin the claim transaction"))?;
        let pending = tx
            .query_row(
                &format!(
                    "DELETE FROM certificates
                     WHERE device_id = ?1 AND ownership_token_hash = ?2 AND state = 'pending'
                         AND created_at > ?3
                     RETURNING {CERTIFICATE_COLUMNS}"
                ),
                params![
                    device.device_id,
                    ownership_token_hash,
                    now - OWNERSHIP_TOKEN_SECONDS
                ],
                row_to_certificate,
            )
            .optional()
            .map_err(db("take the claimed certificate"))?;
        let Some(cert) = pending else {
            return Ok(None);
        };
        let inserted = insert_device(&tx, "INSERT OR IGNORE", &device.with(cert), now)
            .map_err(db("insert the claimed device"))?;
        if inserted != 1 {
            return Ok(None);
        }
        let record = tx
            .query_row(
                &format!("{SELECT_DEVICE} WHERE device_id = ?1"),
                [&device.device_id],
                row_to_device,
            )
            .map_err(db("read the claimed device back"))?;
        tx.commit().map_err(db("commit the claim"))?;
        Ok(Some(record))
    }

    pub(in crate::registry) fn promote_certificate(
        &self,
        device_id: &str,
        certificate_id: &str,
        now: i64,
    ) -> Result<Option<Promotion>, BackendError> {
        let mut conn = self.connect()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("begin the promotion transaction"))?;
        let candidate = tx
            .query_row(
                &format!(
                    "SELECT {CERTIFICATE_COLUMNS} FROM certificates
                     WHERE certificate_id = ?1 AND device_id = ?2 AND state = 'registered'"
                ),
                params![certificate_id, device_id],
                row_to_certificate,
            )
            .optional()
            .map_err(db("read the registered certificate"))?;
        let device = tx
            .query_row(
                &format!("{SELECT_DEVICE} WHERE device_id = ?1"),
                [device_id],
                row_to_device,
            )
            .optional()
            .map_err(db("read the device"))?;
        let (Some(new), Some(old)) = (candidate, device) else {
            return Ok(None);
        };
        if old.status != RegistrationStatus::Active {
            return Ok(None);
        }
        tx.execute(
            "DELETE FROM certificates WHERE certificate_id = ?1",
            [&new.certificate_id],
        )
        .map_err(db("take the certificate out of the history"))?;
        tx.execute(
            "INSERT INTO certificates (certificate_id, device_id, certificate_serial,
                 certificate_pem, certificate_arn, state, created_at, updated_at, revoked_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'superseded', ?6, ?7, ?7)",
            params![
                old.certificate_id,
                old.device_id,
                old.certificate_serial,
                old.certificate_pem,
                old.certificate_arn,
                old.updated_at,
                now
            ],
        )
        .map_err(db("record the superseded certificate"))?;
        tx.execute(
            "UPDATE devices SET certificate_pem = ?1, certificate_id = ?2,
                 certificate_serial = ?3, certificate_arn = ?4, updated_at = ?5
             WHERE device_id = ?6",
            params![
                new.certificate_pem,
                new.certificate_id,
                new.certificate_serial,
                new.certificate_arn,
                now,
                device_id
            ],
        )
        .map_err(db("make the certificate current"))?;
        let abandoned = abandon(&tx, Some(device_id), i64::MAX, now, UNUSED_STATES)?;
        let device = tx
            .query_row(
                &format!("{SELECT_DEVICE} WHERE device_id = ?1"),
                [device_id],
                row_to_device,
            )
            .map_err(db("read the device back"))?;
        tx.commit().map_err(db("commit the promotion"))?;
        Ok(Some(Promotion {
            device,
            superseded_serial: old.certificate_serial,
            superseded_id: old.certificate_id,
            superseded_arn: old.certificate_arn,
            abandoned,
        }))
    }

    /// Abandons the unused certificates (of `device_id`, or of every device) last changed
    /// before `before`.
    pub(in crate::registry) fn abandon_certificates(
        &self,
        device_id: Option<&str>,
        before: i64,
        now: i64,
    ) -> Result<u64, BackendError> {
        abandon(&self.connect()?, device_id, before, now, PENDING_STATES)
    }

    pub(in crate::registry) fn abandon_certificate(
        &self,
        device_id: &str,
        certificate_id: &str,
        now: i64,
    ) -> Result<bool, BackendError> {
        let changed = self
            .connect()?
            .execute(
                &format!(
                    "UPDATE certificates SET state = 'abandoned', ownership_token_hash = NULL,
                         revoked_at = ?1, updated_at = ?1
                     WHERE device_id = ?2 AND certificate_id = ?3 AND state IN {UNUSED_STATES}"
                ),
                params![now, device_id, certificate_id],
            )
            .map_err(db("abandon the certificate"))?;
        Ok(changed == 1)
    }

    pub(in crate::registry) fn certificate_history(
        &self,
        device_id: &str,
    ) -> Result<Vec<CertificateRecord>, BackendError> {
        let conn = self.connect()?;
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE device_id = ?1
                 ORDER BY updated_at DESC, certificate_id"
            ))
            .map_err(db("read the certificate history"))?;
        let rows = stmt
            .query_map([device_id], row_to_certificate)
            .map_err(db("read the certificate history"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(db("read the certificate history"))
    }
}

/// Marks the certificates in `states` abandoned and revoked; returns how many.
pub(super) fn abandon(
    conn: &Connection,
    device_id: Option<&str>,
    before: i64,
    now: i64,
    states: &str,
) -> Result<u64, BackendError> {
    let changed = conn
        .execute(
            &format!(
                "UPDATE certificates SET state = 'abandoned', ownership_token_hash = NULL,
                     revoked_at = ?1, updated_at = ?1
                 WHERE state IN {states} AND updated_at < ?2
                     AND (?3 IS NULL OR device_id = ?3)"
            ),
            params![now, before, device_id],
        )
        .map_err(db("abandon unused certificates"))?;
    Ok(changed as u64)
}

fn row_to_certificate(row: &rusqlite::Row<'_>) -> rusqlite::Result<CertificateRecord> {
    let state: String = row.get(5)?;
    Ok(CertificateRecord {
        certificate_id: row.get(0)?,
        device_id: row.get(1)?,
        certificate_serial: row.get(2)?,
        certificate_pem: row.get(3)?,
        certificate_arn: row.get(4)?,
        state: CertificateState::from_db(&state),
        created_at: row.get(6)?,
        updated_at: row.get(7)?,
        revoked_at: row.get(8)?,
    })
}
