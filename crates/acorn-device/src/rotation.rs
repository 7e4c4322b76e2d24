//! Certificate rotation, as the device core sees it: what it asks the driver to do
//! ([`RotationRequest`], carried by [`crate::Action::Rotation`]) and what the driver answers
//! ([`RotationInput`], through [`crate::Device::rotation`]).
//!
//! A rotation is a state machine: key made and kept on the device (driver) → CSR sent on AWS
//! IoT's `CreateCertificateFromCsr` (core) → certificate received, checked against the key, the
//! expected CA and the dates, and stored as the candidate identity (driver, with
//! `acorn_certs::Slots::stage`) → `RegisterThing` with the ownership token (core) → a trial
//! connection with the candidate (driver connects with it; the core watches CONNACK, SUBACK
//! and `online`) → commit (driver, `Slots::commit`) or roll back (driver, `Slots::discard`,
//! then connects with the old identity again). Each step has a deadline; a failure before the
//! candidate is stored is reported and retried later with backoff, one after it is rolled
//! back first. Triggers: the `rotate-certificate` command, the certificate's days left
//! falling under [`RotationConfig::days_before`], or [`crate::Device::rotate`].

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};

use acorn_mqtt::provisioning::check_template_name;

use crate::config::CertificateFacts;
use crate::Error;

/// How a device rotates its certificate. [`RotationConfig::new`] gives the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RotationConfig {
    /// The provisioning template `RegisterThing` uses (AWS IoT fleet provisioning).
    pub template: String,
    /// Put before every topic of the provisioning API: empty against AWS IoT Core,
    /// [`acorn_mqtt::provisioning::local_prefix`] against the local stack (`acorn dev up`),
    /// whose broker cannot answer only the requesting connection.
    pub topic_prefix: String,
    /// Parameters sent to `RegisterThing` (the device id is added as `DeviceId`).
    pub parameters: BTreeMap<String, String>,
    /// Rotate on its own when the certificate has fewer whole days left than this (default 30).
    pub days_before: u32,
    /// Longest wait for each step's answer (default 60 s).
    pub step_timeout_ms: u64,
    /// Longest wait for the trial connection to reach `online` (default 120 s).
    pub trial_timeout_ms: u64,
    /// First retry delay after a failed rotation, doubled each time (default 60 s).
    pub retry_base_ms: u64,
    /// Longest retry delay (default 1 h).
    pub retry_max_ms: u64,
    /// Attempts of a command-triggered rotation before it is given up (default 5); an
    /// expiry-triggered one goes on as long as the certificate needs replacing.
    pub command_attempts: u32,
}

impl RotationConfig {
    /// The defaults, with `template` (checked: 1..=36 of `A-Z a-z 0-9 _ -`).
    pub fn new(template: &str) -> Result<Self, Error> {
        check_template_name(template)?;
        Ok(Self {
            template: template.to_string(),
            topic_prefix: String::new(),
            parameters: BTreeMap::new(),
            days_before: 30,
            step_timeout_ms: 60_000,
            trial_timeout_ms: 120_000,
            retry_base_ms: 60_000,
            retry_max_ms: 3_600_000,
            command_attempts: 5,
        })
    }
}

/// What the core asks the driver to do for a rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RotationRequest {
    /// Make a new key (P-256), keep it, and answer [`RotationInput::Csr`] with a CSR for it
    /// (subject CN = the device id), or [`RotationInput::KeyFailed`].
    MakeKey,
    /// Check `certificate_pem` against the key made (it must match), the expected CA and the
    /// dates, and store it with the key as the candidate identity; answer
    /// [`RotationInput::Staged`] or [`RotationInput::StageRefused`].
    StageCandidate {
        /// The new certificate, PEM.
        certificate_pem: String,
        /// Its id, as AWS IoT named it.
        certificate_id: String,
    },
    /// Connect with the candidate identity from the next CONNECT on (the core drops the
    /// connection itself right after this request).
    UseCandidate,
    /// The trial connection is up: make the candidate the active identity; answer
    /// [`RotationInput::Committed`] or [`RotationInput::CommitFailed`].
    Commit,
    /// Drop the candidate and connect with the active identity again; answer
    /// [`RotationInput::Discarded`].
    Discard {
        /// Why, in plain language (for the log).
        reason: String,
    },
}

/// What the driver answers to a [`RotationRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RotationInput {
    /// The CSR of the new key, PEM.
    Csr {
        /// PEM text.
        pem: String,
    },
    /// No key could be made.
    KeyFailed {
        /// Why.
        reason: String,
    },
    /// The candidate is stored.
    Staged,
    /// The certificate was refused (another key, an unexpected CA, dates) or not stored.
    StageRefused {
        /// Why.
        reason: String,
    },
    /// The candidate is now the active identity.
    Committed {
        /// The new certificate's dates and fingerprint.
        certificate: CertificateFacts,
    },
    /// The commit failed (flash): the candidate stays until the next boot finishes or drops it.
    CommitFailed {
        /// Why.
        reason: String,
    },
    /// The candidate is gone; the next CONNECT uses the active identity.
    Discarded,
}

/// Why [`crate::Device::rotate`] did not start a rotation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RotateError {
    /// The device was built without rotation support ([`crate::DeviceConfig::rotation`]).
    #[error("this device has no certificate rotation configured (DeviceConfig::rotation is None): give it a provisioning template")]
    NotConfigured,
    /// A rotation is under way.
    #[error("a certificate rotation is under way already")]
    AlreadyRotating,
    /// The device is shutting down.
    #[error("the device is shutting down")]
    Stopped,
    /// A rotation's commit failed after its trial passed; a restart finishes it.
    #[error("a certificate rotation's commit did not finish (flash): restart the device to finish it, then rotate again if needed")]
    CommitPending,
}

/// What started a rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationTrigger {
    /// The `rotate-certificate` command, with its `requestId`.
    Command {
        /// Echoed in every answer about this rotation.
        request_id: String,
    },
    /// The certificate has fewer days left than [`RotationConfig::days_before`].
    Expiry {
        /// Whole days left when it started.
        days_left: i64,
    },
    /// The driver asked ([`crate::Device::rotate`], e.g. `acorn device rotate`).
    Local,
}
