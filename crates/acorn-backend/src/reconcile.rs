//! Reconciliation with AWS IoT Core: with the `aws` signer, AWS answers the devices'
//! provisioning MQTT API itself (`CreateCertificateFromCsr`, `RegisterThing`), so the service
//! learns of a rotation only when told (`POST /v1/devices/{id}/certificate-in-use`, e.g. from an
//! IoT rule on the devices' statuses) or when it looks. This module looks: for one device, or
//! for every active device on a schedule (`aws.reconcile_interval_secs`) and on demand.
//!
//! For one device ([`reconcile_device`]), in order:
//!
//! 1. `ListThingPrincipals` of its thing, and `DescribeCertificate` of every certificate
//!    attached to it, of its current certificate and of its history's certificates (status,
//!    creation date).
//! 2. **Learn**: an `ACTIVE` certificate attached to the thing that the registry does not know
//!    is recorded `registered` (AWS answered a rotation; the device may be trying it).
//! 3. **Promote**: when the current certificate can no longer connect (`REVOKED`, `INACTIVE`,
//!    deleted, or detached from the thing) and exactly one newer `ACTIVE` certificate is
//!    attached, the device cannot be using the old one: the newer one becomes current by the
//!    path of certificate-in-use ([`crate::rotation::promote`]: the old one `REVOKED` and
//!    detached in AWS first, then superseded in the registry, counted, logged). Several newer
//!    ones: the device's own report decides, nothing changes.
//! 4. **Revoke**: a `superseded` or `abandoned` certificate that AWS still holds `ACTIVE` (or
//!    `INACTIVE`, which can be re-activated), or that is still attached to the thing, is set
//!    `REVOKED` and detached from the thing and its policies: this finishes a switch cut short
//!    and the unused certificates a promotion abandoned in the registry only.
//! 5. **Abandon**: a `registered` certificate AWS no longer accepts (revoked, inactive or
//!    deleted by an operator) is abandoned in the registry (and `REVOKED` in AWS if it is not).
//!
//! A `registered` certificate that AWS still accepts is **never** revoked for its age: the
//! device may be offline in the middle of its trial connection, or committed to it while its
//! status went unseen; revoking it would cut the device off for good. It goes when another
//! certificate is seen in use (the device's report, or step 3), or with the device.
//!
//! The device's reported `certificateId` is not stored by the service: it arrives through
//! certificate-in-use, which promotes at once; this sweep covers the reports that never arrived.
//! Certificates issued and never registered are the local CA's (`pending`); each sweep also
//! abandons the stale ones ([`crate::rotation::UNREGISTERED_CERTIFICATE_SECONDS`]). With the
//! local signer the service is the certificate authority and sees every step itself: a
//! device's reconciliation changes nothing, and a sweep only abandons stale pending
//! certificates (the scheduled sweep runs only with the `aws` signer).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use crate::api::{self, ApiError, AppState};
use crate::registry::DeviceRecord;

/// Devices read from the registry per page of a sweep.
pub(crate) const PAGE: u32 = 100;
/// Devices reconciled at once by a sweep. Every AWS call also waits for the signer's rate
/// limiter (`aws.requests_per_second`), shared with registrations, so a sweep never sends more
/// than the configured rate; this bound keeps it from queueing ahead of registrations.
pub(crate) const CONCURRENCY: usize = 4;
/// The first scheduled sweep starts within this long of start-up (a random delay, so
/// instances started together do not sweep together), or within one interval if shorter.
const FIRST_SWEEP_WITHIN: Duration = Duration::from_secs(300);

/// One change a reconciliation made (only the aws signer's make any).
#[cfg_attr(not(feature = "aws"), allow(dead_code))]
#[derive(Debug, Clone, Serialize)]
#[serde(
    tag = "action",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub(crate) enum Change {
    /// An `ACTIVE` certificate attached to the thing, unknown to the registry, recorded
    /// `registered`.
    Learned { certificate_id: String },
    /// The current certificate no longer connects: this one replaced it (the old one is
    /// `REVOKED` and detached).
    Promoted {
        certificate_id: String,
        superseded_certificate_id: String,
    },
    /// A superseded or abandoned certificate AWS still accepted or kept attached: now
    /// `REVOKED` and detached.
    Revoked {
        certificate_id: String,
        state: &'static str,
        aws_status: String,
        was_attached: bool,
    },
    /// A registered certificate AWS no longer accepts: abandoned in the registry.
    Abandoned {
        certificate_id: String,
        aws_status: String,
    },
}

#[cfg_attr(not(feature = "aws"), allow(dead_code))]
impl Change {
    fn action(&self) -> &'static str {
        match self {
            Self::Learned { .. } => "learned",
            Self::Promoted { .. } => "promoted",
            Self::Revoked { .. } => "revoked",
            Self::Abandoned { .. } => "abandoned",
        }
    }

    fn certificate_id(&self) -> &str {
        match self {
            Self::Learned { certificate_id }
            | Self::Promoted { certificate_id, .. }
            | Self::Revoked { certificate_id, .. }
            | Self::Abandoned { certificate_id, .. } => certificate_id,
        }
    }
}

/// What reconciling one device found and did (`POST /v1/devices/{id}/reconcile`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeviceReport {
    device_id: String,
    /// The current certificate afterwards.
    certificate_id: String,
    changed: bool,
    changes: Vec<Change>,
    /// What needs a person, or was left alone and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    notes: Vec<String>,
}

impl DeviceReport {
    fn new(device: &DeviceRecord) -> Self {
        Self {
            device_id: device.device_id.clone(),
            certificate_id: device.certificate_id.clone(),
            changed: false,
            changes: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Records and logs (one line) a change.
    #[cfg_attr(not(feature = "aws"), allow(dead_code))]
    fn push(&mut self, state: &AppState, change: Change) {
        tracing::info!(device_id = %self.device_id, action = change.action(),
            certificate_id = %change.certificate_id(), "reconcile: {change:?}");
        state.metrics.reconcile_change(change.action());
        self.changed = true;
        self.changes.push(change);
    }

    #[cfg_attr(not(feature = "aws"), allow(dead_code))]
    fn note(&mut self, note: String) {
        tracing::warn!(device_id = %self.device_id, "reconcile: {note}");
        self.notes.push(note);
    }
}

/// A sweep over every active device, running or finished (`GET /v1/reconcile`).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SweepReport {
    running: bool,
    /// `schedule` or `request`.
    trigger: &'static str,
    started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<String>,
    /// Devices reconciled (each of `unchanged`, `changed` or `failed`).
    devices: u64,
    changed: u64,
    failed: u64,
    /// Pending certificates of the local CA abandoned for their age.
    abandoned_pending: u64,
    /// Why the sweep stopped before the end, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The sweep in progress, if any, and the last one.
#[derive(Debug, Default)]
pub(crate) struct Reconciler {
    running: AtomicBool,
    last: Mutex<Option<SweepReport>>,
}

/// Holds the running flag while a sweep runs; clears it when dropped (the sweep ended or its
/// task was dropped).
struct Running(Arc<AppState>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.reconciler.running.store(false, Ordering::SeqCst);
    }
}

impl Reconciler {
    /// Takes the running flag, or `None` when a sweep runs already.
    fn try_start(state: &Arc<AppState>) -> Option<Running> {
        state
            .reconciler
            .running
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .ok()
            .map(|_| Running(Arc::clone(state)))
    }

    /// The sweep running now, or the last one.
    pub(crate) fn last(&self) -> Option<SweepReport> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, report: &SweepReport) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(report.clone());
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// `POST /v1/devices/{id}/reconcile`: reconciles one active device (see the module docs).
pub(crate) async fn reconcile_device(
    state: &Arc<AppState>,
    device_id: &str,
) -> Result<DeviceReport, ApiError> {
    let device = crate::rotation::active_device(state, device_id).await?;
    let result = reconcile_active(state, device).await;
    state.metrics.reconciled(match &result {
        Ok(r) if r.changed => "changed",
        Ok(_) => "unchanged",
        Err(_) => "failed",
    });
    result
}

/// Reconciles an active device with the signer's view of it.
async fn reconcile_active(
    state: &Arc<AppState>,
    device: DeviceRecord,
) -> Result<DeviceReport, ApiError> {
    match &state.signer {
        crate::signer::Signer::Local => {
            let _ = state;
            Ok(DeviceReport::new(&device))
        }
        #[cfg(feature = "aws")]
        crate::signer::Signer::Aws(aws) => with_aws(state, aws, device).await,
    }
}

/// The aws signer's reconciliation of one device (steps 1–5 of the module docs).
#[cfg(feature = "aws")]
async fn with_aws(
    state: &Arc<AppState>,
    aws: &crate::signer::aws::AwsSigner,
    device: DeviceRecord,
) -> Result<DeviceReport, ApiError> {
    use std::collections::{HashMap, HashSet};

    use crate::registry::history::{CertificateState, NewCertificate};
    use crate::signer::aws::AwsCertificate;

    let signer_err = |e| ApiError::from_signer(state, e);
    let device_id = device.device_id.as_str();
    let mut report = DeviceReport::new(&device);
    if device.certificate_arn.is_none() {
        report.note(
            "the current certificate is the local CA's, not AWS IoT Core's: nothing to reconcile"
                .into(),
        );
        return Ok(report);
    }

    // 1. What AWS holds.
    let Some(attached) = aws
        .thing_certificates(device_id)
        .await
        .map_err(signer_err)?
    else {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "thing_not_found",
            format!(
                "AWS IoT Core has no thing {device_id:?}: it was deleted outside this service; revoke the device (POST /v1/devices/{device_id}/revoke) or make the thing again"
            ),
        ));
    };
    let attached_ids: HashSet<String> = attached.iter().map(|(id, _)| id.clone()).collect();
    let mut described: HashMap<String, Option<AwsCertificate>> = HashMap::new();
    let history = state.registry.certificate_history(device_id).await?;
    let wanted = attached
        .iter()
        .map(|(id, _)| id.as_str())
        .chain([device.certificate_id.as_str()])
        .chain(
            history
                .iter()
                .filter(|c| c.certificate_arn.is_some())
                .map(|c| c.certificate_id.as_str()),
        );
    for id in wanted {
        if !described.contains_key(id) {
            let found = aws.describe_certificate(id).await.map_err(signer_err)?;
            described.insert(id.to_owned(), found);
        }
    }
    let known: HashMap<&str, CertificateState> = history
        .iter()
        .map(|c| (c.certificate_id.as_str(), c.state))
        .collect();
    let now = now();

    // 2. Learn the certificates AWS attached on its own (a rotation it answered).
    let mut registered: HashSet<String> = history
        .iter()
        .filter(|c| c.state == CertificateState::Registered)
        .map(|c| c.certificate_id.clone())
        .collect();
    for (id, _) in &attached {
        if *id == device.certificate_id || known.contains_key(id.as_str()) {
            continue;
        }
        match described.get(id).and_then(Option::as_ref) {
            Some(c) if c.is_active() => {
                let learned = NewCertificate {
                    device_id: device_id.to_owned(),
                    certificate_id: id.clone(),
                    certificate_serial: c.serial.clone(),
                    certificate_pem: c.pem.clone(),
                    certificate_arn: Some(c.arn.clone()),
                };
                state
                    .registry
                    .add_registered_certificate(&learned, now)
                    .await?;
                registered.insert(id.clone());
                report.push(
                    state,
                    Change::Learned {
                        certificate_id: id.clone(),
                    },
                );
            }
            Some(c) => report.note(format!(
                "certificate {id} is attached to the thing but {} in AWS IoT Core: left alone",
                c.status
            )),
            None => report.note(format!(
                "certificate {id} is attached to the thing but AWS IoT Core does not describe it: left alone"
            )),
        }
    }

    // 3. The current certificate no longer connects: promote the one newer ACTIVE one.
    let current = described.get(&device.certificate_id).cloned().flatten();
    let current_attached = attached_ids.contains(&device.certificate_id);
    let mut retired: HashSet<String> = HashSet::new();
    let unusable = match &current {
        None => Some("deleted".to_owned()),
        Some(c) if !c.is_active() => Some(c.status.clone()),
        Some(_) if !current_attached => Some("detached from the thing".to_owned()),
        Some(_) => None,
    };
    if let Some(why) = unusable {
        let since = current
            .as_ref()
            .map_or(device.updated_at.saturating_mul(1000), |c| c.created_ms);
        let newer: Vec<&AwsCertificate> = attached
            .iter()
            .filter(|(id, _)| registered.contains(id))
            .filter_map(|(id, _)| described.get(id).and_then(Option::as_ref))
            .filter(|c| c.is_active() && c.created_ms > since)
            .collect();
        match newer.as_slice() {
            [new] => {
                if let Some(old) = &current {
                    retire(aws, device_id, old, current_attached)
                        .await
                        .map_err(signer_err)?;
                    retired.insert(old.certificate_id.clone());
                }
                match crate::rotation::promote(state, device_id, &new.certificate_id, now).await? {
                    Some(promotion) => {
                        report.certificate_id = new.certificate_id.clone();
                        report.push(
                            state,
                            Change::Promoted {
                                certificate_id: new.certificate_id.clone(),
                                superseded_certificate_id: promotion.superseded_id,
                            },
                        );
                    }
                    None => report.note(format!(
                        "certificate {} could not be made current (changed meanwhile); the next reconciliation looks again",
                        new.certificate_id
                    )),
                }
            }
            [] => report.note(format!(
                "the current certificate {} is {why} in AWS IoT Core and no newer ACTIVE certificate is attached to the thing: the device cannot connect; rotate or register it again",
                device.certificate_id
            )),
            several => report.note(format!(
                "the current certificate {} is {why} in AWS IoT Core and {} newer ACTIVE certificates are attached: the device's report (certificate-in-use) decides",
                device.certificate_id,
                several.len()
            )),
        }
    }

    // 4 and 5. What the registry holds revoked must be revoked in AWS; registered
    // certificates AWS no longer accepts are abandoned.
    let history = if report.changed {
        state.registry.certificate_history(device_id).await?
    } else {
        history
    };
    for record in &history {
        let id = &record.certificate_id;
        if retired.contains(id) || record.certificate_arn.is_none() {
            continue;
        }
        let Some(aws_cert) = described.get(id).and_then(Option::as_ref) else {
            if record.state == CertificateState::Registered
                && state
                    .registry
                    .abandon_certificate(device_id, id, now)
                    .await?
            {
                report.push(
                    state,
                    Change::Abandoned {
                        certificate_id: id.clone(),
                        aws_status: "DELETED".into(),
                    },
                );
            }
            continue;
        };
        let was_attached = attached_ids.contains(id);
        match record.state {
            CertificateState::Superseded | CertificateState::Abandoned => {
                if aws_cert.is_revoked() && !was_attached {
                    continue;
                }
                retire(aws, device_id, aws_cert, was_attached)
                    .await
                    .map_err(signer_err)?;
                report.push(
                    state,
                    Change::Revoked {
                        certificate_id: id.clone(),
                        state: record.state.as_str(),
                        aws_status: aws_cert.status.clone(),
                        was_attached,
                    },
                );
            }
            CertificateState::Registered if !aws_cert.is_active() => {
                retire(aws, device_id, aws_cert, was_attached)
                    .await
                    .map_err(signer_err)?;
                if state
                    .registry
                    .abandon_certificate(device_id, id, now)
                    .await?
                {
                    report.push(
                        state,
                        Change::Abandoned {
                            certificate_id: id.clone(),
                            aws_status: aws_cert.status.clone(),
                        },
                    );
                }
            }
            _ => {}
        }
    }
    Ok(report)
}

/// Makes `cert` unusable in AWS IoT Core: `REVOKED` and detached from the thing and its
/// policies; a certificate revoked already (its status cannot change again) is only detached,
/// when it is still attached.
#[cfg(feature = "aws")]
async fn retire(
    aws: &crate::signer::aws::AwsSigner,
    thing: &str,
    cert: &crate::signer::aws::AwsCertificate,
    attached: bool,
) -> Result<(), crate::signer::SignerError> {
    if !cert.is_revoked() {
        aws.revoke_certificate(thing, &cert.certificate_id, &cert.arn)
            .await
    } else if attached {
        aws.detach_certificate(thing, &cert.certificate_id, &cert.arn)
            .await
    } else {
        Ok(())
    }
}

/// `POST /v1/reconcile`: starts a sweep in the background and returns its first report;
/// `None` when one runs already.
pub(crate) fn start_sweep(state: &Arc<AppState>) -> Option<SweepReport> {
    let running = Reconciler::try_start(state)?;
    let report = begin(state, "request");
    let first = report.clone();
    // Nobody stops a sweep asked for by hand: it ends with the process or the last page.
    let (_, stop) = watch::channel(false);
    tokio::spawn(run(running, report, stop));
    Some(first)
}

/// Reconciles every active device, a page at a time, at most [`CONCURRENCY`] at once, until
/// done or `stop`, after abandoning stale pending certificates. One sweep at a time: `None`
/// when another one runs.
pub(crate) async fn sweep(
    state: &Arc<AppState>,
    trigger: &'static str,
    stop: watch::Receiver<bool>,
) -> Option<SweepReport> {
    let running = Reconciler::try_start(state)?;
    let report = begin(state, trigger);
    Some(run(running, report, stop).await)
}

/// The report of a sweep that starts now.
fn begin(state: &Arc<AppState>, trigger: &'static str) -> SweepReport {
    let report = SweepReport {
        running: true,
        trigger,
        started_at: rfc3339_now(),
        ..SweepReport::default()
    };
    state.reconciler.set(&report);
    state.metrics.reconcile_sweep(trigger);
    report
}

async fn run(
    running: Running,
    mut report: SweepReport,
    stop: watch::Receiver<bool>,
) -> SweepReport {
    let state = &running.0;
    if let Err(e) = walk(state, &mut report, &stop).await {
        tracing::error!(error = %e, "reconcile: the sweep stopped early");
        report.error = Some(e);
    }
    report.running = false;
    report.finished_at = Some(rfc3339_now());
    state.reconciler.set(&report);
    tracing::info!(
        trigger = report.trigger,
        devices = report.devices,
        changed = report.changed,
        failed = report.failed,
        abandoned_pending = report.abandoned_pending,
        "reconcile: sweep finished"
    );
    report
}

/// The body of [`sweep`]; `Err` says why it stopped before the end.
async fn walk(
    state: &Arc<AppState>,
    report: &mut SweepReport,
    stop: &watch::Receiver<bool>,
) -> Result<(), String> {
    report.abandoned_pending = state
        .registry
        .abandon_stale_certificates(now(), crate::rotation::UNREGISTERED_CERTIFICATE_SECONDS)
        .await
        .map_err(|e| format!("abandoning stale pending certificates: {e}"))?;
    if report.abandoned_pending > 0 && state.signer.uses_crl() {
        api::publish_crl(state, None)
            .await
            .map_err(|e| format!("publishing the CRL: {e}"))?;
    }
    if state.signer.uses_crl() {
        // The local CA: the registry is the truth, nothing else to reconcile.
        return Ok(());
    }
    let mut after = String::new();
    // Each page starts after the last id of the one before, so the walk ends after at most
    // (active devices / PAGE + 1) pages.
    loop {
        if *stop.borrow() {
            return Err("the service is stopping".into());
        }
        let page = state
            .registry
            .active_devices_after(&after, PAGE)
            .await
            .map_err(|e| format!("reading devices after {after:?}: {e}"))?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = last.device_id.clone();
        let full = page.len() == PAGE as usize;
        let mut tasks = tokio::task::JoinSet::new();
        let mut devices = page.into_iter();
        loop {
            while tasks.len() < CONCURRENCY {
                let Some(device) = devices.next() else { break };
                let state = Arc::clone(state);
                tasks.spawn(async move {
                    let id = device.device_id.clone();
                    (id, reconcile_active(&state, device).await)
                });
            }
            let Some(done) = tasks.join_next().await else {
                break;
            };
            report.devices += 1;
            let result = match done {
                Ok((_, Ok(r))) if r.changed => {
                    report.changed += 1;
                    "changed"
                }
                Ok((_, Ok(_))) => "unchanged",
                Ok((device_id, Err(e))) => {
                    report.failed += 1;
                    tracing::warn!(%device_id, code = e.code(), error = e.message(),
                        "reconcile: the device could not be reconciled; the next sweep tries again");
                    "failed"
                }
                Err(e) => {
                    report.failed += 1;
                    tracing::error!(error = %e, "reconcile: a device's task failed");
                    "failed"
                }
            };
            state.metrics.reconciled(result);
        }
        state.reconciler.set(report);
        if !full {
            return Ok(());
        }
    }
}

/// Sweeps every `interval` until `stop` (the `aws` signer's schedule); the first sweep comes
/// after a random delay within [`FIRST_SWEEP_WITHIN`] or one interval, whichever is shorter.
pub(crate) async fn reconcile_forever(
    state: Arc<AppState>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let first = interval.min(FIRST_SWEEP_WITHIN);
    let mut wait = first.mul_f64(rand::random::<f64>());
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(wait) => {}
        }
        if sweep(&state, "schedule", stop.clone()).await.is_none() {
            tracing::info!("reconcile: a sweep is running already; skipping this one");
        }
        wait = interval;
    }
}
