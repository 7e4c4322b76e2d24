//! The PostgreSQL store's certificate history (see [`crate::registry::history`]). Each
//! multi-step change locks the device's row (`SELECT … FOR UPDATE`), so concurrent instances
//! serialise on the device.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{insert_device, row_to_device, PgStore, DEVICE_COLUMNS};
use crate::error::BackendError;
use crate::registry::history::{purpose_admits, throttled, RECENT_CERTIFICATES};
use crate::registry::history::{
    CertificatePurpose, CertificateRecord, CertificateState, ClaimedDevice, NewCertificate,
    Promotion, RotationRefusal, CERTIFICATE_COLUMNS, OWNERSHIP_TOKEN_SECONDS, PENDING_STATES,
    UNUSED_STATES,
};
use crate::registry::{DeviceRecord, RegistrationStatus};

impl PgStore {
    pub(in crate::registry) async fn add_pending_certificate(
        &self,
        c: &NewCertificate,
        ownership_token_hash: &str,
        purpose: CertificatePurpose,
        now: i64,
    ) -> Result<Result<u64, RotationRefusal>, BackendError> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(self.err("begin the certificate transaction"))?;
        let status = tx
            .query_opt(
                "SELECT status FROM devices WHERE device_id = $1 FOR UPDATE",
                &[&c.device_id],
            )
            .await
            .map_err(self.err("read the device's status"))?
            .map(|r| RegistrationStatus::from_db(&r.get::<_, String>(0)));
        if let Err(refusal) = purpose_admits(purpose, status) {
            return Ok(Err(refusal));
        }
        let since = now - 86_400;
        let recent = tx
            .query_one(RECENT_CERTIFICATES, &[&c.device_id, &since])
            .await
            .map_err(self.err("count the device's recent certificates"))?;
        if let Some(refusal) = throttled(recent.get(0), recent.get(1), now) {
            return Ok(Err(refusal));
        }
        let abandoned = abandon(&tx, Some(&c.device_id), i64::MAX, now, PENDING_STATES)
            .await
            .map_err(self.err("abandon unused certificates"))?;
        tx.execute(
            "INSERT INTO certificates (certificate_id, device_id, certificate_serial,
                 certificate_pem, certificate_arn, state, ownership_token_hash, created_at,
                 updated_at)
             VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $7)",
            &[
                &c.certificate_id,
                &c.device_id,
                &c.certificate_serial,
                &c.certificate_pem,
                &c.certificate_arn,
                &ownership_token_hash,
                &now,
            ],
        )
        .await
        .map_err(self.err("record the issued certificate"))?;
        tx.commit()
            .await
            .map_err(self.err("commit the issued certificate"))?;
        Ok(Ok(abandoned))
    }

    pub(in crate::registry) async fn add_registered_certificate(
        &self,
        c: &NewCertificate,
        now: i64,
    ) -> Result<(), BackendError> {
        self.client()
            .await?
            .execute(
                "INSERT INTO certificates (certificate_id, device_id, certificate_serial,
                     certificate_pem, certificate_arn, state, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, 'registered', $6, $6)
                 ON CONFLICT DO NOTHING",
                &[
                    &c.certificate_id,
                    &c.device_id,
                    &c.certificate_serial,
                    &c.certificate_pem,
                    &c.certificate_arn,
                    &now,
                ],
            )
            .await
            .map_err(self.err("record the registered certificate"))?;
        Ok(())
    }

    pub(in crate::registry) async fn register_certificate(
        &self,
        device_id: &str,
        ownership_token_hash: &str,
        now: i64,
    ) -> Result<Option<CertificateRecord>, BackendError> {
        let client = self.client().await?;
        let oldest = now - OWNERSHIP_TOKEN_SECONDS;
        let row = client
            .query_opt(
                &format!(
                    "UPDATE certificates SET state = 'registered', ownership_token_hash = NULL,
                         updated_at = $1
                     WHERE device_id = $2 AND ownership_token_hash = $3 AND state = 'pending'
                         AND created_at > $4
                     RETURNING {CERTIFICATE_COLUMNS}"
                ),
                &[&now, &device_id, &ownership_token_hash, &oldest],
            )
            .await
            .map_err(self.err("register the certificate"))?;
        Ok(row.as_ref().map(row_to_certificate))
    }

    pub(in crate::registry) async fn register_claimed_device(
        &self,
        device: &ClaimedDevice,
        ownership_token_hash: &str,
        now: i64,
    ) -> Result<Option<DeviceRecord>, BackendError> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(self.err("begin the claim transaction"))?;
        let oldest = now - OWNERSHIP_TOKEN_SECONDS;
        let pending = tx
            .query_opt(
                &format!(
                    "DELETE FROM certificates
                     WHERE device_id = $1 AND ownership_token_hash = $2 AND state = 'pending'
                         AND created_at > $3
                     RETURNING {CERTIFICATE_COLUMNS}"
                ),
                &[&device.device_id, &ownership_token_hash, &oldest],
            )
            .await
            .map_err(self.err("take the claimed certificate"))?
            .map(|r| row_to_certificate(&r));
        let Some(cert) = pending else {
            return Ok(None);
        };
        let inserted = insert_device(&tx, &device.with(cert), now)
            .await
            .map_err(self.err("insert the claimed device"))?;
        let Some(row) = inserted else {
            return Ok(None);
        };
        let record = row_to_device(&row);
        tx.commit().await.map_err(self.err("commit the claim"))?;
        Ok(Some(record))
    }

    pub(in crate::registry) async fn promote_certificate(
        &self,
        device_id: &str,
        certificate_id: &str,
        now: i64,
    ) -> Result<Option<Promotion>, BackendError> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(self.err("begin the promotion transaction"))?;
        let old = tx
            .query_opt(
                &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE device_id = $1 FOR UPDATE"),
                &[&device_id],
            )
            .await
            .map_err(self.err("read the device"))?
            .map(|r| row_to_device(&r));
        let new = tx
            .query_opt(
                &format!(
                    "SELECT {CERTIFICATE_COLUMNS} FROM certificates
                     WHERE certificate_id = $1 AND device_id = $2 AND state = 'registered'"
                ),
                &[&certificate_id, &device_id],
            )
            .await
            .map_err(self.err("read the registered certificate"))?
            .map(|r| row_to_certificate(&r));
        let (Some(new), Some(old)) = (new, old) else {
            return Ok(None);
        };
        if old.status != RegistrationStatus::Active {
            return Ok(None);
        }
        tx.execute(
            "DELETE FROM certificates WHERE certificate_id = $1",
            &[&new.certificate_id],
        )
        .await
        .map_err(self.err("take the certificate out of the history"))?;
        tx.execute(
            "INSERT INTO certificates (certificate_id, device_id, certificate_serial,
                 certificate_pem, certificate_arn, state, created_at, updated_at, revoked_at)
             VALUES ($1, $2, $3, $4, $5, 'superseded', $6, $7, $7)",
            &[
                &old.certificate_id,
                &old.device_id,
                &old.certificate_serial,
                &old.certificate_pem,
                &old.certificate_arn,
                &old.updated_at,
                &now,
            ],
        )
        .await
        .map_err(self.err("record the superseded certificate"))?;
        let device = tx
            .query_one(
                &format!(
                    "UPDATE devices SET certificate_pem = $1, certificate_id = $2,
                         certificate_serial = $3, certificate_arn = $4, updated_at = $5
                     WHERE device_id = $6 RETURNING {DEVICE_COLUMNS}"
                ),
                &[
                    &new.certificate_pem,
                    &new.certificate_id,
                    &new.certificate_serial,
                    &new.certificate_arn,
                    &now,
                    &device_id,
                ],
            )
            .await
            .map_err(self.err("make the certificate current"))?;
        let abandoned = abandon(&tx, Some(device_id), i64::MAX, now, UNUSED_STATES)
            .await
            .map_err(self.err("abandon unused certificates"))?;
        tx.commit()
            .await
            .map_err(self.err("commit the promotion"))?;
        Ok(Some(Promotion {
            device: row_to_device(&device),
            superseded_serial: old.certificate_serial,
            superseded_id: old.certificate_id,
            superseded_arn: old.certificate_arn,
            abandoned,
        }))
    }

    pub(in crate::registry) async fn abandon_certificates(
        &self,
        device_id: Option<&str>,
        before: i64,
        now: i64,
    ) -> Result<u64, BackendError> {
        let client = self.client().await?;
        abandon(&client, device_id, before, now, PENDING_STATES)
            .await
            .map_err(self.err("abandon unused certificates"))
    }

    pub(in crate::registry) async fn abandon_certificate(
        &self,
        device_id: &str,
        certificate_id: &str,
        now: i64,
    ) -> Result<bool, BackendError> {
        let client = self.client().await?;
        let changed = client
            .execute(
                &format!(
                    "UPDATE certificates SET state = 'abandoned', ownership_token_hash = NULL,
                         revoked_at = $1, updated_at = $1
                     WHERE device_id = $2 AND certificate_id = $3 AND state IN {UNUSED_STATES}"
                ),
                &[&now, &device_id, &certificate_id],
            )
            .await
            .map_err(self.err("abandon the certificate"))?;
        Ok(changed == 1)
    }

    pub(in crate::registry) async fn certificate_history(
        &self,
        device_id: &str,
    ) -> Result<Vec<CertificateRecord>, BackendError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE device_id = $1
                     ORDER BY updated_at DESC, certificate_id"
                ),
                &[&device_id],
            )
            .await
            .map_err(self.err("read the certificate history"))?;
        Ok(rows.iter().map(row_to_certificate).collect())
    }
}

/// Marks the certificates in `states` abandoned and revoked; returns how many.
pub(super) async fn abandon(
    client: &impl GenericClient,
    device_id: Option<&str>,
    before: i64,
    now: i64,
    states: &str,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            &format!(
                "UPDATE certificates SET state = 'abandoned', ownership_token_hash = NULL,
                     revoked_at = $1, updated_at = $1
                 WHERE state IN {states} AND updated_at < $2
                     AND ($3::TEXT IS NULL OR device_id = $3)"
            ),
            &[&now, &before, &device_id],
        )
        .await
}

fn row_to_certificate(row: &Row) -> CertificateRecord {
    let state: String = row.get(5);
    CertificateRecord {
        certificate_id: row.get(0),
        device_id: row.get(1),
        certificate_serial: row.get(2),
        certificate_pem: row.get(3),
        certificate_arn: row.get(4),
        state: CertificateState::from_db(&state),
        created_at: row.get(6),
        updated_at: row.get(7),
        revoked_at: row.get(8),
    }
}
